//! What the engine mutates: the event queue, the pool's accounting, the adapters' and the batch's state, the
//! per-request records and the counters.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use super::api::{AdapterState, CachePolicy, Residency};
use super::batch::{Batch, Running};
use super::clock::Clock;
use super::ids;
use super::outcome::{EngineStats, RequestRecord};
use crate::time::Nanos;
use crate::workload::NO_ADAPTER;

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
    pub(super) fn finalize(&mut self, id: u32) {
        if let Records::Live { live, done } = self {
            let rec = live.remove(&id).expect("a live request");
            done.push((id, rec));
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(super) enum Event {
    Arrival(u32),
    IterationDone,
    LoadDone(u32),
    /// An idle server looks at its queue.
    Poll,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Busy {
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
    pub(crate) adapter_used: u64,
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
    pub(super) now: Nanos,
    pub(super) seq: u64,
    pub(super) events: BinaryHeap<Reverse<(Nanos, u64, Event)>>,
    pub(super) busy: Busy,
    /// When the batch last became empty (the idle poll's phase), and whether a poll event is pending.
    pub(super) idle_since: Nanos,
    pub(super) poll_pending: bool,
    pub(super) link_free_at: Nanos,
    pub(crate) adapters: Vec<AdapterState>,
    pub(crate) mem: Memory,
    pub(crate) batch: Batch,
    /// Adapters marked by the last prefetch.
    pub(super) prefetched: Vec<u32>,
    /// Per adapter, the merge it was last counted in (distinct adapters of a prefill).
    pub(super) stamp: Vec<u64>,
    /// Reused buffers: eviction candidates, prefetch targets.
    pub(super) scratch: Vec<u32>,
    pub(super) want: Vec<u32>,
    pub(crate) records: Records,
    pub(crate) stats: EngineStats,
    pub(super) last_account: Nanos,
    /// Requests the scheduler aborted at this merge (for the observer).
    pub(crate) aborted_now: Vec<u32>,
    /// Merge points passed with nothing waiting since the scheduler last heard of them.
    pub(super) skipped_merges: u64,
    /// With `Some`: (adapter, held) each time an adapter starts loading (held) or is evicted, for a fleet's
    /// view of which replica holds what.
    pub(super) residency_log: Option<Vec<(u32, bool)>>,
    /// Bytes per adapter slot (adapters are whole slots of KV size), and the GPU time of adapter re-packs
    /// (`--no-mem-pool`) owed by the next iteration.
    pub(super) slot_bytes: u64,
    pub(super) repack_ns: Nanos,
}

impl State {
    pub(super) fn leave(&mut self, r: &Running) {
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
    pub(super) fn join(&mut self, r: Running, now: Nanos) {
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
    pub(super) fn maybe_release(
        &mut self,
        a: u32,
        cache: &mut dyn CachePolicy,
        clock: &mut dyn Clock,
    ) {
        let s = &self.adapters[a as usize];
        if !cache.keeps_idle() && s.is_idle() && !s.wanted {
            self.evict(a, cache, clock);
        }
    }

    pub(super) fn evict(&mut self, a: u32, cache: &mut dyn CachePolicy, clock: &mut dyn Clock) {
        let s = &mut self.adapters[a as usize];
        debug_assert!(s.is_idle());
        s.residency = Residency::Host;
        self.mem.adapter_used -= s.slots;
        self.mem.idle_slots -= s.slots;
        self.stats.evictions += 1;
        // Without the unified pool, freeing an adapter gathers the others' buffers (`offload_adapters`).
        self.repack_ns += clock
            .estimates()
            .adapter_repack(self.mem.adapter_used * self.slot_bytes);
        if let Some(log) = &mut self.residency_log {
            log.push((a, false));
        }
        clock.evict(a);
        cache.on_evict(a, self.now);
    }

    pub(super) fn free_slots(&self, pool: u64) -> u64 {
        pool - self.mem.kv_used - self.mem.adapter_used
    }
}

/// How arrivals enter an engine driven from outside. A fleet replica does not know its arrivals up front: the
/// router hands each one over (`push_arrival`) just before moving the replica to its instant (`advance_to`).
/// A whole-workload replay (`run`) goes through the same two calls, and these fields make both see exactly
/// the events, in the same order, as a replay that scheduled each arrival when the previous one was handled.
pub(super) struct Feed {
    /// Arrivals handed over and not yet in the event queue, in order (one arrival event is queued at a time).
    pub(super) pending: VecDeque<u32>,
    /// Whether an arrival event is in the queue.
    pub(super) queued: bool,
    /// The sequence number the next arrival event carries. It is reserved when the previous arrival is
    /// handled (or at the start), as a whole-workload replay schedules its next arrival then: an arrival handed
    /// over later still sorts among simultaneous events exactly where the replay puts it.
    pub(super) seq: u64,
    /// Latest `advance_to` target: no arrival may come before it.
    pub(super) horizon: Nanos,
    /// An event at this time left the server idle; whether an iteration starts then is decided once no other
    /// event at that time can come (one can, while it is the horizon: an arrival at the horizon).
    pub(super) undecided: Option<Nanos>,
}

impl Feed {
    pub(super) fn new() -> Feed {
        Feed {
            pending: VecDeque::new(),
            queued: false,
            seq: 1,
            horizon: 0,
            undecided: None,
        }
    }
}
