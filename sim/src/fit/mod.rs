//! `sim fit`: fits an engine profile (`cost::fitted`) to measured end-to-end runs of a real serving engine by
//! simulating every run with candidate parameters and minimising the error of the metrics the engine's own
//! benchmark reports (throughput, mean latency, mean TTFT, mean latency per output token).
//!
//! Each run's exact workload is replayed (S-LoRA's generator, numpy's stream reproduced), on the engine with
//! S-LoRA's mechanics (`Mechanisms`, each switchable for the ablation). The objective is the weighted sum of
//! squared log errors over runs and metrics; the optimiser is argmin's Nelder-Mead over the log (times) or
//! logit (efficiencies) of the free parameters, restarted from its best point until it stops improving.

pub mod cli;
pub mod compose;
pub mod data;
pub mod effect;
pub mod report;

use argmin::core::{CostFunction, Executor, State};
use argmin::solver::neldermead::NelderMead;

pub use data::{MeasuredRun, Metrics, Setup};

use crate::runner::{RunArgs, RunConfig, run};
use sim_core::cost::LoraKernels;
use sim_core::cost::fitted::{DensePoint, EngineCost, EngineParams};
use sim_core::engine::{Outcome, Simulated};
use sim_core::error::{Error, Result};
use sim_core::model::{GpuSpec, ModelSpec};
use sim_core::time::secs;
use sim_core::workload::Workload;

/// S-LoRA mechanisms the fit's engine models; each can be switched off to measure what it contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mechanisms {
    /// Adapters cross PCIe twice, one copy per layer per pass (`load_lora_A`/`load_lora_B`).
    pub double_copy: bool,
    /// LoRA kernels padded to the batch's largest rank and prompt (MBGMM / BGMV).
    pub padded_lora: bool,
    /// `batch_max_tokens = max(pool/6, 3072)` (otherwise 16,384 tokens per prefill).
    pub batch_limit: bool,
    /// The router's 10 ms sleep when the batch is empty.
    pub idle_poll: bool,
}

impl Mechanisms {
    pub const ALL: Mechanisms = Mechanisms {
        double_copy: true,
        padded_lora: true,
        batch_limit: true,
        idle_poll: true,
    };

    /// `all`, or one mechanism off: `no-double-copy`, `no-padded-lora`, `no-batch-limit`, `no-idle-poll`.
    pub fn parse(s: &str) -> Result<Mechanisms> {
        let mut m = Mechanisms::ALL;
        match s {
            "all" => {}
            "no-double-copy" => m.double_copy = false,
            "no-padded-lora" => m.padded_lora = false,
            "no-batch-limit" => m.batch_limit = false,
            "no-idle-poll" => m.idle_poll = false,
            _ => {
                return Err(Error::msg(format!(
                    "--mechanisms: '{s}' is not all, no-double-copy, no-padded-lora, no-batch-limit or no-idle-poll"
                )));
            }
        }
        Ok(m)
    }

    pub fn describe(&self) -> String {
        format!(
            "double-copy loads {}, padded LoRA kernels {}, batch_max_tokens rule {}, 10 ms idle poll {}",
            on(self.double_copy),
            on(self.padded_lora),
            on(self.batch_limit),
            on(self.idle_poll)
        )
    }

    fn kernels(&self) -> LoraKernels {
        if self.padded_lora {
            LoraKernels::Slora
        } else {
            LoraKernels::Exact
        }
    }
}

