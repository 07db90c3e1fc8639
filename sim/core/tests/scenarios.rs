//! Hand-computed scenarios: tiny workloads on a constant-cost model, with exact expected timings.
//!
//! Costs: a prefill iteration takes 100 ms, a decode iteration 10 ms, an adapter load 30 ms, whatever the
//! batch. Times below are in ms from t = 0.

mod common;

use common::{Const, MS, req, run_prefetch, run_with};
use sim_core::engine::{EngineConfig, Outcome, RequestRecord, RunOutput};
use sim_core::time::Nanos;
use sim_core::workload::{Adapter, NO_ADAPTER, Workload};

fn adapters(n: u32) -> Vec<Adapter> {
    (0..n)
        .map(|id| Adapter {
            id,
            rank: 8,
            bytes: 16 << 20,
            slots: 32,
        })
        .collect()
}

fn run(w: &Workload, cfg: EngineConfig, cache_spec: &str) -> RunOutput {
    run_with(w, cfg, &Const, "fifo", cache_spec)
}

fn ms(t: Nanos) -> u64 {
    assert_eq!(t % MS, 0, "{t} ns is not a whole ms");
    t / MS
}

/// (admitted, first token, finished, load wait) in ms.
fn times(r: &RequestRecord) -> (u64, u64, u64, u64) {
    assert_eq!(r.outcome, Outcome::Finished);
    (
        ms(r.admitted),
        ms(r.first_token),
        ms(r.finished),
        ms(r.load_wait),
    )
}

#[test]
fn slora_frees_an_idle_adapter_and_reloads_it_for_the_next_request() {
    // A at 0 (3 tokens) and B at 1000 (2 tokens) share adapter 0.
    let w = Workload {
        adapters: adapters(1),
        requests: vec![req(0, 0, 10, 3, 0), req(1, 1000, 10, 2, 0)],
    };
    let out = run(&w, EngineConfig::new(10_000), "none");
    // A: load 0-30, prefill 30-130 (token 1), decodes end at 140 and 150.
    assert_eq!(times(&out.records[0]), (0, 130, 150, 30));
    // The adapter was freed at 150, so B loads it again: 1000-1030, prefill to 1130, one decode to 1140.
    assert_eq!(times(&out.records[1]), (1000, 1130, 1140, 30));
    assert!(!out.records[0].adapter_hit && !out.records[1].adapter_hit);
    assert_eq!(out.stats.adapter_loads, 2);
    assert_eq!(out.stats.evictions, 2);
    assert_eq!(out.stats.pcie_bytes, 2 * (16 << 20));
    assert_eq!(out.stats.load_stall_ns, 60 * MS);
    // The link moved the two loads (30 ms each) and nothing else.
    assert_eq!(out.stats.link_busy_ns, 60 * MS);
    assert_eq!(
        (out.stats.prefill_iterations, out.stats.decode_iterations),
        (2, 3)
    );
    assert_eq!(out.stats.end_ns, 1140 * MS);
}

#[test]
fn new_requests_merge_only_every_max_wait_tokens_decode_steps() {
    // Base model only. A (100 tokens) at 0; B (5 tokens) at 105, during A's first decodes.
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 10, 100, NO_ADAPTER),
            req(1, 105, 10, 5, NO_ADAPTER),
        ],
    };
    let out = run(&w, EngineConfig::new(10_000), "none");
    // A's prefill 0-100, then 10 decodes end at 200; only then B merges: prefill 200-300.
    assert_eq!(times(&out.records[1]), (200, 300, 340, 0));
    // A waits through B's prefill: its gap from 200 to 310 is its worst; its 89 later tokens end at 1190.
    assert_eq!(times(&out.records[0]), (0, 100, 1190, 0));
    assert_eq!(ms(out.records[0].max_gap), 110);
    assert_eq!(ms(out.records[1].max_gap), 10);
}

