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

pub mod acc;
pub mod router;
pub mod view;

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::cost::CostModel;
use crate::cost::tp::Tp;
use crate::engine::api::PolicyCtx;
use crate::engine::{
    Engine, EngineConfig, EngineStats, Policies, RequestRecord, RunOutput, Simulated,
};
use crate::error::{Error, Result};
use crate::metrics::num;
use crate::model::GpuSpec;
use crate::slo::Slo;
use crate::summary::Summary;
use crate::time::{Nanos, secs};
use crate::workload::Workload;
use crate::{cache, prefetch, sched};
use acc::{Acc, Sketch};
use router::{REGISTRY, RouterCtx};
use view::FleetView;

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

/// The policies every replica runs, by spec.
pub struct FleetInputs<'a> {
    pub workload: &'a Workload,
    pub predicted: &'a [u32],
    pub slo: Slo,
    pub seed: u64,
    pub scheduler: &'a str,
    pub cache: &'a str,
    pub prefetch: &'a str,
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

/// A record that became final, on its way to the consumer: (id, replica, record).
type Final = (u32, u32, RequestRecord);

/// What consumes final records in order: metrics, the records table or the rows file.
struct Consumer<'a> {
    w: &'a Workload,
    slo: Slo,
    records: Option<Vec<RequestRecord>>,
    replicas: Vec<Acc>,
    total: Acc,
    rows: Option<std::io::BufWriter<std::fs::File>>,
}

impl<'a> Consumer<'a> {
    fn new(fc: &FleetConfig, inp: &FleetInputs<'a>, n: usize) -> Result<Consumer<'a>> {
        let w = inp.workload;
        let rows = match &fc.stream {
            None => None,
            Some(path) => {
                let f = std::fs::File::create(path)
                    .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
                let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
                writeln!(f, "{}", acc::ROW_HEADER)
                    .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
                Some(f)
            }
        };
        Ok(Consumer {
            w,
            slo: inp.slo,
            records: fc
                .stream
                .is_none()
                .then(|| vec![RequestRecord::new(); w.requests.len()]),
            replicas: vec![Acc::default(); n],
            total: Acc::full(),
            rows,
        })
    }

    fn take(&mut self, batch: Vec<Final>) -> Result<()> {
        for (id, r, rec) in batch {
            let req = &self.w.requests[id as usize];
            self.replicas[r as usize].add(self.w, req, &rec, &self.slo);
            self.total.add(self.w, req, &rec, &self.slo);
            if let Some(f) = &mut self.rows {
                acc::write_row(f, self.w, id, r, &rec)
                    .map_err(|e| Error::internal(format!("--stream: {e}")))?;
            }
            if let Some(v) = &mut self.records {
                v[id as usize] = rec;
            }
        }
        Ok(())
    }
}

/// Where an epoch's final records go, sorted by (final time, id): the consumer here, or on its thread.
enum Sink<'s, 'a> {
    Here(Box<Consumer<'a>>),
    Thread(
        std::sync::mpsc::SyncSender<Vec<Final>>,
        std::thread::ScopedJoinHandle<'s, Result<Consumer<'a>>>,
    ),
}

impl<'a> Sink<'_, 'a> {
    fn send(&mut self, mut batch: Vec<Final>) -> Result<()> {
        batch.sort_unstable_by_key(|(id, _, rec)| (rec.finished, *id));
        match self {
            Sink::Here(c) => c.take(batch),
            Sink::Thread(tx, _) => tx
                .send(batch)
                .map_err(|_| Error::internal("the fleet's record consumer stopped")),
        }
    }

    fn close(self) -> Result<Consumer<'a>> {
        match self {
            Sink::Here(c) => Ok(*c),
            Sink::Thread(tx, h) => {
                drop(tx);
                h.join()
                    .map_err(|_| Error::internal("the fleet's record consumer panicked"))?
            }
        }
    }
}

/// The fleet sampled at epoch ends: load, and which replicas hold which adapters.
struct Sampler {
    samples: Vec<Sample>,
    held_sum: Vec<u64>,
    held_max: Vec<usize>,
}

