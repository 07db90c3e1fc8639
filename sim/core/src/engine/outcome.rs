//! What an engine hands back: each request's outcome and times, why a request was refused, and the run's
//! counters.

use crate::time::Nanos;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Never admitted by the end (cannot happen when the run completes; kept for partial runs).
    Waiting,
    Finished,
    Rejected(Reject),
    /// Dropped from the queue by its scheduler before it ran (e.g. `slora-abort`).
    Aborted(Abort),
}

/// Why a scheduler dropped a waiting request: typed and `Copy` like `Reject`, counted by reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Abort {
    /// It had waited `waited` ns, past `limit` (the wait beyond which it would miss its objective).
    Deadline { waited: Nanos, limit: Nanos },
}

impl Abort {
    /// Every reason's key (summary keys are `aborted_{key}`).
    pub const KEYS: [&'static str; 1] = ["deadline"];

    pub fn index(&self) -> usize {
        match self {
            Abort::Deadline { .. } => 0,
        }
    }

    pub fn key(&self) -> &'static str {
        Self::KEYS[self.index()]
    }
}

impl std::fmt::Display for Abort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Abort::Deadline { waited, limit } => write!(
                f,
                "waited {:.3} s in the queue, past the {:.3} s after which it would miss its objective",
                waited as f64 / 1e9,
                limit as f64 / 1e9
            ),
        }
    }
}

/// Why a request was refused at arrival, with the numbers that decided it. Typed (and `Copy`) so the
/// summary can count rejections by reason and a rejection costs no allocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    /// Prompt + output beyond the model's context window.
    Context { total: u64, max: u64 },
    /// Prompt + output budget + adapter larger than the whole pool.
    Pool { need: u64, pool: u64 },
    /// Prompt over the server's input limit (`max_req_input_len`).
    Input { input: u64, max: u64 },
    /// Prompt + output over the server's total limit (`max_req_total_len`).
    Total { total: u64, max: u64 },
    /// Prompt over one prefill's token budget (`batch_max_tokens`).
    Prefill { input: u64, max: u64 },
    /// The request names an adapter the workload does not have.
    Adapter { adapter: u32 },
}

impl Reject {
    /// Every reason's key, in the order the checks run (summary keys are `rejected_{key}`).
    pub const KEYS: [&'static str; 6] = [
        "context_length",
        "pool",
        "input_limit",
        "total_limit",
        "prefill_limit",
        "unknown_adapter",
    ];

    /// Index into `KEYS`.
    pub fn index(&self) -> usize {
        match self {
            Reject::Context { .. } => 0,
            Reject::Pool { .. } => 1,
            Reject::Input { .. } => 2,
            Reject::Total { .. } => 3,
            Reject::Prefill { .. } => 4,
            Reject::Adapter { .. } => 5,
        }
    }

    pub fn key(&self) -> &'static str {
        Self::KEYS[self.index()]
    }
}

impl std::fmt::Display for Reject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Reject::Context { total, max } => write!(
                f,
                "input + output of {total} tokens exceeds the model's context length {max}"
            ),
            Reject::Pool { need, pool } => write!(
                f,
                "needs {need} slots (input + output budget + adapter) but the pool has {pool}"
            ),
            Reject::Input { input, max } => {
                write!(f, "input of {input} tokens exceeds the input limit {max}")
            }
            Reject::Total { total, max } => write!(
                f,
                "input + output of {total} tokens exceeds the length limit {max}"
            ),
            Reject::Prefill { input, max } => {
                write!(
                    f,
                    "input of {input} tokens exceeds max prefill tokens {max}"
                )
            }
            Reject::Adapter { adapter } => write!(f, "adapter {adapter} does not exist"),
        }
    }
}

/// What happened to one request. Times are absolute simulated nanoseconds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    pub outcome: Outcome,
    pub admitted: Nanos,
    pub first_token: Nanos,
    pub finished: Nanos,
    /// Time its prefill waited for adapter loads after admission (GPU stalled: critical path).
    pub load_wait: Nanos,
    /// Longest gap between two of its tokens.
    pub max_gap: Nanos,
    /// Times it was squashed (stopped and re-queued, losing its progress) before its final run.
    pub squashes: u32,
    /// Its adapter was resident when it was admitted (no adapter: true).
    pub adapter_hit: bool,
}