#[test]
fn under_policy_cadence_chameleon_merges_every_iteration_and_slora_every_ten() {
    // The scenario above (A: 100 tokens at 0; B: 5 tokens at 105), each system at its own cadence.
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 10, 100, NO_ADAPTER),
            req(1, 105, 10, 5, NO_ADAPTER),
        ],
    };
    let cfg = |policy| EngineConfig {
        policy_cadence: policy,
        ..EngineConfig::new(10_000)
    };
    let b = |cfg, sched| times(&run_with(&w, cfg, &Const, sched, "none").records[1]);
    // Chameleon (mlq) assembles its batch at every iteration: B joins at the end of A's first decode (110),
    // prefills 110-210 and decodes its 4 other tokens by 250.
    assert_eq!(b(cfg(true), "mlq"), (110, 210, 250, 0));
    // A's 99 decodes are 100-110 and 210-1190: one prefill between them, as before; its worst gap is 110.
    let out = run_with(&w, cfg(true), &Const, "mlq", "none");
    assert_eq!(times(&out.records[0]), (0, 100, 1190, 0));
    assert_eq!(ms(out.records[0].max_gap), 110);
    // S-LoRA's fifo declares no cadence of its own: every 10 steps, as under the engine's cadence.
    assert_eq!(b(cfg(true), "fifo"), (200, 300, 340, 0));
    // Under the engine's cadence mlq merges every 10 steps too.
    assert_eq!(b(cfg(false), "mlq"), (200, 300, 340, 0));
    // mlq[merge=3]: A's third decode ends at 130, B prefills 130-230 and ends at 270.
    assert_eq!(b(cfg(true), "mlq[merge=3]"), (130, 230, 270, 0));
}

#[test]
fn backfill_lets_a_short_request_past_a_blocked_head_only_when_the_head_does_not_wait_longer_for_memory()
 {
    // Pool of 100 slots, base model only. A (40 in, 30 out) at 0 reserves 70 at its peak. B (40 in, 30 out)
    // at 50 needs 70 more: it must wait for A. C (10 in, 5 out) at 60 needs 15 and fits beside A.
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 40, 30, NO_ADAPTER),
            req(1, 50, 40, 30, NO_ADAPTER),
            req(2, 60, 10, 5, NO_ADAPTER),
        ],
    };
    let cfg = EngineConfig::new(100);
    // FIFO: A prefills 0-100 and decodes its 29 other tokens by 390; B blocks C until then, and both
    // prefill together 390-490 (B's 29 decodes end at 780, C's 4 at 530).
    let fifo = run_with(&w, cfg.clone(), &Const, "fifo", "none");
    assert_eq!(times(&fifo.records[0]), (0, 100, 390, 0));
    assert_eq!(times(&fifo.records[1]), (390, 490, 780, 0));
    assert_eq!(times(&fifo.records[2]), (390, 490, 530, 0));
    // Backfill (patience 0: no free overtaking): at the merge at 200 A holds 51 slots with 19 tokens to
    // go, so B fits 19 decode steps on (its shadow). C's whole output (5) ends within them: it goes now,
    // prefills 200-300 and is done at 340. B still starts as soon as A is gone: A, paused by C's prefill,
    // ends at 490, and B prefills 490-590 and ends at 880. (The shadow counts decode steps: C's prefill
    // iteration is the one thing B waits longer for.)
    let bf = run_with(&w, cfg.clone(), &Const, "backfill[patience=0]", "none");
    assert_eq!(times(&bf.records[2]), (200, 300, 340, 0));
    assert_eq!(times(&bf.records[0]), (0, 100, 490, 0));
    assert_eq!(times(&bf.records[1]), (490, 590, 880, 0));
    // A younger request with a long output that would hold B's memory past its shadow is not let past.
    let mut w2 = w.clone();
    w2.requests[2] = req(2, 60, 10, 40, NO_ADAPTER);
    let bf = run_with(&w2, cfg, &Const, "backfill[patience=0]", "none");
    assert_eq!(times(&bf.records[1]).0, 390, "B keeps its FIFO start");
    assert!(bf.records[2].admitted >= bf.records[1].admitted);
}