impl Sampler {
    fn sample(&mut self, t: Nanos, view: &FleetView) {
        let n = view.replicas();
        let (mut out_sum, mut out_max, mut tok_sum, mut tok_max) = (0u64, 0u32, 0u64, 0u64);
        for r in 0..n {
            out_sum += view.outstanding(r) as u64;
            out_max = out_max.max(view.outstanding(r));
            tok_sum += view.outstanding_tokens(r);
            tok_max = tok_max.max(view.outstanding_tokens(r));
        }
        let (adapters_held, holders) = view.replication();
        for (a, (s, m)) in self
            .held_sum
            .iter_mut()
            .zip(self.held_max.iter_mut())
            .enumerate()
        {
            let h = view.holders(a as u32).len();
            *s += h as u64;
            *m = (*m).max(h);
        }
        self.samples.push(Sample {
            t,
            outstanding_mean: out_sum as f64 / n as f64,
            outstanding_max: out_max,
            tokens_mean: tok_sum as f64 / n as f64,
            tokens_max: tok_max,
            adapters_held,
            holders,
            holders_max: view.max_replication(),
        });
    }
}

/// The lazily advanced replicas: a heap of (next time, parked, replica), parked meaning the event is at the
/// replica's horizon, after any arrival there. Entries that no longer match a replica's key are skipped.
struct Clockwork {
    heap: BinaryHeap<Reverse<(Nanos, bool, u32)>>,
    key: Vec<Option<(Nanos, bool)>>,
}

impl Clockwork {
    fn requeue(&mut self, r: usize, e: &Engine<'_>) {
        let k = e.next_time().map(|t| (t, t == e.horizon()));
        self.key[r] = k;
        if let Some((t, p)) = k {
            self.heap.push(Reverse((t, p, r as u32)));
        }
    }
}

/// Tokens a request adds to its replica's outstanding work: prompt + predicted output.
fn work(w: &Workload, predicted: &[u32], id: u32) -> u64 {
    w.requests[id as usize].input as u64 + predicted[id as usize] as u64
}

/// The policies of a replica of the group `ctx` describes, and their full specs.
fn policies(inp: &FleetInputs<'_>, ctx: &PolicyCtx<'_>) -> Result<(Policies, [String; 3])> {
    let s = sched::REGISTRY
        .build(inp.scheduler, ctx)
        .map_err(|e| e.context("--scheduler"))?;
    let c = cache::REGISTRY
        .build(inp.cache, ctx)
        .map_err(|e| e.context("--cache"))?;
    let p = prefetch::REGISTRY
        .build(inp.prefetch, ctx)
        .map_err(|e| e.context("--prefetch"))?;
    Ok((
        Policies {
            scheduler: s.made,
            cache: c.made,
            prefetch: p.made,
        },
        [s.spec, c.spec, p.spec],
    ))
}

/// Builds the engines of replicas `range` (their clocks in `clocks`, one per replica of the range).
fn engines<'e>(
    fc: &FleetConfig,
    inp: &FleetInputs<'e>,
    ctxs: &[PolicyCtx<'_>],
    group_of: &[usize],
    start: usize,
    clocks: &'e mut [Simulated<'e>],
) -> Result<Vec<Engine<'e>>> {
    let mut v = Vec::with_capacity(clocks.len());
    for (i, clock) in clocks.iter_mut().enumerate() {
        let g = group_of[start + i];
        let (pol, _) = policies(inp, &ctxs[g])?;
        v.push(Engine::replica(
            inp.workload,
            fc.groups[g].engine.clone(),
            clock,
            pol,
        ));
    }
    Ok(v)
}

/// Hands out replica r's final records and residency changes into the view and `buf`.
fn collect(
    r: usize,
    e: &mut Engine<'_>,
    view: &mut FleetView,
    buf: &mut Vec<Final>,
    inp: &FleetInputs<'_>,
) {
    e.drain(|id, rec| {
        view.done(r, work(inp.workload, inp.predicted, id));
        buf.push((id, r as u32, rec));
    });
    e.drain_residency(|a, held| view.set_held(r, a, held));
}

