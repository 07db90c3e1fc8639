//! The fleet's contract, for every registered router: every request routed once and final exactly once; the
//! same seed gives the same outputs at 1 and 2 threads (records, streamed rows, fleet metrics); one replica
//! behind any router is the single engine exactly; each replica behaves exactly as an engine stepped through
//! the requests routed to it. And hand-computed routing: consistent hashing with bounded load.

mod common;

use std::sync::Arc;

use common::{Linear, MS, random_case, req};
use sim_core::cost::CostModel;
use sim_core::cost::tp::Tp;
use sim_core::engine::api::PolicyCtx;
use sim_core::engine::{Engine, EngineConfig, Outcome, Simulated};
use sim_core::fleet::router::{REGISTRY, RouterCtx};
use sim_core::fleet::view::FleetView;
use sim_core::fleet::{self, FleetConfig, FleetInputs, ReplicaGroup};
use sim_core::metrics::{self, RunView};
use sim_core::model::{GpuSpec, ModelSpec};
use sim_core::policy::PolicySpecs;
use sim_core::slo::Slo;
use sim_core::workload::{Adapter, Workload};

fn summary_json(w: &Workload, predicted: &[u32], out: &sim_core::engine::RunOutput) -> String {
    let fin = metrics::finished(out);
    let v = RunView {
        workload: w,
        predicted,
        out,
        slo: Slo::default(),
        model: ModelSpec::by_name("llama-7b").unwrap(),
        gpu: GpuSpec::by_name("a40").unwrap(),
        finished: &fin,
    };
    serde_json::to_string(&metrics::summarize(&v, &[])).unwrap()
}

fn routers() -> Vec<&'static str> {
    REGISTRY.entries.iter().map(|e| e.name).collect()
}

fn fleet_cfg(cfg: &EngineConfig, n: usize, router: &str, threads: usize) -> FleetConfig {
    let gpu = GpuSpec::by_name("a40").unwrap();
    FleetConfig {
        groups: vec![ReplicaGroup {
            gpu,
            count: n,
            tp: Tp::single(gpu),
            cost: Arc::new(Linear) as Arc<dyn CostModel>,
            engine: cfg.clone(),
        }],
        router: router.into(),
        threads,
        sample_ns: 250 * MS,
        stream: None,
    }
}

fn inputs<'a>(
    w: &'a Workload,
    predicted: &'a [u32],
    policies: (&'a str, &'a str, &'a str),
) -> FleetInputs<'a> {
    FleetInputs {
        workload: w,
        predicted,
        slo: Slo::default(),
        seed: 7,
        policies: PolicySpecs {
            scheduler: policies.0,
            cache: policies.1,
            prefetch: policies.2,
        },
    }
}

#[test]
fn every_request_is_routed_once_and_final_once_and_threads_change_nothing() {
    for seed in 0..12 {
        let case = random_case(5000 + seed);
        let w = &case.w;
        let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
        for router in routers() {
            let pol = ("fifo", "lru", case.prefetch.as_str());
            let fc = fleet_cfg(&case.cfg, 3, router, 1);
            let a = fleet::run(&fc, &inputs(w, &predicted, pol)).unwrap();
            assert_eq!(a.routes.len(), w.requests.len());
            assert!(a.routes.iter().all(|&r| r < 3), "{router}: unrouted");
            for (i, rec) in a.output.records.iter().enumerate() {
                assert!(
                    matches!(rec.outcome, Outcome::Finished | Outcome::Rejected(_)),
                    "{router}, seed {seed}: request {i} not final"
                );
            }
            let per: u64 = a.replicas.iter().map(|r| r.acc.requests).sum();
            assert_eq!(
                per,
                w.requests.len() as u64,
                "{router}: counted twice or lost"
            );
            for (r, rep) in a.replicas.iter().enumerate() {
                let routed = a.routes.iter().filter(|&&x| x == r as u32).count() as u64;
                assert_eq!(rep.acc.requests, routed, "{router}: replica {r}");
            }
            // Two threads (records consumed on another thread): identical.
            let b = fleet::run(
                &fleet_cfg(&case.cfg, 3, router, 2),
                &inputs(w, &predicted, pol),
            )
            .unwrap();
            assert!(
                a.output.records == b.output.records
                    && a.output.stats == b.output.stats
                    && a.routes == b.routes
                    && a.samples == b.samples,
                "{router}, seed {seed}: 1 vs 2 threads"
            );
            assert_eq!(a.summary(&fc), b.summary(&fc), "{router}");
            let sum = a.summary(&fc);
            let mut keys: Vec<&str> = sum.keys().map(String::as_str).collect();
            let mut known = fleet::SUMMARY_KEYS.to_vec();
            keys.sort();
            known.sort();
            assert_eq!(keys, known, "fleet::SUMMARY_KEYS");
        }
    }
}

