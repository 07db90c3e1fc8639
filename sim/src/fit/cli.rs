//! `sim fit` (the joint fit: writes the engine profiles, the parameter table and the fit report),
//! `sim fit --validate` (also the held-out errors), `sim fit report` (simulate every run with the committed
//! profiles: what CI regenerates) and `sim fit compose` (a profile for a GPU without runs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use super::identify::{self, Identification};
use super::joint::{self, DenseTables, Joint};
use super::lm::Problem;
use super::report::{self, error_summary};
use super::validate::{self, Kind, Predictions};
use super::{Metrics, Prepared, data, prepare, simulate_all};
use sim_core::cost::fitted::{self, EngineParams, EngineProfile};
use sim_core::error::{Error, Result};
use sim_core::model::{GpuSpec, ModelSpec};

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
    /// A profile for a GPU (and model) without measured runs: the joint fit's host terms, the fitted GPUs'
    /// mean efficiencies on its datasheet, Vidur's dense table where shipped
    Compose(super::compose::ComposeArgs),
}

#[derive(Args, Clone, Debug)]
pub struct FitOpts {
    /// Measured runs: folders each with a setups.json and the JSONL files it lists
    #[arg(long, value_name = "DIR", num_args = 1.., default_values = ["calibrate/data/slora", "calibrate/data/slora-variants"])]
    pub data: Vec<PathBuf>,
    /// Vidur's operator profiles (mlp_llama-2-7b_<gpu>.csv): measured dense layers and the efficiencies
    /// they imply
    #[arg(long, default_value = "calibrate/data/vidur", value_name = "DIR")]
    pub vidur: PathBuf,
    /// S-LoRA's runs of other schedulers, with runs.json (sim fit report simulates them against their FIFO
    /// runs: the policy-effect report, effect_slora.*)
    #[arg(long, default_value = super::effect::DATA, value_name = "DIR")]
    pub variants: PathBuf,
    /// Where the profiles are written (sim fit) or read (sim fit report): slora-<gpu>-<model>.json
    #[arg(long, default_value = "calibrate/profiles", value_name = "DIR")]
    pub profiles: PathBuf,
    /// Report folder: fit_slora.{csv,md,png,svg}, fit_params.md, fit_validation.{md,csv}
    #[arg(long, default_value = "plots", value_name = "DIR")]
    pub report_dir: PathBuf,
    /// Levenberg-Marquardt iterations (Jacobians) at most
    #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub iters: usize,
    /// Starting points: the start and perturbations of the best point found (the simulated metrics jump
    /// where a batch changes shape, so a descent can stall)
    #[arg(long, default_value_t = 3, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub starts: usize,
    /// Bootstrap replicates stored as the profiles' plausible set
    #[arg(long, default_value_t = 16, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(0)))]
    pub members: usize,
    /// Threads simulating runs [default: all cores]
    #[arg(long, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub threads: Option<usize>,
    /// Do not write profiles (report the fit only)
    #[arg(long)]
    pub dry_run: bool,
    /// Also validate where the model was not fitted: leave one suite / setting / GPU / model out, refit,
    /// predict (fit_validation.{md,csv}; the errors go into the profiles). Several times the fit's time
    #[arg(long)]
    pub validate: bool,
    /// Jacobians per held-out refit (each starts from the full fit)
    #[arg(long, default_value_t = 2, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub validate_iters: usize,
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

/// Every run of the data folders, prepared, with the measured dense tables attached.
fn load(opts: &FitOpts) -> Result<(Vec<Prepared>, DenseTables)> {
    let mut runs = Vec::new();
    for d in &opts.data {
        runs.extend(data::load(d)?);
    }
    let mut prepared = prepare(&runs)?;
    let mut gpus: Vec<&'static str> = prepared.iter().map(|p| p.gpu.name).collect();
    gpus.push("a40");
    gpus.sort();
    gpus.dedup();
    let dense = DenseTables::load(&opts.vidur, &gpus)?;
    for p in &mut prepared {
        p.dense = dense.for_run(p.gpu.name, p.model);
    }
    Ok((prepared, dense))
}

fn group_name(p: &Prepared) -> (String, String) {
    (p.gpu.name.to_string(), p.model.name.to_string())
}

fn profile_path(dir: &Path, (gpu, model): &(String, String)) -> PathBuf {
    dir.join(format!("slora-{gpu}-{model}.json"))
}

fn bar(len: u64, prefix: &str) -> indicatif::ProgressBar {
    let b = indicatif::ProgressBar::new(len);
    b.set_style(
        indicatif::ProgressStyle::with_template(
            "{prefix} [{elapsed_precise}] {bar:30} {pos}/{len} runs simulated {msg}",
        )
        .expect("template"),
    );
    b.set_prefix(prefix.to_string());
    b
}

/// The fit's set-up: the GPUs, the start, the free parameters, the measured and fixed ones.
pub struct Setup {
    pub start: Joint,
    pub free: Vec<usize>,
    pub measured: Vec<usize>,
    pub fixed: Vec<usize>,
}

pub fn setup(prepared: &[Prepared], fit: &[usize], dense: &DenseTables) -> Setup {
    let mut gpus: Vec<&'static str> = fit.iter().map(|&i| prepared[i].gpu.name).collect();
    gpus.sort();
    gpus.dedup();
    let counts: Vec<usize> = gpus
        .iter()
        .map(|g| fit.iter().filter(|&&i| prepared[i].gpu.name == *g).count())
        .collect();
    let mut start = Joint::start(&gpus, &counts);
    let mut measured = Vec::new();
    for (g, name) in gpus.iter().enumerate() {
        if let Some(&(ce, me)) = dense.effs.get(name) {
            let (kc, km) = (
                start.index(joint::COMPUTE_EFF, g),
                start.index(joint::MEM_EFF, g),
            );
            start.values[kc] = ce;
            start.values[km] = me;
            measured.extend([kc, km]);
        }
    }
    let fixed = vec![start.index(joint::HOST_FACTOR, start.reference)];
    let free = (0..start.len())
        .filter(|k| !measured.contains(k) && !fixed.contains(k))
        .collect();
    Setup {
        start,
        free,
        measured,
        fixed,
    }
}

fn fit_all(opts: &FitOpts) -> Result<()> {
    let threads = threads(opts);
    let (prepared, dense) = load(opts)?;
    let fit: Vec<usize> = (0..prepared.len())
        .filter(|&i| prepared[i].run.setup.fit)
        .collect();
    let s = setup(&prepared, &fit, &dense);
    let t0 = std::time::Instant::now();
    let cpu0 = cpu_seconds();
    let b = bar(0, "joint fit");
    b.set_length((opts.iters as u64 + 2) * 14 * fit.len() as u64);
    let problem = Problem {
        prepared: &prepared,
        runs: fit.clone(),
        free: s.free.clone(),
        threads,
        step: 0.05,
        rounds: 4,
        progress: Some(&b),
    };
    let sol = problem.solve_multi(s.start.clone(), opts.iters, opts.starts)?;
    b.set_message("identification");
    let id = identify::identify(&problem, &sol, &s.measured, &s.fixed, opts.members)?;
    b.finish_and_clear();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let in_fit: Vec<(&Prepared, Metrics)> = fit
        .iter()
        .map(|&i| &prepared[i])
        .zip(sol.sim.iter().copied())
        .collect();
    eprintln!(
        "joint fit: {} runs, {} parameters free ({} exercised), {} Jacobians, {} runs simulated, loss {:.4}, \
         {wall:.0} s wall / {cpu:.0} s CPU on {threads} threads; {}",
        fit.len(),
        s.free.len(),
        sol.columns.len(),
        sol.iterations,
        sol.simulations,
        sol.loss,
        errors_line(&error_summary(&in_fit))
    );
    // Every run (fitted or not) with its GPU's best parameters.
    let params: Vec<EngineParams> = prepared
        .iter()
        .map(|p| {
            sol.joint
                .params(sol.joint.gpu_index(p.gpu.name).expect("a fitted GPU"))
        })
        .collect();
    let sim = simulate_all(&prepared, &params, threads)?;
    let validation = if opts.validate {
        Some(validate_all(
            opts, &prepared, &fit, &sol.joint, &s, &dense, &sim, threads,
        )?)
    } else {
        None
    };
    let stats = json!({
        "runs_fitted": fit.len(),
        "parameters_free": s.free.len(),
        "jacobians": sol.iterations,
        "runs_simulated": sol.simulations,
        "loss": sol.loss,
        "residual_variance": id.s2,
        "wall_s": wall,
        "cpu_s": cpu,
        "threads": threads,
        "member_loss": id.member_loss,
    });
    if !opts.dry_run {
        write_profiles(
            opts,
            &prepared,
            &sim,
            &sol.joint,
            &id,
            &dense,
            &stats,
            validation.as_ref(),
        )?;
    }
    let dir = &opts.report_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let md = params_markdown(&id, &stats);
    write(&dir.join("fit_params.md"), &md)?;
    print!("{md}");
    write_report(opts, &prepared, &sim)
}

#[allow(clippy::too_many_arguments)]
fn validate_all(
    opts: &FitOpts,
    prepared: &[Prepared],
    fit: &[usize],
    full: &Joint,
    s: &Setup,
    dense: &DenseTables,
    sim: &[Metrics],
    threads: usize,
) -> Result<Validation> {
    let folds = validate::folds(prepared, fit);
    let b = bar(
        folds.len() as u64 * (opts.validate_iters as u64 + 1) * 12 * fit.len() as u64,
        "validation",
    );
    let mut preds: Vec<(Kind, String, Predictions)> = Vec::new();
    for f in &folds {
        b.set_message(format!("{} {}", f.kind.name(), f.name));
        let p = validate::run_fold(
            prepared,
            fit,
            f,
            full,
            &s.free,
            &s.measured,
            dense,
            threads,
            opts.validate_iters,
            Some(&b),
        )?;
        preds.push((f.kind, f.name.clone(), p));
    }
    b.finish_and_clear();
    let in_sample: Predictions = fit.iter().map(|&i| (i, sim[i])).collect();
    let pairs = validate::repeats(prepared, fit);
    let floor = validate::floor(prepared, &pairs);
    let mut rows = vec![validate::row(
        "in-sample (every fitted run)",
        prepared,
        &in_sample,
    )];
    for kind in [Kind::Suite, Kind::Setting, Kind::Gpu, Kind::Model] {
        let all: Predictions = preds
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .flat_map(|(_, _, p)| p.iter().copied())
            .collect();
        if !all.is_empty() {
            rows.push(validate::row(kind.name(), prepared, &all));
        }
    }
    rows.push(validate::Row {
        set: format!("repeatability floor ({} pairs measured twice)", pairs.len()),
        runs: pairs.len(),
        errors: floor,
    });
    let mut detail = Vec::new();
    for (kind, name, p) in &preds {
        detail.push(validate::row(
            &format!("{} {name}", kind.name()),
            prepared,
            p,
        ));
    }
    let dir = &opts.report_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let mut md = String::from(
        "Relative error of the simulated metric against S-LoRA's measurement, median / worst over the runs, \
         where the model was fitted (in-sample) and where the runs were held out of the fit (each fold refit \
         without them; a GPU without runs takes the transfer rule's parameters), beside the repeatability \
         floor (the same configuration measured twice). Regenerate: `sim fit --validate`.\n\n",
    );
    md += &validate::table(&rows);
    md += "\n<details><summary>Per fold</summary>\n\n";
    md += &validate::table(&detail);
    md += "\n</details>\n";
    for (title, body) in super::report::extra_sections(prepared) {
        md += &format!("\n## {title}\n\n{body}\n");
    }
    write(&dir.join("fit_validation.md"), &md)?;
    write(
        &dir.join("fit_validation.csv"),
        &validate::csv(prepared, &preds),
    )?;
    print!("{}", validate::table(&rows));
    Ok(Validation { rows, preds, floor })
}

pub struct Validation {
    pub rows: Vec<validate::Row>,
    pub preds: Vec<(Kind, String, Predictions)>,
    pub floor: [(f64, f64); 4],
}

fn errors_json(e: &[(f64, f64); 4], runs: usize) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("runs".into(), json!(runs));
    for (i, name) in Metrics::NAMES.iter().enumerate() {
        o.insert((*name).into(), json!({"median": e[i].0, "worst": e[i].1}));
    }
    Value::Object(o)
}

