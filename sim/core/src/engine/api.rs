//! The plug-in contract: what the engine offers schedulers, cache policies and prefetchers, and what it
//! guarantees them. A policy imports this module (and `registry` to register itself), never the engine's
//! internals; the engine never imports a policy.

use super::config::EngineConfig;
use crate::cost::{BatchShape, CostModel};
use crate::registry::Kind;
use crate::slo::Slo;
use crate::time::Nanos;
use crate::workload::{Request, Workload};

pub use super::Abort;
pub use super::admission::{Admission, Fit};
pub use super::observe::QueueInfo;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Residency {
    Host,
    Loading,
    Resident,
}

/// Runtime state of one adapter, as policies see it.
#[derive(Clone, Debug)]
pub struct AdapterState {
    pub residency: Residency,
    /// Admitted, unfinished requests using it.
    pub refs: u32,
    /// Arrived requests waiting to be admitted.
    pub queued: u32,
    /// Marked by the last prefetch.
    pub wanted: bool,
    pub slots: u64,
    /// When the load in flight completes (meaningful while `Loading`).
    pub load_done: Nanos,
    /// Running (decoding) requests using it.
    pub(crate) in_batch: u32,
}

impl AdapterState {
    pub(crate) fn new(slots: u64) -> AdapterState {
        AdapterState {
            residency: Residency::Host,
            refs: 0,
            queued: 0,
            wanted: false,
            slots,
            load_done: 0,
            in_batch: 0,
        }
    }

    /// Resident and used by no admitted request: the engine may evict it.
    pub fn is_idle(&self) -> bool {
        self.refs == 0 && self.residency == Residency::Resident
    }
}

/// Schedulers pick which waiting requests join the batch. The engine never reorders or drops requests itself.
///
/// Guarantees the engine gives a scheduler:
/// - `on_arrival` is called once per request that was not rejected, in arrival order (ties: trace order);
/// - `select` is called only at merge points (empty batch, or every `max_wait_tokens` decode steps, or
///   every `merge_every` steps under `--merge-cadence policy`);
///   every request the scheduler passes to `Admission::try_admit` that returns true is admitted and must be
///   removed from the scheduler's queue; a request refused stays queued;
/// - `on_finish` is called once per admitted request when its last token is out;
/// - a request the scheduler squashes with `Admission::squash` loses its progress and is handed back: the
///   scheduler must queue it again itself (it gets no second `on_arrival`).
pub trait Scheduler {
    fn on_arrival(&mut self, req: &Request, now: Nanos);
    /// Offers waiting requests to `adm` in the scheduler's order.
    fn select(&mut self, adm: &mut Admission<'_>);
    /// Visits waiting requests in the order `select` would offer them, until `visit` returns false
    /// (used to prefetch the adapters of the next batch).
    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool);
    fn on_finish(&mut self, _req: &Request, _now: Nanos) {}
    /// Number of waiting requests.
    fn waiting(&self) -> usize;
    /// Reports each of its queues, in its order, for timelines and traces (called only while a run is
    /// observed). A single-queue scheduler reports nothing: `waiting` says it all.
    fn describe_queues(&self, _queue: &mut dyn FnMut(QueueInfo)) {}
    /// Merge points that passed with nothing waiting, since the last call (S-LoRA's router asks its queue
    /// for a batch at each of them: every idle poll, every decode step once a merge is due). The engine calls
    /// `select` only with requests waiting and reports the calls it skipped here, before the next `select`.
    /// For schedulers whose estimates advance per call (`slora-abort`).
    fn skipped_merges(&mut self, _calls: u64) {}
    /// The decode steps between merges this policy's system runs at, where it has its own (Chameleon
    /// assembles its batch at every iteration: 1); `None` keeps the engine's `max_wait_tokens` (S-LoRA's
    /// 10). The engine follows it only under `--merge-cadence policy`.
    fn merge_every(&self) -> Option<u32> {
        None
    }
}

/// What a cache policy may look at when choosing a victim.
pub struct CacheView<'a> {
    pub now: Nanos,
    pub workload: &'a Workload,
    /// Per adapter: residency, requests holding it, requests waiting for it.
    pub adapters: &'a [AdapterState],
}

/// Cache policies decide which idle adapters stay resident and which go when memory is needed.
///
/// Guarantees the engine gives a cache policy:
/// - an adapter in use by an admitted request, or being loaded, is never offered as a victim;
/// - `victim` is called only with a non-empty list of idle resident adapters, and the one returned is evicted;
/// - when `keeps_idle` is false, an adapter is freed as soon as no admitted request uses it and the
///   prefetcher does not want it (S-LoRA).
pub trait CachePolicy {
    /// Whether idle adapters stay resident until memory is needed.
    fn keeps_idle(&self) -> bool {
        true
    }
    /// A request for an adapter arrived (requests without an adapter are not reported).
    fn on_arrival(&mut self, _req: &Request, _now: Nanos) {}
    /// A request using an adapter was admitted (it uses the adapter from now on).
    fn on_admit(&mut self, _req: &Request, _now: Nanos) {}
    fn on_load(&mut self, _adapter: u32, _now: Nanos) {}
    fn on_evict(&mut self, _adapter: u32, _now: Nanos) {}
    /// Picks one of `idle` (non-empty) to evict.
    fn victim(&mut self, idle: &[u32], view: &CacheView<'_>) -> u32;
}

/// What a prefetcher sees when asked which adapters to load ahead.
pub struct PrefetchView<'a> {
    pub now: Nanos,
    pub workload: &'a Workload,
    pub adapters: &'a [AdapterState],
    /// The waiting requests, in the order the scheduler would offer them.
    pub scheduler: &'a dyn Scheduler,
}

