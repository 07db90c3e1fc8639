//! Seeing inside a run from the CLI: the timeline and trace files, cdf.csv, and the run config file
//! (`--print-config` -> `--config` and a sweep `base`, flags overriding the file).

mod common;
use common::{ok, sim, tmp};

use serde_json::Value;

#[test]
fn timeline_trace_and_cdf_files() {
    let d = tmp("files");
    let (out, tl, tr) = (d.join("out"), d.join("tl"), d.join("t.json"));
    let o = sim(&[
        "run",
        "--max-requests",
        "300",
        "--rate",
        "6",
        "--scheduler",
        "mlq[warmup=50]",
        "--cache",
        "chameleon",
        "--out",
        out.to_str().unwrap(),
        "--timeline",
        tl.to_str().unwrap(),
        "--chrome-trace",
        tr.to_str().unwrap(),
        "--percentiles",
        "99.9,99.99",
        "--json",
    ]);
    let summary: Value = serde_json::from_str(&ok(&o)).unwrap();
    let csv = std::fs::read_to_string(tl.join("timeline.csv")).unwrap();
    // Parquet beside the CSV only in a build with the `parquet` feature.
    assert_eq!(
        tl.join("timeline.parquet").exists(),
        cfg!(feature = "parquet")
    );
    if cfg!(feature = "parquet") {
        assert!(tl.join("timeline.parquet").metadata().unwrap().len() > 1000);
    }
    let mut lines = csv.lines();
    let head: Vec<&str> = lines.next().unwrap().split(',').collect();
    let col = |n: &str| head.iter().position(|h| *h == n).unwrap();
    assert!(head.contains(&"q1_waiting") && head.contains(&"q1_quota"));
    let pool = summary["pool_slots"].as_u64().unwrap();
    let mut peak = 0u64;
    let mut rows = 0;
    for l in lines {
        let f: Vec<&str> = l.split(',').collect();
        let n = |c: &str| f[col(c)].parse::<u64>().unwrap();
        let parts = [
            "kv_held_slots",
            "kv_reserved_slots",
            "adapters_active_slots",
            "adapters_idle_slots",
            "free_slots",
        ];
        assert_eq!(parts.iter().map(|c| n(c)).sum::<u64>(), pool, "{l}");
        peak = peak.max(n("kv_held_slots"));
        rows += 1;
    }
    assert!(rows > 100);
    let slot_gib = summary["pool_gib"].as_f64().unwrap() / pool as f64;
    let peak_gib = summary["mem_kv_peak_gib"].as_f64().unwrap();
    assert!((peak as f64 * slot_gib - peak_gib).abs() < 1e-9);
    assert!(
        summary["mem_kv_reserved_peak_gib"].as_f64().unwrap() >= peak_gib
            && summary["mem_kv_reserved_mean_gib"].as_f64().unwrap()
                >= summary["mem_kv_mean_gib"].as_f64().unwrap()
    );
    // The trace: valid JSON, one request span per finished request.
    let t: Value = serde_json::from_str(&std::fs::read_to_string(&tr).unwrap()).unwrap();
    let begins = t["traceEvents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ph"] == "b" && e["name"] == "request")
        .count();
    assert_eq!(
        begins as u64,
        summary["requests_finished"].as_u64().unwrap()
    );
    // cdf.csv: the grid and the asked quantiles, values increasing with the quantile.
    let cdf = std::fs::read_to_string(out.join("cdf.csv")).unwrap();
    let ttft: Vec<(f64, f64)> = cdf
        .lines()
        .skip(1)
        .filter(|l| l.starts_with("ttft,"))
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            (f[1].parse().unwrap(), f[2].parse().unwrap())
        })
        .collect();
    assert_eq!(ttft.len(), 101 + 1 + 2);
    assert!(ttft.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1));
    let p99 = ttft.iter().find(|q| q.0 == 0.99).unwrap().1;
    assert!((p99 - summary["ttft_p99_s"].as_f64().unwrap()).abs() < 1e-6);
}

#[test]
fn printed_config_round_trips_through_config_and_sweep_base() {
    let d = tmp("config");
    let printed = ok(&sim(&[
        "run",
        "--rate",
        "7",
        "--scheduler",
        "mlq",
        "--cache",
        "chameleon",
        "--max-requests",
        "200",
        "--print-config",
    ]));
    let cfg: Value = serde_json::from_str(&printed).unwrap();
    assert_eq!(cfg["rate"], 7.0);
    assert_eq!(cfg["scheduler"], "mlq");
    let file = d.join("run.json");
    std::fs::write(&file, &printed).unwrap();
    // Read back, it prints the same; a flag overrides the file, the rest stays.
    let again = ok(&sim(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--print-config",
    ]));
    assert_eq!(again, printed);
    let over: Value = serde_json::from_str(&ok(&sim(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--rate",
        "5",
        "--print-config",
    ])))
    .unwrap();
    assert_eq!(over["rate"], 5.0);
    assert_eq!(over["scheduler"], "mlq");
    // A default value given explicitly still overrides the file.
    let fifo: Value = serde_json::from_str(&ok(&sim(&[
        "run",
        "--config",
        file.to_str().unwrap(),
        "--scheduler",
        "fifo",
        "--print-config",
    ])))
    .unwrap();
    assert_eq!(fifo["scheduler"], "fifo");
    // The same runs: --config and the flags give the same summary.
    let a = ok(&sim(&["run", "--config", file.to_str().unwrap(), "--json"]));
    let b = ok(&sim(&[
        "run",
        "--rate",
        "7",
        "--scheduler",
        "mlq",
        "--cache",
        "chameleon",
        "--max-requests",
        "200",
        "--json",
    ]));
    assert_eq!(a, b);
    // As a sweep's base.
    let sweep = format!(
        r#"{{"name": "roundtrip", "title": "t", "base": {printed}, "grid": {{"seed": [0]}}}}"#
    );
    let exp = d.join("exp.json");
    std::fs::write(&exp, sweep).unwrap();
    let res = d.join("res");
    ok(&sim(&[
        "sweep",
        exp.to_str().unwrap(),
        "--out",
        res.to_str().unwrap(),
        "--quiet",
    ]));
    let table = std::fs::read_to_string(res.join("roundtrip/results.csv")).unwrap();
    assert!(table.lines().count() == 2);
}
