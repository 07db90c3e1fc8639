//! Hand-computed scenarios per policy, on the constant-cost model (prefill 100 ms, decode 10 ms, load 30 ms).

mod common;

use common::{Const, MS, Padded, adapters, req, run_predicted, run_prefetch, run_with};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sim_core::engine::{EngineConfig, Outcome};
use sim_core::workload::{Adapter, NO_ADAPTER, Request, Workload};

/// One request at a time, no prefetch: the cache sees the arrival order as its reference string.
fn sequential(pool: u64) -> EngineConfig {
    let mut cfg = EngineConfig::new(pool);
    cfg.max_batch = 1;
    cfg
}

fn hits(w: &Workload, cfg: EngineConfig, cache: &str) -> Vec<bool> {
    let out = run_prefetch(w, cfg, &Const, "fifo", cache, "none");
    out.records.iter().map(|r| r.adapter_hit).collect()
}

/// Requests 1 s apart, each alone on the GPU, 10 prompt + 10 output tokens (20 slots at peak).
fn one_per_second(uses: &[u32], adapters: Vec<Adapter>) -> Workload {
    let requests = uses
        .iter()
        .enumerate()
        .map(|(i, &a)| req(i as u32, i as u64 * 1000, 10, 10, a))
        .collect();
    Workload { adapters, requests }
}

#[test]
fn lru_and_belady_evict_the_expected_adapters() {
    // Room for two 32-slot adapters beside one request: 64 + 20 slots.
    let w = one_per_second(&[0, 1, 0, 2, 1, 0], adapters(3, 32));
    // LRU: at the 4th request (adapter 2) it evicts 1 (0 was used more recently); then 1 and 0 miss again.
    assert_eq!(
        hits(&w, sequential(84), "lru"),
        [false, false, true, false, false, false]
    );
    // Belady evicts 0 instead (needed last), so the 5th request (adapter 1) hits.
    assert_eq!(
        hits(&w, sequential(84), "belady"),
        [false, false, true, false, true, false]
    );
    // Without a cache only a repeat while the adapter is still in use could hit: none here.
    assert_eq!(hits(&w, sequential(84), "none"), [false; 6]);
}

#[test]
fn chameleon_evicts_the_small_rare_adapter_that_lru_keeps() {
    // a0: 64 slots, used twice; a1: 16 slots, used once but most recently. Room: 80 + 20 slots.
    let ads = vec![
        Adapter {
            id: 0,
            rank: 16,
            bytes: 64 << 19,
            slots: 64,
        },
        Adapter {
            id: 1,
            rank: 4,
            bytes: 16 << 19,
            slots: 16,
        },
        Adapter {
            id: 2,
            rank: 4,
            bytes: 16 << 19,
            slots: 16,
        },
    ];
    let w = one_per_second(&[0, 0, 1, 2, 0], ads);
    // Adapter 2 loads into 16 of the 20 free slots; its prompt then needs 11. Chameleon scores a0 = .45*1 + .10*0 + .45*1 = 0.9 and
    // a1 = .45*.5 + .10*1 + .45*.25 = 0.44: it evicts a1 and the last request (a0) hits.
    assert_eq!(
        hits(&w, sequential(100), "chameleon"),
        [false, true, false, false, true]
    );
    assert_eq!(
        hits(&w, sequential(100), "fairshare"),
        [false, true, false, false, true]
    );
    // LRU evicts a0, the least recently used, and misses it at the end.
    assert_eq!(
        hits(&w, sequential(100), "lru"),
        [false, true, false, false, false]
    );
}

#[test]
fn chameleon_keeps_adapters_of_queued_requests() {
    // While a request for a0 waits in the queue, a2's load must evict a1 even though a1 scores higher.
    let ads = vec![
        Adapter {
            id: 0,
            rank: 4,
            bytes: 16 << 19,
            slots: 16,
        },
        Adapter {
            id: 1,
            rank: 16,
            bytes: 64 << 19,
            slots: 64,
        },
        Adapter {
            id: 2,
            rank: 8,
            bytes: 32 << 19,
            slots: 32,
        },
    ];
    let requests = vec![
        req(0, 0, 10, 10, 0),
        req(1, 1000, 10, 10, 1),
        req(2, 2000, 10, 10, 2),
        // Arrives while request 2 runs, so it is queued when request 2 needs room.
        req(3, 2000, 10, 10, 0),
    ];
    let w = Workload {
        adapters: ads,
        requests,
    };
    assert_eq!(
        hits(&w, sequential(100), "chameleon"),
        [false, false, false, true]
    );
    assert_eq!(
        hits(&w, sequential(100), "chameleon[protect_queued=false]"),
        [false, false, false, false]
    );
}

