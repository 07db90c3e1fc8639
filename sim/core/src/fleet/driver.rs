//! The fleet driver: a `Fleet` value routes each arrival and moves the replicas' engines through time, on
//! this thread decision by decision (`sequential`), or, for a router that reads no state, with the replicas
//! on worker threads epoch by epoch (`parallel`). Both modes give identical results.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use super::consume::{Consumer, Final, Sampler, Sink};
use super::router::{REGISTRY, Reads, Router, RouterCtx};
use super::view::FleetView;
use super::{FleetConfig, FleetInputs, FleetRun, ReplicaReport};
use crate::engine::api::PolicyCtx;
use crate::engine::{Engine, EngineStats, RunOutput, Simulated};
use crate::error::{Error, Result};
use crate::time::Nanos;
use crate::workload::Request;

/// A fleet ready to run: its replicas' policy contexts, the router and what it sees, the routes taken and the
/// samples. `run` drives it to the end.
pub struct Fleet<'a> {
    fc: &'a FleetConfig,
    inp: &'a FleetInputs<'a>,
    /// Per group, what its replicas' policies are built with.
    ctxs: Vec<PolicyCtx<'a>>,
    /// Per replica, its group.
    group_of: Vec<usize>,
    /// Full specs: the router's, and the replicas' scheduler, cache policy and prefetcher.
    router_spec: String,
    specs: [String; 3],
    /// When the first epoch ends.
    first_end: Nanos,
    d: Dispatch,
}

/// What routing changes: the router, what it sees, the routes taken, the samples.
struct Dispatch {
    router: Box<dyn Router>,
    view: FleetView,
    /// Without streaming: the replica each request went to.
    routes: Vec<u32>,
    sampler: Sampler,
}

impl Dispatch {
    /// Routes `req` and counts its work on the chosen replica.
    fn route(&mut self, req: &Request, inp: &FleetInputs<'_>, name: &str) -> Result<usize> {
        let n = self.view.replicas();
        let r = self.router.route(req, &self.view);
        if r >= n {
            return Err(Error::internal(format!(
                "router {name} chose replica {r} of {n}"
            )));
        }
        self.view.routed(r, work(inp, req.id));
        if let Some(slot) = self.routes.get_mut(req.id as usize) {
            *slot = r as u32;
        }
        Ok(r)
    }

