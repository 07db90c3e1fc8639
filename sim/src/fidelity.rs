//! `sim fidelity`: how far the simulator is from a real run of the same trace on the same backend.
//!
//! 1. Calibrate: measure the backend's own cost profile (schema v1: prefill, decode, LoRA and adapter-load
//!    points) through the same hooks the engine uses (`run_iteration`, `load`, `release`, `evict`), each point
//!    the median of `--repeats` timed runs (the calibration loop `calibrate` runs too,
//!    `sim_core::calibrate`); written to `DIR/profile.json`.
//! 2. Simulate the trace with that profile (`ProfileCost`), outputs in `DIR/sim/`.
//! 3. Run the trace for real on a fresh backend, outputs in `DIR/real/`.
//! 4. Compare: per request (finished in both), |sim - real| / real of TTFT, mean TBT and E2E, as median and
//!    P90 over requests; and the run's percentiles (P50/P99 TTFT and TBT, mean E2E) and throughput as signed
//!    (sim - real) / real. Printed as a table and written to `DIR/fidelity.csv` (+ per-request values in
//!    `DIR/fidelity_requests.csv` and a sim-vs-real scatter plot `DIR/fidelity.svg` / `.png`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Args;

use crate::backend::{self, BackendSpec};
use crate::runner::{Report, RunArgs, RunConfig, run};
use sim_core::calibrate::{OnClock, Plan, measure};
use sim_core::cost::LoadMethod;
use sim_core::cost::profile::{CostProfile, GpuInfo, ModelInfo, ProfileCost, Provenance};
use sim_core::csv_out::{self, Num, Opt};
use sim_core::engine::Outcome;
use sim_core::engine::{Clock, Simulated, Timed};
use sim_core::error::{Error, Result};
use sim_core::metrics::{Summary, percentile};

#[derive(Args, Clone, Debug)]
pub struct FidelityArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Backend (as `sim real --backend`)
    #[arg(long, default_value = "cpu", value_name = "SPEC")]
    pub backend: String,
    /// Output directory: profile.json, sim/, real/, fidelity.csv, fidelity_requests.csv, fidelity.svg/.png
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Timed repeats per calibration point (the median is kept)
    #[arg(long, default_value_t = 5, allow_negative_numbers = true, value_parser = crate::options::whole::<u32>(crate::options::Range::AtLeast(1)))]
    pub repeats: u32,
}

/// Measures a cost profile of `spec`'s backend for a run of `cfg` (the trace rows give the grid's range).
pub fn calibrate(
    spec: &BackendSpec,
    cfg: &RunConfig,
    rows: &[(u32, u32)],
    repeats: u32,
) -> Result<CostProfile> {
    let mut clock = Timed(backend::build(spec, cfg)?);
    let engine_model = cfg.model;
    let plan = Plan::for_run(cfg, rows, repeats);
    let t = measure(
        &mut OnClock(&mut clock),
        &plan,
        engine_model,
        cfg.engine.pool_slots,
    )?;
    let (model, gpu) = match spec {
        BackendSpec::Cpu(c) => (
            ModelInfo {
                name: "tiny-llama".into(),
                layers: c.layers as u64,
                hidden: c.hidden as u64,
                intermediate: c.intermediate as u64,
                heads: c.heads as u64,
                vocab: c.vocab as u64,
                dtype: "fp32".into(),
            },
            GpuInfo {
                name: format!("cpu ({})", std::env::consts::ARCH),
                memory_bytes: 0,
                driver: None,
                cuda: None,
                compute_capability: None,
            },
        ),
        BackendSpec::Cuda(c) => (
            ModelInfo {
                name: engine_model.name.into(),
                layers: engine_model.layers,
                hidden: engine_model.hidden,
                intermediate: engine_model.intermediate,
                heads: engine_model.heads,
                vocab: engine_model.vocab,
                dtype: c.dtype.clone(),
            },
            GpuInfo {
                name: format!("cuda device {}", c.device),
                memory_bytes: 0,
                driver: None,
                cuda: None,
                compute_capability: None,
            },
        ),
    };
    let profile = CostProfile {
        schema: sim_core::cost::profile::SCHEMA.into(),
        version: sim_core::cost::profile::VERSION,
        gpu,
        model,
        provenance: Provenance {
            date: iso_now(),
            tool: format!("sim fidelity --backend {}", spec.name()),
            method: format!(
                "wall clock (std::time::Instant) around each backend call, median of {} repeats; LoRA = prefill with \
                 adapters minus the same prefill without; adapter loads synchronous, not alongside compute",
                plan.repeats
            ),
            notes: Some(clock.describe()),
            transferred_from: None,
        },
        iteration_overhead_ns: 0,
        prefill: t.prefill,
        decode: t.decode,
        lora: t.lora,
        adapter_load: t.adapter_load,
    };
    profile.validate()?;
    Ok(profile)
}

