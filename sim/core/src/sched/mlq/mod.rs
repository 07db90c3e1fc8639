//! Chameleon's non-preemptive multi-level queue (`mlq`) and its static variant (`mlq-static`).
//!
//! Requests are sized by Weighted Request Size
//! `WRS = (0.4 In/MaxIn + 0.6 PredOut/MaxOut) x AdapterSlots/MaxAdapterSlots` (maxima over the workload,
//! i.e. the largest prompt, prediction and adapter the server is configured for; no adapters: factor 1) and
//! queued by WRS range, each queue FIFO.
//!
//! Queues (`mlq`): 1-D K-Means over the WRS of the requests that arrived in the last `window_s` seconds, for
//! K = 1..`max_k`; the paper's "minimal WCSS" always picks the largest K, so an elbow rule picks the smallest
//! K for which one more cluster would explain less than `elbow` of the total variance (WCSS of K = 1).
//! Boundaries are midpoints between sorted centroids. Recomputed every `refresh_s` simulated seconds; start-up: one queue until `warmup`
//! requests have arrived, then the first K-Means. Waiting and running requests are re-bucketed by their WRS.
//! `mlq-static`: four equal WRS ranges, equal quotas, no refresh.
//!
//! Quotas (tokens of the pool, a request counting input + predicted output + adapter slots): queue q gets at
//! least `max(S, S D (1/SLO + lambda))` (M/M/1 bound; S its largest request, D that request's service time, lambda
//! its arrival rate over the window, SLO the TTFT objective), scaled down together if they exceed the pool;
//! the leftover is split in proportion to each queue's token demand rate (lambda x mean size). A running
//! request holds its quota until it finishes. A queue with nothing running may always admit its head, even
//! past its quota, so a request larger than its quota cannot starve.
//!
//! The paper leaves this accounting open; each choice is an option, the paper's reading by default:
//! `charge` (an adapter per request / once per queue / not at all) and `ledger` (full lifetime / S-LoRA's
//! peak rule), see `ledger`; `estimate` (S and D from the queue's largest request / the 90th percentile /
//! the mean of its window); `leftover` (split by demand / equally / in proportion to the minima);
//! `quotas` (`cap`: a queue admits within its quota, plus donations; `floor`: a queue may go past its quota
//! as long as every other queue's quota stays available, quotas being reserved minimums); `smooth` (the
//! weight of a refresh's new minimum against the previous one when the queues stay the same, 1 = none).
//!
//! Each merge: phase 1 visits queues small to large, each admitting in FIFO order within its quota and
//! stopping at its first request that does not fit; only queues emptied in phase 1 donate their unused quota;
//! phase 2 hands the donated quota out small to large under the same rules. `donate=all` (not the paper's)
//! lends every queue's unused quota in phase 2, making the scheduler work-conserving.
//!
//! Opportunistic bypass (`bypass=true`): if a queue's head does not fit only because its adapter does not
//! (Fit::AdapterMemory), a younger request of the same queue (among the next `bypass_depth`) that fits now may
//! go first when the head's expected wait (the least predicted remaining time of a running request) exceeds the
//! younger request's service time. If the head later fits only without a bypasser still running, that
//! bypasser is squashed (stopped, its progress dropped) and queued again in arrival order.

mod kmeans;
mod ledger;
mod wrs;

use std::collections::VecDeque;

pub use kmeans::{elbow_kmeans, kmeans_1d};
use ledger::{Book, Charge, Held, Ledger};
pub use wrs::{Wrs, wrs_summary};

use crate::engine::api::{Admission, Fit, PolicyCtx, QueueInfo, Scheduler, Schedulers};
use crate::error::{Error, Result};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

