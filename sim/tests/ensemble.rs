//! The model's uncertainty as an axis (`"member": "ensemble"`, `--member K`): each member's row is exactly
//! the run of a profile that holds that member's parameters as its own best fit.

use serde_json::{Value, json};
use sim::experiment::{Experiment, Scale, sweep, table};
use sim::runner::RunArgs;

mod common;
use common::tmp;

const METRICS: [&str; 6] = [
    "ttft_p50_s",
    "ttft_p99_s",
    "throughput_rps",
    "adapter_hit_rate",
    "load_stall_s",
    "iterations_decode",
];

#[test]
fn the_ensemble_axis_gives_each_members_separate_run() {
    let dir = tmp("axis");
    let base = json!({"max-requests": 300, "rate": 6, "length-scale": 0.2,
                      "profile": "calibrate/profiles/a40-llama-7b.json"});
    let cfg = json!({
        "name": "ens", "title": "t", "base": base,
        "grid": {"member": "ensemble",
                 "system": [{"label": "S-LoRA", "scheduler": "fifo", "cache": "none"},
                            {"label": "Chameleon", "scheduler": "mlq", "cache": "chameleon"}]}
    });
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let exp = Experiment::from_json(&dir.join("ens.json"), cfg, Scale::Full).unwrap();
    let out = sweep::sweep(&exp, &sweep::SweepOpts::new(dir.join("results"))).unwrap();
    assert!(out.complete);
    let rows = table::read(&out.dir.join("results.csv")).unwrap();
    // The members of the profile the runs use, read here on their own: the best fit and its bootstrap members.
    let text = std::fs::read_to_string(root.join("calibrate/profiles/a40-llama-7b.json")).unwrap();
    let members = sim::ensemble::of_profile(&text, "a40").unwrap();
    assert!(members.len() >= 2, "a profile with a plausible set");
    assert_eq!(rows.len(), 2 * members.len());
    for m in &members {
        // A profile whose own best fit is this member's vector, with no plausible set of its own.
        let mut p: Value = serde_json::from_str(&text).unwrap();
        for (k, v) in &m.params {
            p["params"][k] = json!(v);
        }
        if let Some(o) = p.as_object_mut() {
            o.remove("members");
        }
        let file = dir.join(format!("member{}.json", m.index));
        std::fs::write(&file, serde_json::to_string(&p).unwrap()).unwrap();
        for (sched, cache, label) in [
            ("fifo", "none", "S-LoRA"),
            ("mlq", "chameleon", "Chameleon"),
        ] {
            let mut a = RunArgs::defaults();
            a.max_requests = Some(300);
            a.rate = Some(6.0);
            a.length_scale = "0.2".parse().unwrap();
            a.profile = Some(file.clone());
            a.scheduler = sched.into();
            a.cache = cache.into();
            let alone = sim::runner::execute(&a).unwrap().row();
            let row = rows
                .iter()
                .find(|r| {
                    r.get("member").and_then(Value::as_u64) == Some(m.index as u64)
                        && r.get("system").and_then(Value::as_str) == Some(label)
                })
                .unwrap_or_else(|| panic!("no row for member {} {label}", m.index));
            assert_eq!(
                row.get("member_params").and_then(Value::as_str),
                Some(m.params_text().as_str())
            );
            for k in METRICS {
                // The table holds the value as printed (CSV): equal to 11 significant digits.
                let (x, y) = (row[k].as_f64().unwrap(), alone[k].as_f64().unwrap());
                assert!(
                    (x - y).abs() <= 1e-11 * y.abs(),
                    "member {} {label}: {k}: {x} vs {y}",
                    m.index
                );
            }
        }
    }
    // The members differ: the axis is not one run repeated.
    let p99: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.get("ttft_p99_s").and_then(Value::as_f64))
        .collect();
    assert!(p99.iter().any(|&x| x != p99[0]));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn member_k_is_checked_against_the_set() {
    let mut a = RunArgs::defaults();
    a.max_requests = Some(50);
    a.length_scale = "0.2".parse().unwrap();
    a.rate = Some(4.0);
    a.cost = Some("analytic".into());
    a.member = Some(0);
    assert!(sim::runner::execute(&a).is_ok());
    a.member = Some(1);
    let e = sim::runner::execute(&a).err().unwrap().to_string();
    assert!(
        e.contains("--member 1") && e.contains("1 plausible parameter vector"),
        "{e}"
    );
}
