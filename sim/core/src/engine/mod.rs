//! The discrete-event loop of one GPU serving a base model and LoRA adapters, with S-LoRA's mechanics:
//!
//! - one pool of KV-cache slots shared by the KV cache and resident adapters (S-LoRA unified paging);
//! - continuous batching with separate prefill and decode iterations: new requests are merged when the batch
//!   is empty or every `max_wait_tokens` decode steps; a merge runs one prefill iteration for the new requests;
//! - admission with S-LoRA's reservation check and no preemption: the batch's peak future KV use plus every
//!   adapter in use must fit, so a running request never runs out of memory;
//! - adapter loads on one copy stream (loads queue on the link) that overlaps compute; a prefill waits for
//!   its requests' adapters, which stalls the GPU (load time on the critical path);
//! - prefetch: after a merge, the adapters a prefetcher names are loaded into free memory.
//!
//! Policies plug in through `api`; durations come from a `Clock` (`clock`): a cost model, or a real executor.
//! Time is integer nanoseconds; simultaneous events run in the order they were scheduled (sequence number).
//!
//! The engine is stepped: arrivals are handed to it in order (`push_arrival`) and it is moved forward in time
//! (`advance_to`); `run` replays a whole workload through the same two calls, so a fleet replica fed only
//! the requests routed to it behaves exactly as `run` on those requests (see `advance_to`).

mod admission;
pub mod api;
mod batch;
pub mod clock;
mod ids;
pub mod observe;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use api::{AdapterState, CachePolicy, CacheView, PrefetchView, Prefetcher, Residency, Scheduler};
pub use api::{Admission, Fit};
use batch::{Batch, Running};
pub use clock::{Clock, Executor, Seq, Simulated, Timed};
pub use observe::{Observed, Observer, Phase, QueueInfo, Snapshot};

use crate::cost::{BatchShape, LoadShape};
use crate::error::{Error, Result};
use crate::time::Nanos;
use crate::workload::{NO_ADAPTER, Request, Workload};

/// How much output a request's admission reserves memory for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The request's true output length (S-LoRA with max_new_tokens set to the trace's length: an oracle).
    Oracle,
    /// A fixed output budget for every request, like a max_new_tokens of N (at least the true length).
    Max(u32),
}

impl Reserve {
    /// `oracle` or `max:N`.
    pub fn parse(s: &str) -> Result<Reserve> {
        match s.split_once(':') {
            None if s == "oracle" => Ok(Reserve::Oracle),
            Some(("max", n)) => n
                .parse()
                .ok()
                .filter(|&n: &u32| n > 0)
                .map(Reserve::Max)
                .ok_or_else(|| {
                    Error::msg(format!("--reserve max:N needs a positive N, got '{n}'"))
                }),
            _ => Err(Error::msg(format!(
                "--reserve must be 'oracle' or 'max:N', got '{s}'"
            ))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Reserve::Oracle => "oracle".into(),
            Reserve::Max(n) => format!("max:{n}"),
        }
    }
}

/// How an adapter crosses the host-device link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPath {
    /// Times the adapter's bytes cross the link: S-LoRA's `load_lora_A` and `load_lora_B` each copy every
    /// layer's combined A+B block (`load_to_gpu`, then `offload_from_gpu`), so 2.
    pub passes: u64,
    /// Copy calls per pass (S-LoRA: one per layer).
    pub copies_per_pass: u64,
    /// From pinned host memory (S-LoRA pins every adapter at start-up, `--swap`).
    pub pinned: bool,
}

impl LoadPath {
    /// S-LoRA's path for a model of `layers` layers.
    pub fn slora(layers: u64) -> LoadPath {
        LoadPath {
            passes: 2,
            copies_per_pass: layers,
            pinned: true,
        }
    }

