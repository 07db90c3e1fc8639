//! Validation where the model was not fitted (`sim fit --validate`), beside the measurements' own
//! repeatability.
//!
//! Each fold holds a set of runs out, refits the rest from the full fit (Levenberg-Marquardt, a few
//! Jacobians) and predicts the held-out runs:
//! - suite-out: each sweep (`Setup::suite`: a request-rate sweep, an adapter sweep, an engine variant's
//!   sweep; both of S-LoRA's campaigns of one sweep together);
//! - setting-out: every run of one GPU's model setting (S1 from S2 and back);
//! - GPU-out: every run of one GPU; its parameters then come from `joint::transfer` (the others' mean
//!   efficiencies, its datasheet, Vidur's dense table where shipped, the reference machine's host), the
//!   same rule that makes the profiles of GPUs without runs;
//! - model-out: every run of one model (a GPU left without runs is transferred as above).
//!
//! The repeatability floor: configurations measured more than once (the same GPU, model, setting, pool,
//! flags and workload, in different files), their pairwise relative differences.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::joint::{self, DenseTables, Joint};
use super::lm::Problem;
use super::report::{error_summary, rel};
use super::{Metrics, Prepared};
use sim_core::cost::fitted::EngineParams;
use sim_core::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Suite,
    Setting,
    Gpu,
    Model,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Suite => "suite-out",
            Kind::Setting => "setting-out",
            Kind::Gpu => "GPU-out",
            Kind::Model => "model-out",
        }
    }
}

pub struct Fold {
    pub kind: Kind,
    pub name: String,
    /// Indices into the prepared runs.
    pub held: Vec<usize>,
}

/// A run's model setting: its GPU and adapter ranks (S1 = [8], S2 = [64, 32, 16, 8], ...).
fn setting(p: &Prepared) -> String {
    let r = &p.run.setup.ranks;
    let s = match (p.run.setup.model.as_str(), r.as_slice()) {
        ("llama-7b", [8]) => "S1".to_string(),
        ("llama-7b", [64, 32, 16, 8]) => "S2".to_string(),
        ("llama-13b", [64, 32, 16]) => "S4".to_string(),
        _ => format!("{} ranks {r:?}", p.run.setup.model),
    };
    format!("{} {s}", p.gpu.name)
}

/// The folds over the fitted runs `fit`: every suite, every setting of a GPU with more than one, every
/// GPU and every model (when there is more than one).
pub fn folds(prepared: &[Prepared], fit: &[usize]) -> Vec<Fold> {
    let mut out = Vec::new();
    let mut group = |kind: Kind, key: &dyn Fn(&Prepared) -> String, min_groups: usize| {
        let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for &i in fit {
            by.entry(key(&prepared[i])).or_default().push(i);
        }
        if by.len() >= min_groups {
            for (name, held) in by {
                out.push(Fold { kind, name, held });
            }
        }
    };
    group(Kind::Suite, &|p| p.run.suite(), 2);
    group(Kind::Gpu, &|p| p.gpu.name.to_string(), 2);
    group(Kind::Model, &|p| p.model.name.to_string(), 2);
    // Settings: only where one GPU has several (the A10G's S1 and S2).
    let mut per_gpu: BTreeMap<&str, std::collections::BTreeSet<String>> = BTreeMap::new();
    for &i in fit {
        per_gpu
            .entry(prepared[i].gpu.name)
            .or_default()
            .insert(setting(&prepared[i]));
    }
    let multi: Vec<&str> = per_gpu
        .iter()
        .filter(|(_, s)| s.len() > 1)
        .map(|(g, _)| *g)
        .collect();
    let mut by: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &i in fit {
        if multi.contains(&prepared[i].gpu.name) {
            by.entry(setting(&prepared[i])).or_default().push(i);
        }
    }
    for (name, held) in by {
        out.push(Fold {
            kind: Kind::Setting,
            name,
            held,
        });
    }
    out
}

/// One fold's predictions: (run index, predicted metrics).
pub type Predictions = Vec<(usize, Metrics)>;

