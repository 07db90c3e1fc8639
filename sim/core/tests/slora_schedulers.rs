//! S-LoRA's alternative schedulers (`slora-abort`, `slora-pets`) on small hand-computed scenarios: which
//! request goes first, which is aborted and when. Constant costs (prefill 100 ms, decode 10 ms, adapter
//! load 30 ms), one request in the batch at a time so the admission order is visible, merges every 10
//! decode steps.

mod common;

use common::{Const, MS, adapters, req, run_with};
use sim_core::engine::api::Abort;
use sim_core::engine::{EngineConfig, Outcome, RunOutput};
use sim_core::workload::{NO_ADAPTER, Workload};

fn one_at_a_time(pool: u64) -> EngineConfig {
    let mut cfg = EngineConfig::new(pool);
    cfg.max_batch = 1;
    cfg
}

/// Request ids in the order they were admitted (finished ones only).
fn admission_order(out: &RunOutput) -> Vec<u32> {
    let mut v: Vec<(u64, u32)> = out
        .records
        .iter()
        .enumerate()
        .filter(|(_, r)| r.outcome == Outcome::Finished)
        .map(|(i, r)| (r.admitted, i as u32))
        .collect();
    v.sort();
    v.into_iter().map(|(_, i)| i).collect()
}

#[test]
fn slora_abort_turns_to_the_newest_request_when_arrivals_outpace_its_batches() {
    // Request 0 runs 0 -> 0.29 s (prefill 0.1 s, 19 decode steps); 1, 2, 3 arrive at 50-70 ms.
    let mut requests = vec![req(0, 0, 10, 20, NO_ADAPTER)];
    requests.extend((1..4).map(|i| req(i, 40 + 10 * i as u64, 10, 20, NO_ADAPTER)));
    let w = Workload {
        adapters: vec![],
        requests,
    };
    // At 0 s: rate = int(0.7 x 1 + 0.3 x 0) = 0 < bs 1: oldest first, request 0; bs = int(0.7 + 0.3) = 1.
    // From 0.2 s (10 decode steps) every step offers: rate = int(0.7 x 3 + 0.3 x 0) = 2 >= 1: newest first,
    // request 3, refused while the batch is full; at 0.29 s it goes in (last = 2 left). Then
    // rate = int(0.7 x (2 - 2) + 0.3 x 2) = 0: oldest first, request 1, then request 2.
    let out = run_with(&w, one_at_a_time(1000), &Const, "slora-abort", "none");
    assert_eq!(admission_order(&out), [0, 3, 1, 2]);
    let admitted: Vec<u64> = out.records.iter().map(|r| r.admitted / MS).collect();
    assert_eq!(admitted, [0, 580, 870, 290]);
    // FIFO: arrival order; the order switch off: the same.
    let fifo = run_with(&w, one_at_a_time(1000), &Const, "fifo", "none");
    assert_eq!(admission_order(&fifo), [0, 1, 2, 3]);
    let plain = run_with(
        &w,
        one_at_a_time(1000),
        &Const,
        "slora-abort[switch=false]",
        "none",
    );
    assert_eq!(admission_order(&plain), [0, 1, 2, 3]);
}

#[test]
fn slora_abort_drops_a_request_at_the_first_merge_after_it_waited_5_5_s() {
    // Request 0 holds the only batch slot 0 -> 6.09 s (599 decode steps); merges are tried at every decode
    // step from 0.2 s. Request 1 (at 0.1 s) reaches 5.5 s of waiting at 5.6 s, a step boundary: aborted
    // then. Request 2 (at 0.205 s) reaches it at 5.705 s: aborted at the next step, 5.71 s. Request 3 (at 5 s)
    // has waited 1.09 s when request 0 ends and runs.
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 10, 600, NO_ADAPTER),
            req(1, 100, 10, 5, NO_ADAPTER),
            req(2, 205, 10, 5, NO_ADAPTER),
            req(3, 5000, 10, 5, NO_ADAPTER),
        ],
    };
    let out = run_with(&w, one_at_a_time(1000), &Const, "slora-abort", "none");
    let limit = 5_500 * MS;
    assert_eq!(
        out.records[1].outcome,
        Outcome::Aborted(Abort::Deadline {
            waited: 5_500 * MS,
            limit
        })
    );
    assert_eq!(out.records[1].finished, 5_600 * MS);
    assert_eq!(
        out.records[2].outcome,
        Outcome::Aborted(Abort::Deadline {
            waited: 5_505 * MS,
            limit
        })
    );
    assert_eq!(out.records[2].finished, 5_710 * MS);
    assert_eq!(out.records[0].finished, 6_090 * MS);
    assert_eq!(out.records[3].outcome, Outcome::Finished);
    assert_eq!(out.records[3].admitted, 6_090 * MS);
    assert_eq!(out.stats.aborted, 2);
    // Under FIFO nothing is dropped: they wait.
    let fifo = run_with(&w, one_at_a_time(1000), &Const, "fifo", "none");
    assert!(fifo.records.iter().all(|r| r.outcome == Outcome::Finished));
    assert_eq!(fifo.records[1].admitted, 6_090 * MS);
}

#[test]
fn slora_pets_plans_the_shortest_prompts_first_above_ten_waiting_then_serves_fifo() {
    // Request 0 (0 -> 0.62 s, after its adapter's 30 ms load) holds the batch while requests 1..12 arrive
    // with prompts 120, 110, .., 10 tokens, all on adapter 0, which stays resident (lru). Pool 8192: profiled batch sizes 2 and 4 (8192 / 2048), so a (mini- or
    // macro-) batch holds at most 4; constant costs make every split cost the same, so the programmes keep
    // the first candidate: mini-batches of 4 from the longest prompt down, one macro-batch each.
    let mut requests = vec![req(0, 0, 500, 50, 0)];
    requests.extend((1..13).map(|i| req(i, i as u64, 130 - 10 * i, 5, 0)));
    let w = Workload {
        adapters: adapters(1, 4),
        requests,
    };
    // At 0.62 s, 12 wait (> 10): minis [90..120], [50..80], [10..40]; the first macro-batch is [10..40]:
    // request 12 (10 tokens) goes first. At 0.76 s, 11 wait: [20, 30, 40] first: request 11. Then 10 wait:
    // FIFO, request 1 (120 tokens) onwards.
    let out = run_with(&w, one_at_a_time(8192), &Const, "slora-pets", "lru");
    assert_eq!(
        admission_order(&out),
        [0, 12, 11, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    assert_eq!(out.records[12].admitted, 620 * MS);
    assert_eq!(out.records[11].admitted, 760 * MS);
    // With the threshold above the queue it is FIFO.
    let fifo = run_with(
        &w,
        one_at_a_time(8192),
        &Const,
        "slora-pets[threshold=12]",
        "lru",
    );
    assert_eq!(admission_order(&fifo), (0..13).collect::<Vec<u32>>());
}