    pub fn shape(&self, adapter_bytes: u64) -> LoadShape {
        LoadShape {
            bytes: adapter_bytes * self.passes,
            copies: self.passes * self.copies_per_pass,
            pinned: self.pinned,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// KV slots in the unified pool (KV cache + adapters).
    pub pool_slots: u64,
    /// S-LoRA: decode steps between merges of new requests.
    pub max_wait_tokens: u32,
    /// Most requests in the running batch (S-LoRA's `running_max_req_size`).
    pub max_batch: u32,
    /// Most prompt tokens in one prefill iteration (S-LoRA's `batch_max_tokens`); a longer prompt is rejected.
    pub max_prefill_tokens: u64,
    /// A prompt longer than this is rejected (S-LoRA's API server: `max_req_input_len`).
    pub max_input_tokens: Option<u64>,
    /// A request whose prompt + output exceeds this is rejected (S-LoRA: `max_req_total_len`).
    pub max_total_tokens: Option<u64>,
    /// The model's context window: a request whose prompt + output exceeds it cannot be computed at all.
    pub context_tokens: Option<u64>,
    pub reserve: Reserve,
    pub load_path: LoadPath,
    /// When the batch is empty the server polls its queue at this interval (S-LoRA's router sleeps 10 ms);
    /// 0 = admit on arrival.
    pub idle_poll_ns: Nanos,
}

impl EngineConfig {
    /// The output budget admission reserves for `r`.
    pub fn budget(&self, r: &Request) -> u32 {
        match self.reserve {
            Reserve::Oracle => r.output,
            Reserve::Max(n) => n.max(r.output),
        }
    }

    /// A plain engine: no length limits, no idle polling, one copy per adapter (the hand-computed scenarios
    /// and property tests use it; `sim run` resolves S-LoRA's defaults, see `slora`).
    pub fn new(pool_slots: u64) -> EngineConfig {
        EngineConfig {
            pool_slots,
            max_wait_tokens: 10,
            max_batch: 1000,
            max_prefill_tokens: 16_384,
            max_input_tokens: None,
            max_total_tokens: None,
            context_tokens: None,
            reserve: Reserve::Oracle,
            load_path: LoadPath {
                passes: 1,
                copies_per_pass: 1,
                pinned: true,
            },
            idle_poll_ns: 0,
        }
    }

    /// S-LoRA's server defaults (c1ddf48, `api_server.py`) for a pool of `pool_slots` and a model of
    /// `layers` layers: `batch_max_tokens = max(pool / 6, max_req_total_len)`, prompts over 2048 tokens or
    /// prompt + output over 3072 rejected, 1000 running requests at most, merges every 10 decode steps, the
    /// double-copy load path, a 10 ms idle poll.
    pub fn slora(pool_slots: u64, layers: u64) -> EngineConfig {
        EngineConfig {
            max_prefill_tokens: (pool_slots / 6).max(3072),
            max_input_tokens: Some(2048),
            max_total_tokens: Some(3072),
            load_path: LoadPath::slora(layers),
            idle_poll_ns: 10_000_000,
            ..EngineConfig::new(pool_slots)
        }
    }
}

/// The policies one run plugs into the engine.
pub struct Policies {
    pub scheduler: Box<dyn Scheduler>,
    pub cache: Box<dyn CachePolicy>,
    pub prefetch: Box<dyn Prefetcher>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Never admitted by the end (cannot happen when the run completes; kept for partial runs).
    Waiting,
    Finished,
    Rejected(Reject),
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
    /// Total time the GPU stood still waiting for adapter loads before a prefill.
    pub load_stall_ns: Nanos,
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

/// Where an engine keeps its per-request records.
pub(crate) enum Records {
    /// One record per workload request, indexed by id (a whole-workload run).
    All(Vec<RequestRecord>),
    /// Only the requests in flight; a record that became final (finished or rejected) waits in `done`
    /// until `Engine::drain` hands it out (a fleet replica: memory follows what it holds).
    Live {
        live: ids::IdMap<RequestRecord>,
        done: Vec<(u32, RequestRecord)>,
    },
}

impl Records {
    #[inline]
    pub(crate) fn get(&mut self, id: u32) -> &mut RequestRecord {
        match self {
            Records::All(v) => &mut v[id as usize],
            Records::Live { live, .. } => live.get_mut(&id).expect("a live request"),
        }
    }

    /// `id`'s record is final: a live table hands it out.
    fn finalize(&mut self, id: u32) {
        if let Records::Live { live, done } = self {
            let rec = live.remove(&id).expect("a live request");
            done.push((id, rec));
        }
    }
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

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Event {
    Arrival(u32),
    IterationDone,
    LoadDone(u32),
    /// An idle server looks at its queue.
    Poll,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Busy {
    Idle,
    Prefill,
    Decode,
    /// Idle, polling its queue every `idle_poll_ns` since `idle_since` (a poll may be pending).
    Polling,
}

/// The pool's accounting, in KV slots.
#[derive(Default)]
pub(crate) struct Memory {
    /// (KV slots held now, slots still to come) of admitted requests, by the second field descending.
    pub(crate) reserve: Vec<(u64, u64)>,
    pub(crate) kv_used: u64,
    /// Resident and loading adapters.
    adapter_used: u64,
    /// Resident adapters no admitted request uses (evictable).
    pub(crate) idle_slots: u64,
    /// Adapters admitted at this merge that are not loaded yet: pinned, but not in `adapter_used` yet.
    pub(crate) pending_pin: u64,
    /// KV held plus reserved by admitted requests: the admission rule's peak over their future. It is
    /// constant while the batch only decodes (each request's held grows as its remaining shrinks), so it is
    /// recomputed only when requests join (a merge) or leave.
    pub(crate) kv_claim: u64,
}

impl Memory {
    /// Slots held by adapters that cannot be evicted now: in use or being loaded.
    pub(crate) fn pinned_slots(&self) -> u64 {
        self.adapter_used - self.idle_slots + self.pending_pin
    }
}

/// Everything the engine mutates; split from the policies so they can be called with a view of it.
pub(crate) struct State {
    now: Nanos,
    seq: u64,
    events: BinaryHeap<Reverse<(Nanos, u64, Event)>>,
    busy: Busy,
    /// When the batch last became empty (the idle poll's phase), and whether a poll event is pending.
    idle_since: Nanos,
    poll_pending: bool,
    link_free_at: Nanos,
    pub(crate) adapters: Vec<AdapterState>,
    pub(crate) mem: Memory,
    pub(crate) batch: Batch,
    /// Adapters marked by the last prefetch.
    prefetched: Vec<u32>,
    /// Per adapter, the merge it was last counted in (distinct adapters of a prefill).
    stamp: Vec<u64>,
    /// Reused buffers: eviction candidates, prefetch targets.
    scratch: Vec<u32>,
    want: Vec<u32>,
    pub(crate) records: Records,
    pub(crate) stats: EngineStats,
    last_account: Nanos,
    /// With `Some`: (adapter, held) each time an adapter starts loading (held) or is evicted, for a fleet's
    /// view of which replica holds what.
    residency_log: Option<Vec<(u32, bool)>>,
}

impl State {
    fn leave(&mut self, r: &Running) {
        let b = &mut self.batch;
        b.ctx_sum -= r.ctx(b.steps) as u64;
        if r.adapter != NO_ADAPTER {
            b.token_rank_sum -= r.rank as u64;
            b.adapter_seqs -= 1;
            b.count_rank(r.rank, false);
            let a = &mut self.adapters[r.adapter as usize];
            a.in_batch -= 1;
            if a.in_batch == 0 {
                b.distinct -= 1;
                b.distinct_rank_sum -= r.rank as u64;
            }
        }
    }

    /// A request whose prefill ended at `now` joins the batch.
    fn join(&mut self, r: Running, now: Nanos) {
        let b = &mut self.batch;
        b.ctx_sum += r.input as u64 + 1;
        if r.adapter != NO_ADAPTER {
            b.token_rank_sum += r.rank as u64;
            b.adapter_seqs += 1;
            b.count_rank(r.rank, true);
            let a = &mut self.adapters[r.adapter as usize];
            a.in_batch += 1;
            if a.in_batch == 1 {
                b.distinct += 1;
                b.distinct_rank_sum += r.rank as u64;
            }
        }
        b.push(r, now);
    }

    /// Drops one admitted request's hold on its adapter.
    pub(crate) fn unpin(
        &mut self,
        adapter: u32,
        cache: &mut dyn CachePolicy,
        clock: &mut dyn Clock,
    ) {
        if adapter == NO_ADAPTER {
            return;
        }
        let a = &mut self.adapters[adapter as usize];
        a.refs -= 1;
        if a.refs == 0 && a.residency == Residency::Resident {
            self.mem.idle_slots += a.slots;
            self.maybe_release(adapter, cache, clock);
        }
    }

    /// Without a cache (S-LoRA) an adapter is freed as soon as nothing admitted or prefetched wants it.
    fn maybe_release(&mut self, a: u32, cache: &mut dyn CachePolicy, clock: &mut dyn Clock) {
        let s = &self.adapters[a as usize];
        if !cache.keeps_idle() && s.is_idle() && !s.wanted {
            self.evict(a, cache, clock);
        }
    }

    fn evict(&mut self, a: u32, cache: &mut dyn CachePolicy, clock: &mut dyn Clock) {
        let s = &mut self.adapters[a as usize];
        debug_assert!(s.is_idle());
        s.residency = Residency::Host;
        self.mem.adapter_used -= s.slots;
        self.mem.idle_slots -= s.slots;
        self.stats.evictions += 1;
        if let Some(log) = &mut self.residency_log {
            log.push((a, false));
        }
        clock.evict(a);
        cache.on_evict(a, self.now);
    }

    fn free_slots(&self, pool: u64) -> u64 {
        pool - self.mem.kv_used - self.mem.adapter_used
    }
}

pub struct Engine<'a> {
    w: &'a Workload,
    cfg: EngineConfig,
    clock: &'a mut dyn Clock,
    sched: Box<dyn Scheduler>,
    cache: Box<dyn CachePolicy>,
    prefetch: Box<dyn Prefetcher>,
    st: State,
    /// Arrivals handed over (`push_arrival`) and not yet in the event queue, in order.
    pending: VecDeque<u32>,
    /// Whether an arrival event is in the queue.
    arrival_queued: bool,
    /// The sequence number the next arrival event carries. It is reserved when the previous arrival is
    /// handled (or at the start), as a whole-workload replay schedules its next arrival then: an arrival handed
    /// over later still sorts among simultaneous events exactly where the replay puts it.
    arrival_seq: u64,
    /// Latest `advance_to` target.
    horizon: Nanos,
    /// An event at this time left the server idle; whether an iteration starts then is decided once no other
    /// event at that time can come (one can, while it is the horizon: an arrival at the horizon).
    undecided: Option<Nanos>,
    /// Set when the clock failed; nothing more happens.
    aborted: Option<String>,
    /// Who hears of every event (`observe`); `None`: nothing is built.
    obs: Option<Box<dyn Observer + 'a>>,
    /// Reused buffer of the scheduler's queues, filled only while observed.
    obs_queues: Vec<QueueInfo>,
}

impl<'a> Engine<'a> {
    /// An engine over `w` that keeps one record per workload request (`run`, or stepping by hand).
    pub fn new(
        w: &'a Workload,
        cfg: EngineConfig,
        clock: &'a mut dyn Clock,
        policies: Policies,
    ) -> Engine<'a> {
        Self::build(w, cfg, clock, policies, true)
    }

    /// A fleet replica over `w`: only the requests pushed to it arrive (ids stay the workload's). It keeps
    /// state only for requests in flight: final records are handed out by `drain`, and `drain_residency`
    /// says which adapters it started loading or evicted.
    pub fn replica(
        w: &'a Workload,
        cfg: EngineConfig,
        clock: &'a mut dyn Clock,
        policies: Policies,
    ) -> Engine<'a> {
        Self::build(w, cfg, clock, policies, false)
    }

    fn build(
        w: &'a Workload,
        cfg: EngineConfig,
        clock: &'a mut dyn Clock,
        policies: Policies,
        dense: bool,
    ) -> Engine<'a> {
        let n = w.requests.len();
        let st = State {
            now: 0,
            seq: 0,
            events: BinaryHeap::new(),
            busy: Busy::Idle,
            idle_since: 0,
            poll_pending: false,
            link_free_at: 0,
            adapters: w
                .adapters
                .iter()
                .map(|a| AdapterState::new(a.slots))
                .collect(),
            mem: Memory::default(),
            batch: Batch::new(dense.then_some(n)),
            prefetched: Vec::new(),
            stamp: vec![0; w.adapters.len()],
            scratch: Vec::new(),
            want: Vec::new(),
            records: if dense {
                Records::All(vec![RequestRecord::new(); n])
            } else {
                Records::Live {
                    live: ids::IdMap::default(),
                    done: Vec::new(),
                }
            },
            stats: EngineStats {
                pool_slots: cfg.pool_slots,
                ..Default::default()
            },
            last_account: 0,
            residency_log: (!dense).then(Vec::new),
        };
        let mut st = st;
        if cfg.idle_poll_ns > 0 {
            st.busy = Busy::Polling;
        }
        // The first arrival's sequence number, reserved before anything else is scheduled.
        st.seq = 1;
        Engine {
            w,
            cfg,
            clock,
            sched: policies.scheduler,
            cache: policies.cache,
            prefetch: policies.prefetch,
            st,
            pending: VecDeque::new(),
            arrival_queued: false,
            arrival_seq: 1,
            horizon: 0,
            undecided: None,
            aborted: None,
            obs: None,
            obs_queues: Vec::new(),
        }
    }

    /// Reports every event from now on to `o` (timelines, traces).
    pub fn observe(&mut self, o: Box<dyn Observer + 'a>) {
        self.obs = Some(o);
    }

    /// The memory split and counters now.
    pub fn snapshot(&self) -> Snapshot {
        let (m, pool) = (&self.st.mem, self.cfg.pool_slots);
        let adapters_idle = m.idle_slots;
        let adapters_active = m.adapter_used - m.idle_slots;
        let reserved = m.kv_claim.saturating_sub(m.kv_used);
        let kv_reserved = reserved.min(pool - m.kv_used - m.adapter_used);
        Snapshot {
            pool,
            kv_held: m.kv_used,
            kv_reserved,
            kv_claim: m.kv_claim.max(m.kv_used),
            adapters_active,
            adapters_idle,
            free: pool - m.kv_used - kv_reserved - m.adapter_used,
            adapters_resident: self
                .st
                .adapters
                .iter()
                .filter(|a| a.residency != Residency::Host)
                .count() as u64,
            adapter_loads: self.st.stats.adapter_loads,
            adapter_evictions: self.st.stats.evictions,
            waiting: self.sched.waiting() as u64,
            running: (self.st.batch.len() + self.st.batch.admitted.len()) as u64,
            link_free_at: self.st.link_free_at,
        }
    }

    /// Tells the observer of an iteration just scheduled (`start`..`end`).
    fn observe_iteration(&mut self, phase: Phase, start: Nanos, end: Nanos, shape: &BatchShape) {
        if self.obs.is_none() {
            return;
        }
        let snap = self.snapshot();
        self.obs_queues.clear();
        let queues = &mut self.obs_queues;
        self.sched.describe_queues(&mut |q| queues.push(q));
        let ev = Observed::Iteration {
            phase,
            start,
            end,
            seqs: shape.prefill_seqs + shape.decode_seqs,
            tokens: shape.tokens(),
            snap: &snap,
            queues: &self.obs_queues,
        };
        if let Some(o) = &mut self.obs {
            o.observe(self.st.now, ev);
        }
    }

    #[inline]
    fn emit(&mut self, ev: Observed<'_>) {
        if let Some(o) = &mut self.obs {
            o.observe(self.st.now, ev);
        }
    }

    fn push(&mut self, at: Nanos, ev: Event) {
        self.st.seq += 1;
        self.st.events.push(Reverse((at, self.st.seq, ev)));
    }

    /// Replays the whole workload: each request is handed over at its arrival time, then the engine runs
    /// until nothing is left. One record per request, indexed by id.
    pub fn run(mut self) -> Result<RunOutput> {
        if self
            .w
            .requests
            .windows(2)
            .any(|p| p[1].arrival < p[0].arrival)
        {
            return Err(Error::msg("workload arrivals must be sorted by time"));
        }
        let w = self.w;
        for r in &w.requests {
            self.advance_to(r.arrival);
            self.push_arrival(r.id);
        }
        self.finish()
    }

    /// Hands request `id` to the engine. Arrivals must come in arrival order, none before the horizon (the
    /// latest `advance_to` target).
    pub fn push_arrival(&mut self, id: u32) {
        let at = self.w.requests[id as usize].arrival;
        debug_assert!(at >= self.horizon, "an arrival before the engine's horizon");
        if self.arrival_queued {
            self.pending.push_back(id);
        } else {
            self.arrival_queued = true;
            self.st
                .events
                .push(Reverse((at, self.arrival_seq, Event::Arrival(id))));
        }
    }

    /// Handles every event that comes before an arrival at `t` handed over now: all events before `t`, and
    /// those at `t` scheduled before the next arrival's sequence number. Whether an idle server starts an
    /// iteration at `t` waits until no arrival at `t` can come (the next call). So stepping gives exactly
    /// the events, in the same order, as `run` over the same arrivals.
    pub fn advance_to(&mut self, t: Nanos) {
        self.horizon = self.horizon.max(t);
        while self.aborted.is_none() {
            if let Some(t0) = self.undecided {
                let next = self.st.events.peek().map(|Reverse((at, _, _))| *at);
                if next == Some(t0) {
                    // Another event at the same instant: decide after it.
                    self.undecided = None;
                } else if t0 < t {
                    self.undecided = None;
                    if let Err(e) = self.start_iteration() {
                        self.aborted = Some(e.to_string());
                    }
                    continue;
                }
            }
            let bound = if self.arrival_queued {
                u64::MAX
            } else {
                self.arrival_seq
            };
            match self.st.events.peek() {
                Some(&Reverse((at, seq, _))) if (at, seq) < (t, bound) => self.step(),
                _ => break,
            }
        }
    }

    /// Handles the next event.
    fn step(&mut self) {
        let Some(Reverse((t, _, ev))) = self.st.events.pop() else {
            return;
        };
        self.advance(t);
        match ev {
            Event::Arrival(id) => {
                self.on_arrival(id);
                // The next arrival's place among simultaneous events.
                self.st.seq += 1;
                self.arrival_seq = self.st.seq;
                match self.pending.pop_front() {
                    Some(next) => {
                        let at = self.w.requests[next as usize].arrival;
                        self.st
                            .events
                            .push(Reverse((at, self.arrival_seq, Event::Arrival(next))));
                    }
                    None => self.arrival_queued = false,
                }
            }
            Event::IterationDone => self.on_iteration_done(),
            Event::LoadDone(a) => self.on_load_done(a),
            Event::Poll => {
                self.st.poll_pending = false;
                self.st.busy = Busy::Idle;
            }
        }
        if self.st.busy == Busy::Polling {
            self.schedule_poll();
        } else if self.st.busy == Busy::Idle {
            self.undecided = Some(t);
        }
    }

    /// When the engine next has something to do (an event, or an undecided start), if anything.
    pub fn next_time(&self) -> Option<Nanos> {
        let ev = self.st.events.peek().map(|Reverse((at, _, _))| *at);
        match (self.undecided, ev) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The latest `advance_to` target.
    pub fn horizon(&self) -> Nanos {
        self.horizon
    }

    /// Simulated time now (the last event handled).
    pub fn now(&self) -> Nanos {
        self.st.now
    }

    /// Set when the clock failed and the engine stopped.
    pub fn aborted(&self) -> Option<&str> {
        self.aborted.as_deref()
    }

    /// Requests waiting in the scheduler's queues and running in the batch (or prefilling).
    pub fn in_flight(&self) -> (usize, usize) {
        (
            self.sched.waiting(),
            self.st.batch.len() + self.st.batch.admitted.len(),
        )
    }

    /// Whether `adapter` is in GPU memory or being loaded.
    pub fn holds(&self, adapter: u32) -> bool {
        self.st
            .adapters
            .get(adapter as usize)
            .is_some_and(|a| a.residency != Residency::Host)
    }

    pub fn stats(&self) -> &EngineStats {
        &self.st.stats
    }

    /// Hands out the records that became final (finished or rejected) since the last call, in the order they
    /// did (a replica; an engine from `new` keeps them all for `finish`).
    pub fn drain(&mut self, mut f: impl FnMut(u32, RequestRecord)) {
        if let Records::Live { done, .. } = &mut self.st.records {
            for (id, rec) in done.drain(..) {
                f(id, rec);
            }
        }
    }

    /// Hands out (adapter, held) for every load started (held) or eviction since the last call (a replica).
    pub fn drain_residency(&mut self, mut f: impl FnMut(u32, bool)) {
        if let Some(log) = &mut self.st.residency_log {
            for (a, held) in log.drain(..) {
                f(a, held);
            }
        }
    }

    /// Runs until nothing is left and returns the records and the counters. An engine from `new` returns
    /// one record per workload request; a replica returns none (advance it to `Nanos::MAX` and `drain` it
    /// first).
    pub fn finish(mut self) -> Result<RunOutput> {
        self.advance_to(Nanos::MAX);
        if self.aborted.is_none() && (self.sched.waiting() > 0 || !self.st.batch.is_empty()) {
            return Err(Error::internal(format!(
                "engine stopped with {} requests waiting and {} running (a bug: please report)",
                self.sched.waiting(),
                self.st.batch.len()
            )));
        }
        self.st.stats.end_ns = self.st.now;
        let records = match self.st.records {
            Records::All(v) => v,
            Records::Live { .. } => Vec::new(),
        };
        Ok(RunOutput {
            aborted: self.aborted,
            records,
            stats: self.st.stats,
        })
    }

    /// Moves the clock, integrating memory use over the elapsed time.
    fn advance(&mut self, t: Nanos) {
        let st = &mut self.st;
        debug_assert!(t >= st.now);
        let dt = (t - st.last_account) as u128;
        st.stats.kv_slot_ns += st.mem.kv_used as u128 * dt;
        st.stats.adapter_slot_ns += st.mem.adapter_used as u128 * dt;
        st.stats.kv_claim_slot_ns += st.mem.kv_claim as u128 * dt;
        st.last_account = t;
        st.now = t;
    }

    fn note_work(&mut self, s: &BatchShape) {
        let w = &mut self.st.stats;
        w.tokens += s.tokens();
        w.prefill_sq_tokens += s.prefill_sq_tokens;
        w.decode_context += s.decode_context;
    }

    fn note_memory(&mut self) {
        let (m, s) = (&self.st.mem, &mut self.st.stats);
        s.peak_kv_slots = s.peak_kv_slots.max(m.kv_used);
        s.peak_adapter_slots = s.peak_adapter_slots.max(m.adapter_used);
        s.peak_total_slots = s.peak_total_slots.max(m.kv_used + m.adapter_used);
        s.peak_kv_claim_slots = s.peak_kv_claim_slots.max(m.kv_claim);
        assert!(
            m.kv_used + m.adapter_used <= self.cfg.pool_slots,
            "memory invariant violated (engine bug)"
        );
    }

    fn on_arrival(&mut self, id: u32) {
        let r = self.w.requests[id as usize];
        if let Records::Live { live, .. } = &mut self.st.records {
            live.insert(id, RequestRecord::new());
        }
        let slots = self.w.adapter(r.adapter).map_or(0, |a| a.slots);
        let need = r.input as u64 + self.cfg.budget(&r) as u64 + slots;
        let (input, total) = (r.input as u64, r.input as u64 + r.output as u64);
        // The first limit a request breaks is its reason: what the model cannot compute, then what the
        // memory cannot hold, then the server's configured limits.
        let reason = if let Some(max) = self.cfg.context_tokens
            && total > max
        {
            Some(Reject::Context { total, max })
        } else if need > self.cfg.pool_slots {
            Some(Reject::Pool {
                need,
                pool: self.cfg.pool_slots,
            })
        } else if let Some(max) = self.cfg.max_input_tokens
            && input > max
        {
            Some(Reject::Input { input, max })
        } else if let Some(max) = self.cfg.max_total_tokens
            && total > max
        {
            Some(Reject::Total { total, max })
        } else if input > self.cfg.max_prefill_tokens {
            Some(Reject::Prefill {
                input,
                max: self.cfg.max_prefill_tokens,
            })
        } else if r.adapter != NO_ADAPTER && self.w.adapter(r.adapter).is_none() {
            Some(Reject::Adapter { adapter: r.adapter })
        } else {
            None
        };
        if let Some(reason) = reason {
            let rec = self.st.records.get(id);
            rec.outcome = Outcome::Rejected(reason);
            rec.finished = self.st.now;
            self.st.records.finalize(id);
            self.emit(Observed::Rejected { id });
            return;
        }
        if r.adapter != NO_ADAPTER {
            self.prefetch.on_arrival(r.adapter, self.st.now);
            self.st.adapters[r.adapter as usize].queued += 1;
            self.cache.on_arrival(&r, self.st.now);
        }
        self.sched.on_arrival(&r, self.st.now);
        self.emit(Observed::Arrival { id });
    }

    fn start_iteration(&mut self) -> Result<()> {
        let b = &self.st.batch;
        let merge = b.is_empty() || b.steps_since_merge >= self.cfg.max_wait_tokens;
        if merge && self.sched.waiting() > 0 && self.merge()? {
            return Ok(());
        }
        if !self.st.batch.is_empty() {
            self.start_decode()?;
        } else if self.cfg.idle_poll_ns > 0 {
            // Nothing to run: the server sleeps and polls (S-LoRA: `asyncio.sleep(0.01)` when the batch is
            // empty), so the next admission happens at a poll, not on arrival.
            self.st.busy = Busy::Polling;
            self.st.idle_since = self.st.now;
            self.schedule_poll();
        }
        Ok(())
    }

    /// While polling with requests waiting, wakes at the next poll tick.
    fn schedule_poll(&mut self) {
        if self.st.poll_pending || self.sched.waiting() == 0 {
            return;
        }
        let (since, every) = (self.st.idle_since, self.cfg.idle_poll_ns);
        let ticks = (self.st.now - since).div_ceil(every).max(1);
        self.st.poll_pending = true;
        self.push(since + ticks * every, Event::Poll);
    }

    /// Admits new requests and starts their prefill; false if none could be admitted.
    fn merge(&mut self) -> Result<bool> {
        let now = self.st.now;
        let st = &mut self.st;
        st.mem.reserve.clear();
        st.mem.reserve.extend(st.batch.reservations());
        st.batch.admitted.clear();
        st.batch.admitted_tokens = 0;
        {
            let mut adm = Admission::new(
                self.w,
                &self.cfg,
                &mut self.st,
                self.cache.as_mut(),
                &mut *self.clock,
            );
            self.sched.select(&mut adm);
            if self.sched.waiting() > 0 {
                let mut first = None;
                self.sched.peek(&mut |id| {
                    first = Some(id);
                    false
                });
                if let Some(id) = first {
                    let why = adm.fit(id);
                    adm.note_blocked(why);
                }
            }
        }
        self.st.stats.merges += 1;
        if self.st.batch.admitted.is_empty() {
            self.st.stats.merges_empty += 1;
            return Ok(false);
        }
        // `reserve` now lists the running and the admitted requests (admission inserted them).
        self.st.mem.kv_claim = admission::peak(&self.st.mem.reserve);
        if self.obs.is_some() {
            for i in 0..self.st.batch.admitted.len() {
                let id = self.st.batch.admitted[i];
                let hit = self.st.records.get(id).adapter_hit;
                self.emit(Observed::Admitted { id, hit });
            }
        }
        let batch = std::mem::take(&mut self.st.batch.admitted);
        let mut ready = now;
        let mut shape = BatchShape::default();
        let mut kv_need = 0;
        self.st.seq += 1;
        let stamp = self.st.seq;
        for &id in &batch {
            let r = self.w.requests[id as usize];
            kv_need += r.input as u64 + 1;
            if r.adapter == NO_ADAPTER {
                shape.add_prompt(r.input as u64, None);
                continue;
            }
            let a = r.adapter as usize;
            let first = self.st.stamp[a] != stamp;
            self.st.stamp[a] = stamp;
            shape.add_prompt(
                r.input as u64,
                Some((self.w.adapters[a].rank as u64, first)),
            );
            if self.st.adapters[a].residency == Residency::Host {
                self.st.mem.pending_pin -= self.st.adapters[a].slots;
                self.start_load(r.adapter)?;
            }
            if self.st.adapters[a].residency == Residency::Loading {
                ready = ready.max(self.st.adapters[a].load_done);
            }
        }
        self.make_room(kv_need);
        self.st.mem.kv_used += kv_need;
        self.note_memory();
        for &id in &batch {
            self.st.records.get(id).load_wait = ready - now;
        }
        self.st.stats.load_stall_ns += ready - now;
        self.st.stats.prefill_iterations += 1;
        self.note_work(&shape);
        let w = self.w;
        let mut seqs = batch.iter().map(|&id| {
            let r = &w.requests[id as usize];
            Seq {
                request: id,
                new_tokens: r.input,
                context: 0,
                adapter: r.adapter,
                rank: w.adapter(r.adapter).map_or(0, |a| a.rank),
            }
        });
        let dur = self.clock.iteration(&shape, &mut seqs)?.max(1);
        self.st.batch.admitted = batch;
        self.st.stats.busy_ns += dur;
        self.st.busy = Busy::Prefill;
        self.st.batch.steps_since_merge = 0;
        self.push(ready + dur, Event::IterationDone);
        self.observe_iteration(Phase::Prefill, ready, ready + dur, &shape);
        if self.prefetch.at_merge() {
            self.prefetch_next_batch()?;
        }
        Ok(true)
    }

    fn start_decode(&mut self) -> Result<()> {
        if self.prefetch.at_step(self.st.batch.steps_since_merge) {
            self.prefetch_next_batch()?;
        }
        let n = self.st.batch.len() as u64;
        self.make_room(n);
        self.st.mem.kv_used += n;
        self.note_memory();
        let b = &self.st.batch;
        let shape = BatchShape {
            decode_seqs: n,
            decode_context: b.ctx_sum,
            lora_tokens: b.adapter_seqs,
            lora_token_rank: b.token_rank_sum,
            lora_distinct_rank: b.distinct_rank_sum,
            lora_distinct: b.distinct,
            lora_seqs: b.adapter_seqs,
            lora_max_rank: b.max_rank(),
            ..Default::default()
        };
        let dur = self.clock.iteration(&shape, &mut b.seqs())?.max(1);
        self.note_work(&shape);
        self.st.stats.busy_ns += dur;
        self.st.stats.decode_iterations += 1;
        self.st.batch.steps_since_merge += 1;
        self.st.busy = Busy::Decode;
        self.push(self.st.now + dur, Event::IterationDone);
        self.observe_iteration(Phase::Decode, self.st.now, self.st.now + dur, &shape);
        Ok(())
    }

    fn on_iteration_done(&mut self) {
        let now = self.st.now;
        let finished = self.st.stats.finished;
        let held = self.st.mem.kv_used;
        match std::mem::replace(&mut self.st.busy, Busy::Idle) {
            Busy::Prefill => {
                let batch = std::mem::take(&mut self.st.batch.admitted);
                for &id in &batch {
                    let r = self.w.requests[id as usize];
                    self.st.records.get(id).first_token = now;
                    self.emit(Observed::FirstToken { id });
                    if r.output == 1 {
                        self.finish_request(id, r.adapter, r.input as u64 + 1, 0);
                    } else {
                        let rank = self.w.adapter(r.adapter).map_or(0, |a| a.rank);
                        let budget = self.cfg.budget(&r);
                        let run = Running::new(id, r.input, r.output, budget, r.adapter, rank);
                        self.st.join(run, now);
                    }
                }
                self.st.batch.admitted = batch;
                self.st.batch.admitted.clear();
            }
            Busy::Decode => {
                self.st.batch.step(now);
                while let Some(id) = self.st.batch.pop_finished() {
                    let r = self.st.batch.remove(id).expect("running");
                    let ctx = r.ctx(self.st.batch.steps) as u64;
                    let gap = self.st.batch.max_gap(&r);
                    self.st.leave(&r);
                    self.finish_request(id, r.adapter, ctx, gap);
                }
            }
            Busy::Idle | Busy::Polling => unreachable!("iteration finished while idle"),
        }
        // With an oracle reserve a request finishes with nothing left reserved, last in the peak rule's
        // order: the claim changes only if it was the total held now (the tail's term). Else recompute.
        if self.st.stats.finished != finished
            && (self.cfg.reserve != Reserve::Oracle || self.st.mem.kv_claim <= held)
        {
            self.recompute_claim();
        }
        if self.st.batch.is_empty() && self.obs.is_some() {
            let snap = self.snapshot();
            self.emit(Observed::Idle { snap: &snap });
        }
    }

    /// Request `id` produced its last token: its KV (`ctx` slots) and its hold on `adapter` go.
    fn finish_request(&mut self, id: u32, adapter: u32, ctx: u64, max_gap: Nanos) {
        let now = self.st.now;
        self.clock.release(id);
        self.st.mem.kv_used -= ctx;
        self.st.stats.finished += 1;
        let rec = self.st.records.get(id);
        rec.outcome = Outcome::Finished;
        rec.finished = now;
        rec.max_gap = max_gap;
        self.st.records.finalize(id);
        self.st
            .unpin(adapter, self.cache.as_mut(), &mut *self.clock);
        self.sched.on_finish(&self.w.requests[id as usize], now);
        self.emit(Observed::Finished { id });
    }

    /// The KV claim after requests left at the end of an iteration (no request is prefilling then): the
    /// peak rule over those still running.
    fn recompute_claim(&mut self) {
        self.st.mem.kv_claim = self.st.batch.claim();
    }

    fn on_load_done(&mut self, a: u32) {
        let s = &mut self.st.adapters[a as usize];
        debug_assert_eq!(s.residency, Residency::Loading);
        s.residency = Residency::Resident;
        if s.refs == 0 {
            self.st.mem.idle_slots += s.slots;
        }
        self.cache.on_load(a, self.st.now);
        self.st
            .maybe_release(a, self.cache.as_mut(), &mut *self.clock);
    }

    /// Evicts idle adapters, chosen by the cache policy, until `need` slots are free. Admission guarantees
    /// this succeeds: the KV peak of admitted requests plus pinned adapters fits in the pool.
    fn make_room(&mut self, need: u64) {
        while self.st.free_slots(self.cfg.pool_slots) < need {
            let mut idle = std::mem::take(&mut self.st.scratch);
            idle.clear();
            idle.extend(
                (0..self.st.adapters.len() as u32)
                    .filter(|&a| self.st.adapters[a as usize].is_idle()),
            );
            assert!(
                !idle.is_empty(),
                "no idle adapter to evict for {need} slots (engine bug)"
            );
            let view = CacheView {
                now: self.st.now,
                workload: self.w,
                adapters: &self.st.adapters,
            };
            let v = self.cache.victim(&idle, &view);
            assert!(
                idle.contains(&v),
                "cache policy chose {v}, which is not idle"
            );
            self.st.scratch = idle;
            self.st.evict(v, self.cache.as_mut(), &mut *self.clock);
        }
    }

    fn start_load(&mut self, a: u32) -> Result<()> {
        let ad = &self.w.adapters[a as usize];
        // Room first: the clock hears of evictions before a load that may reuse it (or reload the adapter).
        self.make_room(ad.slots);
        let start = self.st.now.max(self.st.link_free_at);
        let load = self.cfg.load_path.shape(ad.bytes);
        let done = start + self.clock.load(a, ad.bytes, &load)?;
        self.st.link_free_at = done;
        let s = &mut self.st.adapters[a as usize];
        s.residency = Residency::Loading;
        s.load_done = done;
        self.st.mem.adapter_used += ad.slots;
        self.st.stats.adapter_loads += 1;
        self.st.stats.pcie_bytes += load.bytes;
        if let Some(log) = &mut self.st.residency_log {
            log.push((a, true));
        }
        self.note_memory();
        self.push(done, Event::LoadDone(a));
        self.emit(Observed::Load {
            adapter: a,
            start,
            end: done,
        });
        Ok(())
    }

    /// Loads the adapters the prefetcher wants into memory that is free now, in its order, without evicting
    /// anything and without breaking any admitted request's reservation. Marked adapters survive S-LoRA's
    /// free-when-unused rule until the next prefetch.
    fn prefetch_next_batch(&mut self) -> Result<()> {
        let mut want = std::mem::take(&mut self.st.want);
        want.clear();
        let view = PrefetchView {
            now: self.st.now,
            workload: self.w,
            adapters: &self.st.adapters,
            scheduler: self.sched.as_ref(),
        };
        self.prefetch.wanted(&view, &mut want);
        // Unmark (and, without a cache, free) what the previous prefetch wanted and this one does not.
        for a in std::mem::take(&mut self.st.prefetched) {
            if !want.contains(&a) {
                self.st.adapters[a as usize].wanted = false;
                self.st
                    .maybe_release(a, self.cache.as_mut(), &mut *self.clock);
            }
        }
        let reserved_peak = admission::peak(&self.st.mem.reserve);
        let mut room = true;
        for &a in &want {
            let s = &mut self.st.adapters[a as usize];
            s.wanted = true;
            let slots = s.slots;
            let host = s.residency == Residency::Host;
            self.st.prefetched.push(a);
            // Load in order until the first that does not fit; later ones stay marked only.
            room = room
                && (!host
                    || self.st.free_slots(self.cfg.pool_slots) >= slots
                        && reserved_peak + self.st.mem.pinned_slots() + slots
                            <= self.cfg.pool_slots);
            if room && host {
                self.start_load(a)?;
            }
        }
        self.st.want = want;
        Ok(())
    }
}