/// The validation that applies to runs selected by `sel`, per fold kind.
fn validation_json(
    v: &Validation,
    prepared: &[Prepared],
    sim: &[Metrics],
    sel: &dyn Fn(&Prepared) -> bool,
) -> Value {
    let mut o = serde_json::Map::new();
    let ins: Vec<(&Prepared, Metrics)> = prepared
        .iter()
        .zip(sim)
        .filter(|(p, _)| p.run.setup.fit && sel(p))
        .map(|(p, m)| (p, *m))
        .collect();
    if !ins.is_empty() {
        o.insert(
            "in_sample".into(),
            errors_json(&error_summary(&ins), ins.len()),
        );
    }
    for kind in [Kind::Suite, Kind::Setting, Kind::Gpu, Kind::Model] {
        let rows: Vec<(&Prepared, Metrics)> = v
            .preds
            .iter()
            .filter(|(k, _, _)| *k == kind)
            .flat_map(|(_, _, p)| p.iter())
            .filter(|(i, _)| sel(&prepared[*i]))
            .map(|(i, m)| (&prepared[*i], *m))
            .collect();
        if !rows.is_empty() {
            o.insert(
                kind.name().replace('-', "_").to_lowercase(),
                errors_json(&error_summary(&rows), rows.len()),
            );
        }
    }
    o.insert("repeatability_floor".into(), errors_json(&v.floor, 0));
    Value::Object(o)
}