    /// Hands out replica r's final records and residency changes into the view and `buf`.
    fn collect(
        &mut self,
        r: usize,
        e: &mut Engine<'_>,
        buf: &mut Vec<Final>,
        inp: &FleetInputs<'_>,
    ) {
        let view = &mut self.view;
        e.drain(|id, rec| {
            view.done(r, work(inp, id));
            buf.push((id, r as u32, rec));
        });
        e.drain_residency(|a, held| view.set_held(r, a, held));
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

/// An epoch's work for a worker: (replica, request) arrivals in order, then advance to the epoch's end.
type Work = Option<(Vec<(u32, u32)>, Nanos)>;

/// What a worker hands back after an epoch: final records, residency changes (replica, adapter, held),
/// and whether any of its replicas has work left.
type Reply = (Vec<Final>, Vec<(u32, u32, bool)>, bool);

/// Tokens a request adds to its replica's outstanding work: prompt + predicted output.
/// The fleet's physics: the one cost model, or each GPU group's (a mixed fleet costs each GPU by its own).
fn describe_costs(fc: &FleetConfig) -> String {
    let mut seen: Vec<String> = Vec::new();
    for g in &fc.groups {
        let d = g.cost.describe();
        if !seen.contains(&d) {
            seen.push(d);
        }
    }
    match seen.len() {
        1 => seen.remove(0),
        _ => fc
            .groups
            .iter()
            .map(|g| format!("{} x{}: {}", g.gpu.name, g.count, g.cost.describe()))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

fn work(inp: &FleetInputs<'_>, id: u32) -> u64 {
    inp.workload.requests[id as usize].input as u64 + inp.predicted[id as usize] as u64
}

/// Builds the engines of replicas `start..start + clocks.len()` (their clocks in `clocks`).
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
        let built = inp.policies.build(&ctxs[g])?;
        v.push(Engine::replica(
            inp.workload,
            fc.groups[g].engine.clone(),
            clock,
            built.policies,
        ));
    }
    Ok(v)
}

/// Runs the engines out and returns their counters (replica `lo + i` is `engines[i]`).
fn finish_engines(engines: Vec<Engine<'_>>, lo: usize) -> Result<Vec<EngineStats>> {
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
}

impl<'a> Fleet<'a> {
    /// Checks the configuration and builds the router (and the replicas' policies once, for their specs).
    pub fn new(fc: &'a FleetConfig, inp: &'a FleetInputs<'a>) -> Result<Fleet<'a>> {
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
            .map(|g| {
                PolicyCtx::new(w, inp.predicted, &g.engine, inp.slo, g.cost.as_ref())
                    .with_seed(inp.seed)
            })
            .collect();
        // Relative capacity: a mid-sized decode step's speed against the first group's (1 when homogeneous).
        let capacity: Vec<f64> = group_of
            .iter()
            .map(|&g| ctxs[0].decode_ns_per_step / ctxs[g].decode_ns_per_step)
            .collect();
        let router = REGISTRY
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
        let specs = inp.policies.build(&ctxs[0])?.specs;
        let first = w.requests.first().map_or(0, |r| r.arrival);
        Ok(Fleet {
            fc,
            inp,
            ctxs,
            group_of,
            router_spec: router.spec,
            specs,
            first_end: (first / fc.sample_ns + 1) * fc.sample_ns,
            d: Dispatch {
                router: router.made,
                view: FleetView::new(capacity, w.adapters.len()),
                routes: if fc.stream.is_none() {
                    vec![u32::MAX; w.requests.len()]
                } else {
                    Vec::new()
                },
                sampler: Sampler::new(w.adapters.len()),
            },
        })
    }

    /// Runs every request through the fleet: in parallel when the router reads no replica state and there
    /// are threads for it, else decision by decision.
    pub fn run(mut self) -> Result<FleetRun> {
        let consumer = Consumer::new(self.fc, self.inp, self.group_of.len())?;
        let parallel = self.fc.threads > 1
            && self.group_of.len() > 1
            && self.d.router.reads() == Reads::Nothing;
        let (consumer, stats) = if parallel {
            self.parallel(consumer)?
        } else {
            self.sequential(consumer)?
        };
        self.finish(consumer, stats)
    }

    /// An epoch ends at `t`: every replica is advanced to it, its final records go to the sink and the
    /// fleet is sampled. Whether any replica has work left.
    fn epoch(
        &mut self,
        t: Nanos,
        engines: &mut [Engine<'_>],
        buf: &mut Vec<Final>,
        clockwork: &mut Clockwork,
        sink: &mut Sink<'_, '_>,
    ) -> Result<bool> {
        let all = self.d.router.reads() == Reads::All;
        let mut busy = false;
        for (r, e) in engines.iter_mut().enumerate() {
            e.advance_to(t);
            self.d.collect(r, e, buf, self.inp);
            if all {
                clockwork.requeue(r, e);
            }
            busy |= e.next_time().is_some();
        }
        sink.send(std::mem::take(buf))?;
        self.d.sampler.sample(t, &self.d.view);
        Ok(busy)
    }

    /// Routing decision by decision on this thread: before each, every replica with something to do before
    /// the arrival instant is advanced to it (a router that reads no state: only the chosen one). Records
    /// are consumed on a second thread when there are threads for it.
    fn sequential(&mut self, consumer: Consumer<'a>) -> Result<(Consumer<'a>, Vec<EngineStats>)> {
        let (fc, inp) = (self.fc, self.inp);
        let mut clocks: Vec<Simulated> = self
            .group_of
            .iter()
            .map(|&g| Simulated(fc.groups[g].cost.as_ref()))
            .collect();
        let mut engines = engines(fc, inp, &self.ctxs, &self.group_of, 0, &mut clocks)?;
        std::thread::scope(|scope| {
            let mut sink = Sink::new(consumer, fc.threads > 1, scope);
            self.step_sequential(&mut engines, &mut sink)?;
            Ok((sink.close()?, finish_engines(engines, 0)?))
        })
    }

    fn step_sequential(
        &mut self,
        engines: &mut [Engine<'_>],
        sink: &mut Sink<'_, '_>,
    ) -> Result<()> {
        let (fc, w) = (self.fc, self.inp.workload);
        let n = engines.len();
        let reads = self.d.router.reads();
        let all = reads == Reads::All;
        let mut candidates = Vec::new();
        let mut clockwork = Clockwork {
            heap: BinaryHeap::new(),
            key: vec![None; n],
        };
        let mut buf: Vec<Final> = Vec::new();
        let mut epoch_end = self.first_end;
        for req in &w.requests {
            let t = req.arrival;
            while t >= epoch_end {
                self.epoch(epoch_end, engines, &mut buf, &mut clockwork, sink)?;
                epoch_end += fc.sample_ns;
            }
            if reads == Reads::Candidates {
                candidates.clear();
                self.d.router.candidates(req, &mut candidates);
                for &r in &candidates {
                    engines[r].advance_to(t);
                    self.d.collect(r, &mut engines[r], &mut buf, self.inp);
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
                    self.d.collect(r, &mut engines[r], &mut buf, self.inp);
                    clockwork.requeue(r, &engines[r]);
                }
            }
            let r = self.d.route(req, self.inp, &fc.router)?;
            let e = &mut engines[r];
            e.push_arrival(req.id);
            e.advance_to(t);
            self.d.collect(r, e, &mut buf, self.inp);
            if all {
                clockwork.requeue(r, &engines[r]);
            }
        }
        // Run out every replica, epoch by epoch.
        while self.epoch(epoch_end, engines, &mut buf, &mut clockwork, sink)? {
            epoch_end += fc.sample_ns;
        }
        Ok(())
    }

    /// A router that reads no state, on several threads: each epoch's arrivals are routed up front, and the
    /// workers (each owning a contiguous range of replicas, built on its thread) advance their replicas to
    /// the epoch's end while this thread consumes the previous epoch's records. Every replica sees the same
    /// calls' effects as in `sequential`, and the view is updated in replica order at each epoch's end, so
    /// the outputs are identical.
    fn parallel(&mut self, consumer: Consumer<'a>) -> Result<(Consumer<'a>, Vec<EngineStats>)> {
        let (fc, inp) = (self.fc, self.inp);
        let w = inp.workload;
        let n = self.group_of.len();
        let k = fc.threads.min(n);
        let starts: Vec<usize> = (0..=k).map(|i| i * n / k).collect();
        let mut sink = Sink::Here(Box::new(consumer));
        let (ctxs, group_of, d) = (&self.ctxs, &self.group_of, &mut self.d);
        let first_end = self.first_end;
        let stats = std::thread::scope(|scope| -> Result<Vec<EngineStats>> {
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
                            let t = w.requests[id as usize].arrival;
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
                    finish_engines(engines, lo)
                }));
                cmds.push(ctx);
                replies.push(rrx);
            }
            let worker = |r: usize| starts.partition_point(|&s| s <= r) - 1;
            let mut next = 0;
            let mut epoch_end = first_end;
            let mut pending: Option<Vec<Final>> = None;
            let mut failed = false;
            loop {
                let mut work_of: Vec<Vec<(u32, u32)>> = vec![Vec::new(); k];
                while let Some(req) = w.requests.get(next).filter(|q| q.arrival < epoch_end) {
                    let r = d.route(req, inp, &fc.router)?;
                    work_of[worker(r)].push((r as u32, req.id));
                    next += 1;
                }
                for (c, wk) in cmds.iter().zip(work_of) {
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
                        d.view.done(r as usize, work(inp, id));
                    }
                    for (r, a, held) in res {
                        d.view.set_held(r as usize, a, held);
                    }
                    finals.extend(f);
                    busy |= b;
                }
                if failed {
                    break;
                }
                d.sampler.sample(epoch_end, &d.view);
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
        })?;
        Ok((sink.close()?, stats))
    }

    /// The run's results from the consumer, the replicas' counters and the samples.
    fn finish(self, mut consumer: Consumer<'_>, stats: Vec<EngineStats>) -> Result<FleetRun> {
        consumer.flush()?;
        let mut total = EngineStats::default();
        let mut replicas = Vec::with_capacity(stats.len());
        for ((s, a), g) in stats
            .into_iter()
            .zip(std::mem::take(&mut consumer.replicas))
            .zip(self.group_of)
        {
            total.absorb(&s);
            replicas.push(ReplicaReport {
                group: g,
                stats: s,
                acc: a,
            });
        }
        let [scheduler, cache, prefetch] = self.specs;
        Ok(FleetRun {
            output: RunOutput {
                aborted: None,
                records: consumer.records.take().unwrap_or_default(),
                stats: total,
            },
            routes: self.d.routes,
            replicas,
            replication: self.d.sampler.replication(),
            samples: self.d.sampler.samples,
            total: consumer.total,
            router: self.router_spec,
            scheduler,
            cache,
            prefetch,
            cost_model: describe_costs(self.fc),
        })
    }
}
