//! `sim fit` (fit engine profiles to measured runs) and `sim fit report` (simulate every run with the
//! committed profiles and write the report: what CI regenerates).

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::json;

use super::report::{self, error_summary};
use super::{Effort, Mechanisms, Metrics, Prepared, data, fit, prepare, simulate_all};
use sim_core::cost::fitted::{self, EngineParams, EngineProfile};
use sim_core::error::{Error, Result};

#[derive(Args, Debug)]
pub struct FitCmd {
    #[command(subcommand)]
    pub report: Option<FitSub>,
    #[command(flatten)]
    pub opts: FitOpts,
}

#[derive(Subcommand, Debug)]
pub enum FitSub {
    /// Simulate every measured run with the profiles in --profiles and write the report (no fitting)
    Report(FitOpts),
    /// Compose a profile for a GPU without measured runs: dense layers from Vidur's operator times, the
    /// engine's terms from a fitted profile of the same GPU family
    Compose(super::compose::ComposeArgs),
}

#[derive(Args, Clone, Debug)]
pub struct FitOpts {
    /// Measured runs: a folder with setups.json and the JSONL files it lists
    #[arg(long, default_value = "calibrate/data/slora", value_name = "DIR")]
    pub data: PathBuf,
    /// S-LoRA's runs of other schedulers, with runs.json (sim fit report simulates them against their FIFO
    /// runs: the policy-effect report, effect_slora.*)
    #[arg(long, default_value = super::effect::DATA, value_name = "DIR")]
    pub variants: PathBuf,
    /// Where the profiles are written (sim fit) or read (sim fit report): slora-<gpu>-<model>.json
    #[arg(long, default_value = "calibrate/profiles", value_name = "DIR")]
    pub profiles: PathBuf,
    /// Only this group, GPU:MODEL (e.g. a100-80gb:llama-7b)
    #[arg(long, value_name = "GPU:MODEL")]
    pub group: Option<String>,
    /// S-LoRA mechanisms the engine models: all | no-double-copy | no-padded-lora | no-batch-limit |
    /// no-idle-poll (the ablation: refit with one off)
    #[arg(long, default_value = "all")]
    pub mechanisms: String,
    /// Report folder: fit_slora.{csv,md,png,svg}
    #[arg(long, default_value = "plots", value_name = "DIR")]
    pub report_dir: PathBuf,
    /// Nelder-Mead iterations per round
    #[arg(long, default_value_t = 400, allow_negative_numbers = true, value_parser = crate::options::whole::<u64>(crate::options::Range::AtLeast(1)))]
    pub iters: u64,
    /// Restarts from the best point
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(0)))]
    pub restarts: usize,
    /// Threads simulating runs [default: all cores]
    #[arg(long, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub threads: Option<usize>,
    /// Do not write profiles (report the fit only; the ablation uses it)
    #[arg(long)]
    pub dry_run: bool,
    /// Dense layers from a Vidur operator profile (mlp.csv) instead of the roofline term, its times multiplied
    /// by --vidur-scale (e.g. a datasheet ratio when the profile is of a sibling GPU)
    #[arg(long, value_name = "FILE")]
    pub vidur: Option<PathBuf>,
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub vidur_scale: f64,
    /// Also estimate the error on unseen runs: refit without each run in turn and predict it
    /// (leave-one-out; writes fit_slora_cv.csv)
    #[arg(long)]
    pub cross_validate: bool,
}

type Group = ((String, String), Vec<Prepared>);

fn groups(opts: &FitOpts, mech: Mechanisms) -> Result<Vec<Group>> {
    let runs = data::load(&opts.data)?;
    let mut keys: Vec<(String, String)> = runs.iter().map(|r| r.group()).collect();
    keys.dedup();
    keys.sort();
    keys.dedup();
    if let Some(g) = &opts.group {
        let (gpu, model) = g
            .split_once(':')
            .ok_or_else(|| Error::msg(format!("--group must be GPU:MODEL, got '{g}'")))?;
        let k = (gpu.to_string(), model.to_string());
        if !keys.contains(&k) {
            return Err(Error::msg(format!(
                "--group {g}: no measured runs for it in {}",
                opts.data.display()
            )));
        }
        keys = vec![k];
    }
    if !(opts.vidur_scale > 0.0 && opts.vidur_scale.is_finite()) {
        return Err(Error::msg(format!(
            "--vidur-scale must be positive, got {}",
            opts.vidur_scale
        )));
    }
    keys.into_iter()
        .map(|k| {
            let sel: Vec<_> = runs.iter().filter(|r| r.group() == k).cloned().collect();
            let mut prepared = prepare(&sel, mech)?;
            if let Some(path) = &opts.vidur {
                let model = sim_core::model::ModelSpec::by_name(&k.1)?;
                let mut dense = super::compose::vidur_dense(path, model)?;
                for d in &mut dense {
                    d.ms *= opts.vidur_scale;
                }
                for p in &mut prepared {
                    p.dense = Some(dense.clone());
                }
            }
            Ok((k, prepared))
        })
        .collect()
}

