//! Invariants over many random workloads: every request ends exactly once (finished, or rejected for a
//! stated reason), memory never exceeds the pool, timings are ordered, and the same seed gives the same bytes.

mod common;

use common::{Case, Linear, random_case, run_prefetch};
use sim::engine::Outcome;
use sim::runner::{self, RunArgs};

#[test]
fn every_request_ends_exactly_once_and_memory_stays_within_the_pool() {
    for seed in 0..400 {
        let Case { w, cfg, prefetch } = random_case(seed);
        for (sched_spec, cache_spec) in [("fifo", "none")] {
            // The engine also asserts the memory bound after every allocation.
            let out = run_prefetch(&w, cfg.clone(), &Linear, sched_spec, cache_spec, &prefetch);
            assert!(out.stats.peak_total_slots <= cfg.pool_slots, "seed {seed}");
            assert_eq!(out.records.len(), w.requests.len());
            for (r, rec) in w.requests.iter().zip(&out.records) {
                let slots = w.adapter(r.adapter).map_or(0, |a| a.slots);
                let too_big = r.input as u64 + cfg.budget(r) as u64 + slots > cfg.pool_slots
                    || r.input as u64 > cfg.max_prefill_tokens;
                match &rec.outcome {
                    Outcome::Finished => {
                        assert!(
                            !too_big,
                            "seed {seed}: request {} should have been rejected",
                            r.id
                        );
                        assert!(r.arrival <= rec.admitted, "seed {seed}");
                        assert!(
                            rec.admitted + rec.load_wait < rec.first_token,
                            "seed {seed}"
                        );
                        assert!(rec.first_token <= rec.finished, "seed {seed}");
                        assert_eq!(
                            rec.first_token == rec.finished,
                            r.output == 1,
                            "seed {seed}"
                        );
                    }
                    Outcome::Rejected(why) => {
                        assert!(too_big, "seed {seed}: request {} rejected: {why}", r.id);
                    }
                    Outcome::Waiting => panic!("seed {seed}: request {} never ran", r.id),
                }
            }
        }
    }
}

#[test]
fn same_seed_gives_byte_identical_outputs() {
    let dir = std::env::temp_dir().join(format!("sim-determinism-{}", std::process::id()));
    let mut args = RunArgs::defaults();
    args.max_requests = Some(1500);
    args.rate = Some(6.0);
    args.seed = 42;
    let mut bytes = Vec::new();
    for i in 0..2 {
        let d = dir.join(i.to_string());
        runner::execute(&args).unwrap().write(&d).unwrap();
        bytes.push((
            std::fs::read(d.join("summary.json")).unwrap(),
            std::fs::read(d.join("requests.csv")).unwrap(),
        ));
    }
    assert!(bytes[0] == bytes[1], "two runs with seed 42 differ");
    args.seed = 43;
    let d = dir.join("other");
    runner::execute(&args).unwrap().write(&d).unwrap();
    assert_ne!(
        std::fs::read(d.join("requests.csv")).unwrap(),
        bytes[0].1,
        "another seed, other arrivals"
    );
    std::fs::remove_dir_all(&dir).ok();
}
