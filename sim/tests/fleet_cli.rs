//! `sim run` with a fleet, as a user runs it: one replica behind any router writes exactly `sim run`'s files;
//! a fleet's own files; streaming; TP; clean errors.

mod common;
use common::{sim, tmp};

const BASE: &[&str] = &[
    "run",
    "--max-requests",
    "600",
    "--rate",
    "9",
    "--length-scale",
    "0.31",
    "--scheduler",
    "mlq",
    "--cache",
    "chameleon",
];

fn run_ok(args: &[&str]) {
    let out = sim(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn one_replica_behind_any_router_writes_sim_runs_files_byte_for_byte() {
    let d = tmp("one");
    let single = d.join("single");
    run_ok(&[BASE, &["--out", single.to_str().unwrap()]].concat());
    for router in [
        "random",
        "round-robin",
        "least-outstanding",
        "power-of-two",
        "adapter-affinity",
        "cache-aware",
    ] {
        let fleet = d.join(router);
        run_ok(
            &[
                BASE,
                &[
                    "--replicas",
                    "1",
                    "--router",
                    router,
                    "--out",
                    fleet.to_str().unwrap(),
                ],
            ]
            .concat(),
        );
        for f in ["requests.csv", "adapters.csv"] {
            assert!(
                std::fs::read(single.join(f)).unwrap() == std::fs::read(fleet.join(f)).unwrap(),
                "{router}: {f} differs"
            );
        }
        // summary.json: the same keys and values, and the fleet's `fleet_*` keys besides.
        let json = |p: std::path::PathBuf| -> serde_json::Map<String, serde_json::Value> {
            serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap()
        };
        let mut fs = json(fleet.join("summary.json"));
        assert!(fs.contains_key("fleet_router"), "{router}: no fleet keys");
        fs.retain(|k, _| !k.starts_with("fleet_"));
        assert_eq!(
            json(single.join("summary.json")),
            fs,
            "{router}: summary.json differs"
        );
        for f in [
            "fleet.json",
            "replicas.csv",
            "fleet_samples.csv",
            "replication.csv",
            "routes.csv",
        ] {
            assert!(fleet.join(f).exists(), "{router}: no {f}");
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_streamed_fleet_writes_one_row_per_request_and_the_same_at_two_threads() {
    let d = tmp("stream");
    let mut rows = Vec::new();
    for threads in ["1", "2"] {
        let out = d.join(format!("out{threads}"));
        let file = d.join(format!("rows{threads}.csv"));
        let o = sim(&[
            BASE,
            &[
                "--replicas",
                "4",
                "--router",
                "cache-aware",
                "--fleet-threads",
                threads,
                "--stream",
                file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
                "--json",
            ],
        ]
        .concat());
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let text = std::fs::read_to_string(&file).unwrap();
        assert_eq!(text.lines().count(), 601, "header + one row per request");
        assert!(!out.join("requests.csv").exists());
        let summary: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(summary["fleet_replicas"], 4);
        assert!(summary["ttft_p99_s"].as_f64().unwrap() > 0.0);
        // Per-GPU figures are means over the replicas, not their sum (was: GPU busy 560%).
        let busy = summary["gpu_busy_fraction"].as_f64().unwrap();
        assert!(busy > 0.0 && busy <= 1.0, "{busy}");
        assert_eq!(
            summary["gpu_busy_fraction"],
            summary["fleet_gpu_busy_fraction"]
        );
        for k in ["gpu_flops_utilisation", "gpu_bandwidth_utilisation"] {
            let u = summary[k].as_f64().unwrap();
            assert!(u > 0.0 && u < 1.0, "{k} {u}");
        }
        rows.push((text, std::fs::read(out.join("summary.json")).unwrap()));
    }
    assert!(rows[0] == rows[1], "1 vs 2 threads");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn tensor_parallel_replicas_and_heterogeneous_fleets_run() {
    let o = sim(&[
        "run",
        "--max-requests",
        "200",
        "--rate",
        "4",
        "--length-scale",
        "0.31",
        "--model",
        "llama-70b",
        "--gpu",
        "a100-80gb",
        "--tp",
        "4",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["tp"], 4);
    assert!(
        s["cost_model"]
            .as_str()
            .unwrap()
            .starts_with("TP4 over nvlink")
    );
    let o = sim(&[
        "run",
        "--max-requests",
        "300",
        "--rate",
        "12",
        "--length-scale",
        "0.31",
        "--replicas",
        "a100-80gb:1:2,a40:2",
        "--router",
        "least-outstanding",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(s["fleet_gpus"], 4);
    assert_eq!(s["fleet_layout"], "1x a100-80gb TP2 + 2x a40 TP1");
}

/// `--tp N` runs on the same default physics as TP1: the shipped profile (its dense table replaced by the
/// efficiencies it implies), never a fallback to the analytic roofline.
#[test]
fn tensor_parallel_runs_on_the_shipped_profile() {
    let run = |tp: &str| -> serde_json::Value {
        let o = sim(&[
            "run",
            "--max-requests",
            "150",
            "--rate",
            "4",
            "--length-scale",
            "0.31",
            "--tp",
            tp,
            "--json",
        ]);
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        serde_json::from_slice(&o.stdout).unwrap()
    };
    let (one, two) = (run("1"), run("2"));
    let c1 = one["cost_model"].as_str().unwrap();
    let c2 = two["cost_model"].as_str().unwrap();
    assert!(c1.contains("a40-llama-7b"), "{c1}");
    assert!(
        c2.starts_with("TP2 over")
            && c2.contains("a40-llama-7b")
            && c2.contains("dense table replaced by its efficiencies for --tp 2"),
        "{c2}"
    );
    for s in [&one, &two] {
        let w = s["warnings"].to_string();
        assert!(!w.contains("analytic roofline"), "{w}");
    }
    // Half the weights per GPU and a pool over two GPUs: the replica serves the same requests faster.
    let ttft = |s: &serde_json::Value| s["ttft_p50_s"].as_f64().unwrap();
    assert!(ttft(&two) < ttft(&one), "{} {}", ttft(&two), ttft(&one));
    // A heterogeneous fleet's TP group runs on its GPU's shipped profile too.
    let o = sim(&[
        "run",
        "--max-requests",
        "100",
        "--rate",
        "4",
        "--length-scale",
        "0.31",
        "--replicas",
        "a40:1:2",
        "--json",
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let c = s["cost_model"].as_str().unwrap();
    assert!(c.contains("a40-llama-7b"), "{c}");
    assert!(!s["warnings"].to_string().contains("analytic roofline"));
}

#[test]
fn bad_fleet_options_are_one_line_errors() {
    for (args, needle) in [
        (vec!["run", "--tp", "3"], "--tp must be 1, 2, 4 or 8"),
        (
            vec!["run", "--stream", "x.csv"],
            "--stream needs --replicas",
        ),
        (
            vec!["run", "--replicas", "2", "--router", "nope"],
            "unknown router 'nope'",
        ),
        (vec!["run", "--replicas", "a40:0"], "bad count"),
        (
            vec!["run", "--model", "llama-70b", "--gpu", "a100-80gb"],
            "does not fit",
        ),
        (
            vec!["run", "--tp", "2", "--interconnect", "pcie[bw=1]"],
            "--interconnect",
        ),
    ] {
        let out = sim(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains(needle), "{args:?}: '{needle}' not in {err}");
    }
}