/// The accounting options both variants take (and `merge`).
const ACCOUNTING: [Param; 7] = [
    Param::new(
        "charge",
        "request",
        "adapter slots per request (paper) | queue (once per queue) | none",
    ),
    Param::new(
        "ledger",
        "lifetime",
        "a request holds its full size until it ends (paper) | peak (S-LoRA's rule)",
    ),
    Param::new(
        "quotas",
        "cap",
        "cap (paper: admit within the quota + donations) | floor (quotas are reserved minimums)",
    ),
    Param::new(
        "bypass",
        "true",
        "opportunistic bypass of a head blocked by its adapter",
    ),
    Param::new(
        "bypass_depth",
        "8",
        "requests behind the head a bypasser may come from",
    ),
    Param::new(
        "donate",
        "empty",
        "empty (paper): only emptied queues lend quota; all: every queue",
    ),
    Param::new(
        "merge",
        "1",
        "decode steps between merges under --merge-cadence policy (the paper: the batch is assembled at every iteration)",
    ),
];

const DYNAMIC_PARAMS: &[Param] = &[
    Param::new("max_k", "4", "most queues K-Means may form"),
    Param::new(
        "elbow",
        "0.1",
        "smallest share of variance one more cluster must explain",
    ),
    Param::new("refresh_s", "300", "seconds between re-clusterings"),
    Param::new("window_s", "300", "seconds of arrivals clustered"),
    Param::new(
        "warmup",
        "200",
        "arrivals before the first clustering (one queue until then)",
    ),
    Param::new(
        "estimate",
        "max",
        "S and D of the quota bound: the queue's largest request (paper) | p90 | mean",
    ),
    Param::new(
        "leftover",
        "demand",
        "spare pool split by token demand rate | equal | quota (in proportion to the minima)",
    ),
    Param::new(
        "smooth",
        "1",
        "weight of a refresh's new minimum quota against the previous (1 = none)",
    ),
    ACCOUNTING[0],
    ACCOUNTING[1],
    ACCOUNTING[2],
    ACCOUNTING[3],
    ACCOUNTING[4],
    ACCOUNTING[5],
    ACCOUNTING[6],
];

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "mlq",
    about: "Chameleon: WRS queues from K-Means (elbow), M/M/1 token quotas, two-phase admission, bypass",
    params: DYNAMIC_PARAMS,
    props: Props::DEFAULT,
    build: build_dynamic,
};

pub const STATIC: Entry<Schedulers> = Entry {
    name: "mlq-static",
    about: "4 equal WRS ranges with equal quotas (no K-Means)",
    params: &ACCOUNTING,
    props: Props::DEFAULT,
    build: build_static,
};

fn build_dynamic(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    Mlq::boxed(p, ctx, true)
}