/// Runs the fleet.
pub fn run(fc: &FleetConfig, inp: &FleetInputs<'_>) -> Result<FleetRun> {
    let w = inp.workload;
    let n = fc.replicas();
    if n == 0 {
        return Err(Error::msg("a fleet needs at least one replica"));
    }
    if w.requests.windows(2).any(|p| p[1].arrival < p[0].arrival) {
        return Err(Error::msg("workload arrivals must be sorted by time"));
    }
    if fc.sample_ns == 0 {
        return Err(Error::msg("the fleet's sample interval must be positive"));
    }
    let group_of: Vec<usize> = fc
        .groups
        .iter()
        .enumerate()
        .flat_map(|(g, grp)| std::iter::repeat_n(g, grp.count))
        .collect();
    let ctxs: Vec<PolicyCtx> = fc
        .groups
        .iter()
        .map(|g| PolicyCtx::new(w, inp.predicted, &g.engine, inp.slo, g.cost.as_ref()))
        .collect();
    // Relative capacity: a mid-sized decode step's speed against the first group's (1 when homogeneous).
    let capacity: Vec<f64> = group_of
        .iter()
        .map(|&g| ctxs[0].decode_ns_per_step / ctxs[g].decode_ns_per_step)
        .collect();
    let mut router = REGISTRY
        .build(
            &fc.router,
            &RouterCtx {
                replicas: n,
                seed: inp.seed,
                workload: w,
                predicted_output: inp.predicted,
                capacity: &capacity,
            },
        )
        .map_err(|e| e.context("--router"))?;
    let (_, specs) = policies(inp, &ctxs[0])?;
    let mut view = FleetView::new(capacity, w.adapters.len());
    let mut routes = if fc.stream.is_none() {
        vec![u32::MAX; w.requests.len()]
    } else {
        Vec::new()
    };
    let mut sampler = Sampler {
        samples: Vec::new(),
        held_sum: vec![0; w.adapters.len()],
        held_max: vec![0; w.adapters.len()],
    };
    let consumer = Consumer::new(fc, inp, n)?;
    let first = w.requests.first().map_or(0, |r| r.arrival);
    let first_end = (first / fc.sample_ns + 1) * fc.sample_ns;
    // Replicas in parallel: only when no decision reads their state.
    let parallel = fc.threads > 1 && n > 1 && router.made.reads() == router::Reads::Nothing;
    let (consumer, stats) = std::thread::scope(|scope| -> Result<(Consumer, Vec<EngineStats>)> {
        let mut sink = if fc.threads > 1 && !parallel {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Final>>(16);
            let mut c = consumer;
            let h = scope.spawn(move || -> Result<Consumer> {
                for batch in rx {
                    c.take(batch)?;
                }
                Ok(c)
            });
            Sink::Thread(tx, h)
        } else {
            Sink::Here(Box::new(consumer))
        };
        let stats = if parallel {
            parallel_replicas(
                fc,
                inp,
                &ctxs,
                &group_of,
                router.made.as_mut(),
                &mut view,
                &mut routes,
                &mut sampler,
                &mut sink,
                first_end,
                scope,
            )?
        } else {
            let mut clocks: Vec<Simulated> = group_of
                .iter()
                .map(|&g| Simulated(fc.groups[g].cost.as_ref()))
                .collect();
            let mut engines = engines(fc, inp, &ctxs, &group_of, 0, &mut clocks)?;
            sequential(
                fc,
                inp,
                &mut engines,
                router.made.as_mut(),
                &mut view,
                &mut routes,
                &mut sampler,
                &mut sink,
                first_end,
            )?;
            let mut stats = Vec::with_capacity(n);
            for (r, e) in engines.into_iter().enumerate() {
                if let Some(why) = e.aborted() {
                    return Err(Error::internal(format!("replica {r} stopped: {why}")));
                }
                stats.push(e.finish()?.stats);
            }
            stats
        };
        Ok((sink.close()?, stats))
    })?;
    finish(
        fc,
        consumer,
        stats,
        group_of,
        sampler,
        routes,
        router.spec,
        specs,
    )
}

