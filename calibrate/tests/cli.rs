//! Runs the built `calibrate` binary the way a user would, on whatever machine the tests run on (CI has no
//! GPU): failures must be one line on stderr with exit code 2 and never a panic.

use std::path::PathBuf;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_calibrate");

fn example() -> String {
    concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/example-profile.json").to_string()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("calibrate-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("RUST_BACKTRACE")
        .output()
        .expect("run calibrate")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Exit code 2, exactly one line on stderr starting with "calibrate: ", mentioning `needle`, no panic.
fn assert_clean_failure(args: &[&str], needle: &str) {
    let o = run(args);
    let e = stderr(&o);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
    assert_eq!(e.lines().count(), 1, "{args:?}: not one line: {e:?}");
    assert!(e.starts_with("calibrate: "), "{e}");
    assert!(e.contains(needle), "{args:?}: {e} lacks {needle}");
    assert!(
        !e.contains("panicked") && !e.contains("RUST_BACKTRACE"),
        "{e}"
    );
}

#[test]
fn measuring_without_a_gpu_is_a_one_line_error() {
    if kernels::gpu::libraries().driver {
        eprintln!("a CUDA driver is present here: the no-GPU path cannot be exercised");
        return;
    }
    let out = tmp("p.json");
    let o = run(&["--quick", "--out", out.to_str().unwrap()]);
    assert!(o.stdout.is_empty());
    assert_clean_failure(
        &["--quick", "--out", out.to_str().unwrap()],
        "no NVIDIA GPU driver",
    );
    assert!(!out.exists(), "no profile may be written without a GPU");
    assert_clean_failure(&["check"], "no NVIDIA GPU driver");
}

#[test]
fn bad_flags_are_named_before_the_gpu_is_touched() {
    assert_clean_failure(&["--bogus"], "--bogus");
    assert_clean_failure(&["--model", "llama-99b"], "--model");
    assert_clean_failure(&["--dtype", "fp8"], "--dtype");
    assert_clean_failure(&["check", "--dtype", "fp8"], "--dtype");
    assert_clean_failure(&["--mem-limit-gib", "-3"], "--mem-limit-gib");
    assert_clean_failure(&["--out", "/no/such/dir/p.json"], "--out");
    assert_clean_failure(
        &["predict", "--profile", "/no/such/profile.json"],
        "--profile",
    );
    assert_clean_failure(
        &["predict", "--profile", &example(), "--ranks", "8,0"],
        "--ranks",
    );
    assert_clean_failure(
        &["predict", "--profile", &example(), "--load", "teleport"],
        "--load",
    );
    assert_clean_failure(&["predict"], "--profile");
    let t = tmp("bad.json");
    std::fs::write(&t, "{\"schema\": \"something else\"}").unwrap();
    assert_clean_failure(
        &["report", "--profile", t.to_str().unwrap()],
        "not a cost profile",
    );
}

#[test]
fn help_and_version_succeed() {
    let o = run(&["--help"]);
    assert_eq!(o.status.code(), Some(0));
    let text = String::from_utf8_lossy(&o.stdout);
    for sub in ["predict", "transfer", "report", "check", "--quick"] {
        assert!(text.contains(sub), "{sub} missing from help");
    }
    assert_eq!(run(&["--version"]).status.code(), Some(0));
    // Every model and GPU the tools accept is listed (was: 3 models and 4 GPUs).
    for m in sim_core::model::MODELS {
        assert!(text.contains(m.name), "{} missing from --help", m.name);
    }
    let transfer = String::from_utf8_lossy(&run(&["transfer", "--help"]).stdout).to_string();
    for g in sim_core::model::GPUS {
        assert!(
            transfer.contains(g.name),
            "{} missing from transfer --help",
            g.name
        );
    }
}

#[test]
fn predict_prints_ttft_per_rank_for_the_example_profile() {
    let o = run(&["predict", "--profile", &example(), "--input-tokens", "512"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    let rows: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|w| w.first().is_some_and(|x| x.parse::<u32>().is_ok()))
        .collect();
    let ranks: Vec<u32> = rows.iter().map(|w| w[0].parse().unwrap()).collect();
    assert_eq!(ranks, vec![8, 16, 32, 64, 128]);
    // Columns: rank, MiB, load, prefill, TTFT; TTFT = load + prefill and grows with the rank.
    let ttft: Vec<f64> = rows.iter().map(|w| w[4].parse().unwrap()).collect();
    for w in &rows {
        let (load, pre, t): (f64, f64, f64) = (
            w[2].parse().unwrap(),
            w[3].parse().unwrap(),
            w[4].parse().unwrap(),
        );
        assert!((load + pre - t).abs() < 0.011, "{w:?}");
    }
    assert!(ttft.windows(2).all(|p| p[1] > p[0]), "{ttft:?}");
    assert_eq!(rows[0][1], "16.0", "a rank-8 Llama-7B adapter is 16 MiB");
}

#[test]
fn transfer_writes_a_flagged_profile_that_predict_and_report_accept() {
    let out = tmp("h100.json");
    let o = run(&[
        "transfer",
        "--from",
        &example(),
        "--from-gpu",
        "a40",
        "--to-gpu",
        "h100-80gb",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let p = sim_core::cost::profile::CostProfile::read(&out).unwrap();
    assert_eq!(p.gpu.name, "h100-80gb");
    assert!(
        p.provenance
            .transferred_from
            .as_deref()
            .unwrap()
            .contains("a40")
    );
    let o = run(&["predict", "--profile", out.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&o.stdout).contains("TRANSFERRED"));
    let o = run(&["report", "--profile", out.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(0));
    for t in ["prefill", "decode", "lora", "adapter_load"] {
        assert!(text.lines().any(|l| l.starts_with(t)), "{t}: {text}");
    }
    assert_clean_failure(
        &[
            "transfer",
            "--from",
            &example(),
            "--from-gpu",
            "v100",
            "--to-gpu",
            "a40",
            "--out",
            "x.json",
        ],
        "--from-gpu",
    );
    assert_clean_failure(
        &[
            "transfer",
            "--from",
            "/no/such.json",
            "--from-gpu",
            "a40",
            "--to-gpu",
            "a40",
            "--out",
            "x.json",
        ],
        "--from",
    );
    assert_clean_failure(
        &[
            "transfer",
            "--from",
            &example(),
            "--from-gpu",
            "a40",
            "--to-gpu",
            "a40",
            "--out",
            "/no/such/dir/x.json",
        ],
        "--out",
    );
}