fn build_static(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    Mlq::boxed(p, ctx, false)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Estimate {
    Max,
    P90,
    Mean,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Leftover {
    Demand,
    Equal,
    Quota,
}

pub struct Mlq {
    dynamic: bool,
    max_k: usize,
    elbow: f64,
    refresh_ns: Nanos,
    window_ns: Nanos,
    warmup: usize,
    estimate: Estimate,
    leftover: Leftover,
    smooth: f64,
    floors: bool,
    bypass: bool,
    bypass_depth: usize,
    /// Phase 2 lends the unused quota of every queue, not only of queues emptied in phase 1.
    donate_all: bool,
    /// Decode steps between merges under `--merge-cadence policy`.
    merge_every: u32,
    slo_s: f64,
    pool: u64,
    decode_ns_per_step: f64,
    /// Per request: WRS, size in tokens for the quota bound, expected service time (ns), what the ledger
    /// holds for it, owning queue.
    wrs: Vec<f64>,
    size: Vec<u64>,
    service_ns: Vec<f64>,
    held: Vec<Held>,
    owner: Vec<u8>,
    /// Ascending WRS boundaries between queues (len = queues - 1).
    bounds: Vec<f64>,
    queues: Vec<VecDeque<u32>>,
    quota: Vec<u64>,
    /// The last refresh's minimum quotas (for `smooth`).
    minima: Vec<f64>,
    book: Book,
    /// Admitted, unfinished requests.
    active: Vec<u32>,
    /// Arrivals in the K-Means window: (time, id).
    recent: VecDeque<(Nanos, u32)>,
    arrived: usize,
    last_refresh: Option<Nanos>,
    /// Running bypassers and the head each went ahead of.
    bypassers: Vec<(u32, u32)>,
}

impl Mlq {
    fn boxed(p: &mut Params, ctx: &PolicyCtx, dynamic: bool) -> Result<Box<dyn Scheduler>> {
        let name = if dynamic { "mlq" } else { "mlq-static" };
        let max_k: usize = if dynamic { p.get("max_k")? } else { 4 };
        let elbow: f64 = if dynamic { p.get("elbow")? } else { 0.0 };
        let refresh_s: f64 = if dynamic {
            p.get("refresh_s")?
        } else {
            f64::INFINITY
        };
        let window_s: f64 = if dynamic { p.get("window_s")? } else { 1.0 };
        let warmup: usize = if dynamic { p.get("warmup")? } else { 0 };
        let (estimate, leftover, smooth) = if dynamic {
            let e: String = p.get("estimate")?;
            let l: String = p.get("leftover")?;
            let s: f64 = p.get("smooth")?;
            let estimate = match e.as_str() {
                "max" => Estimate::Max,
                "p90" => Estimate::P90,
                "mean" => Estimate::Mean,
                _ => {
                    return Err(p.bad(format!(
                        "estimate must be max (the paper), p90 or mean, got '{e}'"
                    )));
                }
            };
            let leftover = match l.as_str() {
                "demand" => Leftover::Demand,
                "equal" => Leftover::Equal,
                "quota" => Leftover::Quota,
                _ => {
                    return Err(p.bad(format!(
                        "leftover must be demand (the default), equal or quota, got '{l}'"
                    )));
                }
            };
            if !(s > 0.0 && s <= 1.0) {
                return Err(p.bad(format!("smooth must be in (0, 1], got {s}")));
            }
            (estimate, leftover, s)
        } else {
            (Estimate::Max, Leftover::Equal, 1.0)
        };
        let charge = Charge::parse(&p.get::<String>("charge")?)?;
        let ledger = Ledger::parse(&p.get::<String>("ledger")?)?;
        let quotas: String = p.get("quotas")?;
        let floors = match quotas.as_str() {
            "cap" => false,
            "floor" => true,
            _ => {
                return Err(p.bad(format!(
                    "quotas must be cap (the paper) or floor, got '{quotas}'"
                )));
            }
        };
        let bypass = p.get("bypass")?;
        let bypass_depth: usize = p.get("bypass_depth")?;
        let donate: String = p.get("donate")?;
        let merge_every: u32 = p.get("merge")?;
        if merge_every == 0 {
            return Err(p.bad("merge must be at least 1 decode step"));
        }
        if donate != "empty" && donate != "all" {
            return Err(Error::msg(format!(
                "{name}: donate must be 'empty' (the paper) or 'all', got '{donate}'"
            )));
        }
        if !(1..=16).contains(&max_k)
            || !(0.0..1.0).contains(&elbow)
            || refresh_s.is_nan()
            || refresh_s <= 0.0
            || window_s.is_nan()
            || window_s <= 0.0
        {
            return Err(Error::msg(format!(
                "{name}: need 1 <= max_k <= 16, 0 <= elbow < 1, refresh_s > 0, window_s > 0"
            )));
        }
        let w = ctx.workload;
        let sizer = Wrs::new(w, ctx.predicted_output);
        let wrs = w.requests.iter().map(|r| sizer.of(r)).collect();
        let held: Vec<Held> = w
            .requests
            .iter()
            .map(|r| Held {
                id: r.id,
                input: r.input as u64,
                output: ctx.predicted_output[r.id as usize] as u64,
                adapter: r.adapter,
                adapter_slots: w.adapter(r.adapter).map_or(0, |a| a.slots),
            })
            .collect();
        // The quota bound's request size: what the request holds under this charge when it is alone.
        let size = held
            .iter()
            .map(|h| {
                h.input
                    + h.output
                    + if charge == Charge::None {
                        0
                    } else {
                        h.adapter_slots
                    }
            })
            .collect();
        let (bounds, quota) = if dynamic {
            (Vec::new(), vec![ctx.pool_slots])
        } else {
            (vec![0.25, 0.5, 0.75], vec![ctx.pool_slots / 4; 4])
        };
        let k = quota.len();
        Ok(Box::new(Mlq {
            dynamic,
            max_k,
            elbow,
            refresh_ns: (refresh_s.min(1e9) * 1e9) as Nanos,
            window_ns: (window_s * 1e9) as Nanos,
            warmup,
            estimate,
            leftover,
            smooth,
            floors,
            bypass,
            bypass_depth,
            donate_all: donate == "all",
            merge_every,
            slo_s: ctx.slo.ttft_ns as f64 / 1e9,
            pool: ctx.pool_slots,
            decode_ns_per_step: ctx.decode_ns_per_step,
            wrs,
            size,
            service_ns: w.requests.iter().map(|r| ctx.service_ns(r)).collect(),
            held,
            owner: vec![0; w.requests.len()],
            bounds,
            queues: vec![VecDeque::new(); k],
            quota,
            minima: Vec::new(),
            book: Book::new(charge, ledger, k),
            active: Vec::new(),
            recent: VecDeque::new(),
            arrived: 0,
            last_refresh: None,
            bypassers: Vec::new(),
        }))
    }

    fn queue_of(&self, id: u32) -> usize {
        self.bounds.partition_point(|&b| b <= self.wrs[id as usize])
    }

    /// Queues a request at its place in arrival order (ids are in arrival order).
    fn enqueue(&mut self, id: u32) {
        let q = self.queue_of(id);
        let queue = &mut self.queues[q];
        let at = queue.partition_point(|&x| x < id);
        queue.insert(at, id);
    }

    /// S (tokens) and D (ns) of the quota bound for the window's requests of one queue.
    fn bound_terms(&self, ids: &mut [u32]) -> (f64, f64) {
        let size = |id: &u32| self.size[*id as usize] as f64;
        let service = |id: &u32| self.service_ns[*id as usize];
        match self.estimate {
            Estimate::Max => {
                // The largest request and its own service time (the first of equal sizes).
                let mut best = ids[0];
                for &id in ids.iter() {
                    if self.size[id as usize] > self.size[best as usize] {
                        best = id;
                    }
                }
                (size(&best), service(&best))
            }
            Estimate::Mean => {
                let n = ids.len() as f64;
                (
                    ids.iter().map(size).sum::<f64>() / n,
                    ids.iter().map(service).sum::<f64>() / n,
                )
            }
            Estimate::P90 => {
                let mut s: Vec<f64> = ids.iter().map(size).collect();
                let mut d: Vec<f64> = ids.iter().map(service).collect();
                s.sort_unstable_by(f64::total_cmp);
                d.sort_unstable_by(f64::total_cmp);
                (
                    crate::metrics::percentile(&s, 0.9),
                    crate::metrics::percentile(&d, 0.9),
                )
            }
        }
    }

    fn maybe_refresh(&mut self, now: Nanos) {
        if !self.dynamic {
            return;
        }
        while self
            .recent
            .front()
            .is_some_and(|&(t, _)| t + self.window_ns < now)
        {
            self.recent.pop_front();
        }
        let due = match self.last_refresh {
            None => self.arrived >= self.warmup.max(1),
            Some(t) => now >= t + self.refresh_ns,
        };
        if !due || self.recent.is_empty() {
            return;
        }
        self.last_refresh = Some(now);
        let mut xs: Vec<f64> = self
            .recent
            .iter()
            .map(|&(_, id)| self.wrs[id as usize])
            .collect();
        xs.sort_by(f64::total_cmp);
        let centroids = elbow_kmeans(&xs, self.max_k, self.elbow);
        self.bounds = centroids.windows(2).map(|c| (c[0] + c[1]) / 2.0).collect();
        let k = centroids.len();
        // Quotas from the window's arrivals per queue; rates over the time the window actually covers (the
        // first refresh comes after `warmup` arrivals, long before a full window).
        let oldest = self.recent.front().map_or(now, |&(t, _)| t);
        let span_s = ((now - oldest) as f64 / 1e9).clamp(1e-3, self.window_ns as f64 / 1e9);
        let mut members: Vec<Vec<u32>> = vec![Vec::new(); k];
        for &(_, id) in &self.recent {
            members[self.queue_of(id)].push(id);
        }
        let mut min: Vec<f64> = (0..k)
            .map(|q| {
                if members[q].is_empty() {
                    return 0.0;
                }
                let lambda = members[q].len() as f64 / span_s;
                let (s, d) = self.bound_terms(&mut members[q]);
                // Never below S itself: a quota smaller than the queue's largest request could starve it.
                (s * d / 1e9 * (1.0 / self.slo_s + lambda)).max(s)
            })
            .collect();
        if self.smooth < 1.0 && self.minima.len() == k {
            for (m, old) in min.iter_mut().zip(&self.minima) {
                *m = self.smooth * *m + (1.0 - self.smooth) * old;
            }
        }
        self.minima = min.clone();
        let total_min: f64 = min.iter().sum();
        let pool = self.pool as f64;
        self.quota = if total_min >= pool {
            min.iter().map(|m| (m * pool / total_min) as u64).collect()
        } else {
            let weight: Vec<f64> = (0..k)
                .map(|q| match self.leftover {
                    Leftover::Demand => {
                        members[q]
                            .iter()
                            .map(|&id| self.size[id as usize])
                            .sum::<u64>() as f64
                            / span_s
                    }
                    Leftover::Equal => 1.0,
                    Leftover::Quota => min[q],
                })
                .collect();
            let total_w: f64 = weight.iter().sum();
            (0..k)
                .map(|q| {
                    let share = if total_w > 0.0 {
                        weight[q] / total_w
                    } else {
                        1.0 / k as f64
                    };
                    (min[q] + (pool - total_min) * share) as u64
                })
                .collect()
        };
        // Re-bucket waiting and running requests under the new boundaries: every queue in arrival order, as
        // `enqueue` keeps it, built by appending in id order (inserting one by one is quadratic in a backlog).
        // The old queues are sorted runs, which the stable sort merges in linear passes.
        let mut waiting: Vec<u32> = self.queues.iter().flatten().copied().collect();
        waiting.sort();
        let mut queues = vec![VecDeque::new(); k];
        for id in waiting {
            queues[self.queue_of(id)].push_back(id);
        }
        self.queues = queues;
        self.book.reset(k);
        for i in 0..self.active.len() {
            let id = self.active[i];
            let q = self.queue_of(id);
            self.owner[id as usize] = q as u8;
            self.book.add(q, &self.held[id as usize]);
        }
    }

    /// Whether queue `q` may admit `id` with `allowance` extra tokens of quota.
    fn within(&self, q: usize, id: u32, allowance: u64) -> bool {
        let used = self.book.used(q);
        if used == 0 {
            // A queue with nothing running may always admit its head.
            return true;
        }
        let with = self.book.used_with(q, &self.held[id as usize]);
        if !self.floors {
            return with <= self.quota[q] + allowance;
        }
        // Floors: every other queue keeps at least its quota available.
        let others: u64 = (0..self.quota.len())
            .filter(|&o| o != q)
            .map(|o| self.book.used(o).max(self.quota[o]))
            .sum();
        with.max(self.quota[q]) + others <= self.pool
    }

    /// Admits heads of queue `q` in FIFO order while they fit its quota plus `allowance` (an idle queue may
    /// always admit its head); returns the part of the allowance used.
    fn admit_from(&mut self, q: usize, adm: &mut Admission<'_>, allowance: u64) -> u64 {
        let over_before = self.book.used(q).saturating_sub(self.quota[q]);
        while let Some(&head) = self.queues[q].front() {
            if !self.within(q, head, allowance) {
                break;
            }
            match adm.fit(head) {
                Fit::Yes => {
                    adm.try_admit(head);
                    self.queues[q].pop_front();
                    self.take(head, q);
                }
                Fit::AdapterMemory if self.bypass => {
                    self.try_bypass(q, head, adm);
                    break;
                }
                _ => break,
            }
        }
        (self.book.used(q).saturating_sub(self.quota[q]) - over_before).min(allowance)
    }

    fn take(&mut self, id: u32, q: usize) {
        self.owner[id as usize] = q as u8;
        self.book.add(q, &self.held[id as usize]);
        self.active.push(id);
    }

    fn try_bypass(&mut self, q: usize, head: u32, adm: &mut Admission<'_>) {
        let wait = adm
            .running()
            .map(|(id, done)| {
                (self.held[id as usize].output as u32)
                    .saturating_sub(done)
                    .max(1) as f64
                    * self.decode_ns_per_step
            })
            .fold(f64::INFINITY, f64::min);
        let pick = self.queues[q]
            .iter()
            .skip(1)
            .take(self.bypass_depth)
            .copied()
            .find(|&y| self.service_ns[y as usize] < wait && self.within(q, y, 0) && adm.fits(y));
        if let Some(y) = pick {
            adm.try_admit(y);
            let at = self.queues[q].iter().position(|&x| x == y).expect("queued");
            self.queues[q].remove(at);
            self.take(y, q);
            self.bypassers.push((y, head));
        }
    }

    /// Squashes bypassers whose head now fits only without them, and admits the head. The head is looked for
    /// in every queue: a refresh may have moved it, and other requests may now be queued before it.
    fn resolve_bypasses(&mut self, adm: &mut Admission<'_>) {
        let mut i = 0;
        while i < self.bypassers.len() {
            let (y, head) = self.bypassers[i];
            // Queues are in id order: a binary search, not a scan of the backlog.
            let head_queue = self
                .queues
                .iter()
                .position(|q| q.binary_search(&head).is_ok());
            let Some(hq) = head_queue.filter(|_| self.active.contains(&y)) else {
                self.bypassers.swap_remove(i);
                continue;
            };
            if !adm.fits(head) && adm.fits_if_squashed(head, y) && adm.squash(y) {
                self.release(y);
                self.enqueue(y);
                self.bypassers.swap_remove(i);
                // The squash was for the head: admit it now, before a lower queue (after a refresh, perhaps
                // the bypasser's own) takes the memory back.
                if adm.try_admit(head) {
                    let at = self.queues[hq].binary_search(&head).expect("queued");
                    self.queues[hq].remove(at);
                    self.take(head, hq);
                }
                continue;
            }
            i += 1;
        }
    }

    fn release(&mut self, id: u32) {
        if let Some(i) = self.active.iter().position(|&x| x == id) {
            self.active.swap_remove(i);
            let q = (self.owner[id as usize] as usize).min(self.quota.len() - 1);
            self.book.remove(q, &self.held[id as usize]);
        }
    }

    /// For the peak ledger: where each running request of ours stands.
    fn note_progress(&mut self, adm: &Admission<'_>) {
        if self.book.ledger != Ledger::Peak {
            return;
        }
        let (owner, held) = (&self.owner, &self.held);
        let k = self.quota.len();
        self.book.set_progress(adm.running().map(|(id, done)| {
            let h = &held[id as usize];
            let q = (owner[id as usize] as usize).min(k - 1);
            (
                q,
                h.input + done as u64,
                h.output.saturating_sub(done as u64),
            )
        }));
    }
}

impl Scheduler for Mlq {
    fn on_arrival(&mut self, req: &Request, now: Nanos) {
        self.arrived += 1;
        self.recent.push_back((now, req.id));
        self.maybe_refresh(now);
        self.enqueue(req.id);
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        self.maybe_refresh(adm.now());
        self.note_progress(adm);
        if !self.bypassers.is_empty() {
            self.resolve_bypasses(adm);
            self.note_progress(adm);
        }
        let k = self.queues.len();
        let mut donated = 0u64;
        for q in 0..k {
            self.admit_from(q, adm, 0);
            if self.queues[q].is_empty() || self.donate_all {
                donated += self.quota[q].saturating_sub(self.book.used(q));
            }
        }
        for q in 0..k {
            if donated == 0 {
                break;
            }
            if !self.queues[q].is_empty() {
                donated -= self.admit_from(q, adm, donated).min(donated);
            }
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        super::visit_in_order(self.queues.iter().flatten().copied(), visit);
    }

    fn on_finish(&mut self, req: &Request, _now: Nanos) {
        self.release(req.id);
    }

    fn waiting(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }

    fn merge_every(&self) -> Option<u32> {
        Some(self.merge_every)
    }

    fn describe_queues(&self, queue: &mut dyn FnMut(QueueInfo)) {
        for (q, waiting) in self.queues.iter().enumerate() {
            queue(QueueInfo {
                waiting: waiting.len() as u64,
                quota: Some(self.quota[q]),
                used: Some(self.book.used(q)),
            });
        }
    }
}
