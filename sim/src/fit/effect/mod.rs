//! Does the simulator predict a scheduler's measured effect? S-LoRA's repository measured its real engine
//! under other schedulers (early abort, PETS, and a file labelled LIFO) on the very workloads of its FIFO
//! runs (`calibrate/data/slora-schedulers`, never fitted on). Each run is replayed with its exact requests
//! under the same scheduler in the simulator, on the committed engine profile (fitted to FIFO runs only),
//! and so is its FIFO counterpart: the effect (variant against FIFO) the simulator predicts is set against
//! the one S-LoRA measured.
//!
//! The metrics are S-LoRA's benchmark client's (`benchmarks/run_exp.py: get_res_stats`): an aborted request
//! is one whose stream carried `"finished": -1`. It counts in `num_abort` and nowhere else: throughput is
//! the finished requests over the wall time to the last response (an aborted one's included), latencies
//! are means over finished requests, attainment (TTFT < 6 s, `slora/utils/metric.py`) is over all requests
//! with an aborted one scoring 0. The server answers an aborted request late: the HTTP handler waits on its
//! request's event with a 5 s timeout and only then notices the request is gone
//! (`slora/server/httpserver/manager.py`), so the client sees the abort at the first 5 s tick after it.
//!
//! `data` reads the manifest and the measured runs, `client` computes S-LoRA's client metrics of a simulated
//! run, this file pairs each variant run with its FIFO counterpart and simulates both, `render` writes the
//! CSV, the markdown table and the figure.

use std::path::{Path, PathBuf};

use crate::runner::{RunArgs, RunConfig};
use sim_core::engine::Simulated;
use sim_core::error::{Error, Result};
use sim_core::workload::Workload;
use sim_core::workload::slora::{SloraSource, SloraWorkloadSpec};

mod client;
mod data;
mod render;

pub use client::{Client, client};
pub use data::Run;
use data::{Setting, load};
pub use render::{csv, markdown, plot, section};

/// Where the runs and their manifest are.
pub const DATA: &str = "calibrate/data/slora-schedulers";
/// The aim: a predicted effect within this many percentage points of the measured one.
pub const AIM_POINTS: f64 = 5.0;

pub struct Row {
    pub variant: Run,
    pub fifo: Option<Run>,
    /// The counterpart is from another campaign than the variant.
    pub cross: bool,
    /// The same configuration's FIFO run in the other campaign, if any: the measured effect against it shows
    /// how much of an effect the FIFO baseline's own campaign-to-campaign spread carries.
    pub alt: Option<Run>,
    pub sim_variant: Client,
    pub sim_fifo: Client,
    /// The LIFO file: the run simulated under the scheduler its launch command names.
    pub sim_as_launched: Option<(String, Client)>,
    /// An abort run: simulated without the queue's order switch (always oldest first), a diagnosis of the
    /// campaigns (never the prediction).
    pub sim_no_switch: Option<Client>,
    pub profile: String,
}

impl Row {
    /// Effect of metric `i`, in percent: the change of a ratio metric, the change of a share in points.
    fn effect(ratio: bool, var: f64, fifo: f64) -> f64 {
        if ratio {
            100.0 * (var / fifo - 1.0)
        } else {
            100.0 * (var - fifo)
        }
    }

    /// (measured, predicted) effect of metric `i`; `None` without a FIFO counterpart.
    pub fn effects(&self, i: usize) -> Option<(f64, f64)> {
        let f = self.fifo.as_ref()?;
        let ratio = Client::METRICS[i].1;
        Some((
            Self::effect(ratio, self.variant.measured.get(i), f.measured.get(i)),
            Self::effect(ratio, self.sim_variant.get(i), self.sim_fifo.get(i)),
        ))
    }

    /// Predicted minus measured effect, points.
    pub fn error(&self, i: usize) -> Option<f64> {
        self.effects(i).map(|(m, p)| p - m)
    }

    /// The measured effect of metric `i` against the other campaign's FIFO run.
    pub fn alt_effect(&self, i: usize) -> Option<f64> {
        let f = self.alt.as_ref()?;
        let ratio = Client::METRICS[i].1;
        Some(Self::effect(
            ratio,
            self.variant.measured.get(i),
            f.measured.get(i),
        ))
    }

    /// Whether the predicted effect of every aimed metric is within the aim of the effect measured against
    /// one of the campaigns' FIFO runs (the same one for all metrics).
    pub fn within_either(&self) -> bool {
        let within = |alt: bool| {
            [0, 1, 3].into_iter().all(|i| {
                let m = if alt {
                    self.alt_effect(i)
                } else {
                    self.effects(i).map(|e| e.0)
                };
                match (m, self.effects(i)) {
                    (Some(m), Some((_, p))) => (p - m).abs() <= AIM_POINTS,
                    _ => false,
                }
            })
        };
        within(false) || within(true)
    }

    /// The largest error, in points, over the aimed metrics (throughput, mean latency, aborted share).
    pub fn worst(&self) -> Option<(usize, f64)> {
        [0, 1, 3]
            .into_iter()
            .filter_map(|i| self.error(i).map(|e| (i, e)))
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
    }