/// Counters of a whole run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EngineStats {
    pub prefill_iterations: u64,
    pub decode_iterations: u64,
    pub busy_ns: Nanos,
    pub end_ns: Nanos,
    pub adapter_loads: u64,
    pub pcie_bytes: u64,
    pub evictions: u64,
    pub squashes: u64,
    /// Requests that finished.
    pub finished: u64,
    /// Requests their scheduler dropped from the queue.
    pub aborted: u64,
    /// Total time the GPU stood still waiting for adapter loads before a prefill.
    pub load_stall_ns: Nanos,
    /// Total time the copy link was moving adapters (loads queue on it, one at a time).
    pub link_busy_ns: Nanos,
    /// Copy links (engines) these counters add up: 1 for one engine, the replicas of a fleet.
    pub links: u64,
    pub pool_slots: u64,
    pub peak_kv_slots: u64,
    pub peak_adapter_slots: u64,
    pub peak_total_slots: u64,
    /// Peak of the KV claim: what admitted requests hold plus what admission reserved for their future
    /// tokens (S-LoRA's peak rule).
    pub peak_kv_claim_slots: u64,
    /// Time integrals (slot x ns) for time-weighted means.
    pub kv_slot_ns: u128,
    pub adapter_slot_ns: u128,
    pub kv_claim_slot_ns: u128,
    /// Work done, for utilisation: tokens computed, sum of squared prompt lengths, KV tokens read in decode.
    pub tokens: u64,
    pub prefill_sq_tokens: u64,
    pub decode_context: u64,
    /// Merges (admission attempts) and, of those that left requests waiting, why the first one waited.
    pub merges: u64,
    /// Merges that admitted nothing.
    pub merges_empty: u64,
    pub blocked: Blocked,
}

impl EngineStats {
    /// Adds `s`'s counters to these (a fleet's totals over its replicas): counts, times, integrals, peaks and
    /// pool sizes are summed (the peaks of a fleet's pools), `end_ns` is the latest end. Every field is named
    /// (no `..`), so a counter added to the engine does not compile until it is merged here too.
    pub fn absorb(&mut self, s: &EngineStats) {
        let EngineStats {
            prefill_iterations,
            decode_iterations,
            busy_ns,
            end_ns,
            adapter_loads,
            pcie_bytes,
            evictions,
            squashes,
            finished,
            aborted,
            load_stall_ns,
            link_busy_ns,
            links,
            pool_slots,
            peak_kv_slots,
            peak_adapter_slots,
            peak_total_slots,
            peak_kv_claim_slots,
            kv_slot_ns,
            adapter_slot_ns,
            kv_claim_slot_ns,
            tokens,
            prefill_sq_tokens,
            decode_context,
            merges,
            merges_empty,
            blocked:
                Blocked {
                    memory,
                    adapter_memory,
                    batch,
                    prefill_tokens,
                    policy,
                },
        } = *s;
        self.prefill_iterations += prefill_iterations;
        self.decode_iterations += decode_iterations;
        self.busy_ns += busy_ns;
        self.end_ns = self.end_ns.max(end_ns);
        self.adapter_loads += adapter_loads;
        self.pcie_bytes += pcie_bytes;
        self.evictions += evictions;
        self.squashes += squashes;
        self.finished += finished;
        self.aborted += aborted;
        self.load_stall_ns += load_stall_ns;
        self.link_busy_ns += link_busy_ns;
        self.links += links;
        self.pool_slots += pool_slots;
        self.peak_kv_slots += peak_kv_slots;
        self.peak_adapter_slots += peak_adapter_slots;
        self.peak_total_slots += peak_total_slots;
        self.peak_kv_claim_slots += peak_kv_claim_slots;
        self.kv_slot_ns += kv_slot_ns;
        self.adapter_slot_ns += adapter_slot_ns;
        self.kv_claim_slot_ns += kv_claim_slot_ns;
        self.tokens += tokens;
        self.prefill_sq_tokens += prefill_sq_tokens;
        self.decode_context += decode_context;
        self.merges += merges;
        self.merges_empty += merges_empty;
        let b = &mut self.blocked;
        b.memory += memory;
        b.adapter_memory += adapter_memory;
        b.batch += batch;
        b.prefill_tokens += prefill_tokens;
        b.policy += policy;
    }
}

/// Merges that left requests waiting, by why the first of them (in the scheduler's order) was not admitted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Blocked {
    /// Its KV reservation did not fit.
    pub memory: u64,
    /// It fit, but not with its adapter.
    pub adapter_memory: u64,
    /// The batch was at `max_batch`.
    pub batch: u64,
    /// Its prompt did not fit this prefill's token budget.
    pub prefill_tokens: u64,
    /// It fit, but the scheduler held it back (a quota, an order).
    pub policy: u64,
}

impl RequestRecord {
    pub(crate) fn new() -> RequestRecord {
        RequestRecord {
            outcome: Outcome::Waiting,
            admitted: 0,
            first_token: 0,
            finished: 0,
            load_wait: 0,
            max_gap: 0,
            squashes: 0,
            adapter_hit: true,
        }
    }
}

pub struct RunOutput {
    /// Set when the clock failed (e.g. a real backend out of GPU memory) and the run stopped early; the
    /// records hold the requests' state at that moment.
    pub aborted: Option<String>,
    pub records: Vec<RequestRecord>,
    pub stats: EngineStats,
}
