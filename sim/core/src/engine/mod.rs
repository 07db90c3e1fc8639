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
//!
//! Rooms: `config` (what an engine is set up with) and `outcome` (what it hands back: records, rejections,
//! counters); `state` (what it mutates: events, the pool's accounting, adapters, batch, records, and the
//! `Feed` of arrivals handed over from outside) with `batch` and `admission`; `step` (the event loop and
//! what each event does); this file holds the engine value, its construction and what can be read from it.
//! `api` is the plug-in contract, `clock` the seam for durations, `observe` the event feed for timelines.

mod admission;
pub mod api;
mod batch;
pub mod clock;
mod config;
mod ids;
pub mod observe;
mod outcome;
mod state;
mod step;

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use api::{AdapterState, CachePolicy, Prefetcher, Residency, Scheduler};
pub use api::{Admission, Fit, Policies};
use batch::Batch;
pub use clock::{Clock, Executor, Seq, Simulated, Timed};
pub use config::{EngineConfig, LoadPath, Reserve};
pub use observe::{Observed, Observer, Phase, QueueInfo, Snapshot};
pub use outcome::{Abort, Blocked, EngineStats, Outcome, Reject, RequestRecord, RunOutput};
use state::{Busy, Feed, Memory, Records, State};

use crate::cost::BatchShape;
use crate::error::{Error, Result};
use crate::time::Nanos;
use crate::workload::Workload;

pub struct Engine<'a> {
    w: &'a Workload,
    cfg: EngineConfig,
    clock: &'a mut dyn Clock,
    sched: Box<dyn Scheduler>,
    cache: Box<dyn CachePolicy>,
    prefetch: Box<dyn Prefetcher>,
    st: State,
    /// How arrivals handed over from outside enter the event queue (`push_arrival`, `advance_to`).
    feed: Feed,
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
                links: 1,
                ..Default::default()
            },
            last_account: 0,
            aborted_now: Vec::new(),
            skipped_merges: 0,
            slot_bytes: w
                .adapters
                .iter()
                .find(|a| a.slots > 0)
                .map_or(0, |a| a.bytes / a.slots),
            repack_ns: 0,
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
            feed: Feed::new(),
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

    /// When the engine next has something to do (an event, or an undecided start), if anything.
    pub fn next_time(&self) -> Option<Nanos> {
        let ev = self.st.events.peek().map(|Reverse((at, _, _))| *at);
        match (self.feed.undecided, ev) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The latest `advance_to` target.
    pub fn horizon(&self) -> Nanos {
        self.feed.horizon
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
}