/// Belady's optimality holds where its theorem does: equal-size adapters, a fixed cache size (requests one
/// at a time, all the same size) and the arrival order as the reference string.
#[test]
fn belady_never_misses_more_than_lru() {
    for seed in 0..200 {
        let mut rng = StdRng::seed_from_u64(seed);
        let n_adapters = rng.random_range(2..8u32);
        let capacity = rng.random_range(1..n_adapters as u64);
        let uses: Vec<u32> = (0..rng.random_range(5..60))
            .map(|_| rng.random_range(0..n_adapters))
            .collect();
        let w = one_per_second(&uses, adapters(n_adapters, 32));
        let misses = |c: &str| {
            hits(&w, sequential(capacity * 32 + 20), c)
                .iter()
                .filter(|h| !**h)
                .count()
        };
        let (b, l) = (misses("belady"), misses("lru"));
        assert!(
            b <= l,
            "seed {seed}: belady {b} misses > lru {l} ({uses:?}, capacity {capacity})"
        );
        for other in ["lfu", "gdsf", "chameleon", "fairshare"] {
            assert!(b <= misses(other), "seed {seed}: belady beaten by {other}");
        }
    }
}

#[test]
fn mlq_admits_a_small_request_ahead_of_a_large_one_queued_earlier() {
    // Base model, pool 1000. R0 (500 + 50) runs; L (600 + 100, needs 700) arrives at 10 ms, S (10 + 10)
    // at 20 ms. The first merge after R0's prefill is at 200 ms (10 decode steps).
    let requests = vec![
        req(0, 0, 500, 50, NO_ADAPTER),
        req(1, 10, 600, 100, NO_ADAPTER),
        req(2, 20, 10, 10, NO_ADAPTER),
    ];
    let w = Workload {
        adapters: vec![],
        requests,
    };
    let fifo = run_with(&w, EngineConfig::new(1000), &Const, "fifo", "none");
    // FIFO: L cannot fit beside R0 and blocks S until R0 ends at 590 ms.
    assert_eq!(fifo.records[2].admitted, 590 * MS);
    assert_eq!(fifo.records[1].admitted, 590 * MS);
    // MLQ: S's queue (WRS 0.07) is served before L's (WRS 1.0): S goes in at 200 ms. Its prefill delays R0,
    // which now ends at 690 ms, when L goes in.
    for mlq in ["mlq-static", "mlq[warmup=3]"] {
        let out = run_with(&w, EngineConfig::new(1000), &Const, mlq, "none");
        assert_eq!(out.records[2].admitted, 200 * MS, "{mlq}");
        assert_eq!(
            out.records[2].first_token - w.requests[2].arrival,
            280 * MS,
            "{mlq}"
        );
        assert_eq!(out.records[1].admitted, 690 * MS, "{mlq}");
    }
}

#[test]
fn sjf_serves_the_shortest_prediction_first() {
    // All waiting behind R0; one slot at a time (max batch 2 with R0 running, then 1 after).
    let requests = vec![
        req(0, 0, 10, 30, NO_ADAPTER),
        req(1, 10, 10, 50, NO_ADAPTER),
        req(2, 20, 10, 5, NO_ADAPTER),
        req(3, 30, 10, 20, NO_ADAPTER),
    ];
    let w = Workload {
        adapters: vec![],
        requests,
    };
    let mut cfg = EngineConfig::new(10_000);
    cfg.max_batch = 1;
    let out = run_with(&w, cfg, &Const, "sjf[aging=0]", "none");
    let order = |i: usize| out.records[i].admitted;
    assert!(
        order(2) < order(3) && order(3) < order(1),
        "{:?}",
        out.records.iter().map(|r| r.admitted).collect::<Vec<_>>()
    );
}

/// The bypass scenarios' adapters: a0 (8 slots) and a1 (200 slots).
fn bypass_adapters() -> Vec<Adapter> {
    [(0, 2, 8), (1, 50, 200)]
        .into_iter()
        .map(|(id, rank, slots)| Adapter {
            id,
            rank,
            bytes: slots << 19,
            slots,
        })
        .collect()
}