#[test]
fn streamed_rows_hold_each_request_once_and_match_across_threads() {
    let case = random_case(6001);
    let w = &case.w;
    let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
    let dir = std::env::temp_dir().join(format!("sim-fleet-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for router in routers() {
        let mut outs = Vec::new();
        for threads in [1, 2] {
            let mut fc = fleet_cfg(&case.cfg, 4, router, threads);
            let path = dir.join(format!("{router}-{threads}.csv"));
            fc.stream = Some(path.clone());
            let run = fleet::run(&fc, &inputs(w, &predicted, ("sjf", "lfu", "queued"))).unwrap();
            assert!(run.output.records.is_empty() && run.routes.is_empty());
            let text = std::fs::read_to_string(&path).unwrap();
            let mut ids: Vec<u32> = text
                .lines()
                .skip(1)
                .map(|l| l.split(',').next().unwrap().parse().unwrap())
                .collect();
            ids.sort_unstable();
            assert_eq!(
                ids,
                (0..w.requests.len() as u32).collect::<Vec<_>>(),
                "{router}"
            );
            let sum = run.streamed_summary(w, &Slo::default());
            outs.push((text, serde_json::to_string(&sum).unwrap()));
        }
        assert!(
            outs[0] == outs[1],
            "{router}: streamed output differs with threads"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn one_replica_behind_any_router_is_the_single_engine() {
    for seed in 0..15 {
        let mut case = random_case(7000 + seed);
        case.cfg.idle_poll_ns = [0, 10 * MS, 3 * MS][seed as usize % 3];
        let w = &case.w;
        let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
        let specs = ("mlq", "chameleon", case.prefetch.as_str());
        let single = common::run_full(w, case.cfg.clone(), &Linear, specs, &predicted);
        let one = summary_json(w, &predicted, &single);
        let mut csv1 = Vec::new();
        metrics::write_requests_csv(&mut csv1, w, &single).unwrap();
        for router in routers() {
            let run = fleet::run(
                &fleet_cfg(&case.cfg, 1, router, 1),
                &inputs(w, &predicted, specs),
            )
            .unwrap();
            assert!(
                run.output.records == single.records && run.output.stats == single.stats,
                "{router}, seed {seed}"
            );
            let two = summary_json(w, &predicted, &run.output);
            assert_eq!(one, two, "{router}, seed {seed}: summary");
            let mut csv2 = Vec::new();
            metrics::write_requests_csv(&mut csv2, w, &run.output).unwrap();
            assert!(csv1 == csv2, "{router}, seed {seed}: requests.csv");
        }
    }
}

#[test]
fn each_replica_is_an_engine_fed_only_its_requests() {
    for seed in 0..10 {
        let mut case = random_case(8000 + seed);
        case.cfg.idle_poll_ns = if seed % 2 == 0 { 0 } else { 5 * MS };
        let w = &case.w;
        let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
        let specs = ("fifo", "none", case.prefetch.as_str());
        for router in ["random", "cache-aware"] {
            let run = fleet::run(
                &fleet_cfg(&case.cfg, 3, router, 1),
                &inputs(w, &predicted, specs),
            )
            .unwrap();
            for r in 0..3u32 {
                let ctx = PolicyCtx::new(w, &predicted, &case.cfg, Slo::default(), &Linear);
                let pol = PolicySpecs {
                    scheduler: specs.0,
                    cache: specs.1,
                    prefetch: specs.2,
                }
                .build(&ctx)
                .unwrap()
                .policies;
                let mut clock = Simulated(&Linear);
                let mut e = Engine::new(w, case.cfg.clone(), &mut clock, pol);
                for q in w.requests.iter().filter(|q| run.routes[q.id as usize] == r) {
                    e.advance_to(q.arrival);
                    e.push_arrival(q.id);
                }
                let out = e.finish().unwrap();
                for (i, rec) in out.records.iter().enumerate() {
                    if run.routes[i] == r {
                        assert_eq!(
                            rec, &run.output.records[i],
                            "{router}, seed {seed}, request {i}"
                        );
                    }
                }
                assert_eq!(
                    out.stats, run.replicas[r as usize].stats,
                    "{router}, seed {seed}, replica {r}"
                );
            }
        }
    }
}

/// Consistent hashing with bounded load, by hand: 4 replicas, bound 1.5, every request for one adapter and
/// kept outstanding. The k-th request (k outstanding) may go to a replica holding fewer than
/// ceil(1.5 (k + 1) / 4) requests, the first such clockwise from the adapter's point: the home replica h,
/// then its ring successors s1, s2. Bounds for k = 0..7: 1, 1, 2, 2, 2, 3, 3, 3, so the placements are
/// h (0 < 1), s1 (h full at 1), h (1 < 2), s1 (h full), s2 (h, s1 full at 2), h (2 < 3), s1, s2.
/// Once the load drains the adapter is back on h.
#[test]
fn consistent_hashing_keeps_an_adapter_on_its_replica_until_the_bound_spills_it() {
    let w = Workload {
        adapters: vec![Adapter {
            id: 0,
            rank: 8,
            bytes: 1 << 20,
            slots: 8,
        }],
        requests: (0..12).map(|i| req(i, 0, 10, 10, 0)).collect(),
    };
    let predicted = vec![10u32; 12];
    let cap = vec![1.0; 4];
    let ctx = RouterCtx {
        replicas: 4,
        seed: 0,
        workload: &w,
        predicted_output: &predicted,
        capacity: &cap,
    };
    let mut router = REGISTRY
        .build("adapter-affinity[bound=1.5]", &ctx)
        .unwrap()
        .made;
    let mut view = FleetView::new(cap.clone(), 1);
    // An idle fleet: every request of the adapter goes home.
    let h = router.route(&w.requests[0], &view);
    for q in &w.requests[1..4] {
        assert_eq!(router.route(q, &view), h);
    }
    let mut placed = Vec::new();
    for q in &w.requests[..8] {
        let r = router.route(q, &view);
        view.routed(r, 20);
        placed.push(r);
    }
    let (s1, s2) = (placed[1], placed[4]);
    assert!(h != s1 && h != s2 && s1 != s2, "{placed:?}");
    assert_eq!(placed, vec![h, s1, h, s1, s2, h, s1, s2]);
    // Drained: home again.
    for &r in &placed {
        view.done(r, 20);
    }
    assert_eq!(router.route(&w.requests[8], &view), h);
}