fn profile_path(dir: &Path, (gpu, model): &(String, String)) -> PathBuf {
    dir.join(format!("slora-{gpu}-{model}.json"))
}

fn threads(opts: &FitOpts) -> usize {
    opts.threads
        .unwrap_or_else(crate::experiment::sweep::default_threads)
        .max(1)
}

pub fn run(cmd: FitCmd) -> Result<()> {
    match cmd.report {
        Some(FitSub::Report(opts)) => report_only(&opts),
        Some(FitSub::Compose(a)) => super::compose::compose(&a),
        None => fit_all(&cmd.opts),
    }
}

fn fit_all(opts: &FitOpts) -> Result<()> {
    let mech = Mechanisms::parse(&opts.mechanisms)?;
    let groups = groups(opts, mech)?;
    let threads = threads(opts);
    let mut all: Vec<(String, Vec<Prepared>, Vec<Metrics>)> = Vec::new();
    for (key, prepared) in groups {
        let name = format!("{}:{}", key.0, key.1);
        let (fitted_runs, out): (Vec<Prepared>, Vec<Prepared>) =
            prepared.into_iter().partition(|p| p.run.setup.fit);
        let bar = indicatif::ProgressBar::new((opts.iters + 1) * (opts.restarts as u64 + 1) * 2);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {bar:30} {pos} evaluations {msg}",
            )
            .expect("template"),
        );
        bar.set_prefix(name.clone());
        let t0 = std::time::Instant::now();
        let effort = Effort::new(opts.iters, opts.restarts, threads);
        let f = fit(
            &fitted_runs,
            EngineParams::roofline(),
            mech,
            effort,
            Some(&bar),
        )?;
        bar.finish_and_clear();
        if opts.cross_validate {
            cross_validate(opts, &name, &fitted_runs, mech, threads)?;
        }
        let mut everything = fitted_runs;
        everything.extend(out);
        let sim = simulate_all(&everything, &f.params, mech, threads)?;
        let pairs: Vec<(&Prepared, Metrics)> = everything.iter().zip(sim.iter().copied()).collect();
        let in_fit: Vec<(&Prepared, Metrics)> = pairs
            .iter()
            .filter(|(p, _)| p.run.setup.fit)
            .copied()
            .collect();
        let e = error_summary(&in_fit);
        eprintln!(
            "{name}: {} runs fitted in {:.1} s ({} evaluations, {} restarts), loss {:.4}; {}",
            in_fit.len(),
            t0.elapsed().as_secs_f64(),
            f.evaluations,
            f.restarts,
            f.loss,
            errors_line(&e)
        );
        if !opts.dry_run {
            let files: Vec<String> = {
                let mut f: Vec<String> = everything.iter().map(|p| p.run.file.clone()).collect();
                f.dedup();
                f
            };
            let profile = EngineProfile {
                schema: fitted::SCHEMA.into(),
                version: fitted::VERSION,
                gpu: key.0.clone(),
                model: key.1.clone(),
                params: f.params,
                lora_kernels: if mech.padded_lora { "slora" } else { "exact" }.into(),
                dense_table: everything[0].dense.clone(),
                provenance: json!({
                    "dense_layers": opts.vidur.as_ref().map(|v| format!(
                        "Vidur's operator times {} x {} (instead of the dense roofline term)",
                        v.display(), opts.vidur_scale
                    )),
                    "tool": format!("sim fit {}", env!("CARGO_PKG_VERSION")),
                    "data": "S-LoRA's measured end-to-end runs: github.com/S-LoRA/S-LoRA commit c1ddf48, \
                             benchmarks/paper/synthetic/slora/ (Apache-2.0), copied in calibrate/data/slora",
                    "files": files,
                    "engine": format!("S-LoRA's engine in the simulator: {}", mech.describe()),
                    "workload": "each run's exact requests (benchmarks/trace.py, numpy's stream reproduced), \
                                 prompt tokens = words + 2 (BOS and a trailing space)",
                    "method": format!(
                        "Nelder-Mead (argmin) over log times / logit efficiencies of {}; objective: sum over runs of \
                         weighted squared log errors, weights throughput {}, latency {}, TTFT {}, per output token {}; \
                         copy_us fixed",
                        super::FREE.iter().map(|&i| EngineParams::NAMES[i]).collect::<Vec<_>>().join(", "),
                        super::WEIGHTS[0], super::WEIGHTS[1], super::WEIGHTS[2], super::WEIGHTS[3]
                    ),
                    "commit": crate::experiment::sweep::git_commit(),
                }),
                fit: Some(json!({
                    "loss": f.loss,
                    "evaluations": f.evaluations,
                    "median_abs_error": {
                        "throughput": e[0].0, "latency": e[1].0, "ttft": e[2].0, "per_output_token": e[3].0,
                    },
                    "worst_abs_error": {
                        "throughput": e[0].1, "latency": e[1].1, "ttft": e[2].1, "per_output_token": e[3].1,
                    },
                    "runs": report::runs_json(&pairs, true),
                })),
            };
            std::fs::create_dir_all(&opts.profiles)
                .map_err(|e| Error::internal(format!("{}: {e}", opts.profiles.display())))?;
            let path = profile_path(&opts.profiles, &key);
            std::fs::write(&path, profile.to_json())
                .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
            eprintln!("wrote {}", path.display());
        }
        all.push((name, everything, sim));
    }
    write_report(opts, &all)
}

