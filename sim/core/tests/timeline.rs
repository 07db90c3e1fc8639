//! Recording a run: the timeline's memory columns against the engine's own accounting (exact, in slots),
//! a hand-computed scenario, and the Chrome trace parsed as a viewer would.

mod common;

use std::collections::HashMap;

use common::{Case, Const, Linear, MS, adapters, random_case, req};
use serde_json::Value;
use sim_core::cost::CostModel;
use sim_core::engine::api::PolicyCtx;
use sim_core::engine::{Engine, EngineConfig, Outcome, Policies, RunOutput, Simulated};
use sim_core::record::{RecordOptions, Recorder, Row};
use sim_core::slo::Slo;
use sim_core::workload::Workload;
use sim_core::{cache, prefetch, sched};

fn recorded(
    w: &Workload,
    cfg: EngineConfig,
    cost: &dyn CostModel,
    specs: (&str, &str, &str),
    opts: RecordOptions,
) -> (RunOutput, Recorder) {
    let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
    let ctx = PolicyCtx::new(w, &predicted, &cfg, Slo::default(), cost);
    let policies = Policies {
        scheduler: sched::REGISTRY.build(specs.0, &ctx).unwrap().made,
        cache: cache::REGISTRY.build(specs.1, &ctx).unwrap().made,
        prefetch: prefetch::REGISTRY.build(specs.2, &ctx).unwrap().made,
    };
    let mut clock = Simulated(cost);
    let mut rec = Recorder::new(opts);
    let mut e = Engine::new(w, cfg, &mut clock, policies);
    e.observe(Box::new(&mut rec));
    let out = e.run().unwrap();
    (out, rec)
}

fn everything() -> RecordOptions {
    RecordOptions {
        timeline: true,
        trace: true,
        ..RecordOptions::new(1 << 19)
    }
}

/// Integral of `f` over the rows as a step function (a value holds until the next row), to `end`.
fn integral(rows: &[Row], end: u64, f: impl Fn(&Row) -> u64) -> u128 {
    let mut sum = 0u128;
    for (i, r) in rows.iter().enumerate() {
        let until = rows.get(i + 1).map_or(end, |n| n.t);
        sum += f(r) as u128 * (until - r.t) as u128;
    }
    sum
}