fn on(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

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

/// Builds each run's configuration (S-LoRA's engine with `mech`) and workload.
pub fn prepare(runs: &[MeasuredRun], mech: Mechanisms) -> Result<Vec<Prepared>> {
    runs.iter()
        .map(|r| {
            let s = &r.setup;
            let mut a = RunArgs::defaults();
            a.workload = Some(r.workload.describe());
            a.gpu = s.gpu.clone();
            a.model = s.model.clone();
            a.ranks = s.ranks.clone();
            a.pool_tokens = Some(s.pool);
            a.adapter_load = if mech.double_copy {
                "slora".into()
            } else {
                "once[per_layer=false]".into()
            };
            if !mech.batch_limit {
                a.max_prefill_tokens = Some(16_384);
            }
            if !mech.idle_poll {
                a.idle_poll_ms = 0.0;
            }
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

/// Simulates one prepared run with `params`.
pub fn simulate(p: &Prepared, params: &EngineParams, mech: Mechanisms) -> Result<Metrics> {
    let cost = EngineCost::new(
        *params,
        p.model,
        p.gpu,
        mech.kernels(),
        p.dense.as_deref(),
        "fit",
    );
    let mut clock = Simulated(&cost);
    let ex = run::execute(&p.cfg, &p.workload, &mut clock)?;
    Ok(metrics(&p.workload, &ex.output))
}

/// Simulates every run, on `threads` threads, in order.
pub fn simulate_all(
    prepared: &[Prepared],
    params: &EngineParams,
    mech: Mechanisms,
    threads: usize,
) -> Result<Vec<Metrics>> {
    let refs: Vec<&Prepared> = prepared.iter().collect();
    simulate_refs(&refs, params, mech, threads)
}

fn simulate_refs(
    prepared: &[&Prepared],
    params: &EngineParams,
    mech: Mechanisms,
    threads: usize,
) -> Result<Vec<Metrics>> {
    let threads = threads.clamp(1, prepared.len().max(1));
    let chunk = prepared.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = prepared
            .chunks(chunk.max(1))
            .map(|c| {
                s.spawn(move || {
                    c.iter()
                        .map(|p| simulate(p, params, mech))
                        .collect::<Result<Vec<_>>>()
                })
            })
            .collect();
        let mut out = Vec::with_capacity(prepared.len());
        for h in handles {
            out.extend(h.join().expect("a simulation thread panicked")?);
        }
        Ok(out)
    })
}

/// Weights of the metrics in the objective: throughput errors cost most (they are the capacity).
pub const WEIGHTS: [f64; 4] = [4.0, 1.0, 1.0, 0.5];

/// Weighted sum of squared log errors of `sim` against the runs' measurements.
pub fn loss(prepared: &[&Prepared], sim: &[Metrics]) -> f64 {
    prepared
        .iter()
        .zip(sim)
        .map(|(p, s)| {
            (0..4)
                .map(|i| {
                    let e = (s.get(i).max(1e-9) / p.run.measured.get(i)).ln();
                    WEIGHTS[i] * e * e
                })
                .sum::<f64>()
        })
        .sum()
}

/// Which parameters the fit moves by default (all but `copy_us`); the rest stay at the start's values.
pub const FREE: [usize; 8] = [0, 1, 2, 3, 4, 5, 6, 7];

fn to_free(free: &[usize], p: &EngineParams) -> Vec<f64> {
    let v = p.to_vec();
    free.iter()
        .map(|&i| {
            let x = v[i];
            if EngineParams::is_efficiency(i) {
                let x = x.clamp(1e-6, 1.0 - 1e-9);
                (x / (1.0 - x)).ln()
            } else {
                x.max(1e-3).ln()
            }
        })
        .collect()
}

fn from_free(free: &[usize], base: &EngineParams, x: &[f64]) -> EngineParams {
    let mut v = base.to_vec();
    for (k, &i) in free.iter().enumerate() {
        v[i] = if EngineParams::is_efficiency(i) {
            1.0 / (1.0 + (-x[k]).exp())
        } else {
            x[k].exp()
        };
    }
    EngineParams::from_slice(&v)
}

/// How hard the optimiser works, and the prior's weight: the squared distance (in log / logit units) of the
/// free parameters from the start point, which keeps parameters the runs do not constrain near their
/// physical defaults.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Effort {
    /// Starting points (the start and fixed perturbations of it); the best descent wins.
    pub starts: usize,
    /// The parameters the fit moves (indices into `EngineParams::NAMES`); the rest keep the start's values.
    pub free: &'static [usize],
    /// Nelder-Mead iterations per round.
    pub iters: u64,
    /// Restarts from the best point.
    pub restarts: usize,
    pub prior: f64,
    pub threads: usize,
}

impl Effort {
    pub fn new(iters: u64, restarts: usize, threads: usize) -> Effort {
        Effort {
            starts: 1,
            free: &FREE,
            iters,
            restarts,
            prior: 0.01,
            threads,
        }
    }
}

struct Problem<'a> {
    prepared: &'a [&'a Prepared],
    free: &'a [usize],
    base: EngineParams,
    x0: &'a [f64],
    mech: Mechanisms,
    threads: usize,
    prior: f64,
    evals: &'a std::sync::atomic::AtomicUsize,
    progress: Option<&'a indicatif::ProgressBar>,
}

impl CostFunction for Problem<'_> {
    type Param = Vec<f64>;
    type Output = f64;

    fn cost(&self, x: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        let p = from_free(self.free, &self.base, x);
        let sim = simulate_refs(self.prepared, &p, self.mech, self.threads)
            .map_err(|e| argmin::core::Error::msg(e.to_string()))?;
        self.evals
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(b) = self.progress {
            b.inc(1);
        }
        let prior: f64 = x.iter().zip(self.x0).map(|(a, b)| (a - b) * (a - b)).sum();
        Ok(loss(self.prepared, &sim) + self.prior * prior)
    }
}

