//! S-LoRA's mechanisms (c1ddf48), each in a hand-computed scenario: the double-copy load path, prefetch at
//! decode steps 5 and 7 (and its host issue holding the decode step back), the router's idle poll, the API
//! server's length limits.
//!
//! Costs: a prefill iteration 100 ms, a decode iteration 10 ms, an adapter load 1 ms per copy call plus 1 ms
//! per MiB moved. Times are in ms from t = 0.

mod common;

use common::{MS, req, run_prefetch};
use sim_core::cost::{BatchShape, CostModel, LoadShape};
use sim_core::engine::{EngineConfig, LoadPath, Outcome, RequestRecord};
use sim_core::time::Nanos;
use sim_core::workload::{Adapter, NO_ADAPTER, Workload};

struct Costs;

impl CostModel for Costs {
    fn describe(&self) -> String {
        "test costs".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        if s.prefill_seqs > 0 {
            100 * MS
        } else {
            10 * MS
        }
    }
    fn adapter_load(&self, l: &LoadShape) -> Nanos {
        l.copies * MS + l.bytes * MS / (1 << 20)
    }
}

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

/// (admitted, first token, finished, load wait) in ms.
fn times(r: &RequestRecord) -> (u64, u64, u64, u64) {
    assert_eq!(r.outcome, Outcome::Finished);
    let ms = |t: Nanos| t / MS;
    (
        ms(r.admitted),
        ms(r.first_token),
        ms(r.finished),
        ms(r.load_wait),
    )
}

#[test]
fn slora_copies_each_adapter_twice_one_call_per_layer_per_pass() {
    let w = Workload {
        adapters: adapters(1),
        requests: vec![req(0, 0, 10, 2, 0)],
    };
    // 4 layers: 2 passes x 4 copies = 8 ms of calls, 2 x 16 MiB = 32 ms of bytes: the load takes 40 ms.
    let mut cfg = EngineConfig::new(10_000);
    cfg.load_path = LoadPath::slora(4);
    let out = run_prefetch(&w, cfg.clone(), &Costs, "fifo", "none", "none");
    assert_eq!(times(&out.records[0]), (0, 140, 150, 40));
    assert_eq!(out.stats.pcie_bytes, 32 << 20);
    // One pass, one call: 1 + 16 = 17 ms, and half the bytes.
    cfg.load_path = LoadPath {
        passes: 1,
        copies_per_pass: 1,
        pinned: true,
    };
    let out = run_prefetch(&w, cfg, &Costs, "fifo", "none", "none");
    assert_eq!(times(&out.records[0]), (0, 117, 127, 17));
    assert_eq!(out.stats.pcie_bytes, 16 << 20);
}

#[test]
fn slora_prefetches_before_the_sixth_decode_step_after_a_merge() {
    // One request at a time. A (adapter 0) and B (adapter 1) arrive at 0; loads take 17 ms.
    let mut cfg = EngineConfig::new(10_000);
    cfg.max_batch = 1;
    let w = |a_output| Workload {
        adapters: adapters(2),
        requests: vec![req(0, 0, 10, a_output, 0), req(1, 0, 10, 2, 1)],
    };
    // A: load 0-17, prefill 17-117, 9 decodes to 207. Before its 6th decode (start 167) S-LoRA's prefetch
    // loads B's adapter (167-184, beside compute), so B starts its prefill at once: 207-307, decode to 317.
    let out = run_prefetch(&w(10), cfg.clone(), &Costs, "fifo", "none", "slora");
    assert_eq!(times(&out.records[0]), (0, 117, 207, 17));
    assert_eq!(times(&out.records[1]), (207, 307, 317, 0));
    assert!(out.records[1].adapter_hit);
    // A with 4 tokens decodes only 3 steps: no prefetch point is reached, B loads after A: 147-164.
    let out = run_prefetch(&w(4), cfg.clone(), &Costs, "fifo", "none", "slora");
    assert_eq!(times(&out.records[0]), (0, 117, 147, 17));
    assert_eq!(times(&out.records[1]), (147, 264, 274, 17));
    // Prefetch right after each merge instead (`queued`): B's adapter loads 17-34, behind A's.
    let out = run_prefetch(&w(4), cfg, &Costs, "fifo", "none", "queued");
    assert_eq!(times(&out.records[1]), (147, 247, 257, 0));
}

/// `Costs` whose host issues each copy call in 1 ms (part of the load, which overlaps it with the bytes).
struct HostIssue;

impl CostModel for HostIssue {
    fn describe(&self) -> String {
        "test costs, host issue".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        Costs.iteration(s)
    }
    fn adapter_load(&self, l: &LoadShape) -> Nanos {
        Costs.adapter_load(l)
    }
    fn adapter_load_host(&self, l: &LoadShape) -> Nanos {
        l.copies * MS
    }
}