/// Routing decision by decision on this thread: before each, every replica with something to do before the
/// arrival instant is advanced to it (a router that reads no state: only the chosen one).
#[allow(clippy::too_many_arguments)]
fn sequential(
    fc: &FleetConfig,
    inp: &FleetInputs<'_>,
    engines: &mut [Engine<'_>],
    router: &mut dyn router::Router,
    view: &mut FleetView,
    routes: &mut [u32],
    sampler: &mut Sampler,
    sink: &mut Sink<'_, '_>,
    mut epoch_end: Nanos,
) -> Result<()> {
    let w = inp.workload;
    let n = engines.len();
    let reads = router.reads();
    let all = reads == router::Reads::All;
    let mut candidates = Vec::new();
    let mut clockwork = Clockwork {
        heap: BinaryHeap::new(),
        key: vec![None; n],
    };
    let mut buf: Vec<Final> = Vec::new();
    let mut epoch = |t: Nanos,
                     engines: &mut [Engine],
                     view: &mut FleetView,
                     buf: &mut Vec<Final>,
                     clockwork: &mut Clockwork|
     -> Result<bool> {
        let mut busy = false;
        for (r, e) in engines.iter_mut().enumerate() {
            e.advance_to(t);
            collect(r, e, view, buf, inp);
            if all {
                clockwork.requeue(r, e);
            }
            busy |= e.next_time().is_some();
        }
        sink.send(std::mem::take(buf))?;
        sampler.sample(t, view);
        Ok(busy)
    };
    for req in &w.requests {
        let t = req.arrival;
        while t >= epoch_end {
            epoch(epoch_end, engines, view, &mut buf, &mut clockwork)?;
            epoch_end += fc.sample_ns;
        }
        if reads == router::Reads::Candidates {
            candidates.clear();
            router.candidates(req, &mut candidates);
            for &r in &candidates {
                engines[r].advance_to(t);
                collect(r, &mut engines[r], view, &mut buf, inp);
            }
        }
        if all {
            // Every replica with something to do before this instant gets there first.
            while let Some(&Reverse((at, parked, r))) = clockwork.heap.peek() {
                if (at, parked) >= (t, true) {
                    break;
                }
                clockwork.heap.pop();
                let r = r as usize;
                if clockwork.key[r] != Some((at, parked)) {
                    continue;
                }
                engines[r].advance_to(t);
                collect(r, &mut engines[r], view, &mut buf, inp);
                clockwork.requeue(r, &engines[r]);
            }
        }
        let r = route(router, req, view, n, &fc.router)?;
        view.routed(r, work(w, inp.predicted, req.id));
        if let Some(slot) = routes.get_mut(req.id as usize) {
            *slot = r as u32;
        }
        let e = &mut engines[r];
        e.push_arrival(req.id);
        e.advance_to(t);
        collect(r, e, view, &mut buf, inp);
        if all {
            clockwork.requeue(r, e);
        }
    }
    // Run out every replica, epoch by epoch.
    while epoch(epoch_end, engines, view, &mut buf, &mut clockwork)? {
        epoch_end += fc.sample_ns;
    }
    Ok(())
}

fn route(
    router: &mut dyn router::Router,
    req: &crate::workload::Request,
    view: &FleetView,
    n: usize,
    name: &str,
) -> Result<usize> {
    let r = router.route(req, view);
    if r >= n {
        return Err(Error::internal(format!(
            "router {name} chose replica {r} of {n}"
        )));
    }
    Ok(r)
}

/// An epoch's work for a worker: (replica, request) arrivals in order, then advance to the epoch's end.
type Work = Option<(Vec<(u32, u32)>, Nanos)>;

/// What a worker hands back after an epoch: final records, residency changes (replica, adapter, held),
/// and whether any of its replicas has work left.
type Reply = (Vec<Final>, Vec<(u32, u32, bool)>, bool);

/// A router that reads no state, on several threads: each epoch's arrivals are routed up front, and the
/// workers (each owning a contiguous range of replicas, built on its thread) advance their replicas to the
/// epoch's end while this thread consumes the previous epoch's records. Every replica sees the same calls'
/// effects as in `sequential`, and the view is updated in replica order at each epoch's end, so the outputs
/// are identical.
#[allow(clippy::too_many_arguments)]
fn parallel_replicas<'s, 'e: 's>(
    fc: &'e FleetConfig,
    inp: &'e FleetInputs<'e>,
    ctxs: &'e [PolicyCtx<'e>],
    group_of: &'e [usize],
    router: &mut dyn router::Router,
    view: &mut FleetView,
    routes: &mut [u32],
    sampler: &mut Sampler,
    sink: &mut Sink<'_, '_>,
    mut epoch_end: Nanos,
    scope: &'s std::thread::Scope<'s, 'e>,
) -> Result<Vec<EngineStats>> {
    let w = inp.workload;
    let n = group_of.len();
    let k = fc.threads.min(n);
    let starts: Vec<usize> = (0..=k).map(|i| i * n / k).collect();
    let mut cmds = Vec::with_capacity(k);
    let mut replies = Vec::with_capacity(k);
    let mut handles = Vec::with_capacity(k);
    for i in 0..k {
        let (ctx, crx) = std::sync::mpsc::channel::<Work>();
        let (rtx, rrx) = std::sync::mpsc::channel::<Reply>();
        let (lo, hi) = (starts[i], starts[i + 1]);
        handles.push(scope.spawn(move || -> Result<Vec<EngineStats>> {
            let mut clocks: Vec<Simulated> = group_of[lo..hi]
                .iter()
                .map(|&g| Simulated(fc.groups[g].cost.as_ref()))
                .collect();
            let mut engines = engines(fc, inp, ctxs, group_of, lo, &mut clocks)?;
            while let Ok(Some((arrivals, end))) = crx.recv() {
                for (r, id) in arrivals {
                    let e = &mut engines[r as usize - lo];
                    let t = inp.workload.requests[id as usize].arrival;
                    e.push_arrival(id);
                    e.advance_to(t);
                }
                let (mut finals, mut residency, mut busy) = (Vec::new(), Vec::new(), false);
                for (i, e) in engines.iter_mut().enumerate() {
                    let r = (lo + i) as u32;
                    e.advance_to(end);
                    e.drain(|id, rec| finals.push((id, r, rec)));
                    e.drain_residency(|a, held| residency.push((r, a, held)));
                    busy |= e.next_time().is_some();
                }
                if rtx.send((finals, residency, busy)).is_err() {
                    break;
                }
            }
            let mut stats = Vec::with_capacity(engines.len());
            for (i, e) in engines.into_iter().enumerate() {
                if let Some(why) = e.aborted() {
                    return Err(Error::internal(format!(
                        "replica {} stopped: {why}",
                        lo + i
                    )));
                }
                stats.push(e.finish()?.stats);
            }
            Ok(stats)
        }));
        cmds.push(ctx);
        replies.push(rrx);
    }
    let worker = |r: usize| starts.partition_point(|&s| s <= r) - 1;
    let mut next = 0;
    let mut pending: Option<Vec<Final>> = None;
    let mut failed = false;
    loop {
        let mut work: Vec<Vec<(u32, u32)>> = vec![Vec::new(); k];
        while let Some(req) = w.requests.get(next).filter(|q| q.arrival < epoch_end) {
            let r = route(router, req, view, n, &fc.router)?;
            view.routed(r, work_of(inp, req.id));
            if let Some(slot) = routes.get_mut(req.id as usize) {
                *slot = r as u32;
            }
            work[worker(r)].push((r as u32, req.id));
            next += 1;
        }
        for (c, wk) in cmds.iter().zip(work) {
            failed |= c.send(Some((wk, epoch_end))).is_err();
        }
        if let Some(p) = pending.take() {
            sink.send(p)?;
        }
        let mut finals = Vec::new();
        let mut busy = false;
        for rx in &replies {
            let Ok((f, res, b)) = rx.recv() else {
                failed = true;
                break;
            };
            for &(id, r, _) in &f {
                view.done(r as usize, work_of(inp, id));
            }
            for (r, a, held) in res {
                view.set_held(r as usize, a, held);
            }
            finals.extend(f);
            busy |= b;
        }
        if failed {
            break;
        }
        sampler.sample(epoch_end, view);
        pending = Some(finals);
        epoch_end += fc.sample_ns;
        if next == w.requests.len() && !busy {
            break;
        }
    }
    if let Some(p) = pending.take() {
        sink.send(p)?;
    }
    for c in &cmds {
        let _ = c.send(None);
    }
    drop(cmds);
    let mut stats = Vec::with_capacity(n);
    for h in handles {
        stats.extend(
            h.join()
                .map_err(|_| Error::internal("a fleet worker panicked"))??,
        );
    }
    if failed {
        return Err(Error::internal("a fleet worker stopped"));
    }
    Ok(stats)
}