/// The fit's result.
#[derive(Clone, Debug)]
pub struct Fitted {
    pub params: EngineParams,
    pub loss: f64,
    pub evaluations: usize,
    pub restarts: usize,
}

/// Fits `prepared` from `start`: Nelder-Mead (simplex steps of x2 / e^1 in each free coordinate) restarted
/// from its best point until a restart improves the loss by less than 0.1%, at most `max_restarts` times.
pub fn fit(
    prepared: &[Prepared],
    start: EngineParams,
    mech: Mechanisms,
    effort: Effort,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Fitted> {
    let refs: Vec<&Prepared> = prepared.iter().collect();
    fit_refs(&refs, start, mech, effort, progress)
}

/// `fit` over borrowed runs (leave-one-out refits).
pub fn fit_refs(
    prepared: &[&Prepared],
    start: EngineParams,
    mech: Mechanisms,
    effort: Effort,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Fitted> {
    let Effort {
        starts,
        free,
        iters,
        restarts: max_restarts,
        prior,
        threads,
    } = effort;
    if prepared.is_empty() {
        return Err(Error::msg("sim fit: no runs to fit"));
    }
    let evals = std::sync::atomic::AtomicUsize::new(0);
    let prior_x0 = to_free(free, &start);
    let problem = || Problem {
        prepared,
        free,
        base: start,
        x0: &prior_x0,
        mech,
        threads,
        prior,
        evals: &evals,
        progress,
    };
    let cost = |y: &Vec<f64>| -> Result<f64> {
        problem()
            .cost(y)
            .map_err(|e| Error::internal(e.to_string()))
    };
    // Local descent from one start: a coarse coordinate search (a parameter whose effect is flat near the
    // start, e.g. LoRA made cheaper still, would leave Nelder-Mead's first simplex no direction to follow),
    // then Nelder-Mead restarted from its best point until a round gains less than 0.1%.
    let descend = |mut x: Vec<f64>| -> Result<(Vec<f64>, f64, usize)> {
        let mut best = cost(&x)?;
        for _ in 0..2 {
            for k in 0..x.len() {
                for d in [-3.0, -2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 3.0] {
                    let mut y = x.clone();
                    y[k] += d;
                    let c = cost(&y)?;
                    if c < best {
                        best = c;
                        x = y;
                    }
                }
            }
        }
        let mut rounds = 0;
        for round in 0..=max_restarts {
            let mut simplex = vec![x.clone()];
            for k in 0..x.len() {
                let mut y = x.clone();
                y[k] += if round % 2 == 0 { 1.0 } else { -0.5 };
                simplex.push(y);
            }
            let solver = NelderMead::new(simplex)
                .with_sd_tolerance(1e-6)
                .map_err(|e| Error::internal(e.to_string()))?;
            let res = Executor::new(problem(), solver)
                .configure(|s| s.max_iters(iters))
                .run()
                .map_err(|e| Error::internal(format!("sim fit: {e}")))?;
            let state = res.state();
            let (Some(bx), c) = (state.get_best_param(), state.get_best_cost()) else {
                break;
            };
            rounds = round;
            let gain = (best - c) / best.max(1e-12);
            if c < best {
                best = c;
                x = bx.clone();
            }
            if gain < 1e-3 {
                break;
            }
        }
        Ok((x, best, rounds))
    };
    // Several starts: the given one and deterministic perturbations of it (+-1.5 in each coordinate by a
    // fixed pattern); the best descent wins.
    let x0 = to_free(free, &start);
    let mut winner: Option<(Vec<f64>, f64, usize)> = None;
    for j in 0..starts.max(1) {
        let y: Vec<f64> = x0
            .iter()
            .enumerate()
            .map(|(k, &v)| {
                let sign = if (j * 7 + k * 3 + j * k) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                if j == 0 { v } else { v + 1.5 * sign }
            })
            .collect();
        let d = descend(y)?;
        if winner.as_ref().is_none_or(|w| d.1 < w.1) {
            winner = Some(d);
        }
    }
    let (x, best, restarts) = winner.expect("at least one start");
    Ok(Fitted {
        params: from_free(free, &start, &x),
        loss: best,
        evaluations: evals.load(std::sync::atomic::Ordering::Relaxed),
        restarts,
    })
}