#[test]
fn one_request_step_by_step() {
    // Const: prefill 100 ms, decode 10 ms, load 30 ms. One request of 10 + 3 tokens on an 8-slot adapter.
    let w = Workload {
        adapters: adapters(1, 8),
        requests: vec![req(0, 0, 10, 3, 0)],
    };
    let (out, rec) = recorded(
        &w,
        EngineConfig::new(1000),
        &Const,
        ("fifo", "none", "none"),
        everything(),
    );
    let got: Vec<_> = rec
        .rows
        .iter()
        .map(|r| {
            let s = &r.snap;
            (
                r.t / MS,
                r.phase.is_some(),
                s.kv_held,
                s.kv_reserved,
                s.adapters_active,
                s.adapters_idle,
                s.free,
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            // Admitted at 0: prompt + first token held (11), 2 more reserved, the adapter loading.
            (0, true, 11, 2, 8, 0, 979),
            // Its prefill ends at 30 + 100: the first decode writes token 2.
            (130, true, 12, 1, 8, 0, 979),
            (140, true, 13, 0, 8, 0, 979),
            // Done at 150: KV and adapter freed (no cache).
            (150, false, 0, 0, 0, 0, 1000),
        ]
    );
    assert_eq!(rec.rows[0].duration, 100 * MS);
    assert_eq!(out.stats.peak_kv_slots, 13);
    assert_eq!(out.stats.peak_kv_claim_slots, 13);
    // 11 x 130 ms + 12 x 10 + 13 x 10, and a claim of 13 for 150 ms.
    assert_eq!(out.stats.kv_slot_ns, 1680 * MS as u128);
    assert_eq!(out.stats.kv_claim_slot_ns, 1950 * MS as u128);
    assert_eq!((rec.rows[3].hits, rec.rows[3].misses), (0, 1));
    // Rolling TTFT: none before its first token (130 ms), then that one request's.
    assert!(rec.rows[0].ttft_p99_s.is_nan());
    assert!(
        rec.rows[1..]
            .iter()
            .all(|r| r.ttft_p50_s == 0.13 && r.ttft_p99_s == 0.13)
    );
}

#[test]
fn rolling_ttft_percentiles_forget_what_left_the_window() {
    // Const costs: each request alone, TTFT 100 ms; the second waits 50 ms behind the first's prefill.
    let w = Workload {
        adapters: Vec::new(),
        requests: vec![
            req(0, 0, 10, 1, u32::MAX),
            req(1, 50, 10, 1, u32::MAX),
            req(2, 5000, 10, 1, u32::MAX),
        ],
    };
    let opts = RecordOptions {
        ttft_window_ns: 1000 * MS,
        ..everything()
    };
    let (out, rec) = recorded(
        &w,
        EngineConfig::new(1000),
        &Const,
        ("fifo", "none", "none"),
        opts,
    );
    let ttft: Vec<u64> = out
        .records
        .iter()
        .zip(&w.requests)
        .map(|(r, q)| (r.first_token - q.arrival) / MS)
        .collect();
    assert_eq!(ttft, vec![100, 150, 100]);
    let at = |t: u64| rec.rows.iter().rev().find(|r| r.t <= t * MS).unwrap();
    // At 200 ms both are in the window: P50 125 ms, P99 149.5 ms.
    assert!((at(200).ttft_p50_s - 0.125).abs() < 1e-12);
    assert!((at(200).ttft_p99_s - 0.1495).abs() < 1e-12);
    // At 5 s (the third's prefill starts) both left the window (1 s): nothing.
    assert!(at(5000).ttft_p50_s.is_nan());
}

#[test]
fn memory_columns_sum_to_the_pool_and_match_the_summary() {
    for seed in 0..300 {
        let Case { w, cfg, prefetch } = random_case(seed);
        for (s, c) in [("fifo", "none"), ("fifo", "lru"), ("sjf", "chameleon")] {
            let (out, rec) = recorded(&w, cfg.clone(), &Linear, (s, c, &prefetch), everything());
            let st = &out.stats;
            for r in &rec.rows {
                let m = &r.snap;
                assert_eq!(
                    m.kv_held + m.kv_reserved + m.adapters_active + m.adapters_idle + m.free,
                    cfg.pool_slots,
                    "seed {seed}"
                );
                assert!(m.kv_claim >= m.kv_held + m.kv_reserved);
            }
            let max = |f: fn(&Row) -> u64| rec.rows.iter().map(f).max().unwrap_or(0);
            assert_eq!(
                max(|r| r.snap.kv_held),
                st.peak_kv_slots,
                "seed {seed} {s} {c}"
            );
            assert_eq!(
                max(|r| r.snap.kv_claim),
                st.peak_kv_claim_slots,
                "seed {seed}"
            );
            assert_eq!(
                integral(&rec.rows, st.end_ns, |r| r.snap.kv_held),
                st.kv_slot_ns,
                "seed {seed} {s} {c}"
            );
            assert_eq!(
                integral(&rec.rows, st.end_ns, |r| r.snap.kv_claim),
                st.kv_claim_slot_ns,
                "seed {seed} {s} {c}"
            );
            // Adapters can also load (prefetch) and go between iterations: rows see no more than the peak.
            assert!(
                max(|r| r.snap.adapters_active + r.snap.adapters_idle) <= st.peak_adapter_slots
            );
            // Recording changes nothing.
            let plain = common::run_prefetch(&w, cfg.clone(), &Linear, s, c, &prefetch);
            assert_eq!(plain.records, out.records, "seed {seed}");
            assert_eq!(plain.stats, out.stats, "seed {seed}");
        }
    }
}

/// Parses a trace like a viewer: per async id, begins and ends nest and balance; per track, complete
/// events are in time order and do not overlap. Returns the ids of the request spans.
fn check_trace(text: &str) -> Vec<u64> {
    let v: Value = serde_json::from_str(text).expect("valid JSON");
    let events = v["traceEvents"].as_array().expect("traceEvents");
    let mut stacks: HashMap<u64, Vec<String>> = HashMap::new();
    let mut last_ts: HashMap<(u64, u64), f64> = HashMap::new();
    let mut last_end: HashMap<(u64, u64), f64> = HashMap::new();
    let mut spans = Vec::new();
    let mut prev = f64::NEG_INFINITY;
    for e in events {
        let ph = e["ph"].as_str().expect("ph");
        if ph == "M" {
            continue;
        }
        let ts = e["ts"].as_f64().expect("ts");
        assert!(ts >= prev, "events sorted by time");
        prev = ts;
        let name = e["name"].as_str().expect("name").to_string();
        match ph {
            "X" => {
                let track = (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap());
                let dur = e["dur"].as_f64().expect("dur");
                assert!(dur >= 0.0);
                assert!(ts >= *last_ts.get(&track).unwrap_or(&0.0));
                assert!(
                    ts + 1e-3 >= *last_end.get(&track).unwrap_or(&0.0),
                    "{name} overlaps the previous slice on {track:?}"
                );
                last_ts.insert(track, ts);
                last_end.insert(track, ts + dur);
            }
            "b" => {
                let id = e["id"].as_u64().expect("id");
                if name == "request" {
                    assert!(!stacks.contains_key(&id), "one span per request");
                    spans.push(id);
                }
                stacks.entry(id).or_default().push(name);
            }
            "e" => {
                let id = e["id"].as_u64().expect("id");
                let top = stacks.get_mut(&id).and_then(|s| s.pop());
                assert_eq!(top.as_deref(), Some(name.as_str()), "unbalanced end");
            }
            "C" => assert!(e["args"].is_object()),
            other => panic!("unexpected phase {other}"),
        }
    }
    assert!(stacks.values().all(|s| s.is_empty()), "every begin ends");
    spans
}

#[test]
fn chrome_trace_is_valid_with_one_span_per_finished_request() {
    for seed in [1, 7, 42] {
        let Case { w, cfg, prefetch } = random_case(seed);
        let (out, rec) = recorded(
            &w,
            cfg,
            &Linear,
            ("mlq", "chameleon", &prefetch),
            everything(),
        );
        let mut buf = Vec::new();
        rec.write_chrome_trace(&mut buf, &w).unwrap();
        let mut spans = check_trace(std::str::from_utf8(&buf).unwrap());
        spans.sort_unstable();
        let finished: Vec<u64> = (0..out.records.len())
            .filter(|&i| out.records[i].outcome == Outcome::Finished)
            .map(|i| i as u64)
            .collect();
        assert_eq!(spans, finished, "seed {seed}");
        let mut csv = Vec::new();
        rec.write_timeline_csv(&mut csv).unwrap();
        let csv = String::from_utf8(csv).unwrap();
        assert_eq!(csv.lines().count(), rec.rows.len() + 1);
    }
}

#[test]
fn a_trace_window_keeps_what_starts_in_it() {
    let Case { w, cfg, prefetch } = random_case(3);
    let end = w.requests.last().unwrap().arrival;
    let window = (end / 3, 2 * end / 3);
    let opts = RecordOptions {
        trace: true,
        window,
        ..RecordOptions::new(1 << 19)
    };
    let (_, rec) = recorded(&w, cfg, &Linear, ("fifo", "none", &prefetch), opts);
    let mut buf = Vec::new();
    rec.write_chrome_trace(&mut buf, &w).unwrap();
    let spans = check_trace(std::str::from_utf8(&buf).unwrap());
    for id in spans {
        let a = w.requests[id as usize].arrival;
        assert!(a >= window.0 && a <= window.1);
    }
    assert!(rec.rows.iter().all(|r| r.t >= window.0 && r.t <= window.1));
}