fn work_of(inp: &FleetInputs<'_>, id: u32) -> u64 {
    work(inp.workload, inp.predicted, id)
}

/// The run's results from the consumer, the replicas' counters and the samples.
#[allow(clippy::too_many_arguments)]
fn finish(
    fc: &FleetConfig,
    mut consumer: Consumer<'_>,
    stats: Vec<EngineStats>,
    group_of: Vec<usize>,
    sampler: Sampler,
    routes: Vec<u32>,
    router: String,
    [scheduler, cache, prefetch]: [String; 3],
) -> Result<FleetRun> {
    if let Some(f) = &mut consumer.rows {
        f.flush()
            .map_err(|e| Error::internal(format!("--stream: {e}")))?;
    }
    let mut total = EngineStats::default();
    let mut replicas = Vec::with_capacity(stats.len());
    for ((s, a), g) in stats
        .into_iter()
        .zip(std::mem::take(&mut consumer.replicas))
        .zip(group_of)
    {
        merge(&mut total, &s);
        replicas.push(ReplicaReport {
            group: g,
            stats: s,
            acc: a,
        });
    }
    let k = sampler.samples.len().max(1) as f64;
    let replication = sampler
        .held_sum
        .iter()
        .zip(&sampler.held_max)
        .map(|(&s, &m)| (s as f64 / k, m))
        .collect();
    Ok(FleetRun {
        output: RunOutput {
            aborted: None,
            records: consumer.records.take().unwrap_or_default(),
            stats: total,
        },
        routes,
        replicas,
        samples: sampler.samples,
        replication,
        total: consumer.total,
        router,
        scheduler,
        cache,
        prefetch,
        cost_model: fc.groups[0].cost.describe(),
    })
}