fn iso_now() -> String {
    let s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = (s / 86_400) as i64;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let t = s % 86_400;
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// One request's latencies in seconds (TBT `None` for a single output token).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Lat {
    pub ttft: f64,
    pub tbt: Option<f64>,
    pub e2e: f64,
}

fn latencies(r: &Report) -> Vec<Option<Lat>> {
    r.workload
        .requests
        .iter()
        .zip(&r.output.records)
        .map(|(q, rec)| {
            (rec.outcome == Outcome::Finished).then(|| Lat {
                ttft: (rec.first_token - q.arrival) as f64 / 1e9,
                tbt: (q.output > 1)
                    .then(|| (rec.finished - rec.first_token) as f64 / 1e9 / (q.output - 1) as f64),
                e2e: (rec.finished - q.arrival) as f64 / 1e9,
            })
        })
        .collect()
}

/// One row of the comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub metric: String,
    /// `per_request_median`, `per_request_p90` (of |sim - real| / real), or `run` (signed (sim - real) / real).
    pub kind: &'static str,
    pub sim: f64,
    pub real: f64,
    pub error: f64,
    /// Requests behind a per-request row.
    pub n: usize,
}

/// The comparison of a simulated and a real run of the same trace and settings.
pub struct Comparison {
    pub rows: Vec<Row>,
    /// Per request: (id, sim, real) latencies, for requests finished in both.
    pub requests: Vec<(u32, Lat, Lat)>,
    pub requests_total: usize,
}

pub fn compare(sim: &Report, real: &Report) -> Result<Comparison> {
    if sim.workload.requests.len() != real.workload.requests.len() {
        return Err(Error::internal(
            "the simulated and real runs have different requests",
        ));
    }
    let (ls, lr) = (latencies(sim), latencies(real));
    let requests: Vec<(u32, Lat, Lat)> = ls
        .iter()
        .zip(&lr)
        .enumerate()
        .filter_map(|(i, (s, r))| Some((i as u32, (*s)?, (*r)?)))
        .collect();
    let mut rows = Vec::new();
    type Get = fn(&Lat) -> Option<f64>;
    let metrics: [(&str, Get); 3] = [
        ("ttft", |l| Some(l.ttft)),
        ("tbt_mean", |l| l.tbt),
        ("e2e", |l| Some(l.e2e)),
    ];
    for (name, get) in metrics {
        let mut errs: Vec<f64> = requests
            .iter()
            .filter_map(|(_, s, r)| {
                let (s, r) = (get(s)?, get(r)?);
                (r > 0.0).then(|| (s - r).abs() / r)
            })
            .collect();
        errs.sort_by(f64::total_cmp);
        for (kind, q) in [("per_request_median", 0.5), ("per_request_p90", 0.9)] {
            rows.push(Row {
                metric: name.into(),
                kind,
                sim: f64::NAN,
                real: f64::NAN,
                error: percentile(&errs, q),
                n: errs.len(),
            });
        }
    }
    type Of = fn(&Summary) -> Option<f64>;
    let run_metrics: [(&str, Of); 10] = [
        ("ttft_p50_s", |s| s.ttft_p50_s),
        ("ttft_p99_s", |s| s.ttft_p99_s),
        ("tbt_p50_s", |s| s.tbt_p50_s),
        ("tbt_p99_s", |s| s.tbt_p99_s),
        ("e2e_mean_s", |s| s.e2e_mean_s),
        ("e2e_p99_s", |s| s.e2e_p99_s),
        ("throughput_rps", |s| s.throughput_rps),
        ("throughput_output_tps", |s| s.throughput_output_tps),
        ("load_stall_s", |s| Some(s.load_stall_s)),
        ("simulated_s", |s| Some(s.simulated_s)),
    ];
    for (k, of) in run_metrics {
        let f = |r: &Report| of(&r.summary).unwrap_or(f64::NAN);
        let (s, r) = (f(sim), f(real));
        rows.push(Row {
            metric: k.into(),
            kind: "run",
            sim: s,
            real: r,
            error: (s - r) / r,
            n: requests.len(),
        });
    }
    Ok(Comparison {
        rows,
        requests,
        requests_total: sim.workload.requests.len(),
    })
}

