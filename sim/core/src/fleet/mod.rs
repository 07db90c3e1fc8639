//! A fleet: many replicas behind one router (docs/fleet.md). Each replica is a full engine (its own pool,
//! cache policy and scheduler, possibly tensor-parallel over several GPUs: `cost::tp`) built over the whole
//! workload, of which only the requests routed to it arrive (ids stay global, so policies are unchanged).
//!
//! The router decides at each arrival instant from `view::FleetView`, the state a real router could know:
//! per replica, its outstanding requests and tokens and which adapters it holds. Before a decision every
//! replica that has something to do before that instant is advanced to it (a heap of replicas by their next
//! event time: the cost follows the events, not the replica count), so the view is exact. A router that reads
//! only a few replicas (power of two choices) has only those advanced; one that reads none, none. Replicas run
//! independently between decisions; a replica behaves exactly as `Engine::run` over the requests routed to
//! it (`Engine::advance_to`), so one replica behind any router reproduces `sim run` byte for byte.
//!
//! Every `sample_ns` of simulated time (an epoch) all replicas are advanced to the epoch's end, the records
//! that became final in it are handed on sorted by (final time, id), and the fleet is sampled (load
//! imbalance, adapter replication). Records go either into one record per request (exact percentiles, as
//! `sim run`) or, streaming, into quantile sketches and rows on disk, so tens of millions of requests need
//! no per-request memory. With `threads > 1` the records are consumed on a second thread (metrics and
//! rows), and a router that reads no state (random, round-robin) is decided up front so the replicas run in
//! parallel; the results are identical whatever the thread count.
//!
//! Rooms: this file holds the settings and the run's results; `driver` the `Fleet` value (its two modes are
//! methods), `consume` where final records go and the sampler, `report` the fleet's summary and tables.
//! Replicas drive `Engine` through the same calls `Engine::run` makes (`push_arrival`, `advance_to`), their
//! policies come from `policy::PolicySpecs::build` as a single run's do, and their counters add up through
//! `EngineStats::absorb`.

pub mod acc;
mod consume;
mod driver;
mod report;
pub mod router;
pub mod view;

use std::path::PathBuf;
use std::sync::Arc;

use crate::cost::CostModel;
use crate::cost::tp::Tp;
use crate::engine::{EngineConfig, EngineStats, RunOutput};
use crate::error::Result;
use crate::model::GpuSpec;
use crate::policy::PolicySpecs;
use crate::slo::Slo;
use crate::time::Nanos;
use crate::workload::Workload;
use acc::Acc;
pub use driver::Fleet;
pub use report::{SUMMARY_KEYS, replica_ttft};

/// Replicas of one kind: GPU, TP degree, cost model and engine settings.
#[derive(Clone)]
pub struct ReplicaGroup {
    pub gpu: &'static GpuSpec,
    pub count: usize,
    pub tp: Tp,
    /// The cost of one GPU of a replica (`cost::build_tp`).
    pub cost: Arc<dyn CostModel>,
    /// The replica's engine; its pool is sized over the replica's GPUs.
    pub engine: EngineConfig,
}

impl std::fmt::Debug for ReplicaGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaGroup")
            .field("gpu", &self.gpu.name)
            .field("count", &self.count)
            .field("tp", &self.tp)
            .field("cost", &self.cost.describe())
            .field("engine", &self.engine)
            .finish()
    }
}

/// A fleet's settings (what `--replicas`, `--router`, `--tp`, `--fleet-threads`, `--stream` resolve to).
#[derive(Clone, Debug)]
pub struct FleetConfig {
    pub groups: Vec<ReplicaGroup>,
    /// Router spec, `Name[k=v,...]` (`router::REGISTRY`).
    pub router: String,
    /// Threads (1: everything on the calling thread). Never changes a result.
    pub threads: usize,
    /// Epoch length: how often the fleet is sampled and final records are handed on, simulated ns.
    pub sample_ns: Nanos,
    /// Streaming: no per-request records are kept; rows go to this file, metrics to sketches.
    pub stream: Option<PathBuf>,
}

impl FleetConfig {
    pub fn replicas(&self) -> usize {
        self.groups.iter().map(|g| g.count).sum()
    }

    /// GPUs over all replicas.
    pub fn gpus(&self) -> usize {
        self.groups
            .iter()
            .map(|g| g.count * g.tp.degree as usize)
            .sum()
    }

    pub fn describe(&self) -> String {
        self.groups
            .iter()
            .map(|g| format!("{}x {} TP{}", g.count, g.gpu.name, g.tp.degree))
            .collect::<Vec<_>>()
            .join(" + ")
    }
}

/// What every replica serves and runs: the workload, its predictions, the objectives, the seed (the router's)
/// and the policies' specs.
pub struct FleetInputs<'a> {
    pub workload: &'a Workload,
    pub predicted: &'a [u32],
    pub slo: Slo,
    pub seed: u64,
    pub policies: PolicySpecs<'a>,
}

/// One fleet sample (at an epoch's end).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub t: Nanos,
    pub outstanding_mean: f64,
    pub outstanding_max: u32,
    pub tokens_mean: f64,
    pub tokens_max: u64,
    /// Adapters held by some replica, and the sum over adapters of their holders.
    pub adapters_held: usize,
    pub holders: usize,
    pub holders_max: usize,
}

/// Per replica: its counters and what it served.
pub struct ReplicaReport {
    pub group: usize,
    pub stats: EngineStats,
    pub acc: Acc,
}

/// A fleet run.
pub struct FleetRun {
    /// Without streaming: one record per request (by id) and the replicas' counters summed, as
    /// `metrics::summarize` takes them; streaming: no records.
    pub output: RunOutput,
    /// Without streaming: the replica each request went to.
    pub routes: Vec<u32>,
    pub replicas: Vec<ReplicaReport>,
    pub samples: Vec<Sample>,
    /// Per adapter: the mean over samples of the replicas holding it, and the most at any sample.
    pub replication: Vec<(f64, usize)>,
    /// The fleet-wide accumulator (the streamed summary's source).
    pub total: Acc,
    /// Full specs of the router and the replicas' policies, and the first group's cost model.
    pub router: String,
    pub scheduler: String,
    pub cache: String,
    pub prefetch: String,
    pub cost_model: String,
}

/// Runs the fleet (`Fleet::new(fc, inp)?.run()`).
pub fn run(fc: &FleetConfig, inp: &FleetInputs<'_>) -> Result<FleetRun> {
    Fleet::new(fc, inp)?.run()
}
