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

use std::collections::VecDeque;

use crate::engine::api::{Admission, Fit, PolicyCtx, Scheduler, Schedulers};
use crate::error::{Error, Result};
use crate::metrics::{Dist, RunView, num};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::{Request, Workload};

const DYNAMIC_PARAMS: &[Param] = &[
    Param::new("max_k", "4", "most queues K-Means may form"),
    Param::new(
        "elbow",
        "0.1",
        "smallest share of variance one more cluster must explain",
    ),
    Param::new("refresh_s", "300", "seconds between re-clusterings"),
    Param::new(
        "window_s",
        "300",
        "seconds of arrivals clustered (mlq) / counted (cache)",
    ),
    Param::new(
        "warmup",
        "200",
        "arrivals before the first clustering (one queue until then)",
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
    params: &[
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
    ],
    props: Props::DEFAULT,
    build: build_static,
};

fn build_dynamic(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    Mlq::boxed(p, ctx, true)
}

fn build_static(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    Mlq::boxed(p, ctx, false)
}

pub struct Mlq {
    dynamic: bool,
    max_k: usize,
    elbow: f64,
    refresh_ns: Nanos,
    window_ns: Nanos,
    warmup: usize,
    bypass: bool,
    bypass_depth: usize,
    /// Phase 2 lends the unused quota of every queue, not only of queues emptied in phase 1.
    donate_all: bool,
    slo_s: f64,
    pool: u64,
    decode_ns_per_step: f64,
    /// Per request: WRS, size in tokens, expected service time (ns), predicted output, owning queue.
    wrs: Vec<f64>,
    size: Vec<u64>,
    service_ns: Vec<f64>,
    predicted: Vec<u32>,
    owner: Vec<u8>,
    /// Ascending WRS boundaries between queues (len = queues - 1).
    bounds: Vec<f64>,
    queues: Vec<VecDeque<u32>>,
    quota: Vec<u64>,
    used: Vec<u64>,
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
        let bypass = p.get("bypass")?;
        let bypass_depth: usize = p.get("bypass_depth")?;
        let donate: String = p.get("donate")?;
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
            bypass,
            bypass_depth,
            donate_all: donate == "all",
            slo_s: ctx.slo.ttft_ns as f64 / 1e9,
            pool: ctx.pool_slots,
            decode_ns_per_step: ctx.decode_ns_per_step,
            wrs,
            size: w.requests.iter().map(|r| ctx.size_tokens(r)).collect(),
            service_ns: w.requests.iter().map(|r| ctx.service_ns(r)).collect(),
            predicted: ctx.predicted_output.to_vec(),
            owner: vec![0; w.requests.len()],
            bounds,
            queues: vec![VecDeque::new(); k],
            quota,
            used: vec![0; k],
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
        let mut count = vec![0usize; k];
        let mut sum_size = vec![0u64; k];
        let mut largest: Vec<Option<u32>> = vec![None; k];
        for &(_, id) in &self.recent {
            let q = self.queue_of(id);
            count[q] += 1;
            sum_size[q] += self.size[id as usize];
            if largest[q].is_none_or(|l| self.size[id as usize] > self.size[l as usize]) {
                largest[q] = Some(id);
            }
        }
        let min: Vec<f64> = (0..k)
            .map(|q| {
                largest[q].map_or(0.0, |id| {
                    let lambda = count[q] as f64 / span_s;
                    let s = self.size[id as usize] as f64;
                    // Never below S itself: a quota smaller than the queue's largest request could starve it.
                    (s * self.service_ns[id as usize] / 1e9 * (1.0 / self.slo_s + lambda)).max(s)
                })
            })
            .collect();
        let total_min: f64 = min.iter().sum();
        let pool = self.pool as f64;
        self.quota = if total_min >= pool {
            min.iter().map(|m| (m * pool / total_min) as u64).collect()
        } else {
            let weight: Vec<f64> = (0..k).map(|q| sum_size[q] as f64 / span_s).collect();
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
        // Re-bucket waiting and running requests under the new boundaries.
        let waiting: Vec<u32> = self.queues.iter().flatten().copied().collect();
        self.queues = vec![VecDeque::new(); k];
        for id in waiting {
            self.enqueue(id);
        }
        self.used = vec![0; k];
        for i in 0..self.active.len() {
            let id = self.active[i];
            let q = self.queue_of(id);
            self.owner[id as usize] = q as u8;
            self.used[q] += self.size[id as usize];
        }
    }

    /// Admits heads of queue `q` in FIFO order while they fit its quota plus `allowance` (an idle queue may
    /// always admit its head); returns the part of the allowance used.
    fn admit_from(&mut self, q: usize, adm: &mut Admission<'_>, allowance: u64) -> u64 {
        let over_before = self.used[q].saturating_sub(self.quota[q]);
        while let Some(&head) = self.queues[q].front() {
            let size = self.size[head as usize];
            if self.used[q] > 0 && self.used[q] + size > self.quota[q] + allowance {
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
        (self.used[q].saturating_sub(self.quota[q]) - over_before).min(allowance)
    }

    fn take(&mut self, id: u32, q: usize) {
        self.owner[id as usize] = q as u8;
        self.used[q] += self.size[id as usize];
        self.active.push(id);
    }

    fn try_bypass(&mut self, q: usize, head: u32, adm: &mut Admission<'_>) {
        let wait = adm
            .running()
            .map(|(id, done)| {
                self.predicted[id as usize].saturating_sub(done).max(1) as f64
                    * self.decode_ns_per_step
            })
            .fold(f64::INFINITY, f64::min);
        let pick = self.queues[q]
            .iter()
            .skip(1)
            .take(self.bypass_depth)
            .copied()
            .find(|&y| {
                self.service_ns[y as usize] < wait
                    && (self.used[q] == 0 || self.used[q] + self.size[y as usize] <= self.quota[q])
                    && adm.fits(y)
            });
        if let Some(y) = pick {
            adm.try_admit(y);
            let at = self.queues[q].iter().position(|&x| x == y).expect("queued");
            self.queues[q].remove(at);
            self.take(y, q);
            self.bypassers.push((y, head));
        }
    }

    /// Squashes bypassers whose head now fits only without them.
    fn resolve_bypasses(&mut self, adm: &mut Admission<'_>) {
        let mut i = 0;
        while i < self.bypassers.len() {
            let (y, head) = self.bypassers[i];
            let head_waiting = self.queues.iter().any(|q| q.front() == Some(&head));
            if !head_waiting || !self.active.contains(&y) {
                self.bypassers.swap_remove(i);
                continue;
            }
            if !adm.fits(head) && adm.fits_if_squashed(head, y) && adm.squash(y) {
                self.release(y);
                self.enqueue(y);
                self.bypassers.swap_remove(i);
                continue;
            }
            i += 1;
        }
    }

    fn release(&mut self, id: u32) {
        if let Some(i) = self.active.iter().position(|&x| x == id) {
            self.active.swap_remove(i);
            let q = (self.owner[id as usize] as usize).min(self.used.len() - 1);
            self.used[q] = self.used[q].saturating_sub(self.size[id as usize]);
        }
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
        if !self.bypassers.is_empty() {
            self.resolve_bypasses(adm);
        }
        let k = self.queues.len();
        let mut donated = 0u64;
        for q in 0..k {
            self.admit_from(q, adm, 0);
            if self.queues[q].is_empty() || self.donate_all {
                donated += self.quota[q].saturating_sub(self.used[q]);
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
        for &id in self.queues.iter().flatten() {
            if !visit(id) {
                return;
            }
        }
    }

    fn on_finish(&mut self, req: &Request, _now: Nanos) {
        self.release(req.id);
    }

    fn waiting(&self) -> usize {
        self.queues.iter().map(VecDeque::len).sum()
    }
}

/// Chameleon's Weighted Request Size in [0, 1]:
/// `(0.4 In/MaxIn + 0.6 PredOut/MaxOut) x AdapterSlots/MaxAdapterSlots` (no adapter: factor 1), the maxima
/// over the workload (the largest prompt, prediction and adapter the server is configured for).
pub struct Wrs<'a> {
    workload: &'a Workload,
    predicted: &'a [u32],
    max_in: f64,
    max_out: f64,
    max_slots: u64,
}

impl<'a> Wrs<'a> {
    pub fn new(workload: &'a Workload, predicted: &'a [u32]) -> Wrs<'a> {
        let max_in = workload.requests.iter().map(|r| r.input).max();
        Wrs {
            workload,
            predicted,
            max_in: max_in.unwrap_or(1).max(1) as f64,
            max_out: predicted.iter().copied().max().unwrap_or(1).max(1) as f64,
            max_slots: workload.adapters.iter().map(|a| a.slots).max().unwrap_or(0),
        }
    }

    pub fn of(&self, r: &Request) -> f64 {
        let len = 0.4 * r.input as f64 / self.max_in
            + 0.6 * self.predicted[r.id as usize] as f64 / self.max_out;
        match self.workload.adapter(r.adapter) {
            Some(a) if self.max_slots > 0 => len * a.slots as f64 / self.max_slots as f64,
            _ => len,
        }
    }
}

/// Summary hook (every run, whatever its scheduler): queueing delay per WRS class, the quartiles
/// [0, .25), [.25, .5), [.5, .75), [.75, 1] of the weighted request size (`wrs_class{c}_requests`,
/// `queue_mean_wrs{c}_s`, `queue_p99_wrs{c}_s`, c = 1..4).
pub fn wrs_summary(v: &RunView<'_>, m: &mut serde_json::Map<String, serde_json::Value>) {
    let sizer = Wrs::new(v.workload, v.predicted);
    let mut classes: [Vec<f64>; 4] = Default::default();
    for &i in v.finished {
        let x = sizer.of(&v.workload.requests[i]);
        let c = ((x * 4.0).floor().max(0.0) as usize).min(3);
        classes[c].push(v.queue_s(i));
    }
    for (c, mut q) in classes.into_iter().enumerate() {
        m.insert(format!("wrs_class{}_requests", c + 1), q.len().into());
        let d = Dist::of(&mut q);
        m.insert(format!("queue_mean_wrs{}_s", c + 1), num(d.mean));
        m.insert(format!("queue_p99_wrs{}_s", c + 1), num(d.p99));
    }
}

/// 1-D K-Means (Lloyd, quantile start) on sorted `xs`; returns sorted centroids.
pub fn kmeans_1d(xs: &[f64], k: usize) -> (Vec<f64>, f64) {
    let n = xs.len();
    let k = k.min(n).max(1);
    let mut c: Vec<f64> = (0..k)
        .map(|i| xs[((2 * i + 1) * n / (2 * k)).min(n - 1)])
        .collect();
    let mut assign = vec![0usize; n];
    for _ in 0..100 {
        // Sorted data and sorted centroids: cluster j is the run of points nearest to c[j].
        let mut j = 0;
        for (i, &x) in xs.iter().enumerate() {
            while j + 1 < k && (x - c[j + 1]).abs() < (x - c[j]).abs() {
                j += 1;
            }
            assign[i] = j;
        }
        let mut sum = vec![0.0; k];
        let mut cnt = vec![0usize; k];
        for (i, &x) in xs.iter().enumerate() {
            sum[assign[i]] += x;
            cnt[assign[i]] += 1;
        }
        let next: Vec<f64> = (0..k)
            .map(|j| {
                if cnt[j] > 0 {
                    sum[j] / cnt[j] as f64
                } else {
                    c[j]
                }
            })
            .collect();
        let moved = next.iter().zip(&c).any(|(a, b)| (a - b).abs() > 1e-12);
        c = next;
        if !moved {
            break;
        }
    }
    c.sort_by(f64::total_cmp);
    c.dedup();
    let wcss = xs
        .iter()
        .map(|&x| {
            c.iter()
                .map(|&m| (x - m) * (x - m))
                .fold(f64::INFINITY, f64::min)
        })
        .sum();
    (c, wcss)
}

/// The smallest K for which one more cluster would explain less than `elbow` of the total variance
/// (the WCSS of one cluster).
pub fn elbow_kmeans(xs: &[f64], max_k: usize, elbow: f64) -> Vec<f64> {
    let (mut best, total) = kmeans_1d(xs, 1);
    let mut wcss = total;
    for k in 2..=max_k {
        let (c, w) = kmeans_1d(xs, k);
        if c.len() < k || wcss - w < elbow * total {
            break;
        }
        best = c;
        wcss = w;
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kmeans_finds_separated_clusters_and_the_elbow_stops_there() {
        let mut xs: Vec<f64> = (0..50)
            .map(|i| 0.1 + i as f64 * 1e-4)
            .chain((0..50).map(|i| 0.8 + i as f64 * 1e-4))
            .collect();
        xs.sort_by(f64::total_cmp);
        let c = elbow_kmeans(&xs, 4, 0.1);
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            (c[0] - 0.10245).abs() < 1e-9 && (c[1] - 0.80245).abs() < 1e-9,
            "{c:?}"
        );
        // One tight cluster: K = 1.
        assert_eq!(elbow_kmeans(&[0.5; 10], 4, 0.1).len(), 1);
        // Uniform data: WCSS falls as 1/K^2 (1, .25, .11, .06); the third cluster explains 14%, the fourth 5%.
        let u: Vec<f64> = (0..1000).map(|i| i as f64 / 1000.0).collect();
        assert_eq!(elbow_kmeans(&u, 4, 0.1).len(), 3);
    }
}