#[test]
fn slora_prefetch_holds_the_decode_step_while_the_host_issues_its_copies() {
    // As above, S-LoRA's double copy over 4 layers: loads take 8 calls (8 ms of host) + 32 MiB = 40 ms.
    let mut cfg = EngineConfig::new(10_000);
    cfg.max_batch = 1;
    cfg.load_path = LoadPath::slora(4);
    let w = Workload {
        adapters: adapters(2),
        requests: vec![req(0, 0, 10, 10, 0), req(1, 0, 10, 2, 1)],
    };
    // Host time free: A loads 0-40, prefill 40-140, 9 decodes to 230; B's adapter is prefetched at 190.
    let out = run_prefetch(&w, cfg.clone(), &Costs, "fifo", "none", "slora");
    assert_eq!(times(&out.records[0]), (0, 140, 230, 40));
    assert_eq!(times(&out.records[1]), (230, 330, 340, 0));
    // The host issues B's 8 copy calls (190-198) before the 6th decode step, which runs 198-208: A ends at
    // 238. The step-7 prefetch finds B's adapter loaded (190-230): nothing to issue, no delay.
    let out = run_prefetch(&w, cfg.clone(), &HostIssue, "fifo", "none", "slora");
    assert_eq!(times(&out.records[0]), (0, 140, 238, 40));
    assert_eq!(times(&out.records[1]), (238, 338, 348, 0));
    // The GPU stalled 40 ms on A's load and 8 ms on B's issue.
    assert_eq!(out.stats.load_stall_ns, 48 * MS);
    // A load at a merge is issued while the prefill waits for it anyway: the same times either way.
    let out = run_prefetch(&w, cfg, &HostIssue, "fifo", "none", "none");
    assert_eq!(times(&out.records[0]), (0, 140, 230, 40));
    assert_eq!(times(&out.records[1]), (230, 370, 380, 40));
}

#[test]
fn an_idle_server_admits_at_its_next_poll() {
    let mut cfg = EngineConfig::new(10_000);
    cfg.idle_poll_ns = 10 * MS;
    let w = Workload {
        adapters: vec![],
        requests: vec![req(0, 7, 10, 2, NO_ADAPTER), req(1, 125, 10, 2, NO_ADAPTER)],
    };
    let out = run_prefetch(&w, cfg, &Costs, "fifo", "none", "none");
    // Idle since 0: A (7 ms) waits for the poll at 10; prefill 10-110, decode to 120, the batch empties.
    assert_eq!(times(&out.records[0]), (10, 110, 120, 0));
    // Polling again from 120: B (125 ms) is admitted at 130.
    assert_eq!(times(&out.records[1]), (130, 230, 240, 0));
}

#[test]
fn the_api_servers_length_limits_reject_with_a_reason() {
    let mut cfg = EngineConfig::new(100_000);
    cfg.max_input_tokens = Some(2048);
    cfg.max_total_tokens = Some(3072);
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 3000, 2, NO_ADAPTER),
            req(1, 0, 1000, 2500, NO_ADAPTER),
            req(2, 0, 2000, 1000, NO_ADAPTER),
        ],
    };
    let out = run_prefetch(&w, cfg, &Costs, "fifo", "none", "none");
    let reason = |i: usize| match &out.records[i].outcome {
        Outcome::Rejected(r) => r.to_string(),
        o => panic!("request {i}: {o:?}"),
    };
    assert_eq!(
        reason(0),
        "input of 3000 tokens exceeds the input limit 2048"
    );
    assert_eq!(
        reason(1),
        "input + output of 3500 tokens exceeds the length limit 3072"
    );
    assert_eq!(out.records[2].outcome, Outcome::Finished);
}

#[test]
fn the_models_context_length_rejects_first_with_its_own_reason() {
    // Context 2048 under S-LoRA's limits: a request over both the context and the input limit is reported
    // against the context (what the model cannot compute); one within the context but over the total limit
    // against the server's limit.
    let mut cfg = EngineConfig::new(100_000);
    cfg.context_tokens = Some(2048);
    cfg.max_input_tokens = Some(2048);
    cfg.max_total_tokens = Some(3072);
    let w = Workload {
        adapters: vec![],
        requests: vec![
            req(0, 0, 3000, 2, NO_ADAPTER),
            req(1, 0, 1000, 1049, NO_ADAPTER),
            req(2, 0, 1000, 1048, NO_ADAPTER),
        ],
    };
    let out = run_prefetch(&w, cfg.clone(), &Costs, "fifo", "none", "none");
    let reason = |i: usize| match &out.records[i].outcome {
        Outcome::Rejected(r) => (r.key(), r.to_string()),
        o => panic!("request {i}: {o:?}"),
    };
    assert_eq!(
        reason(0),
        (
            "context_length",
            "input + output of 3002 tokens exceeds the model's context length 2048".into()
        )
    );
    assert_eq!(reason(1).0, "context_length");
    assert_eq!(out.records[2].outcome, Outcome::Finished);
    // Without the context limit the server's own limits decide.
    cfg.context_tokens = None;
    let out = run_prefetch(&w, cfg, &Costs, "fifo", "none", "none");
    assert!(matches!(out.records[0].outcome, Outcome::Rejected(r) if r.key() == "input_limit"));
    assert_eq!(out.records[1].outcome, Outcome::Finished);
}