/// Refits without `fold.held` from `full` and predicts the held-out runs.
#[allow(clippy::too_many_arguments)]
pub fn run_fold(
    prepared: &[Prepared],
    fit: &[usize],
    fold: &Fold,
    full: &Joint,
    free: &[usize],
    measured: &[usize],
    dense: &DenseTables,
    threads: usize,
    iters: usize,
    progress: Option<&indicatif::ProgressBar>,
) -> Result<Predictions> {
    let train: Vec<usize> = fit
        .iter()
        .copied()
        .filter(|i| !fold.held.contains(i))
        .collect();
    let mut start = full.clone();
    // GPUs left without training runs: transferred after the refit; if the reference machine is one of
    // them, the GPU with the most training runs becomes the reference (host factor 1).
    let mut runs_per_gpu = vec![0usize; full.gpus.len()];
    for &i in &train {
        if let Some(g) = full.gpu_index(prepared[i].gpu.name) {
            runs_per_gpu[g] += 1;
        }
    }
    let orphans: Vec<usize> = (0..full.gpus.len())
        .filter(|&g| runs_per_gpu[g] == 0)
        .collect();
    let mut free: Vec<usize> = free.to_vec();
    if runs_per_gpu[start.reference] == 0 {
        let new_ref = (0..full.gpus.len())
            .max_by_key(|&g| runs_per_gpu[g])
            .expect("a GPU");
        let old = start.index(joint::HOST_FACTOR, start.reference);
        let k = start.index(joint::HOST_FACTOR, new_ref);
        // The new reference's host becomes 1: host terms scale by its old factor.
        let f = start.values[k];
        for v in &mut start.values[..joint::HOST] {
            *v *= f;
        }
        for g in 0..full.gpus.len() {
            let kg = start.index(joint::HOST_FACTOR, g);
            start.values[kg] /= f;
        }
        start.values[k] = 1.0;
        free.retain(|&x| x != k);
        free.push(old);
        start.reference = new_ref;
    }
    let problem = Problem {
        prepared,
        runs: train,
        free,
        threads,
        step: 0.05,
        rounds: 1,
        progress,
    };
    let sol = problem.solve(start, iters)?;
    let mut j = sol.joint;
    if !orphans.is_empty() {
        let gpus: Vec<usize> = (0..j.gpus.len()).filter(|g| !orphans.contains(g)).collect();
        // What the data saw: the fitted columns and the measured (Vidur) efficiencies.
        let mut seen = sol.columns.clone();
        seen.extend(measured);
        let trained = j.fitted_gpus(&gpus, &seen);
        let host = j.params(j.reference);
        for &g in &orphans {
            let t = joint::transfer(&trained, &host, dense.effs.get(j.gpus[g]).copied());
            j.set_gpu(g, &t);
        }
    }
    let tasks: Vec<(usize, EngineParams)> = fold
        .held
        .iter()
        .map(|&i| {
            let g = j.gpu_index(prepared[i].gpu.name).expect("GPU");
            (i, j.params(g))
        })
        .collect();
    let sims = super::simulate_tasks(prepared, &tasks, threads)?;
    Ok(fold.held.iter().copied().zip(sims).collect())
}

/// Pairs of runs measuring the same configuration (same GPU, model, ranks, pool, flags and workload).
pub fn repeats(prepared: &[Prepared], runs: &[usize]) -> Vec<(usize, usize)> {
    let key = |p: &Prepared| {
        let s = &p.run.workload.spec;
        format!(
            "{} {} {:?} {} {} | {} {} {} {} {} {:?} {:?}",
            p.gpu.name,
            p.model.name,
            p.run.setup.ranks,
            p.run.pool,
            p.variant().name(),
            s.num_adapters,
            s.alpha,
            s.req_rate,
            s.cv,
            s.duration,
            s.input_range,
            s.output_range
        )
    };
    let mut out = Vec::new();
    for (a, &i) in runs.iter().enumerate() {
        for &j in &runs[a + 1..] {
            if key(&prepared[i]) == key(&prepared[j]) {
                out.push((i, j));
            }
        }
    }
    out
}

/// Per metric, the median and worst |a - b| / mean(a, b) over the repeated pairs.
pub fn floor(prepared: &[Prepared], pairs: &[(usize, usize)]) -> [(f64, f64); 4] {
    std::array::from_fn(|m| {
        let mut e: Vec<f64> = pairs
            .iter()
            .map(|&(i, j)| {
                let (a, b) = (
                    prepared[i].run.measured.get(m),
                    prepared[j].run.measured.get(m),
                );
                (a - b).abs() / (0.5 * (a + b))
            })
            .collect();
        let worst = e.iter().copied().fold(0.0, f64::max);
        (sim_core::metrics::median(&mut e).unwrap_or(f64::NAN), worst)
    })
}

/// One row of the error table.
pub struct Row {
    pub set: String,
    pub runs: usize,
    pub errors: [(f64, f64); 4],
}

pub fn row(set: &str, prepared: &[Prepared], preds: &[(usize, Metrics)]) -> Row {
    let pairs: Vec<(&Prepared, Metrics)> = preds.iter().map(|(i, m)| (&prepared[*i], *m)).collect();
    Row {
        set: set.into(),
        runs: pairs.len(),
        errors: error_summary(&pairs),
    }
}

/// The error table (markdown): per row, median / worst error per metric.
pub fn table(rows: &[Row]) -> String {
    let mut o = String::from(
        "| set | runs | throughput median / worst | mean latency | mean TTFT | latency per output token |\n\
         | --- | --- | --- | --- | --- | --- |\n",
    );
    let pct = |x: f64| {
        if x.is_nan() {
            "-".into()
        } else {
            format!("{:.1}%", 100.0 * x)
        }
    };
    for r in rows {
        let _ = write!(o, "| {} | {} |", r.set, r.runs);
        for (med, worst) in r.errors {
            let _ = write!(o, " {} / {} |", pct(med), pct(worst));
        }
        o.push('\n');
    }
    o
}

/// Per-run CSV of the held-out predictions: fold kind, fold, run, metric, measured, predicted, error.
pub fn csv(prepared: &[Prepared], preds: &[(Kind, String, Predictions)]) -> String {
    let mut o = String::from("kind,fold,run,metric,measured,predicted,rel_error\n");
    for (kind, fold, p) in preds {
        for (i, m) in p {
            for (k, name) in Metrics::NAMES.iter().enumerate() {
                let meas = prepared[*i].run.measured.get(k);
                let _ = writeln!(
                    o,
                    "{},\"{}\",\"{}\",{name},{meas:.6},{:.6},{:.6}",
                    kind.name(),
                    fold,
                    prepared[*i].run.name(),
                    m.get(k),
                    rel(m.get(k), meas)
                );
            }
        }
    }
    o
}
