//! Real-execution mode on the CPU backend: short traces run end to end through the engine with every
//! scheduler and several cache policies; every request is accounted for; the outputs have exactly the
//! simulator's schema; a backend failure stops the run cleanly. No assertion depends on timings.

use sim::backend::cpu::{CpuBackend, TinyConfig};
use sim::runner::{self, Report, RunArgs};
use sim_core::engine::{Outcome, Timed};
use sim_core::model::ModelSpec;
use sim_core::trace::Trace;
use sim_core::{cache, sched};

/// 24 requests of the embedded trace, lengths x 0.02 (prompts of a few to ~100 tokens), arriving at 40 req/s
/// into a pool small enough that requests queue and adapters are evicted.
mod common;
use common::scratch as tmp;

fn args() -> RunArgs {
    let mut a = RunArgs::defaults();
    a.max_requests = Some(24);
    a.length_scale = sim_core::length::LengthRule::Fixed(0.02);
    a.rate = Some(40.0);
    a.adapters = 20;
    a.pool_tokens = Some(2500);
    a.seed = 3;
    a
}

fn trace(a: &RunArgs) -> Trace {
    a.resolve().unwrap().load_trace().unwrap()
}

/// Runs `a` for real on `backend`; hands the backend back so its state can be inspected after the run.
fn real(a: &RunArgs, backend: CpuBackend) -> (Report, CpuBackend) {
    let mut clock = Timed(backend);
    let r = runner::run::run(&a.resolve().unwrap(), trace(a), Some(&mut clock)).unwrap();
    (r, clock.0)
}

fn backend(a: &RunArgs, cfg: TinyConfig) -> CpuBackend {
    CpuBackend::new(
        cfg,
        a.pool_tokens.unwrap(),
        a.max_batch,
        ModelSpec::by_name(&a.model).unwrap(),
    )
}

/// Every request finished or rejected, the backend holds no sequence and no KV page afterwards, and it ran
/// exactly the engine's iterations and at least one token per output token.
fn check_accounting(r: &Report, b: &CpuBackend, what: &str) {
    assert!(r.output.aborted.is_none(), "{what}: {:?}", r.output.aborted);
    let mut out_tokens = 0;
    for (q, rec) in r.workload.requests.iter().zip(&r.output.records) {
        match rec.outcome {
            Outcome::Finished => out_tokens += q.output as u64,
            Outcome::Rejected(_) => {}
            Outcome::Aborted(_) | Outcome::Waiting => panic!("{what}: request {} never ran", q.id),
        }
    }
    let s = r.summary.to_map();
    let n = |k: &str| s[k].as_u64().unwrap();
    assert_eq!(n("requests_total"), 24, "{what}");
    assert_eq!(
        n("requests_finished") + n("requests_rejected"),
        24,
        "{what}"
    );
    assert!(n("requests_finished") > 0, "{what}");
    let (pages, _adapters, seqs) = b.occupancy();
    assert_eq!((pages, seqs), (0, 0), "{what}: backend state leaked");
    let (iters, tokens) = b.counters();
    assert_eq!(
        iters,
        n("iterations_prefill") + n("iterations_decode"),
        "{what}"
    );
    assert!(tokens >= out_tokens, "{what}: {tokens} < {out_tokens}");
    assert!(
        s["cost_model"]
            .as_str()
            .unwrap()
            .starts_with("real: cpu backend")
    );
}

#[test]
fn every_scheduler_and_cache_policy_pair_runs_for_real() {
    let tiny = TinyConfig {
        layers: 1,
        ..TinyConfig::default()
    };
    let mut runs = 0;
    for s in sched::REGISTRY.entries {
        for c in cache::REGISTRY.entries {
            let mut a = args();
            a.scheduler = s.name.into();
            a.cache = c.name.into();
            let b = backend(&a, tiny.clone());
            let (r, b) = real(&a, b);
            check_accounting(&r, &b, &format!("{} x {}", s.name, c.name));
            runs += 1;
        }
    }
    assert!(runs >= 4 * 6, "{runs} policy pairs");
}

