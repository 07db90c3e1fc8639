//! Real-execution backends (`sim real`, `sim fidelity`): the engine's scheduling, admission, memory and
//! adapter-cache logic drive a model that runs for real instead of a cost model. A backend is an
//! `engine::Executor`: the engine hands it each iteration's sequences, adapter copies, finished or squashed
//! requests and evictions, in order, and `engine::Timed` advances the clock by the wall-clock durations. See
//! docs/real-execution.md for what that clock means.
//!
//! `--backend SPEC`:
//! - `cpu[layers=2,hidden=64,heads=2,kv_heads=2,intermediate=128,vocab=256,page=16,seed=0]`: a tiny
//!   Llama-shaped decoder in f32 on the CPU (`cpu.rs`), for CI and for checking the real path end to end;
//! - `cuda[device=0,dtype=fp16,page=16,adapter_gib=G,seed=0]`: the model named by `--model` at its real
//!   size, random weights, on an NVIDIA GPU through the kernels crate (`cuda.rs`; compiled, not yet run).
//!
//! Both run the kernels crate's decoder (`kernels::decoder`: one forward pass over CPU or GPU operations);
//! `real.rs` makes either one an `Executor`, so each backend file only configures and builds its decoder.

pub mod cpu;
pub mod cuda;
pub mod real;

use kernels::decoder::Shape;

use crate::runner::{Report, RunArgs, RunConfig, run};
use sim_core::cost::{BatchShape, CostModel, LoadShape};
use sim_core::engine::{Executor, Timed};
use sim_core::error::{Error, Result};
use sim_core::model::ModelSpec;
use sim_core::registry::{Entry, Kind, Props, Registry};
use sim_core::spec::Spec;
use sim_core::time::Nanos;
use sim_core::trace::Trace;

/// A parsed `--backend` spec.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendSpec {
    Cpu(cpu::TinyConfig),
    Cuda(cuda::CudaConfig),
}

/// The backends, for `Registry`.
pub struct Backends;

impl Kind for Backends {
    type Made = BackendSpec;
    type Ctx<'a> = ();
    const NAME: &'static str = "backend";
}

/// `--backend` (`sim real`, `sim fidelity`).
pub const REGISTRY: Registry<Backends> = Registry {
    entries: &[
        Entry {
            name: "cpu",
            about: "a tiny Llama-shaped decoder in f32 on the CPU (CI, checking the real path end to end)",
            params: cpu::PARAMS,
            props: Props::DEFAULT,
            build: |p, _| Ok(Box::new(BackendSpec::Cpu(cpu::TinyConfig::from_params(p)?))),
        },
        Entry {
            name: "cuda",
            about: "the --model at its real size, random weights, on an NVIDIA GPU (compiled, not yet run)",
            params: cuda::PARAMS,
            props: Props::DEFAULT,
            build: |p, _| {
                Ok(Box::new(BackendSpec::Cuda(cuda::CudaConfig::from_params(
                    p,
                )?)))
            },
        },
    ],
};

impl BackendSpec {
    pub fn parse(text: &str) -> Result<BackendSpec> {
        let name = Spec::parse(text).map_err(|e| e.context("--backend"))?.name;
        if REGISTRY.find(&name).is_err() {
            let valid: Vec<String> = REGISTRY
                .entries
                .iter()
                .map(|e| {
                    let ps: Vec<&str> = e.params.iter().map(|p| p.name).collect();
                    format!("{}[{}]", e.name, ps.join(","))
                })
                .collect();
            return Err(Error::msg(format!(
                "--backend: unknown backend '{name}'; valid: {}",
                valid.join(", ")
            )));
        }
        REGISTRY
            .build(text, &())
            .map(|b| *b.made)
            .map_err(|e| e.context("--backend"))
    }

    pub fn name(&self) -> &'static str {
        match self {
            BackendSpec::Cpu(_) => "cpu",
            BackendSpec::Cuda(_) => "cuda",
        }
    }
}

/// The decoder shape of an engine model (Llama 1/2 7B-30B: as many KV heads as query heads; 70B: 8).
pub fn model_shape(m: &ModelSpec) -> Shape {
    Shape::from_dims(m.dims())
}