#[test]
fn a_bypass_is_squashed_when_the_head_becomes_feasible_first() {
    // Pool 300; a0: 8 slots, a1: 200 slots. R0 (base model, WRS 1.0) is predicted at 1000 output tokens
    // but makes 50. H (a1, 10 + 10) arrives before Y (a0, 10 + 100); both fall in the first WRS quarter.
    // At the merge at 200 ms (R0's prefill 0-100, 10 decodes) H's KV fits but its adapter does not
    // (150 + 200 > 300), and the least predicted remaining time of a running request (R0: 989 steps x 10 ms)
    // exceeds Y's service time (about 1 s): Y bypasses H (load 200-230, prefill to 330). R0 ends at 720 ms;
    // merges are tried at every step by then, and at 720 ms H does not fit beside Y (110 + 8 + 200 > 300)
    // but fits without it (20 + 200): Y is squashed and H admitted.
    let ads = bypass_adapters();
    let requests: Vec<Request> = vec![
        req(0, 0, 100, 50, NO_ADAPTER),
        req(1, 50, 10, 10, 1),
        req(2, 60, 10, 100, 0),
    ];
    let w = Workload {
        adapters: ads,
        requests,
    };
    let predicted = [1000, 10, 100];
    let out = run_predicted(
        &w,
        EngineConfig::new(300),
        &Const,
        "mlq-static",
        "lru",
        &predicted,
    );
    assert_eq!(out.stats.squashes, 1);
    assert_eq!(out.records[2].squashes, 1);
    assert_eq!(out.records[1].admitted, 720 * MS);
    assert!(out.records[2].admitted > 720 * MS, "Y runs again after H");
    assert!(out.records.iter().all(|r| r.outcome == Outcome::Finished));
    // Without bypass, Y waits behind H, R0 ends at 590 ms (no stall for Y) and H goes in then.
    let out = run_predicted(
        &w,
        EngineConfig::new(300),
        &Const,
        "mlq-static[bypass=false]",
        "lru",
        &predicted,
    );
    assert_eq!(out.stats.squashes, 0);
    assert_eq!(out.records[1].admitted, 590 * MS);
    assert!(out.records[2].admitted > out.records[1].admitted);
}

/// mlq-static's four equal quotas over a pool of `pool` slots; every request below has the largest WRS
/// (the same lengths, the largest adapter), so all sit in the last queue and the others donate their quota.
fn static_mlq(w: &Workload, pool: u64, spec: &str) -> Vec<u64> {
    let out = run_prefetch(w, EngineConfig::new(pool), &Const, spec, "none", "none");
    out.records
        .iter()
        .map(|r| {
            assert_eq!(r.outcome, Outcome::Finished);
            r.admitted / MS
        })
        .collect()
}

#[test]
fn mlq_charges_a_shared_rank_128_adapter_once_per_queue_when_asked() {
    // Three requests (100 + 100 tokens) on one rank-128 adapter (512 slots); pool 1,600: quotas of 400, so
    // the last queue may hold 400 + 3 x 400 donated = 1,600. Per request (the paper) they weigh 712 each:
    // A (idle queue) and B (1,424) go, C (2,136) waits until A and B finish at 130 + 99 x 10 = 1,120 ms.
    let w = Workload {
        adapters: adapters(1, 512),
        requests: (0..3).map(|i| req(i, 0, 100, 100, 0)).collect(),
    };
    assert_eq!(static_mlq(&w, 1600, "mlq-static"), [0, 0, 1120]);
    // Charged once for the queue: 712, 912, 1,112: all three at once.
    assert_eq!(static_mlq(&w, 1600, "mlq-static[charge=queue]"), [0, 0, 0]);
    assert_eq!(static_mlq(&w, 1600, "mlq-static[charge=none]"), [0, 0, 0]);
}

#[test]
fn mlq_peak_ledger_admits_what_the_lifetime_ledger_refuses() {
    // Pool 1,000: quotas of 250, the last queue may hold 1,000 with donations. A and B (100 + 300 tokens) at
    // 0, C (the same) at 2,795 ms. The lifetime ledger holds A and B at 400 each: C would make 1,200, so it
    // waits until they finish at 100 + 299 x 10 = 3,090 ms (no adapter: the first token comes with the
    // 100 ms prefill). At 2,800 A and B hold 100 + 271 and have 29 to go: S-LoRA's peak rule counts
    // C + A + B as 101 + 299 = 400, 472 + 2 x 29 = 530, 843 + 3 x 29 = 930 <= 1,000: C goes at 2,800.
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 100, 300, NO_ADAPTER),
            req(1, 0, 100, 300, NO_ADAPTER),
            req(2, 2795, 100, 300, NO_ADAPTER),
        ],
    };
    assert_eq!(static_mlq(&w, 1000, "mlq-static"), [0, 0, 3090]);
    assert_eq!(
        static_mlq(&w, 1000, "mlq-static[ledger=peak]"),
        [0, 0, 2800]
    );
}