#[allow(clippy::too_many_arguments)]
fn write_profiles(
    opts: &FitOpts,
    prepared: &[Prepared],
    sim: &[Metrics],
    joint: &Joint,
    id: &Identification,
    dense: &DenseTables,
    stats: &Value,
    validation: Option<&Validation>,
) -> Result<()> {
    std::fs::create_dir_all(&opts.profiles)
        .map_err(|e| Error::internal(format!("{}: {e}", opts.profiles.display())))?;
    let mut groups: Vec<(String, String)> = prepared.iter().map(group_name).collect();
    groups.sort();
    groups.dedup();
    let files: Vec<String> = {
        let mut f: Vec<String> = prepared.iter().map(|p| p.run.file.clone()).collect();
        f.dedup();
        f
    };
    let unpinned = id.unpinned();
    let provenance = |extra: Value| {
        json!({
            "tool": format!("sim fit {}", env!("CARGO_PKG_VERSION")),
            "data": "S-LoRA's measured end-to-end runs: github.com/S-LoRA/S-LoRA commit c1ddf48, benchmarks/ \
                     (Apache-2.0), copied in calibrate/data/slora and calibrate/data/slora-variants (the scheduler \
                     variants' runs excluded)",
            "files": files,
            "engine": "S-LoRA's engine in the simulator (double-copy loads, MBGMM + BGMV kernels as dispatched, \
                       batch_max_tokens, the 10 ms idle poll), each run with its own flags (--no-lora-compute, \
                       --bmm, --no-mem-pool) and pool",
            "workload": "each run's exact requests (benchmarks/trace.py, numpy's stream reproduced), prompt \
                         tokens = words + 2 (BOS and a trailing space)",
            "method": "one joint fit: host terms shared by every GPU (a host factor per machine, the A10G's = 1), \
                       efficiencies per GPU shared by every model; Levenberg-Marquardt over bounded logit \
                       coordinates, finite-difference Jacobians; objective: sum over runs of weighted squared log \
                       errors (throughput 4, latency 1, TTFT 1, per output token 0.5); bounds from physics only, no \
                       prior. Dense efficiencies of GPUs with Vidur tables measured, not fitted",
            "identification": "95% intervals from the curvature (Laplace, residual variance as noise); members: \
                               a linearised bootstrap over runs (damped Gauss-Newton step per replicate)",
            "unpinned": unpinned,
            "fit": stats,
            "commit": crate::experiment::sweep::git_commit(),
            "detail": extra,
        })
    };
    for key in &groups {
        let g = joint.gpu_index(&key.0).expect("a fitted GPU");
        let sel = |p: &Prepared| group_name(p) == *key;
        let pairs: Vec<(&Prepared, Metrics)> = prepared
            .iter()
            .zip(sim)
            .filter(|(p, _)| sel(p))
            .map(|(p, m)| (p, *m))
            .collect();
        let in_fit: Vec<(&Prepared, Metrics)> = pairs
            .iter()
            .filter(|(p, _)| p.run.setup.fit)
            .copied()
            .collect();
        let e = error_summary(&in_fit);
        let model = ModelSpec::by_name(&key.1)?;
        let profile = EngineProfile {
            schema: fitted::SCHEMA.into(),
            version: fitted::VERSION,
            gpu: key.0.clone(),
            model: key.1.clone(),
            params: joint.params(g),
            lora_kernels: "slora".into(),
            dense_table: dense.for_run(&key.0, model).map(|t| fitted::monotone(&t)),
            ranges: Some(id.ranges_json(joint, Some(g))),
            members: id.members.iter().map(|m| m.params(g)).collect(),
            validation: validation.map(|v| validation_json(v, prepared, sim, &sel)),
            provenance: provenance(json!({
                "dense_layers": dense.tables.contains_key(key.0.as_str()).then(|| format!(
                    "Vidur's measured operator times on this GPU ({}), made monotone",
                    joint::vidur_file(&opts.vidur, &key.0).map(|p| p.display().to_string()).unwrap_or_default()
                )),
            })),
            fit: Some(json!({
                "median_abs_error": {
                    "throughput": e[0].0, "latency": e[1].0, "ttft": e[2].0, "per_output_token": e[3].0,
                },
                "worst_abs_error": {
                    "throughput": e[0].1, "latency": e[1].1, "ttft": e[2].1, "per_output_token": e[3].1,
                },
                "runs": report::runs_json(&pairs, true),
            })),
        };
        let path = profile_path(&opts.profiles, key);
        write(&path, &profile.to_json())?;
        eprintln!("wrote {}", path.display());
    }
    // The paper's GPU, without runs: the transfer rule (the GPU-out validation is its error), its machine
    // terms anchored on the paper's Fig. 2 (Llama-7B; the same machine for 13B).
    let compose_a40 = |model: &str| {
        composed(
            joint,
            &id.members,
            &id.exercised(),
            Some(id.ranges_json(joint, None)),
            dense,
            "a40",
            model,
            &opts.vidur,
        )
    };
    let machines: Vec<f64> = (0..joint.gpus.len())
        .map(|g| joint.params(g).host_factor)
        .collect();
    let anchoring = super::anchor::anchor_profile(
        &compose_a40("llama-7b")?,
        &super::anchor::Fig2::paper(),
        &machines,
    )?;
    for model in ["llama-7b", "llama-13b"] {
        let mut p = compose_a40(model)?;
        anchoring.apply(&mut p);
        p.validation = validation.map(|v| {
            let mut o = validation_json(v, prepared, sim, &|_| false);
            let all: Vec<(&Prepared, Metrics)> = v
                .preds
                .iter()
                .filter(|(k, _, _)| *k == Kind::Gpu)
                .flat_map(|(_, _, p)| p.iter())
                .map(|(i, m)| (&prepared[*i], *m))
                .collect();
            o.as_object_mut().expect("object").insert(
                "applies".into(),
                json!("GPU-out: no run on this GPU; the error of the same transfer rule on each measured GPU held out"),
            );
            o.as_object_mut().expect("object").insert("gpu_out".into(), errors_json(&error_summary(&all), all.len()));
            o
        });
        p.provenance = provenance(p.provenance.clone());
        let path = opts.profiles.join(format!("a40-{model}.json"));
        write(&path, &p.to_json())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

/// The profile of `gpu` x `model` by the transfer rule from the joint fit (each member transferred from
/// the same member of every fitted GPU).
#[allow(clippy::too_many_arguments)]
pub fn composed(
    joint: &Joint,
    members: &[Joint],
    seen: &[usize],
    ranges: Option<Value>,
    dense: &DenseTables,
    gpu: &str,
    model: &str,
    vidur: &Path,
) -> Result<EngineProfile> {
    let g = GpuSpec::by_name(gpu)?;
    let m = ModelSpec::by_name(model)?;
    let t = |j: &Joint| {
        let all: Vec<usize> = (0..j.gpus.len()).collect();
        joint::transfer(
            &j.fitted_gpus(&all, seen),
            &j.params(j.reference),
            dense.effs.get(g.name).copied(),
        )
    };
    Ok(EngineProfile {
        schema: fitted::SCHEMA.into(),
        version: fitted::VERSION,
        gpu: g.name.into(),
        model: m.name.into(),
        params: t(joint),
        lora_kernels: "slora".into(),
        dense_table: dense.for_run(g.name, m).map(|t| fitted::monotone(&t)),
        ranges,
        members: members.iter().map(t).collect(),
        validation: None,
        provenance: json!({
            "composed": format!(
                "no S-LoRA run on {gpu}: the joint fit's host terms on the reference machine (host factor 1), each \
                 efficiency the mean of the fitted GPUs' (logit), applied to {gpu}'s datasheet ({:.0} TFLOP/s fp16, \
                 {:.0} GB/s, PCIe {:.0} GB/s){}",
                g.fp16_flops / 1e12, g.mem_bw / 1e9, g.pcie_bw / 1e9,
                match (dense.effs.get(g.name), joint::vidur_file(vidur, gpu)) {
                    (Some((ce, me)), Some(f)) => format!(
                        "; dense layers from Vidur's measured operator times ({}: github.com/microsoft/vidur commit \
                         7d47513, MIT; per layer the medians of the linear layers, norms, RoPE, activation and two \
                         residual adds, x layers, plus the embedding), made monotone; the efficiencies they imply \
                         (compute {ce:.2}, memory {me:.2}) for other shapes",
                        f.display()
                    ),
                    _ => String::new(),
                }
            ),
        }),
        fit: None,
    })
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|e| Error::internal(format!("{}: {e}", path.display())))
}

fn params_markdown(id: &Identification, stats: &Value) -> String {
    let mut md = format!(
        "The joint fit's parameters (`sim fit`): best value, 95% interval from the curvature, range over the \
         {} bootstrap members (runs resampled), and whether the runs pin each (within a factor 2 both ways). \
         Residual variance per degree of freedom {:.4}; {} runs fitted in {:.0} s wall / {:.0} s CPU on {} \
         threads.\n\n",
        id.members.len().saturating_sub(1),
        id.s2,
        stats["runs_fitted"],
        stats["wall_s"].as_f64().unwrap_or(0.0),
        stats["cpu_s"].as_f64().unwrap_or(0.0),
        stats["threads"]
    );
    md += &id.markdown();
    let u = id.unpinned();
    if !u.is_empty() {
        md += &format!("\nNot pinned by the runs: {}.\n", u.join(", "));
    }
    md
}

fn write_report(opts: &FitOpts, prepared: &[Prepared], sim: &[Metrics]) -> Result<()> {
    let rows: Vec<(String, &Prepared, Metrics)> = prepared
        .iter()
        .zip(sim)
        .map(|(p, s)| {
            let (g, m) = group_name(p);
            (format!("{g}:{m}"), p, *s)
        })
        .collect();
    let dir = &opts.report_dir;
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    write(&dir.join("fit_slora.csv"), &report::csv(&rows))?;
    write(&dir.join("fit_slora.md"), &report::markdown(&rows))?;
    report::plot(&rows, &dir.join("fit_slora"))?;
    print!("{}", report::markdown(&rows));
    Ok(())
}

/// `sim fit report`: every run simulated with its (GPU, model) profile from --profiles.
fn report_only(opts: &FitOpts) -> Result<()> {
    let threads = threads(opts);
    let (prepared, _) = load(opts)?;
    let mut cache: BTreeMap<(String, String), EngineProfile> = BTreeMap::new();
    let mut params = Vec::new();
    let mut prepared = prepared;
    for p in &mut prepared {
        let key = group_name(p);
        if !cache.contains_key(&key) {
            let path = profile_path(&opts.profiles, &key);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Error::msg(format!("{}: {e} (run sim fit first)", path.display())))?;
            cache.insert(
                key.clone(),
                EngineProfile::parse(&text, &path.display().to_string())?,
            );
        }
        let prof = &cache[&key];
        p.dense = prof.dense_table.clone();
        params.push(prof.params);
    }
    let sim = simulate_all(&prepared, &params, threads)?;
    write_report(opts, &prepared, &sim)?;
    // The policy effect: S-LoRA's other schedulers against its FIFO runs, on the same profiles.
    let md = super::effect::report(&opts.variants, &opts.profiles, &opts.report_dir, threads)?;
    print!("\n{md}");
    Ok(())
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

/// CPU seconds this process has used (user + system), from /proc; 0 where there is none.
fn cpu_seconds() -> f64 {
    let Ok(s) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the command name's closing parenthesis: utime and stime are the 12th and 13th.
    let rest = s.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let tick = 100.0;
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / tick
}