#[test]
fn fifo_holds_the_next_request_until_memory_is_reserved_for_it() {
    // Pool of 100 slots. Each request needs 50 + 10 = 60 slots at its peak, so they cannot run together.
    let w = Workload {
        adapters: vec![],
        requests: vec![req(0, 0, 50, 10, NO_ADAPTER), req(1, 0, 50, 10, NO_ADAPTER)],
    };
    let out = run(&w, EngineConfig::new(100), "none");
    assert_eq!(times(&out.records[0]), (0, 100, 190, 0));
    // B is admitted when A finishes at 190.
    assert_eq!(times(&out.records[1]), (190, 290, 380, 0));
    assert_eq!(out.stats.peak_kv_slots, 60);
    // With 120 slots both fit and share every iteration.
    let out = run(&w, EngineConfig::new(120), "none");
    assert_eq!(times(&out.records[1]), (0, 100, 190, 0));
    assert_eq!(out.stats.peak_kv_slots, 120);
}

#[test]
fn a_request_larger_than_the_pool_is_rejected_with_a_reason() {
    let w = Workload {
        adapters: adapters(1),
        requests: vec![req(0, 0, 50, 10, 0), req(1, 0, 90, 20, NO_ADAPTER)],
    };
    let out = run(&w, EngineConfig::new(100), "none");
    // 50 + 10 + 32 adapter slots = 92 fits; 90 + 20 = 110 does not.
    assert_eq!(times(&out.records[0]), (0, 130, 220, 30));
    match &out.records[1].outcome {
        Outcome::Rejected(why) => {
            let why = why.to_string();
            assert!(why.contains("110 slots") && why.contains("100"), "{why}")
        }
        o => panic!("expected a rejection, got {o:?}"),
    }
}

#[test]
fn adapters_loaded_for_one_prefill_share_the_link_one_after_another() {
    let w = Workload {
        adapters: adapters(2),
        requests: vec![req(0, 0, 10, 2, 0), req(1, 0, 10, 2, 1)],
    };
    let out = run(&w, EngineConfig::new(10_000), "none");
    // Loads 0-30 and 30-60; the prefill waits for both: 60-160.
    for r in &out.records {
        assert_eq!(times(r), (0, 160, 170, 60));
    }
    assert_eq!(out.stats.load_stall_ns, 60 * MS);
}

#[test]
fn next_batch_prefetch_hides_the_next_requests_load() {
    // One request at a time (max batch 1). B's adapter is prefetched while A runs.
    let w = Workload {
        adapters: adapters(2),
        requests: vec![req(0, 0, 10, 2, 0), req(1, 0, 10, 2, 1)],
    };
    let mut cfg = EngineConfig::new(10_000);
    cfg.max_batch = 1;
    let out = run(&w, cfg.clone(), "none");
    // A: load 0-30, prefill 30-130, decode to 140. B's adapter loads 30-60 meanwhile: B hits at 140.
    assert_eq!(times(&out.records[0]), (0, 130, 140, 30));
    assert_eq!(times(&out.records[1]), (140, 240, 250, 0));
    assert!(out.records[1].adapter_hit);
    // Without prefetch B loads after A: 140-170, prefill to 270.
    let out = run_prefetch(&w, cfg, &Const, "fifo", "none", "none");
    assert_eq!(times(&out.records[1]), (140, 270, 280, 30));
}

#[test]
fn a_one_token_request_finishes_at_its_prefill() {
    let w = Workload {
        adapters: vec![],
        requests: vec![req(0, 7, 10, 1, NO_ADAPTER)],
    };
    let out = run(&w, EngineConfig::new(100), "none");
    assert_eq!(times(&out.records[0]), (7, 107, 107, 0));
    assert_eq!(out.stats.decode_iterations, 0);
}
