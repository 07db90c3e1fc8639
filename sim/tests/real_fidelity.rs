//! `sim fidelity` on the CPU backend: calibrate, simulate, run for real, compare. Structure only: the error
//! values depend on timings and are not asserted.

use sim::fidelity::{self, FidelityArgs};
use sim::runner::RunArgs;
use sim_core::cost::profile::CostProfile;

#[test]
fn fidelity_writes_a_profile_both_runs_and_the_comparison() {
    let mut run = RunArgs::defaults();
    run.max_requests = Some(10);
    run.length_scale = sim_core::length::LengthRule::Fixed(0.02);
    run.rate = Some(20.0);
    run.adapters = 6;
    run.ranks = vec![8, 32];
    run.pool_tokens = Some(3000);
    let out = std::env::temp_dir().join(format!("sim-fidelity-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let f = FidelityArgs {
        run,
        backend: "cpu[layers=1]".into(),
        out: out.clone(),
        repeats: 1,
    };
    let cmp = fidelity::fidelity(&f).unwrap();
    assert_eq!(cmp.requests_total, 10);
    assert_eq!(
        cmp.requests.len(),
        10,
        "every request finished in both runs"
    );
    for (_, s, r) in &cmp.requests {
        assert!(s.ttft > 0.0 && r.ttft > 0.0 && s.e2e >= s.ttft && r.e2e >= r.ttft);
    }
    let profile = CostProfile::read(&out.join("profile.json")).unwrap();
    assert_eq!(profile.model.name, "tiny-llama");
    assert!(!profile.lora.is_empty() && !profile.adapter_load.is_empty());
    for d in ["sim", "real"] {
        for file in ["summary.json", "requests.csv", "adapters.csv"] {
            assert!(out.join(d).join(file).is_file(), "{d}/{file}");
        }
    }
    let csv = std::fs::read_to_string(out.join("fidelity.csv")).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next(), Some("metric,kind,sim,real,error,requests"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(rows.iter().all(|r| r.len() == 6));
    for m in ["ttft", "tbt_mean", "e2e"] {
        for k in ["per_request_median", "per_request_p90"] {
            assert!(rows.iter().any(|r| r[0] == m && r[1] == k), "{m} {k}");
        }
    }
    for m in [
        "ttft_p50_s",
        "ttft_p99_s",
        "tbt_p50_s",
        "tbt_p99_s",
        "e2e_mean_s",
        "throughput_rps",
    ] {
        let r = rows.iter().find(|r| r[0] == m && r[1] == "run").unwrap();
        assert!(
            r[2].parse::<f64>().unwrap() > 0.0 && r[3].parse::<f64>().unwrap() > 0.0,
            "{m}"
        );
    }
    let req = std::fs::read_to_string(out.join("fidelity_requests.csv")).unwrap();
    assert_eq!(req.lines().count(), 11);
    let svg = std::fs::read_to_string(out.join("fidelity.svg")).unwrap();
    assert!(svg.contains("<svg") && svg.contains("simulated vs real"));
    assert!(out.join("fidelity.png").is_file());
    assert!(cmp.table().contains("per request |sim - real| / real"));
    let _ = std::fs::remove_dir_all(out);
}