    pub fn label(&self) -> String {
        let s = match self.variant.scheduler.as_str() {
            "slora-abort" => "abort",
            "slora-pets" => "PETS",
            x => x,
        };
        let v = &self.variant;
        format!(
            "{s} {} ({} {}) {}",
            v.setting,
            v.suite().replace('_', " "),
            v.campaign,
            v.config()
        )
    }
}

fn profile_path(dir: &Path, s: &Setting) -> PathBuf {
    dir.join(format!("slora-{}-{}.json", s.gpu, s.model))
}

/// The configuration and workload of one run of `setting` (the scheduler is set per simulation).
fn prepare(s: &Setting, spec: &SloraWorkloadSpec, profile: &Path) -> Result<(RunConfig, Workload)> {
    let mut a = RunArgs::defaults();
    a.workload = Some(
        SloraSource {
            spec: spec.clone(),
            prompt_extra: 2,
        }
        .describe(),
    );
    a.gpu = s.gpu.clone();
    a.model = s.model.clone();
    a.ranks = s.ranks.clone();
    a.pool_tokens = Some(s.pool);
    a.profile = Some(profile.to_path_buf());
    let cfg = a.resolve()?;
    let trace = cfg.load_trace()?;
    let (_, w) = sim_core::run::workload(&cfg, trace)?;
    Ok((cfg, w))
}

fn simulate(cfg: &mut RunConfig, w: &Workload, scheduler: &str) -> Result<Client> {
    cfg.scheduler = scheduler.to_string();
    let cost = cfg.cost.clone();
    let mut clock = Simulated(cost.as_ref());
    let ex = sim_core::run::execute(cfg, w, &mut clock)?;
    Ok(client(w, &ex.output))
}

/// Simulates every variant run, its FIFO counterpart and (the LIFO file) its launched scheduler, on the
/// profiles in `profiles`, on `threads` threads.
pub fn rows(data_dir: &Path, profiles: &Path, threads: usize) -> Result<Vec<Row>> {
    let d = load(data_dir)?;
    type Job = (Run, Option<Run>, bool, Option<Run>, Option<String>);
    let mut jobs: Vec<Job> = Vec::new();
    for (f, runs) in d.files.iter().zip(&d.runs) {
        if f.scheduler == "fifo" {
            continue;
        }
        for r in runs {
            let mut pair = None;
            for x in &f.fifo {
                let k = d.files.iter().position(|g| &g.file == x).expect("checked");
                if let Some(q) = d.runs[k].iter().find(|q| q.spec == r.spec) {
                    pair = Some(q.clone());
                    break;
                }
            }
            let cross = pair.as_ref().is_some_and(|q| q.campaign != r.campaign);
            let alt = pair.as_ref().and_then(|p| {
                d.files
                    .iter()
                    .zip(&d.runs)
                    .filter(|(g, _)| {
                        g.scheduler == "fifo" && g.setting == r.setting && g.campaign != p.campaign
                    })
                    .find_map(|(_, rs)| rs.iter().find(|q| q.spec == r.spec).cloned())
            });
            jobs.push((r.clone(), pair, cross, alt, f.launched_as.clone()));
        }
    }
    let threads = threads.clamp(1, jobs.len().max(1));
    let chunk = jobs.len().div_ceil(threads).max(1);
    let settings = &d.settings;
    std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|c| {
                sc.spawn(move || -> Result<Vec<Row>> {
                    c.iter()
                        .map(|(r, pair, cross, alt, launched)| {
                            let s = &settings[&r.setting];
                            let path = profile_path(profiles, s);
                            let (mut cfg, w) =
                                prepare(s, &r.spec, &path).map_err(|e| e.context(r.name()))?;
                            let sim_variant = simulate(&mut cfg, &w, &r.scheduler)?;
                            let sim_fifo = simulate(&mut cfg, &w, "fifo")?;
                            let sim_as_launched = match launched {
                                Some(x) if x == "fifo" => Some((x.clone(), sim_fifo)),
                                Some(x) => Some((x.clone(), simulate(&mut cfg, &w, x)?)),
                                None => None,
                            };
                            let sim_no_switch = if r.scheduler == "slora-abort" {
                                Some(simulate(&mut cfg, &w, "slora-abort[switch=false]")?)
                            } else {
                                None
                            };
                            Ok(Row {
                                variant: r.clone(),
                                fifo: pair.clone(),
                                cross: *cross,
                                alt: alt.clone(),
                                sim_variant,
                                sim_fifo,
                                sim_as_launched,
                                sim_no_switch,
                                profile: path.display().to_string(),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(h.join().expect("an effect simulation thread panicked")?);
        }
        Ok(out)
    })
}

/// Simulates every run and writes `effect_slora.{csv,md,png,svg}` into `dir`; returns the markdown.
pub fn report(data_dir: &Path, profiles: &Path, dir: &Path, threads: usize) -> Result<String> {
    let rows = rows(data_dir, profiles, threads)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::internal(format!("{}: {e}", p.display())))
    };
    write("effect_slora.csv", &csv(&rows))?;
    let md = markdown(&rows);
    write("effect_slora.md", &md)?;
    plot(&rows, &dir.join("effect_slora"))?;
    Ok(md)
}