/// Sums the replicas' counters; `end_ns` is the last replica's end, peaks and pool sizes are summed (fleet
/// totals). One replica: its own counters.
fn merge(t: &mut EngineStats, s: &EngineStats) {
    t.prefill_iterations += s.prefill_iterations;
    t.decode_iterations += s.decode_iterations;
    t.busy_ns += s.busy_ns;
    t.end_ns = t.end_ns.max(s.end_ns);
    t.adapter_loads += s.adapter_loads;
    t.pcie_bytes += s.pcie_bytes;
    t.evictions += s.evictions;
    t.squashes += s.squashes;
    t.load_stall_ns += s.load_stall_ns;
    t.pool_slots += s.pool_slots;
    t.peak_kv_slots += s.peak_kv_slots;
    t.peak_adapter_slots += s.peak_adapter_slots;
    t.peak_total_slots += s.peak_total_slots;
    t.kv_slot_ns += s.kv_slot_ns;
    t.adapter_slot_ns += s.adapter_slot_ns;
    t.peak_kv_claim_slots += s.peak_kv_claim_slots;
    t.kv_claim_slot_ns += s.kv_claim_slot_ns;
    t.finished += s.finished;
    t.merges_empty += s.merges_empty;
    t.tokens += s.tokens;
    t.prefill_sq_tokens += s.prefill_sq_tokens;
    t.decode_context += s.decode_context;
    t.merges += s.merges;
    t.blocked.memory += s.blocked.memory;
    t.blocked.adapter_memory += s.blocked.adapter_memory;
    t.blocked.batch += s.blocked.batch;
    t.blocked.prefill_tokens += s.blocked.prefill_tokens;
    t.blocked.policy += s.blocked.policy;
}

