//! `sim sweep` / `sim plot`: grid expansion, parallel runs, the results table, resume after a kill, shards,
//! the throughput bisection, bad configs, and the figures.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};
use sim::experiment::sweep::{self, SweepOpts};
use sim::experiment::throughput::bisect;
use sim::experiment::{Experiment, Scale, plot, report, table};

/// A scratch directory, removed when the test ends.
struct TmpDir(PathBuf);

impl std::ops::Deref for TmpDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tmp(name: &str) -> TmpDir {
    let d = std::env::temp_dir().join(format!("sim-sweep-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    TmpDir(d)
}

/// 2 systems x 2 rates x 2 seeds = 8 runs of 200 requests. (Raw text: the axis order is the file's.)
const TINY: &str = r#"{
    "name": "tiny",
    "title": "Tiny sweep",
    "base": { "length-scale": 0.31, "max-requests": 200 },
    "grid": {
        "system": [
            { "label": "S-LoRA", "cache": "none", "scheduler": "fifo" },
            { "label": "Cached", "cache": "lru", "scheduler": "fifo" }
        ],
        "rate": [4, 8],
        "seed": [0, 1]
    },
    "plot": {
        "kind": "line", "x": "rate", "x_label": "Rate (RPS)", "series": ["system"],
        "panels": [ { "y": "ttft_p99_s", "label": "P99 TTFT (s)", "log": true, "hline": 5 },
                    { "y": "adapter_hit_rate", "label": "Hit rate" } ]
    },
    "claims": [ { "claim": "p99 at 8", "paper": "-10%", "metric": "ttft_p99_s", "unit": "s",
                  "at": { "rate": 8, "system": "Cached" }, "vs": { "rate": 8, "system": "S-LoRA" } } ]
}"#;

fn write_config(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(format!("{name}.json"));
    std::fs::write(&p, text).unwrap();
    p
}

fn load(dir: &Path, text: &str) -> Experiment {
    Experiment::load(&write_config(dir, "cfg", text), Scale::Full).unwrap()
}

fn opts(out: &Path, threads: usize) -> SweepOpts {
    let mut o = SweepOpts::new(out);
    o.threads = threads;
    o
}

#[test]
fn grid_expands_last_axis_fastest_with_every_option() {
    let d = tmp("grid");
    let exp = load(&d, TINY);
    let runs = exp.runs().unwrap();
    assert_eq!(runs.len(), 8);
    assert_eq!(
        runs[0].args_string(),
        "--length-scale 0.31 --max-requests 200 --cache none --scheduler fifo --rate 4 --seed 0"
    );
    assert_eq!(runs[1].config.seed, 1);
    assert_eq!(runs[2].config.transform.poisson_rate, Some(8.0));
    assert_eq!(runs[4].config.cache, "lru");
    assert_eq!(runs[7].point[0], ("system".to_string(), json!("Cached")));
    assert_eq!(runs[7].config.transform.max_requests, Some(200));
}

#[test]
fn sweep_writes_one_row_per_run_with_params_metrics_and_provenance() {
    let d = tmp("rows");
    let exp = load(&d, TINY);
    let o = sweep::sweep(&exp, &opts(&d.join("res"), 2)).unwrap();
    assert!(o.complete);
    assert_eq!((o.total, o.ran, o.skipped), (8, 8, 0));
    let rows = table::read(&o.dir.join("results.csv")).unwrap();
    assert_eq!(rows.len(), 8);
    for (i, r) in rows.iter().enumerate() {
        assert_eq!(r["run"], json!(i));
        for c in [
            "experiment",
            "scale",
            "system",
            "rate",
            "seed",
            "args",
            "git_commit",
            "cost_model",
            "ttft_p50_s",
            "ttft_p99_s",
            "throughput_rps",
            "adapter_hit_rate",
            "load_stall_s",
            "slo_attainment",
        ] {
            assert!(r.get(c).is_some_and(|v| !v.is_null()), "row {i} lacks {c}");
        }
        assert_eq!(r["requests_total"], json!(200));
    }
    assert_eq!(rows[5]["system"], json!("Cached"));
    assert_eq!(rows[5]["seed"], json!(1));
    // The header starts with the fixed columns, in order.
    let csv = std::fs::read_to_string(o.dir.join("results.csv")).unwrap();
    assert!(
        csv.starts_with("run,experiment,scale,system,rate,seed,args,git_commit,"),
        "{}",
        &csv[..80]
    );
    // Read back, the CSV holds the rows' values and types.
    let back = table::read(&o.dir.join("results.csv")).unwrap();
    assert_eq!(back.len(), 8);
    assert_eq!(back[3]["ttft_p99_s"], rows[3]["ttft_p99_s"]);
    assert_eq!(back[3]["args"], rows[3]["args"]);
    assert_eq!(back[5]["seed"], json!(1));
    // The Parquet table (a build with the `parquet` feature) holds the same rows; without it, none is left.
    let pq = o.dir.join("results.parquet");
    if cfg!(feature = "parquet") {
        let pq = table::read(&pq).unwrap();
        assert_eq!(pq.len(), 8);
        assert_eq!(pq[3]["ttft_p99_s"], rows[3]["ttft_p99_s"]);
        assert_eq!(pq[3]["args"], rows[3]["args"]);
    } else {
        assert!(!pq.exists());
        assert!(
            table::read(&pq)
                .unwrap_err()
                .to_string()
                .contains("--features parquet")
        );
    }
}

#[test]
fn tables_are_byte_identical_whatever_the_thread_count() {
    let d = tmp("threads");
    let exp = load(&d, TINY);
    let a = sweep::sweep(&exp, &opts(&d.join("t1"), 1)).unwrap();
    let b = sweep::sweep(&exp, &opts(&d.join("t4"), 4)).unwrap();
    let files: &[&str] = if cfg!(feature = "parquet") {
        &["results.csv", "results.parquet"]
    } else {
        &["results.csv"]
    };
    for f in files {
        assert!(
            std::fs::read(a.dir.join(f)).unwrap() == std::fs::read(b.dir.join(f)).unwrap(),
            "{f} differs"
        );
    }
}

#[test]
fn a_killed_sweep_resumes_without_losing_or_repeating_runs() {
    let d = tmp("resume");
    let exp = load(&d, TINY);
    let full = sweep::sweep(&exp, &opts(&d.join("ref"), 2)).unwrap();
    let reference = std::fs::read(full.dir.join("results.csv")).unwrap();

    // A sweep killed after 3 runs, in the middle of writing the 4th line.
    let out = d.join("killed");
    sweep::sweep(&exp, &opts(&out, 2)).unwrap();
    let log = out.join("tiny/runs.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 8);
    let cut = format!(
        "{}\n{}\n{}\n{}",
        lines[0],
        lines[1],
        lines[2],
        &lines[3][..lines[3].len() / 2]
    );
    std::fs::write(&log, cut).unwrap();
    std::fs::remove_file(out.join("tiny/results.csv")).unwrap();

    let o = sweep::sweep(&exp, &opts(&out, 2)).unwrap();
    assert_eq!((o.ran, o.skipped), (5, 3));
    assert!(o.complete);
    assert!(
        std::fs::read(o.dir.join("results.csv")).unwrap() == reference,
        "resumed table differs"
    );
    // Nothing left to do: a third call runs nothing.
    let o = sweep::sweep(&exp, &opts(&out, 2)).unwrap();
    assert_eq!((o.ran, o.skipped), (0, 8));

    // A changed option invalidates the logged row for that run only.
    let exp2 = load(&d, &TINY.replace("\"rate\": [4, 8]", "\"rate\": [4, 9]"));
    let o = sweep::sweep(&exp2, &opts(&out, 2)).unwrap();
    assert_eq!((o.ran, o.skipped), (4, 4));
    // --fresh starts over.
    let mut f = opts(&out, 2);
    f.fresh = true;
    let o = sweep::sweep(&exp2, &f).unwrap();
    assert_eq!((o.ran, o.skipped), (8, 0));
}

#[test]
fn shards_partition_the_grid_and_merge_into_the_same_table() {
    for total in [0, 1, 7, 8, 31] {
        for n in 1..6 {
            let mut seen = vec![0; total];
            for i in 0..n {
                for j in sweep::shard_indices(total, Some((i, n))) {
                    seen[j] += 1;
                }
            }
            assert!(
                seen.iter().all(|&c| c == 1),
                "total {total}, {n} shards: {seen:?}"
            );
        }
    }
    assert_eq!(sweep::parse_shard("2/5").unwrap(), (2, 5));
    for bad in ["5/5", "1", "a/2", "0/0"] {
        assert_eq!(sweep::parse_shard(bad).unwrap_err().code, 2, "{bad}");
    }

    let d = tmp("shards");
    let exp = load(&d, TINY);
    let whole = sweep::sweep(&exp, &opts(&d.join("whole"), 2)).unwrap();
    let out = d.join("sharded");
    let mut ran = 0;
    for i in 0..3 {
        let mut o = opts(&out, 1);
        o.shard = Some((i, 3));
        let r = sweep::sweep(&exp, &o).unwrap();
        ran += r.ran;
        // Only the last shard completes the table.
        assert_eq!(r.complete, i == 2);
    }
    assert_eq!(ran, 8);
    assert!(
        std::fs::read(out.join("tiny/results.csv")).unwrap()
            == std::fs::read(whole.dir.join("results.csv")).unwrap(),
        "merged shards differ from the whole sweep"
    );
}

#[test]
fn bisection_finds_a_known_threshold() {
    let mut calls = 0;
    let b = bisect(2.0, 16.0, 64.0, 0.05, |r| {
        calls += 1;
        Ok(r <= 7.3)
    })
    .unwrap();
    let (p, f) = (b.pass.unwrap(), b.fail.unwrap());
    assert!(p <= 7.3 && f > 7.3 && f - p <= 0.05, "{b:?}");
    assert_eq!(b.probes, calls);
    assert_eq!(b.status(), "bracketed");
    // Above hi: doubles hi until it fails.
    let b = bisect(2.0, 16.0, 64.0, 0.05, |r| Ok(r <= 40.0)).unwrap();
    assert!(
        b.pass.unwrap() <= 40.0
            && b.fail.unwrap() > 40.0
            && b.fail.unwrap() - b.pass.unwrap() <= 0.05
    );
    // Never fails up to the cap; never passes at all.
    let b = bisect(2.0, 16.0, 64.0, 0.05, |_| Ok(true)).unwrap();
    assert_eq!((b.pass, b.fail, b.status()), (Some(64.0), None, "at_max"));
    let b = bisect(2.0, 16.0, 64.0, 0.05, |_| Ok(false)).unwrap();
    assert_eq!(
        (b.pass, b.fail, b.throughput(), b.status()),
        (None, Some(2.0), 0.0, "below_lo")
    );
}

#[test]
fn throughput_experiment_reports_the_rate_and_its_bracket() {
    let d = tmp("throughput");
    let cfg = json!({
        "name": "thr", "title": "Throughput",
        "base": { "length-scale": 0.31, "max-requests": 300 },
        "grid": { "system": [ { "label": "S-LoRA", "cache": "none", "scheduler": "fifo" } ] },
        "throughput": { "lo": 1, "hi": 64, "tol": 0.5, "seeds": [0, 1], "slo": 2.0 },
        "plot": { "kind": "bar", "x": "system", "panels": [ { "y": "throughput_slo_rps",
                  "err": ["throughput_slo_ci_lo", "throughput_slo_ci_hi"] } ] }
    });
    let exp = load(&d, &cfg.to_string());
    let o = sweep::sweep(&exp, &opts(&d.join("res"), 1)).unwrap();
    let rows = table::read(&o.dir.join("results.csv")).unwrap();
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    // One bisection per seed; the throughput is their median, with the per-seed values and an interval.
    let per_seed: Vec<f64> = r["throughput_slo_per_seed"]
        .as_str()
        .unwrap()
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    assert_eq!(per_seed.len(), 2);
    let t = r["throughput_slo_rps"].as_f64().unwrap();
    assert_eq!(t, 0.5 * (per_seed[0] + per_seed[1]));
    let (lo, hi) = (
        r["throughput_slo_lo_rps"].as_f64().unwrap(),
        r["throughput_slo_hi_rps"].as_f64().unwrap(),
    );
    assert_eq!(r["throughput_slo_status"], json!("bracketed"));
    let (pmin, pmax) = (per_seed[0].min(per_seed[1]), per_seed[0].max(per_seed[1]));
    assert!(
        lo == pmin && hi > pmax && hi - pmax <= 0.5 && t > 1.0,
        "{t} [{lo}, {hi}]"
    );
    let (ci_lo, ci_hi) = (
        r["throughput_slo_ci_lo"].as_f64().unwrap(),
        r["throughput_slo_ci_hi"].as_f64().unwrap(),
    );
    assert!(ci_lo >= pmin && ci_hi <= pmax && ci_lo <= t && t <= ci_hi);
    assert_eq!(r["seeds"], json!("0,1"));
    // The metrics are those of the median seed (the lower of two) at its rate: P99 TTFT meets the objective.
    assert!(r["ttft_p99_s"].as_f64().unwrap() <= 2.0);
    assert_eq!(r["rate_rps"].as_f64().unwrap(), pmin);
}

#[test]
fn bad_configs_fail_with_one_error_naming_file_and_field() {
    let d = tmp("bad");
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"name": "b", "title": "t", "grid": {"rte": [1]}}),
            "grid point rte=1",
        ),
        (
            json!({"name": "b", "title": "t", "grid": {"rate": [1]}, "colour": 1}),
            "colour",
        ),
        (
            json!({"name": "b", "title": "t", "grid": {"rate": []}}),
            "grid.rate",
        ),
        (
            json!({"name": "b", "title": "t", "grid": {"rate": ["fast"]}}),
            "grid point rate=\"fast\"",
        ),
        (
            json!({"name": "b", "title": "t", "base": {"seed": -1}, "grid": {"rate": [1]}}),
            "base",
        ),
        (
            json!({"name": "b", "title": "t", "grid": {"rate": [1]}, "throughput": {}}),
            "grid.rate",
        ),
        (
            json!({"name": "b", "title": "t", "grid": {"rate": [1]}, "plot": {"x": "rate", "panels": [{}]}}),
            "plot.panels[0].y",
        ),
        (json!({"title": "t", "grid": {"rate": [1]}}), "name"),
    ];
    for (cfg, field) in cases {
        let p = d.join("bad.json");
        std::fs::write(&p, cfg.to_string()).unwrap();
        let e = Experiment::load(&p, Scale::Full).unwrap_err();
        assert_eq!(e.code, 2, "{e}");
        let msg = e.to_string();
        assert!(msg.starts_with(&format!("{}: ", p.display())), "{msg}");
        assert!(msg.contains(field), "{msg} should name {field}");
    }
    // The CLI: exit code 2, one line.
    let p = d.join("bad.json");
    std::fs::write(
        &p,
        json!({"name": "b", "title": "t", "grid": {"rte": [1]}}).to_string(),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(["sweep", p.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.json") && err.contains("--rte"), "{err}");
}

#[test]
fn ci_scale_cuts_requests_seeds_and_applies_overrides() {
    let d = tmp("ci");
    let cfg = TINY.replace(
        "\"plot\":",
        "\"ci\": { \"grid\": { \"rate\": [8] } },\n    \"plot\":",
    );
    let p = write_config(&d, "ci", &cfg);
    let exp = Experiment::load(&p, Scale::Ci).unwrap();
    let runs = exp.runs().unwrap();
    assert_eq!(runs.len(), 2); // 2 systems x 1 rate x 1 seed
    assert!(
        runs.iter()
            .all(|r| r.config.seed == 0 && r.config.transform.poisson_rate == Some(8.0))
    );
    // The config's own max-requests (200) wins over the CI default.
    assert!(
        runs.iter()
            .all(|r| r.config.transform.max_requests == Some(200))
    );
    let full = Experiment::load(&p, Scale::Full).unwrap();
    assert_eq!(full.runs().unwrap().len(), 8);
}

#[test]
fn plot_writes_png_svg_csv_and_the_index() {
    let d = tmp("plot");
    let exp = load(&d, TINY);
    let o = sweep::sweep(&exp, &opts(&d.join("res"), 2)).unwrap();
    let out = d.join("plots");
    let p = report::plot_results(&o.dir, &out).unwrap();
    for (ext, min) in [("png", 20_000), ("svg", 5_000), ("csv", 100)] {
        let f = out.join(format!("tiny.{ext}"));
        let len = std::fs::metadata(&f).unwrap().len();
        assert!(len > min, "{} is {len} bytes", f.display());
    }
    let png = std::fs::read(out.join("tiny.png")).unwrap();
    assert_eq!(&png[1..4], b"PNG");
    let svg = std::fs::read_to_string(out.join("tiny.svg")).unwrap();
    assert!(svg.contains("Tiny sweep") && svg.contains("P99 TTFT (s)") && svg.contains("S-LoRA"));
    // 2 panels x 2 series x 2 rates, each the mean of 2 seeds with a bootstrap interval; then the claim's
    // paper change drawn on this model's S-LoRA value.
    let csv = std::fs::read_to_string(out.join("tiny.csv")).unwrap();
    let (paper, points): (Vec<&str>, Vec<&str>) =
        csv.lines().skip(1).partition(|l| l.contains(",paper"));
    assert_eq!(points.len(), 8, "{csv}");
    assert!(
        points.iter().all(|l| l.ends_with(",bootstrap95_mean,2")),
        "{csv}"
    );
    assert_eq!(paper.len(), 1, "{csv}");
    assert!(
        paper[0].starts_with("ttft_p99_s,P99 TTFT (s),Cached,8,")
            && paper[0].contains(",paper_relative,")
    );
    let readme = report::readme(&[p], "");
    assert!(readme.contains("![Tiny sweep](tiny.png)"));
    let claim = readme
        .lines()
        .find(|l| l.starts_with("| p99 at 8 |"))
        .expect("claim row");
    assert!(claim.contains(" vs ") && claim.contains('%'), "{claim}");
}

#[test]
fn figure_averages_seeds_per_series_and_x() {
    let rows: Vec<table::Row> = [(4, "a", 1.0), (4, "a", 3.0), (8, "a", 5.0), (4, "b", 7.0)]
        .iter()
        .map(|&(x, s, y)| {
            let v = json!({"rate": x, "system": s, "m": y});
            v.as_object().unwrap().clone()
        })
        .collect();
    let spec = plot::PlotSpec::parse(
        Path::new("x.json"),
        &json!({"x": "rate", "series": "system", "panels": [{"y": "m", "scale": 10}]}),
    )
    .unwrap();
    let fig = plot::figure("t", &spec, &rows).unwrap();
    let a = &fig.panels[0].series[0];
    assert_eq!(a.name, "a");
    assert_eq!(
        (
            a.points[0].x,
            a.points[0].mean,
            a.points[0].lo,
            a.points[0].hi
        ),
        (4.0, 20.0, 10.0, 30.0)
    );
    assert_eq!(a.points[1].mean, 50.0);
    assert_eq!(fig.panels[0].series[1].points.len(), 1);
}

#[test]
fn log_axes_are_labelled_at_1_2_5_or_at_decades() {
    let labels = |y0: f64, y1: f64| -> Vec<String> {
        plot::log_ticks(y0, y1)
            .into_iter()
            .filter_map(|(_, l)| l)
            .collect()
    };
    // 0.3 .. 30: 1-2-5 labels.
    assert_eq!(
        labels(0.3f64.log10(), 30f64.log10()),
        ["0.5", "1", "2", "5", "10", "20"]
    );
    // 1 .. 10,000: decades only; grid lines still at every 1..9 multiple.
    assert_eq!(labels(0.0, 4.0), ["1", "10", "100", "1000", "10000"]);
    assert_eq!(plot::log_ticks(0.0, 4.0).len(), 4 * 9 + 1);
}