#[test]
fn pack_keeps_a_short_low_rank_prompt_out_of_a_long_rank_128_prefill() {
    // A: 2,000-token prompt on a rank-128 adapter; B: 100 tokens on rank 8; both at 0, 5 output tokens each.
    // The padded prefill of both costs 100 + 2 x 2,000 x 128 us = 612 ms; A alone 356 ms, B alone 100.8 ms.
    let mut ads = adapters(2, 512);
    ads[0].rank = 128;
    ads[1].rank = 8;
    let w = Workload {
        adapters: ads,
        requests: vec![req(0, 0, 2000, 5, 0), req(1, 0, 100, 5, 1)],
    };
    let times = |sched: &str| -> Vec<(u64, u64)> {
        let out = run_prefetch(&w, EngineConfig::new(10_000), &Padded, sched, "lru", "none");
        out.records
            .iter()
            .map(|r| (r.admitted, r.first_token))
            .collect()
    };
    // FIFO merges both: first tokens at 612 ms.
    assert_eq!(times("fifo"), [(0, 612 * MS), (0, 612 * MS)]);
    // pack: B would add 256 ms, more than the 100.8 ms of a prefill of its own and more than 1.25 x the 0.8 ms
    // it adds beside a copy of itself (its unpadded work), so A runs alone (first token at 356,
    // done after 4 decode steps at 396); the idle engine then admits B: first token at 396 + 100.8 ms. A's
    // TTFT falls by 256 ms, B's by 115.2 ms, and the GPU spends 155.2 ms less on the two prefills.
    assert_eq!(
        times("pack"),
        [(0, 356 * MS), (396 * MS, 496 * MS + 800_000)]
    );
    // With a slack so large any candidate joins, pack is FIFO.
    assert_eq!(times("pack[slack=1000]"), times("fifo"));
}

#[test]
fn a_bypass_survives_a_refresh_that_moves_its_head_to_another_queue() {
    // The scenario above under the dynamic MLQ (WRS: Y 0.004, H 0.046, R0 1.0; the refreshes at 60 and
    // 400 ms put Y and H in queue 0 of 2), so Y bypasses H at 200 ms as before. Six small requests arrive
    // at 400-405 ms: three of WRS 0.0046 (base model, 1 + 1) and three of 0.046 (H's adapter, 10 + 1, so
    // they cannot bypass H). The refresh at 700 ms sees only them (window 0.5 s) and splits the queues at
    // 0.025: H moves to queue 1 while its bypasser stays tied to it. At 720 ms (R0 ends) H fits only
    // without Y: Y is squashed and H admitted at once, as without the refresh (before queue 0, Y's, could
    // take the memory back). Y runs again at 940 ms, after H's prefill and decode steps.
    let ads = bypass_adapters();
    let requests: Vec<Request> = vec![
        req(0, 0, 100, 50, NO_ADAPTER),
        req(1, 50, 10, 10, 1),
        req(2, 60, 10, 100, 0),
        req(3, 400, 1, 1, NO_ADAPTER),
        req(4, 401, 1, 1, NO_ADAPTER),
        req(5, 402, 1, 1, NO_ADAPTER),
        req(6, 403, 10, 1, 1),
        req(7, 404, 10, 1, 1),
        req(8, 405, 10, 1, 1),
    ];
    let w = Workload {
        adapters: ads,
        requests,
    };
    let predicted = [1000, 10, 100, 1, 1, 1, 10, 10, 10];
    let out = run_predicted(
        &w,
        EngineConfig::new(300),
        &Const,
        "mlq[warmup=3,refresh_s=0.3,window_s=0.5]",
        "lru",
        &predicted,
    );
    assert_eq!(out.stats.squashes, 1);
    assert_eq!(out.records[2].squashes, 1);
    assert_eq!(
        out.records[1].admitted,
        720 * MS,
        "H, as without the refresh"
    );
    assert_eq!(out.records[2].admitted, 940 * MS, "Y again, after H");
    assert!(out.records.iter().all(|r| r.outcome == Outcome::Finished));
    // A bypasser looked for only in the head's old queue is forgotten at the refresh: no squash, and H
    // waits until 1,320 ms (checked by hand against that variant).
}