impl Comparison {
    pub fn csv(&self) -> String {
        let cols = ["metric", "kind", "sim", "real", "error", "requests"];
        csv_out::to_string(&cols, |t| {
            for r in &self.rows {
                let n = |x: f64| Num(x, 9);
                t.record(&[&r.metric, &r.kind, &n(r.sim), &n(r.real), &n(r.error), &r.n])?;
            }
            Ok(())
        })
    }

    pub fn requests_csv(&self) -> String {
        let cols = [
            "id",
            "ttft_sim_s",
            "ttft_real_s",
            "tbt_sim_s",
            "tbt_real_s",
            "e2e_sim_s",
            "e2e_real_s",
        ];
        let n = |x: f64| Num(x, 9);
        let opt = |x: Option<f64>| Opt(x.map(n));
        csv_out::to_string(&cols, |t| {
            for (id, s, r) in &self.requests {
                t.record(&[
                    id,
                    &n(s.ttft),
                    &n(r.ttft),
                    &opt(s.tbt),
                    &opt(r.tbt),
                    &n(s.e2e),
                    &n(r.e2e),
                ])?;
            }
            Ok(())
        })
    }

    pub fn table(&self) -> String {
        let mut o = format!(
            "{} of {} requests finished in both runs\n\nper request |sim - real| / real    median       p90\n",
            self.requests.len(),
            self.requests_total
        );
        let pct = |x: f64| {
            if x.is_finite() {
                format!("{:>9.1}%", 100.0 * x)
            } else {
                format!("{:>10}", "-")
            }
        };
        for m in ["ttft", "tbt_mean", "e2e"] {
            let get = |k: &str| {
                self.rows
                    .iter()
                    .find(|r| r.metric == m && r.kind == k)
                    .map_or(f64::NAN, |r| r.error)
            };
            let _ = writeln!(
                o,
                "  {m:<34}{}{}",
                pct(get("per_request_median")),
                pct(get("per_request_p90"))
            );
        }
        let _ = writeln!(
            o,
            "\nrun metric                            sim          real   (sim-real)/real"
        );
        for r in self.rows.iter().filter(|r| r.kind == "run") {
            let _ = writeln!(
                o,
                "  {:<26}{:>12.6}  {:>12.6}  {}",
                r.metric,
                r.sim,
                r.real,
                pct(r.error)
            );
        }
        o
    }

    /// Scatter of simulated against real per-request TTFT, mean TBT and E2E (log axes, y = x line), written
    /// as `stem.svg` and `stem.png`.
    pub fn plot(&self, stem: &Path) -> Result<()> {
        use plotters::prelude::*;
        crate::experiment::plot::register_font();
        let size = (1500, 480);
        let svg = stem.with_extension("svg");
        self.draw(SVGBackend::new(&svg, size).into_drawing_area())
            .map_err(|e| Error::internal(format!("{}: {e}", svg.display())))?;
        let png = stem.with_extension("png");
        self.draw(
            crate::experiment::glyphs::Glyphs::new(BitMapBackend::new(&png, size))
                .into_drawing_area(),
        )
        .map_err(|e| Error::internal(format!("{}: {e}", png.display())))
    }

    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> std::result::Result<(), String> {
        use plotters::prelude::*;
        let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let panels = root.split_evenly((1, 3));
        type Get = fn(&Lat) -> Option<f64>;
        let sets: [(&str, Get); 3] = [
            ("TTFT (s)", |l| Some(l.ttft)),
            ("mean TBT (s)", |l| l.tbt),
            ("E2E (s)", |l| Some(l.e2e)),
        ];
        for (area, (label, get)) in panels.iter().zip(sets) {
            let pts: Vec<(f64, f64)> = self
                .requests
                .iter()
                .filter_map(|(_, s, r)| Some((get(r)?, get(s)?)))
                .filter(|(a, b)| *a > 0.0 && *b > 0.0)
                .collect();
            let all = || pts.iter().flat_map(|p| [p.0, p.1]);
            let lo = all().fold(f64::INFINITY, f64::min);
            let lo = if lo.is_finite() { lo * 0.8 } else { 1e-4 };
            let hi = all().fold(0.0, f64::max).max(lo * 10.0) * 1.25;
            let mut chart = ChartBuilder::on(area)
                .caption(format!("{label}: simulated vs real"), ("sans-serif", 18))
                .margin(12)
                .x_label_area_size(40)
                .y_label_area_size(60)
                .build_cartesian_2d((lo..hi).log_scale(), (lo..hi).log_scale())
                .map_err(e)?;
            // Two significant digits (plotters' default prints 0.009000000000000001 on log axes).
            let fmt = |v: &f64| {
                let d = (1 - v.abs().log10().floor() as i32).clamp(0, 9) as usize;
                format!("{v:.d$}")
            };
            chart
                .configure_mesh()
                .x_labels(6)
                .y_labels(6)
                .x_label_formatter(&fmt)
                .y_label_formatter(&fmt)
                .x_desc(format!("real {label}"))
                .y_desc(format!("simulated {label}"))
                .draw()
                .map_err(e)?;
            chart
                .draw_series(LineSeries::new([(lo, lo), (hi, hi)], &BLACK))
                .map_err(e)?;
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 3, BLUE.filled())))
                .map_err(e)?;
        }
        root.present().map_err(e)
    }
}