/// Prefetchers name adapters to load ahead into free memory after each merge (or at the decode steps they
/// choose). The engine loads them in
/// order while they fit without evicting anything or breaking an admitted request's reservation; the rest
/// stay marked (`AdapterState::wanted`), which protects them from S-LoRA's free-when-unused rule until the
/// next prefetch.
pub trait Prefetcher {
    /// Whether to prefetch right after each merge.
    fn at_merge(&self) -> bool {
        true
    }
    /// Whether to prefetch before the decode step that follows `steps` decode steps since the last merge
    /// (S-LoRA: 5 and 7).
    fn at_step(&self, _steps: u32) -> bool {
        false
    }
    /// A request for `adapter` arrived (requests without an adapter are not reported).
    fn on_arrival(&mut self, _adapter: u32, _now: Nanos) {}
    /// Appends the adapters to prefetch, most wanted first, without duplicates.
    fn wanted(&mut self, view: &PrefetchView<'_>, want: &mut Vec<u32>);
}

/// The policies one run plugs into the engine.
pub struct Policies {
    pub scheduler: Box<dyn Scheduler>,
    pub cache: Box<dyn CachePolicy>,
    pub prefetch: Box<dyn Prefetcher>,
}

/// What a policy is built with: the workload, predictions, the pool, and cost estimates.
pub struct PolicyCtx<'a> {
    pub workload: &'a Workload,
    /// Per request, the output length the predictor gives (`--predictor`); the oracle gives the true one.
    pub predicted_output: &'a [u32],
    /// KV slots of the unified pool.
    pub pool_slots: u64,
    pub slo: Slo,
    /// Cost of one prompt token in a prefill iteration (a 1024-token prefill, divided by 1024).
    pub prefill_ns_per_token: f64,
    /// Cost of one decode step of a mid-sized batch (32 sequences of 1024 tokens).
    pub decode_ns_per_step: f64,
    /// Per adapter, the time to load it when the link is free.
    pub load_ns: Vec<Nanos>,
    /// Most prompt tokens in one prefill iteration.
    pub max_prefill_tokens: u64,
    /// The run's cost model, for schedulers that price batches themselves (`slora-pets` profiles it at
    /// start, as S-LoRA profiles the GPU).
    pub cost: &'a dyn CostModel,
    /// The run's seed: a policy that draws at random draws from it (0 unless `with_seed` set it).
    pub seed: u64,
}

impl<'a> PolicyCtx<'a> {
    /// The same context with the run's seed.
    pub fn with_seed(self, seed: u64) -> PolicyCtx<'a> {
        PolicyCtx { seed, ..self }
    }

    pub fn new(
        workload: &'a Workload,
        predicted_output: &'a [u32],
        engine: &EngineConfig,
        slo: Slo,
        cost: &'a dyn CostModel,
    ) -> PolicyCtx<'a> {
        let prefill = cost.iteration(&BatchShape {
            prefill_seqs: 1,
            prefill_tokens: 1024,
            prefill_sq_tokens: 1024 * 1024,
            ..Default::default()
        });
        let decode = cost.iteration(&BatchShape {
            decode_seqs: 32,
            decode_context: 32 * 1024,
            ..Default::default()
        });
        PolicyCtx {
            workload,
            predicted_output,
            pool_slots: engine.pool_slots,
            slo,
            prefill_ns_per_token: prefill as f64 / 1024.0,
            decode_ns_per_step: decode as f64,
            load_ns: workload
                .adapters
                .iter()
                .map(|a| cost.adapter_load(&engine.load_path.shape(a.bytes)))
                .collect(),
            max_prefill_tokens: engine.max_prefill_tokens,
            cost,
            seed: 0,
        }
    }

    /// Slots a request occupies at its peak: prompt + predicted output + its adapter.
    pub fn size_tokens(&self, r: &Request) -> u64 {
        r.input as u64
            + self.predicted_output[r.id as usize] as u64
            + self.workload.adapter(r.adapter).map_or(0, |a| a.slots)
    }

    /// Expected time to serve a request alone once admitted: its prefill plus one decode step per token.
    pub fn service_ns(&self, r: &Request) -> f64 {
        r.input as f64 * self.prefill_ns_per_token
            + self.predicted_output[r.id as usize] as f64 * self.decode_ns_per_step
    }
}

/// The plug-in kinds, for `registry::Registry`.
pub struct Schedulers;
pub struct Caches;
pub struct Prefetchers;

impl Kind for Schedulers {
    type Made = dyn Scheduler;
    type Ctx<'a> = PolicyCtx<'a>;
    const NAME: &'static str = "scheduler";
}

impl Kind for Caches {
    type Made = dyn CachePolicy;
    type Ctx<'a> = PolicyCtx<'a>;
    const NAME: &'static str = "cache policy";
}

impl Kind for Prefetchers {
    type Made = dyn Prefetcher;
    type Ctx<'a> = PolicyCtx<'a>;
    const NAME: &'static str = "prefetch";
}
