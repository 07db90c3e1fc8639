//! Invariants over many random workloads: every request ends exactly once (finished, or rejected for a
//! stated reason), memory never exceeds the pool, timings are ordered, and the same seed gives the same bytes.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sim::cache;
use sim::cost::{BatchShape, CostModel, Nanos};
use sim::engine::{Engine, EngineConfig, Outcome, Reserve};
use sim::runner::{self, RunArgs};
use sim::sched;
use sim::workload::{Adapter, NO_ADAPTER, Request, Workload};

/// Costs that depend on the batch, so batching decisions change timings.
struct Linear;

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
    fn adapter_load(&self, bytes: u64) -> Nanos {
        200_000 + bytes / 1000
    }
}

struct Case {
    w: Workload,
    cfg: EngineConfig,
}

fn random_case(seed: u64) -> Case {
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
    cfg.prefetch_window = rng.random_range(0..4);
    if rng.random_range(0..2) == 0 {
        cfg.reserve = Reserve::Max(rng.random_range(1..150));
    }
    Case {
        w: Workload { adapters, requests },
        cfg,
    }
}

#[test]
fn every_request_ends_exactly_once_and_memory_stays_within_the_pool() {
    for seed in 0..400 {
        let Case { w, cfg } = random_case(seed);
        for (sched_spec, cache_spec) in [("fifo", "none")] {
            let s = sched::build(sched_spec, &w).unwrap();
            let c = cache::build(cache_spec, &w).unwrap();
            // The engine also asserts the memory bound after every allocation.
            let out = Engine::new(&w, cfg.clone(), &Linear, s, c)
                .run()
                .unwrap_or_else(|e| panic!("seed {seed}: {e}"));
            assert!(out.stats.peak_total_slots <= cfg.pool_slots, "seed {seed}");
            assert_eq!(out.records.len(), w.requests.len());
            for (r, rec) in w.requests.iter().zip(&out.records) {
                let slots = w.adapter(r.adapter).map_or(0, |a| a.slots);
                let too_big = r.input as u64 + cfg.budget(r) as u64 + slots > cfg.pool_slots
                    || r.input as u64 > cfg.max_prefill_tokens;
                match &rec.outcome {
                    Outcome::Finished => {
                        assert!(
                            !too_big,
                            "seed {seed}: request {} should have been rejected",
                            r.id
                        );
                        assert!(r.arrival <= rec.admitted, "seed {seed}");
                        assert!(
                            rec.admitted + rec.load_wait < rec.first_token,
                            "seed {seed}"
                        );
                        assert!(rec.first_token <= rec.finished, "seed {seed}");
                        assert_eq!(
                            rec.first_token == rec.finished,
                            r.output == 1,
                            "seed {seed}"
                        );
                    }
                    Outcome::Rejected(why) => {
                        assert!(too_big, "seed {seed}: request {} rejected: {why}", r.id);
                    }
                    Outcome::Waiting => panic!("seed {seed}: request {} never ran", r.id),
                }
            }
        }
    }
}

#[test]
fn same_seed_gives_byte_identical_outputs() {
    let dir = std::env::temp_dir().join(format!("sim-determinism-{}", std::process::id()));
    let mut args = RunArgs::defaults();
    args.max_requests = Some(1500);
    args.rate = Some(6.0);
    args.seed = 42;
    let mut bytes = Vec::new();
    for i in 0..2 {
        let d = dir.join(i.to_string());
        runner::execute(&args).unwrap().write(&d).unwrap();
        bytes.push((
            std::fs::read(d.join("summary.json")).unwrap(),
            std::fs::read(d.join("requests.csv")).unwrap(),
        ));
    }
    assert!(bytes[0] == bytes[1], "two runs with seed 42 differ");
    args.seed = 43;
    let d = dir.join("other");
    runner::execute(&args).unwrap().write(&d).unwrap();
    assert_ne!(
        std::fs::read(d.join("requests.csv")).unwrap(),
        bytes[0].1,
        "another seed, other arrivals"
    );
    std::fs::remove_dir_all(&dir).ok();
}
