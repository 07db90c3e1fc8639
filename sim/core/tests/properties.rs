//! Invariants over many random workloads: every request ends exactly once (finished, or rejected for a
//! stated reason), memory never exceeds the pool, timings are ordered. (Same seed, same bytes: the lab's
//! tests/determinism.rs, through the CLI's outputs.)

mod common;

use common::{Case, Linear, random_case, run_prefetch};
use sim_core::engine::Outcome;

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
                    Outcome::Aborted(why) => panic!("seed {seed}: fifo aborted {}: {why}", r.id),
                    Outcome::Waiting => panic!("seed {seed}: request {} never ran", r.id),
                }
            }
        }
    }
}
