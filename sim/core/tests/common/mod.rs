//! Shared by the integration tests: small cost models and a random workload generator.
#![allow(dead_code)]

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sim_core::cost::{BatchShape, CostModel, LoadShape};
use sim_core::engine::api::PolicyCtx;
use sim_core::engine::{Engine, EngineConfig, Reserve, RunOutput, Simulated};
use sim_core::policy::PolicySpecs;
use sim_core::slo::Slo;
use sim_core::time::Nanos;
use sim_core::workload::{Adapter, NO_ADAPTER, Request, Workload};

pub const MS: Nanos = 1_000_000;

/// Prefill 100 ms, decode 10 ms, adapter load 30 ms, whatever the batch.
pub struct Const;

impl CostModel for Const {
    fn describe(&self) -> String {
        "constant".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        if s.prefill_seqs > 0 {
            100 * MS
        } else {
            10 * MS
        }
    }
    fn adapter_load(&self, _load: &LoadShape) -> Nanos {
        30 * MS
    }
}

/// Costs that depend on the batch, so batching decisions change timings.
pub struct Linear;

impl CostModel for Linear {
    fn describe(&self) -> String {
        "linear test costs".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        1_000_000
            + 10_000 * s.prefill_tokens
            + 100_000 * s.decode_seqs
            + 50 * s.decode_context
            + 7 * s.lora_token_rank
    }
    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        200_000 + load.bytes / 1000
    }
}

/// S-LoRA-like padding: a prefill costs 100 ms + 1 us per cell of its requests x longest prompt x largest
/// rank grid; decode 10 ms; loads instant.
pub struct Padded;

impl CostModel for Padded {
    fn describe(&self) -> String {
        "padded test costs".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        if s.prefill_seqs > 0 {
            100 * MS + 1000 * s.lora_seqs * s.prefill_max_len * s.lora_max_rank
        } else {
            10 * MS
        }
    }
    fn adapter_load(&self, _load: &LoadShape) -> Nanos {
        0
    }
}

pub fn req(id: u32, at_ms: u64, input: u32, output: u32, adapter: u32) -> Request {
    Request {
        id,
        arrival: at_ms * MS,
        input,
        output,
        adapter,
    }
}

/// `n` adapters of `slots` slots each.
pub fn adapters(n: u32, slots: u64) -> Vec<Adapter> {
    (0..n)
        .map(|id| Adapter {
            id,
            rank: slots as u32 / 4,
            bytes: slots << 19,
            slots,
        })
        .collect()
}

/// The engine's default prefetch: the adapters of the next 16 waiting requests.
pub const PREFETCH: &str = "queued";

/// Runs `w` with the named policies (oracle predictions, the default prefetch).
pub fn run_with(
    w: &Workload,
    cfg: EngineConfig,
    cost: &dyn CostModel,
    sched_spec: &str,
    cache_spec: &str,
) -> RunOutput {
    run_prefetch(w, cfg, cost, sched_spec, cache_spec, PREFETCH)
}

/// Runs `w` with the named policies and prefetcher (oracle predictions).
pub fn run_prefetch(
    w: &Workload,
    cfg: EngineConfig,
    cost: &dyn CostModel,
    sched_spec: &str,
    cache_spec: &str,
    prefetch_spec: &str,
) -> RunOutput {
    let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
    run_full(
        w,
        cfg,
        cost,
        (sched_spec, cache_spec, prefetch_spec),
        &predicted,
    )
}

/// Runs `w` with the named policies, the schedulers seeing `predicted` output lengths.
pub fn run_predicted(
    w: &Workload,
    cfg: EngineConfig,
    cost: &dyn CostModel,
    sched_spec: &str,
    cache_spec: &str,
    predicted: &[u32],
) -> RunOutput {
    run_full(w, cfg, cost, (sched_spec, cache_spec, PREFETCH), predicted)
}

/// Runs `w` with (scheduler, cache, prefetch) specs and `predicted` output lengths.
pub fn run_full(
    w: &Workload,
    cfg: EngineConfig,
    cost: &dyn CostModel,
    (sched_spec, cache_spec, prefetch_spec): (&str, &str, &str),
    predicted: &[u32],
) -> RunOutput {
    let ctx = PolicyCtx::new(w, predicted, &cfg, Slo::default(), cost);
    let policies = PolicySpecs {
        scheduler: sched_spec,
        cache: cache_spec,
        prefetch: prefetch_spec,
    }
    .build(&ctx)
    .unwrap()
    .policies;
    let mut clock = Simulated(cost);
    Engine::new(w, cfg, &mut clock, policies)
        .run()
        .unwrap_or_else(|e| panic!("{sched_spec} + {cache_spec} + {prefetch_spec}: {e}"))
}

pub struct Case {
    pub w: Workload,
    pub cfg: EngineConfig,
    /// The prefetcher spec.
    pub prefetch: String,
}

/// A small random workload and engine configuration: bursty arrivals, mixed lengths and adapter sizes,
/// tight pools, every knob of the engine varied.
pub fn random_case(seed: u64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let n_adapters = rng.random_range(0..6u32);
    let adapters: Vec<Adapter> = (0..n_adapters)
        .map(|id| {
            let slots = rng.random_range(4..64u64);
            Adapter {
                id,
                rank: slots as u32 / 4 + 1,
                bytes: slots << 19,
                slots,
            }
        })
        .collect();
    let n = rng.random_range(1..80u32);
    let mut t = 0u64;
    let requests = (0..n)
        .map(|id| {
            // Bursts: a third of arrivals share the previous timestamp.
            if rng.random_range(0..3) > 0 {
                t += rng.random_range(0..50_000_000u64);
            }
            let adapter = if n_adapters == 0 {
                NO_ADAPTER
            } else {
                rng.random_range(0..n_adapters)
            };
            Request {
                id,
                arrival: t,
                input: rng.random_range(1..300),
                output: rng.random_range(1..120),
                adapter,
            }
        })
        .collect();
    let mut cfg = EngineConfig::new(rng.random_range(60..1500));
    cfg.max_batch = rng.random_range(1..10);
    cfg.max_wait_tokens = rng.random_range(0..12);
    cfg.max_prefill_tokens = rng.random_range(100..1000);
    let window: u32 = rng.random_range(0..4);
    let mut prefetch = format!("queued[window={window}]");
    if rng.random_range(0..3) == 0 {
        let horizon_ms: u64 = rng.random_range(1..200);
        let threshold = rng.random_range(0..10) as f64 / 10.0;
        let max: u32 = rng.random_range(0..4);
        prefetch = format!(
            "histogram[window={window},horizon_s={},threshold={threshold},max={max}]",
            horizon_ms as f64 / 1e3
        );
    }
    if rng.random_range(0..2) == 0 {
        cfg.reserve = Reserve::Max(rng.random_range(1..150));
    }
    Case {
        w: Workload { adapters, requests },
        cfg,
        prefetch,
    }
}