fn write_report(opts: &FitOpts, all: &[(String, Vec<Prepared>, Vec<Metrics>)]) -> Result<()> {
    let rows: Vec<(String, &Prepared, Metrics)> = all
        .iter()
        .flat_map(|(name, ps, sim)| ps.iter().zip(sim).map(move |(p, s)| (name.clone(), p, *s)))
        .collect();
    let dir = &opts.report_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e: std::io::Error| Error::internal(format!("{}: {e}", p.display()))
    };
    let csv = dir.join("fit_slora.csv");
    std::fs::write(&csv, report::csv(&rows)).map_err(io(&csv))?;
    let md = dir.join("fit_slora.md");
    std::fs::write(&md, report::markdown(&rows)).map_err(io(&md))?;
    report::plot(&rows, &dir.join("fit_slora"))?;
    print!("{}", report::markdown(&rows));
    Ok(())
}

fn report_only(opts: &FitOpts) -> Result<()> {
    let mech = Mechanisms::parse(&opts.mechanisms)?;
    let threads = threads(opts);
    let mut all = Vec::new();
    for (key, prepared) in groups(opts, mech)? {
        let path = profile_path(&opts.profiles, &key);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::msg(format!("{}: {e} (run sim fit first)", path.display())))?;
        let p = EngineProfile::parse(&text, &path.display().to_string())?;
        let mut prepared = prepared;
        for q in &mut prepared {
            q.dense = p.dense_table.clone();
        }
        let sim = simulate_all(&prepared, &p.params, mech, threads)?;
        all.push((format!("{}:{}", key.0, key.1), prepared, sim));
    }
    write_report(opts, &all)?;
    // The policy effect: S-LoRA's other schedulers against its FIFO runs, on the same profiles.
    let md = super::effect::report(&opts.variants, &opts.profiles, &opts.report_dir, threads)?;
    print!("\n{md}");
    Ok(())
}

/// Leave-one-out: for each fitted run, fit the others and predict it. Prints and appends to
/// fit_slora_cv.csv the held-out errors.
fn cross_validate(
    opts: &FitOpts,
    name: &str,
    runs: &[Prepared],
    mech: Mechanisms,
    threads: usize,
) -> Result<()> {
    let mut rows: Vec<(&Prepared, Metrics)> = Vec::new();
    let mut csv = String::new();
    for i in 0..runs.len() {
        let rest: Vec<&Prepared> = runs
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, p)| p)
            .collect();
        let effort = Effort::new(opts.iters, 1, threads);
        let f = super::fit_refs(&rest, EngineParams::roofline(), mech, effort, None)?;
        let sim = simulate_all(std::slice::from_ref(&runs[i]), &f.params, mech, 1)?[0];
        for (k, m) in Metrics::NAMES.iter().enumerate() {
            let meas = runs[i].run.measured.get(k);
            csv += &format!(
                "{name},\"{}\",{m},{meas:.6},{:.6},{:.6}\n",
                runs[i].run.name(),
                sim.get(k),
                report::rel(sim.get(k), meas)
            );
        }
        rows.push((&runs[i], sim));
    }
    let e = error_summary(&rows);
    eprintln!(
        "{name}: leave-one-out over {} runs, {}",
        rows.len(),
        errors_line(&e)
    );
    std::fs::create_dir_all(&opts.report_dir)
        .map_err(|e| Error::internal(format!("{}: {e}", opts.report_dir.display())))?;
    let path = opts.report_dir.join("fit_slora_cv.csv");
    let mut text = std::fs::read_to_string(&path).unwrap_or_default();
    if text.is_empty() {
        text = "profile,held_out_run,metric,measured,predicted,rel_error\n".into();
    }
    text += &csv;
    std::fs::write(&path, text).map_err(|e| Error::internal(format!("{}: {e}", path.display())))
}

/// "median / worst error: throughput a% / b%, ..." over the four fitted metrics.
fn errors_line(e: &[(f64, f64)]) -> String {
    let names = ["throughput", "latency", "TTFT", "per output token"];
    let parts: Vec<String> = names
        .iter()
        .zip(e)
        .map(|(n, (med, worst))| format!("{n} {:.1}% / {:.1}%", 100.0 * med, 100.0 * worst))
        .collect();
    format!("median / worst error: {}", parts.join(", "))
}