/// The keys `FleetRun::summary` writes (`fleet.json`, beside the summary's in a sweep's row).
pub const SUMMARY_KEYS: &[&str] = &[
    "fleet_replicas",
    "fleet_gpus",
    "fleet_layout",
    "fleet_router",
    "fleet_quantiles",
    "fleet_sample_s",
    "fleet_imbalance_requests_mean",
    "fleet_imbalance_requests_max",
    "fleet_imbalance_tokens_mean",
    "fleet_imbalance_tokens_max",
    "fleet_samples_busy",
    "fleet_replication_mean",
    "fleet_replication_max",
    "fleet_adapters_held_mean",
    "fleet_replica_ttft_p99_min",
    "fleet_replica_ttft_p99_max",
    "fleet_replica_hit_rate_min",
    "fleet_replica_hit_rate_max",
    "fleet_replica_slo_attainment_min",
    "fleet_replica_slo_attainment_max",
    "fleet_replica_requests_min",
    "fleet_replica_requests_max",
    "fleet_gpu_busy_fraction",
];

impl FleetRun {
    /// The fleet's own summary keys (all `fleet_*`): layout, load imbalance, adapter replication, the spread
    /// of per-replica metrics.
    pub fn summary(&self, fc: &FleetConfig) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("fleet_replicas".into(), json!(fc.replicas()));
        m.insert("fleet_gpus".into(), json!(fc.gpus()));
        m.insert("fleet_layout".into(), json!(fc.describe()));
        m.insert("fleet_router".into(), json!(self.router));
        m.insert(
            "fleet_quantiles".into(),
            json!(if fc.stream.is_some() {
                format!(
                    "DDSketch, relative accuracy {} (rank floor(q (n-1)))",
                    acc::SKETCH_ALPHA
                )
            } else {
                "exact (per replica: DDSketch 1%)".to_string()
            }),
        );
        m.insert("fleet_sample_s".into(), num(secs(fc.sample_ns)));
        // Imbalance: max / mean outstanding work over replicas, at samples with work in flight.
        let (mut ir, mut it, mut nr) = (Vec::new(), Vec::new(), 0usize);
        for s in &self.samples {
            if s.outstanding_mean > 0.0 {
                ir.push(s.outstanding_max as f64 / s.outstanding_mean);
                nr += 1;
            }
            if s.tokens_mean > 0.0 {
                it.push(s.tokens_max as f64 / s.tokens_mean);
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        m.insert("fleet_imbalance_requests_mean".into(), num(mean(&ir)));
        m.insert("fleet_imbalance_requests_max".into(), num(max(&ir)));
        m.insert("fleet_imbalance_tokens_mean".into(), num(mean(&it)));
        m.insert("fleet_imbalance_tokens_max".into(), num(max(&it)));
        m.insert("fleet_samples_busy".into(), json!(nr));
        // Replication: replicas holding each held adapter, averaged over samples.
        let rep: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.adapters_held > 0)
            .map(|s| s.holders as f64 / s.adapters_held as f64)
            .collect();
        m.insert("fleet_replication_mean".into(), num(mean(&rep)));
        m.insert(
            "fleet_replication_max".into(),
            json!(
                self.samples
                    .iter()
                    .map(|s| s.holders_max)
                    .max()
                    .unwrap_or(0)
            ),
        );
        m.insert(
            "fleet_adapters_held_mean".into(),
            num(mean(
                &self
                    .samples
                    .iter()
                    .map(|s| s.adapters_held as f64)
                    .collect::<Vec<_>>(),
            )),
        );
        // Per-replica spread.
        let per = |f: &dyn Fn(&ReplicaReport) -> f64| -> Vec<f64> {
            self.replicas
                .iter()
                .map(f)
                .filter(|x| x.is_finite())
                .collect()
        };
        let lo = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::min);
        for (k, v) in [
            ("ttft_p99", per(&|r| r.acc.ttft.quantile(0.99))),
            ("hit_rate", per(&|r| r.acc.hit_rate())),
            ("slo_attainment", per(&|r| r.acc.slo_attainment())),
            ("requests", per(&|r| r.acc.requests as f64)),
        ] {
            m.insert(format!("fleet_replica_{k}_min"), num(lo(&v)));
            m.insert(format!("fleet_replica_{k}_max"), num(max(&v)));
        }
        let busy: f64 = self
            .replicas
            .iter()
            .map(|r| r.stats.busy_ns as f64)
            .sum::<f64>()
            / (self.output.stats.end_ns.max(1) as f64 * self.replicas.len() as f64);
        m.insert("fleet_gpu_busy_fraction".into(), num(busy));
        m
    }

    /// The summary of a streamed run: the keys of `metrics::summarize` a stream can give.
    pub fn streamed_summary(&self, w: &Workload, slo: &Slo) -> Summary {
        let s = &self.output.stats;
        let mut m = Summary::default();
        self.total.summary(w, slo, s.end_ns, &mut m);
        m.adapter_loads = s.adapter_loads;
        m.adapter_evictions = s.evictions;
        m.pcie_bytes = s.pcie_bytes;
        m.load_stall_s = secs(s.load_stall_ns);
        m.iterations_prefill = s.prefill_iterations;
        m.iterations_decode = s.decode_iterations;
        m.simulated_s = secs(s.end_ns);
        m.pool_slots = s.pool_slots;
        m.squashes = s.squashes;
        m.merges = s.merges;
        m.merges_empty = s.merges_empty;
        m
    }

    /// `replicas.csv`: one row per replica.
    pub fn write_replicas(&self, fc: &FleetConfig, mut f: impl Write) -> std::io::Result<()> {
        writeln!(
            f,
            "replica,gpu,tp,requests,finished,rejected,ttft_mean_s,ttft_p50_s,ttft_p99_s,slo_attainment,\
             throughput_rps,adapter_hit_rate,adapter_loads,pcie_bytes,evictions,gpu_busy_fraction,simulated_s"
        )?;
        let fmt = |x: f64| {
            if x.is_finite() {
                format!("{x:.6}")
            } else {
                String::new()
            }
        };
        for (i, r) in self.replicas.iter().enumerate() {
            let g = &fc.groups[r.group];
            let a = &r.acc;
            let s = &r.stats;
            writeln!(
                f,
                "{i},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                g.gpu.name,
                g.tp.degree,
                a.requests,
                a.finished,
                a.rejected,
                fmt(a.ttft.mean()),
                fmt(a.ttft.quantile(0.5)),
                fmt(a.ttft.quantile(0.99)),
                fmt(a.slo_attainment()),
                fmt(a.throughput_rps()),
                fmt(a.hit_rate()),
                s.adapter_loads,
                s.pcie_bytes,
                s.evictions,
                fmt(s.busy_ns as f64 / s.end_ns.max(1) as f64),
                fmt(secs(s.end_ns)),
            )?;
        }
        Ok(())
    }

    /// `fleet_samples.csv`: the fleet over time.
    pub fn write_samples(&self, mut f: impl Write) -> std::io::Result<()> {
        writeln!(
            f,
            "time_s,outstanding_mean,outstanding_max,tokens_mean,tokens_max,adapters_held,replicas_per_held_adapter,replicas_per_adapter_max"
        )?;
        for s in &self.samples {
            writeln!(
                f,
                "{:.3},{:.3},{},{:.1},{},{},{:.4},{}",
                secs(s.t),
                s.outstanding_mean,
                s.outstanding_max,
                s.tokens_mean,
                s.tokens_max,
                s.adapters_held,
                if s.adapters_held > 0 {
                    s.holders as f64 / s.adapters_held as f64
                } else {
                    0.0
                },
                s.holders_max
            )?;
        }
        Ok(())
    }

    /// `replication.csv`: per adapter, the replicas holding it (mean over samples, most at a sample).
    pub fn write_replication(&self, w: &Workload, mut f: impl Write) -> std::io::Result<()> {
        writeln!(f, "adapter,rank,replicas_mean,replicas_max")?;
        for (a, &(mean, max)) in w.adapters.iter().zip(&self.replication) {
            writeln!(f, "{},{},{mean:.4},{max}", a.id, a.rank)?;
        }
        Ok(())
    }
}

/// Latencies of one replica's finished requests, exactly (tests and small fleets).
pub fn replica_ttft(run: &FleetRun, w: &Workload, r: u32) -> Sketch {
    let mut s = Sketch::default();
    for (i, rec) in run.output.records.iter().enumerate() {
        if run.routes.get(i) == Some(&r) && rec.outcome == crate::engine::Outcome::Finished {
            s.add(rec.first_token - w.requests[i].arrival);
        }
    }
    s
}
