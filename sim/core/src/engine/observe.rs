//! What an engine tells an observer while it runs (`Engine::observe`): the raw material of timelines and
//! traces. Off by default; when off the engine checks one `Option` per event and builds nothing.

use crate::time::Nanos;

/// One scheduler queue as the scheduler describes it (`Scheduler::describe_queues`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueInfo {
    /// Requests waiting in it.
    pub waiting: u64,
    /// Its quota and what its admitted requests hold of it, in the scheduler's own unit (MLQ: token slots);
    /// `None` for a queue without one.
    pub quota: Option<u64>,
    pub used: Option<u64>,
}

/// The engine's state at one instant, in KV slots. `kv_held + kv_reserved + adapters_active +
/// adapters_idle + free == pool`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    pub pool: u64,
    /// KV written by admitted requests.
    pub kv_held: u64,
    /// KV promised to admitted requests (the admission's peak claim less what is held) that is free now.
    /// Reserved memory an idle cached adapter sits in shows as that adapter's: it is evicted when the KV
    /// needs it.
    pub kv_reserved: u64,
    /// The full claim: `kv_held` + everything reserved (`>= kv_held + kv_reserved`).
    pub kv_claim: u64,
    /// Adapters in use by admitted requests or being loaded.
    pub adapters_active: u64,
    /// Resident adapters nothing uses (a cache keeps them).
    pub adapters_idle: u64,
    pub free: u64,
    /// Resident or loading adapters (count).
    pub adapters_resident: u64,
    pub adapter_loads: u64,
    pub adapter_evictions: u64,
    /// Requests waiting (all queues) and in the batch (running or prefilling).
    pub waiting: u64,
    pub running: u64,
    /// When the copy link is free: a load started now would start then.
    pub link_free_at: Nanos,
}

/// Kind of an iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Prefill,
    Decode,
}

/// What happened, at the time passed with it.
#[derive(Clone, Copy, Debug)]
pub enum Observed<'s> {
    /// A request arrived and was queued.
    Arrival {
        id: u32,
    },
    /// A request was refused at arrival.
    Rejected {
        id: u32,
    },
    /// A waiting request was dropped by its scheduler.
    Aborted {
        id: u32,
    },
    /// A request was admitted (again, after a squash); `hit`: its adapter was resident.
    Admitted {
        id: u32,
        hit: bool,
    },
    /// An iteration was started: it runs on the GPU from `start` (after its adapters' loads) to `end`.
    /// `queues` is what the scheduler reports (empty for one queue).
    Iteration {
        phase: Phase,
        start: Nanos,
        end: Nanos,
        seqs: u64,
        tokens: u64,
        snap: &'s Snapshot,
        queues: &'s [QueueInfo],
    },
    /// A running or finished iteration left the server idle (memory at that point).
    Idle {
        snap: &'s Snapshot,
    },
    /// An adapter load occupies the copy link from `start` to `end`.
    Load {
        adapter: u32,
        start: Nanos,
        end: Nanos,
    },
    /// A request's prefill ended: its first token.
    FirstToken {
        id: u32,
    },
    Finished {
        id: u32,
    },
}

/// Receives what the engine does, in simulated-time order.
pub trait Observer {
    fn observe(&mut self, now: Nanos, ev: Observed<'_>);
}