/// The whole `sim fidelity` run; returns the comparison (also written under `out`).
pub fn fidelity(f: &FidelityArgs) -> Result<Comparison> {
    let spec = BackendSpec::parse(&f.backend)?;
    let cfg = f.run.resolve()?;
    let trace = cfg.load_trace()?;
    // The rows the run replays (same transformation the run applies), to size the calibration grid.
    let rows: Vec<(u32, u32)> = trace
        .clone()
        .transform(&cfg.transform, cfg.seed)?
        .rows
        .iter()
        .map(|r| (r.input, r.output))
        .collect();
    let profile = calibrate(&spec, &cfg, &rows, f.repeats)?;
    let io = |e: std::io::Error| Error::internal(format!("{}: {e}", f.out.display()));
    std::fs::create_dir_all(&f.out).map_err(io)?;
    let profile_path = f.out.join("profile.json");
    std::fs::write(&profile_path, profile.to_json() + "\n").map_err(io)?;
    let cost = ProfileCost::new(
        profile,
        &profile_path.display().to_string(),
        LoadMethod::PerLayerPinned,
    )?;
    let mut sim_clock = Simulated(&cost);
    let sim = run::run(&cfg, trace.clone(), Some(&mut sim_clock))?;
    sim.write(&f.out.join("sim"))?;
    let real = backend::run_on(&cfg, trace, &spec)?;
    real.write(&f.out.join("real"))?;
    if let Some(why) = &real.output.aborted {
        return Err(Error::internal(format!(
            "the real run stopped early: {why} (outputs in {})",
            f.out.display()
        )));
    }
    let cmp = compare(&sim, &real)?;
    std::fs::write(f.out.join("fidelity.csv"), cmp.csv()).map_err(io)?;
    std::fs::write(f.out.join("fidelity_requests.csv"), cmp.requests_csv()).map_err(io)?;
    cmp.plot(&f.out.join("fidelity"))?;
    Ok(cmp)
}

/// `sim fidelity`: runs [`fidelity`] and prints the table.
pub fn run(f: &FidelityArgs) -> Result<()> {
    sim_core::report::check_out_dir(&f.out, "--out")?;
    let cmp = fidelity(f)?;
    print!("{}", cmp.table());
    println!(
        "\nwritten: {}/{{profile.json,sim/,real/,fidelity.csv,fidelity_requests.csv,fidelity.svg,fidelity.png}}",
        f.out.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 0.5), 2.5);
        assert_eq!(percentile(&[5.0], 0.9), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn the_plan_spans_the_trace_and_satisfies_the_profile_schema() {
        let args = RunArgs::defaults().resolve().unwrap();
        let rows = [(40, 5), (100, 20), (7, 1)];
        let p = Plan::for_run(&args, &rows, 2);
        assert!(p.prefill.iter().filter(|x| x.1 == 1).count() >= 2);
        assert_eq!(p.prefill.iter().map(|x| x.0).max(), Some(200));
        assert_eq!(p.decode.iter().map(|x| x.0).max(), Some(3));
        assert_eq!(p.decode.iter().map(|x| x.1).max(), Some(120));
        assert_eq!(p.load_ranks(), vec![8, 16, 32, 64, 128]);
        assert!(p.lora.iter().any(|(_, r)| r.len() == 5));
        assert_eq!(iso_now().len(), 20);
    }

    #[test]
    fn cpu_calibration_gives_a_valid_profile() {
        let mut args = RunArgs::defaults();
        args.pool_tokens = Some(4000);
        args.ranks = vec![8, 32];
        let args = args.resolve().unwrap();
        let spec = BackendSpec::parse("cpu[layers=1]").unwrap();
        let p = calibrate(&spec, &args, &[(12, 3), (20, 4)], 1).unwrap();
        p.validate().unwrap();
        assert_eq!(p.adapter_load.len(), 2);
        assert_eq!(p.lora.len(), 9);
        assert!(p.lora.iter().all(|l| l.tokens <= 32));
        let text = p.to_json();
        let back = CostProfile::parse(&text).unwrap();
        ProfileCost::new(back, "test", LoadMethod::PerLayerPinned).unwrap();
    }
}
