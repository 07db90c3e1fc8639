//! `sim fit`: one joint fit of S-LoRA's engine (`cost::fitted`) to every measured end-to-end run it may use
//! (S-LoRA's benchmark results on several GPUs and models, its engine variants included), by simulating
//! every run with candidate parameters and minimising the error of the metrics S-LoRA's benchmark reports
//! (throughput, mean latency, mean TTFT, mean latency per output token).
//!
//! Each run's exact workload is replayed (S-LoRA's generator, numpy's stream reproduced), on the engine with
//! S-LoRA's mechanics and the run's flags (`data::Variant`). The parameters are one set of host terms for
//! every GPU (each machine scaled by a host factor) and one set of efficiencies per GPU shared by every model
//! on it (`joint`); the objective is the weighted sum of squared log errors; the optimiser is
//! Levenberg-Marquardt over bounded (logit) coordinates with finite-difference Jacobians (`lm`); the
//! identification (`identify`) and the validation where the model was not fitted (`validate`) build on it.

pub mod anchor;
pub mod cli;
pub mod compose;
pub mod data;
pub mod effect;
pub mod identify;
pub mod joint;
pub mod lm;
pub mod report;
pub mod validate;

pub use data::{MeasuredRun, Metrics, Setup, Variant};

use crate::runner::{RunArgs, RunConfig, run};
use sim_core::cost::fitted::{DensePoint, EngineCost, EngineParams};
use sim_core::engine::{Outcome, Simulated};
use sim_core::error::Result;
use sim_core::model::{GpuSpec, ModelSpec};
use sim_core::time::secs;
use sim_core::workload::Workload;

/// A measured run ready to simulate: its configuration and its workload, built once.
pub struct Prepared {
    pub run: MeasuredRun,
    pub cfg: RunConfig,
    pub workload: Workload,
    pub model: &'static ModelSpec,
    pub gpu: &'static GpuSpec,
    /// Measured dense-layer times the cost model uses instead of its dense roofline term.
    pub dense: Option<Vec<DensePoint>>,
}

impl Prepared {
    pub fn variant(&self) -> Variant {
        self.run.setup.engine
    }

    /// Whether any request of the run carries an adapter.
    pub fn has_adapters(&self) -> bool {
        self.run.workload.spec.num_adapters > 0
    }
}

/// Builds each run's configuration (S-LoRA's engine with the run's flags and pool) and workload.
pub fn prepare(runs: &[MeasuredRun]) -> Result<Vec<Prepared>> {
    runs.iter()
        .map(|r| {
            let s = &r.setup;
            let mut a = RunArgs::defaults();
            a.workload = Some(r.workload.describe());
            a.gpu = s.gpu.clone();
            a.model = s.model.clone();
            a.ranks = s.ranks.clone();
            a.pool_tokens = Some(r.pool);
            // The run's server flags (the loads of --bmm follow from it in `resolve`).
            a.no_lora_compute = !s.engine.lora_compute;
            a.bmm = s.engine.bmm;
            a.no_mem_pool = !s.engine.mem_pool;
            let cfg = a.resolve().map_err(|e| e.context(r.name()))?;
            let trace = cfg.load_trace()?;
            let (_, workload) = run::workload(&cfg, trace)?;
            Ok(Prepared {
                run: r.clone(),
                model: cfg.model,
                gpu: cfg.gpu,
                cfg,
                workload,
                dense: None,
            })
        })
        .collect()
}

/// S-LoRA's metrics of a simulated run (time 0 = the benchmark's start).
pub fn metrics(w: &Workload, out: &sim_core::engine::RunOutput) -> Metrics {
    let (mut n, mut end, mut lat, mut ttft, mut pot) = (0.0, 0u64, 0.0, 0.0, 0.0);
    for (r, rec) in w.requests.iter().zip(&out.records) {
        if rec.outcome != Outcome::Finished {
            continue;
        }
        n += 1.0;
        end = end.max(rec.finished);
        let l = secs(rec.finished - r.arrival);
        lat += l;
        ttft += secs(rec.first_token - r.arrival);
        pot += l / r.output as f64;
    }
    let n1 = if n > 0.0 { n } else { 1.0 };
    Metrics {
        throughput: n / secs(end.max(1)),
        latency: lat / n1,
        ttft: ttft / n1,
        per_output_token: pot / n1,
    }
}

/// The cost model of one run with `params` (its GPU's).
pub fn cost_of(p: &Prepared, params: &EngineParams) -> EngineCost {
    let v = p.variant();
    let c = EngineCost::new(
        *params,
        p.model,
        p.gpu,
        v.kernels(),
        p.dense.as_deref(),
        "fit",
    );
    if v.mem_pool { c } else { c.without_mem_pool() }
}

/// Simulates one prepared run with `params`.
pub fn simulate(p: &Prepared, params: &EngineParams) -> Result<Metrics> {
    let cost = cost_of(p, params);
    let mut clock = Simulated(&cost);
    let ex = run::execute(&p.cfg, &p.workload, &mut clock)?;
    Ok(metrics(&p.workload, &ex.output))
}

/// Simulates `tasks` (run, parameters) on `threads` threads, each thread taking the next task as it
/// finishes one (runs differ 100x in length); results in task order.
pub fn simulate_tasks(
    prepared: &[Prepared],
    tasks: &[(usize, EngineParams)],
    threads: usize,
) -> Result<Vec<Metrics>> {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let threads = threads.clamp(1, tasks.len().max(1));
    let mut out: Vec<Option<Result<Metrics>>> = (0..tasks.len()).map(|_| None).collect();
    let parts: Vec<Vec<(usize, Result<Metrics>)>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some((run, params)) = tasks.get(i) else {
                            break;
                        };
                        done.push((i, simulate(&prepared[*run], params)));
                    }
                    done
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a simulation thread panicked"))
            .collect()
    });
    for (i, m) in parts.into_iter().flatten() {
        out[i] = Some(m);
    }
    out.into_iter()
        .map(|m| m.expect("every task ran"))
        .collect()
}

/// Simulates every run with its own parameters (`params[i]` for run `i`).
pub fn simulate_all(
    prepared: &[Prepared],
    params: &[EngineParams],
    threads: usize,
) -> Result<Vec<Metrics>> {
    let tasks: Vec<(usize, EngineParams)> = params.iter().copied().enumerate().collect();
    simulate_tasks(prepared, &tasks, threads)
}

/// Weights of the metrics in the objective: throughput errors cost most (they are the capacity).
pub const WEIGHTS: [f64; 4] = [4.0, 1.0, 1.0, 0.5];

/// The four weighted log errors of one run: sqrt(weight) x ln(simulated / measured).
pub fn residuals(measured: &Metrics, sim: &Metrics) -> [f64; 4] {
    std::array::from_fn(|i| WEIGHTS[i].sqrt() * (sim.get(i).max(1e-9) / measured.get(i)).ln())
}

/// Weighted sum of squared log errors of `sim` against the runs' measurements.
pub fn loss(prepared: &[&Prepared], sim: &[Metrics]) -> f64 {
    prepared
        .iter()
        .zip(sim)
        .map(|(p, s)| {
            residuals(&p.run.measured, s)
                .iter()
                .map(|e| e * e)
                .sum::<f64>()
        })
        .sum()
}