#[test]
fn slora_lora_work_bgmv_at_own_rank_mbgmm_padded_as_dispatched() {
    use sim_core::cost::LoraKernels::{Exact, Off, Slora};
    // A decode step of 3 sequences with ranks 8, 16 and 64 (distinct adapters): BGMV is launched for rank
    // 64, but its blocks past each adapter's rank return at once (`bgmv_impl.cuh`), so 8 + 16 + 64 rows.
    let decode = BatchShape {
        decode_seqs: 3,
        lora_tokens: 3,
        lora_token_rank: 8 + 16 + 64,
        lora_distinct_rank: 88,
        lora_distinct: 3,
        lora_seqs: 3,
        lora_max_rank: 64,
        ..Default::default()
    };
    assert_eq!(decode.lora_work(Exact).bgmv, 88.0);
    assert_eq!(decode.lora_work(Slora).bgmv, 88.0);
    assert_eq!(decode.lora_work(Slora).mbgmm, 0.0);
    assert_eq!(decode.lora_work(Off).compute(), 0.0);
    // A prefill of two prompts (300 tokens at rank 64, 100 at rank 8): >= 2 requests, >= 200 tokens, rank
    // >= 64, so the Triton MBGMM grid: 2 requests x 320 rows (10 tiles of 32) x rank 64.
    let prefill = BatchShape {
        prefill_seqs: 2,
        prefill_tokens: 400,
        prefill_max_len: 300,
        lora_tokens: 400,
        lora_token_rank: 300 * 64 + 100 * 8,
        lora_distinct_rank: 72,
        lora_distinct: 2,
        lora_seqs: 2,
        lora_max_rank: 64,
        ..Default::default()
    };
    assert!(prefill.mbgmm());
    let w = prefill.lora_work(Slora);
    assert_eq!((w.mbgmm, w.bgmv), (2.0 * 320.0 * 64.0, 0.0));
    assert_eq!(prefill.lora_work(Exact).bgmv, 20_000.0);
    // Shorter prompts (max 150), a single request, or a largest rank of 32: BGMV at each token's own rank.
    for s in [
        BatchShape {
            prefill_max_len: 150,
            ..prefill
        },
        BatchShape {
            prefill_seqs: 1,
            lora_seqs: 1,
            ..prefill
        },
        BatchShape {
            lora_max_rank: 32,
            ..prefill
        },
    ] {
        assert!(!s.mbgmm());
        assert_eq!(s.lora_work(Slora).bgmv, 20_000.0);
    }
}

/// `Costs`, plus S-LoRA's `--no-mem-pool` re-pack: 1 ms per MiB of resident adapters copied.
struct NoPool;

impl CostModel for NoPool {
    fn describe(&self) -> String {
        "test costs without the unified pool".into()
    }
    fn iteration(&self, s: &BatchShape) -> Nanos {
        Costs.iteration(s)
    }
    fn adapter_load(&self, l: &LoadShape) -> Nanos {
        Costs.adapter_load(l)
    }
    fn adapter_repack(&self, resident_bytes: u64) -> Nanos {
        resident_bytes * MS / (1 << 20)
    }
}

#[test]
fn without_the_unified_pool_every_load_and_free_repacks_the_resident_adapters() {
    // Two requests at t = 0 on two 16 MiB adapters, one copy call per load (1 + 16 = 17 ms each).
    let w = Workload {
        adapters: adapters(2),
        requests: vec![req(0, 0, 10, 2, 0), req(1, 0, 10, 3, 1)],
    };
    let cfg = EngineConfig::new(10_000);
    // Unified pool: loads back to back (0-17, 17-34), prefill 34-134, decodes 134-144 (request 0 ends),
    // 144-154 (request 1 ends).
    let out = run_prefetch(&w, cfg.clone(), &Costs, "fifo", "none", "none");
    assert_eq!(times(&out.records[0]), (0, 134, 144, 34));
    assert_eq!(times(&out.records[1]), (0, 134, 154, 34));
    // No pool: the second load also concatenates the first adapter's 16 MiB (16 ms): 17-50; prefill 50-150;
    // decode 150-160 ends request 0, whose adapter is freed: the other's 16 MiB gathered (16 ms), charged to
    // the next step, 160-186.
    let out = run_prefetch(&w, cfg, &NoPool, "fifo", "none", "none");
    assert_eq!(times(&out.records[0]), (0, 150, 160, 50));
    assert_eq!(times(&out.records[1]), (0, 150, 186, 50));
}