/// Builds the backend for a run of `cfg`: its KV pool holds the engine's pool.
pub fn build(spec: &BackendSpec, cfg: &RunConfig) -> Result<Box<dyn Executor>> {
    let (model, pool) = (cfg.model, cfg.engine.pool_slots);
    match spec {
        BackendSpec::Cpu(c) => Ok(Box::new(cpu::CpuBackend::new(
            c.clone(),
            pool,
            cfg.engine.max_batch,
            model,
        ))),
        BackendSpec::Cuda(c) => Ok(Box::new(cuda::CudaBackend::new(
            c,
            model,
            pool,
            cfg.engine.max_batch,
            cfg.engine.max_prefill_tokens,
        )?)),
    }
}

/// The shape of a backend's decoder, for FLOP counts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    pub layers: f64,
    pub hidden: f64,
    pub kv_row: f64,
    pub intermediate: f64,
    pub vocab: f64,
}

impl Dims {
    /// FLOPs of one iteration of `s` (dense layers, attention, LoRA on q,k,v,o, LM head on last tokens).
    pub fn flops(&self, s: &BatchShape) -> f64 {
        let (h, kv, i) = (self.hidden, self.kv_row, self.intermediate);
        let tokens = s.tokens() as f64;
        let dense = 2.0 * (2.0 * h * h + 2.0 * h * kv + 3.0 * h * i);
        let attn = 4.0 * h * (s.prefill_sq_tokens as f64 / 2.0 + s.decode_context as f64);
        let lora = 2.0 * s.lora_token_rank as f64 * (4.0 * h + 2.0 * h + 2.0 * kv);
        let head = 2.0 * h * self.vocab * (s.prefill_seqs + s.decode_seqs) as f64;
        self.layers * (tokens * dense + attn + lora) + head
    }
}

/// What a real backend answers when a policy asks for a cost estimate (`CostModel::iteration` and
/// `adapter_load`; schedulers and cache policies use them to rank requests and adapters). The engine's clock
/// never uses these: it advances by measured times. Rates come from a short timed warm-up of the backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimator {
    pub dims: Dims,
    pub ns_per_flop: f64,
    /// Measured copy time per byte of the backend's own adapters, and the ratio of the backend's adapter
    /// bytes to the engine's (`--model`) adapter bytes of the same rank.
    pub ns_per_byte: f64,
    pub bytes_ratio: f64,
    pub fixed_ns: f64,
}

impl Estimator {
    pub fn iteration(&self, s: &BatchShape) -> Nanos {
        (self.fixed_ns + self.dims.flops(s) * self.ns_per_flop).max(1.0) as Nanos
    }

    pub fn adapter_load(&self, engine_bytes: u64) -> Nanos {
        (engine_bytes as f64 * self.bytes_ratio * self.ns_per_byte).max(1.0) as Nanos
    }
}

impl CostModel for Estimator {
    fn describe(&self) -> String {
        "estimates from a timed warm-up of the backend".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        Estimator::iteration(self, s)
    }
    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        Estimator::adapter_load(self, load.bytes)
    }
}

/// `sim real`: the run `sim run` would do, on `backend` instead of the cost model.
pub fn run(args: &RunArgs, backend: &str) -> Result<Report> {
    let spec = BackendSpec::parse(backend)?;
    let cfg = args.resolve()?;
    let trace = cfg.load_trace()?;
    run_on(&cfg, trace, &spec)
}

/// Like [`run`] on an already loaded trace.
pub fn run_on(cfg: &RunConfig, trace: Trace, spec: &BackendSpec) -> Result<Report> {
    // The summary keeps exactly the simulator's keys; `cost_model` names the backend and its clock.
    let mut clock = Timed(build(spec, cfg)?);
    run::run(cfg, trace, Some(&mut clock))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_specs_parse_or_explain() {
        assert_eq!(
            BackendSpec::parse("cpu").unwrap(),
            BackendSpec::Cpu(cpu::TinyConfig::default())
        );
        assert!(matches!(
            BackendSpec::parse("cuda[device=1]").unwrap(),
            BackendSpec::Cuda(cuda::CudaConfig { device: 1, .. })
        ));
        let e = BackendSpec::parse("tpu").unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.to_string().contains("valid: cpu["), "{e}");
        assert!(BackendSpec::parse("cpu[layers=x]").is_err());
        assert!(BackendSpec::parse("cuda[dtype=fp8]").is_err());
    }
}