#[test]
fn real_outputs_have_the_simulators_schema() {
    let a = args();
    let b = backend(&a, TinyConfig::default());
    let (r, b) = real(&a, b);
    check_accounting(&r, &b, "default");
    let s = runner::execute_on(&a, trace(&a)).unwrap();
    let keys = |r: &Report| r.summary.to_map().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&r), keys(&s));
    let (dr, ds) = (tmp("schema-real"), tmp("schema-sim"));
    r.write(&dr).unwrap();
    s.write(&ds).unwrap();
    for f in ["requests.csv", "adapters.csv"] {
        let (x, y) = (
            std::fs::read_to_string(dr.join(f)).unwrap(),
            std::fs::read_to_string(ds.join(f)).unwrap(),
        );
        assert_eq!(x.lines().next(), y.lines().next(), "{f} header");
        assert_eq!(x.lines().count(), y.lines().count(), "{f} rows");
    }
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dr.join("summary.json")).unwrap()).unwrap();
    assert_eq!(json.as_object().unwrap().len(), s.summary.to_map().len());
    // Same trace, same workload: the requests (arrivals, lengths, adapters) are identical.
    assert_eq!(r.workload.requests, s.workload.requests);
    let _ = std::fs::remove_dir_all(dr);
    let _ = std::fs::remove_dir_all(ds);
}

#[test]
fn a_backend_failure_stops_the_run_with_every_request_recorded() {
    let a = args();
    // The backend's KV pool holds 2 pages of 16 tokens while the engine thinks it has 2500 slots: the first
    // prefill that needs more pages fails, like a CUDA out-of-memory error.
    let b = CpuBackend::new(
        TinyConfig::default(),
        16,
        1,
        ModelSpec::by_name("llama-7b").unwrap(),
    );
    let (r, _) = real(&a, b);
    let why = r.output.aborted.as_deref().expect("the run must stop");
    assert!(why.contains("out of KV pages"), "{why}");
    assert_eq!(r.output.records.len(), 24);
    assert!(
        r.output
            .records
            .iter()
            .any(|rec| rec.outcome == Outcome::Waiting)
    );
    assert_eq!(r.summary.aborted.as_deref(), Some(why));
    let d = tmp("aborted");
    r.write(&d).unwrap();
    let csv = std::fs::read_to_string(d.join("requests.csv")).unwrap();
    assert_eq!(csv.lines().count(), 25);
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn sim_real_cli_writes_the_outputs_and_rejects_bad_backends() {
    let bin = env!("CARGO_BIN_EXE_sim");
    let d = tmp("cli");
    let common = [
        "real",
        "--max-requests",
        "8",
        "--length-scale",
        "0.02",
        "--adapters",
        "4",
        "--pool-tokens",
        "3000",
    ];
    let out = std::process::Command::new(bin)
        .args(common)
        .args(["--backend", "cpu[layers=1]", "--json", "--out"])
        .arg(&d)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["requests_finished"].as_u64(), Some(8));
    for f in ["summary.json", "requests.csv", "adapters.csv"] {
        assert!(d.join(f).is_file(), "{f}");
    }
    let bad = std::process::Command::new(bin)
        .args(common)
        .args(["--backend", "tpu"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    // Without an NVIDIA driver the CUDA backend is a one-line error (exit 2), not a panic.
    if !kernels::gpu::libraries().driver {
        let cuda = std::process::Command::new(bin)
            .args(common)
            .args(["--backend", "cuda"])
            .output()
            .unwrap();
        assert_eq!(cuda.status.code(), Some(2));
        let err = String::from_utf8_lossy(&cuda.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("NVIDIA"), "{err}");
    }
    let _ = std::fs::remove_dir_all(d);
}
