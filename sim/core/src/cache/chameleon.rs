//! Chameleon's adapter cache (and `fairshare`, the same with equal weights).
//!
//! The cache is whatever pool memory the admitted requests do not need: the engine evicts only when KV or a
//! load needs the room, never an adapter in use. Among idle adapters, those wanted by queued requests are
//! kept while any other is left; among the rest the one with the LOWEST
//! `freq*F + recency*R + size*S` goes, so small, rarely requested, long unused adapters go first.
//!
//! The paper leaves the terms undefined; here each is normalised to [0, 1] over the candidates:
//! - F = requests for the adapter that arrived in the last `window_s` seconds / the largest such count;
//! - R = (last use - oldest last use) / (newest - oldest); 1 = most recently used (all equal: 1);
//! - S = adapter size / largest candidate size.

use std::collections::VecDeque;

use crate::engine::api::{CachePolicy, CacheView, Caches, PolicyCtx};
use crate::error::{Error, Result};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

/// The two parameters chameleon and fairshare share.
const WINDOW: Param = Param::new(
    "window_s",
    "300",
    "seconds of arrivals clustered (mlq) / counted (cache)",
);
const PROTECT: Param = Param::new(
    "protect_queued",
    "true",
    "evict adapters of queued requests last",
);

const PARAMS: &[Param] = &[
    Param::new("freq", "0.45", "weight of request frequency"),
    Param::new("recency", "0.10", "weight of recency of use"),
    Param::new("size", "0.45", "weight of adapter size"),
    WINDOW,
    PROTECT,
];

pub const ENTRY: Entry<Caches> = Entry {
    name: "chameleon",
    about: "idle-memory cache; evict lowest freq*F + recency*R + size*S, adapters of queued requests last",
    params: PARAMS,
    props: Props::DEFAULT,
    build: build_chameleon,
};

pub const FAIRSHARE: Entry<Caches> = Entry {
    name: "fairshare",
    about: "chameleon with equal weights (1/3 each)",
    params: &[WINDOW, PROTECT],
    props: Props::DEFAULT,
    build: build_fairshare,
};

fn build_chameleon(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    let weights = [p.get("freq")?, p.get("recency")?, p.get("size")?];
    build(p, ctx, "chameleon", weights)
}

fn build_fairshare(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    build(p, ctx, "fairshare", [1.0 / 3.0; 3])
}

fn build(
    p: &mut Params,
    ctx: &PolicyCtx,
    name: &'static str,
    weights: [f64; 3],
) -> Result<Box<dyn CachePolicy>> {
    let window_s: f64 = p.get("window_s")?;
    let protect_queued = p.get("protect_queued")?;
    if weights.iter().any(|&x| !(x >= 0.0 && x.is_finite())) || window_s.is_nan() || window_s <= 0.0
    {
        return Err(Error::msg(format!(
            "{name}: weights must be >= 0 and window_s > 0"
        )));
    }
    let n = ctx.workload.adapters.len();
    Ok(Box::new(Chameleon {
        weights,
        window_ns: (window_s * 1e9) as Nanos,
        protect_queued,
        arrivals: vec![VecDeque::new(); n],
        last: vec![0; n],
        tick: 0,
        pool: Vec::new(),
    }))
}

pub struct Chameleon {
    weights: [f64; 3],
    window_ns: Nanos,
    protect_queued: bool,
    /// Arrival times of each adapter's requests within the window (trimmed lazily).
    arrivals: Vec<VecDeque<Nanos>>,
    last: Vec<u64>,
    tick: u64,
    pool: Vec<u32>,
}

impl Chameleon {
    fn frequency(&mut self, a: u32, now: Nanos) -> usize {
        let q = &mut self.arrivals[a as usize];
        while q.front().is_some_and(|&t| t + self.window_ns < now) {
            q.pop_front();
        }
        q.len()
    }
}

impl CachePolicy for Chameleon {
    fn on_arrival(&mut self, req: &Request, now: Nanos) {
        self.arrivals[req.adapter as usize].push_back(now);
        // Keep the deque bounded even for adapters that are never evicted.
        self.frequency(req.adapter, now);
    }

    fn on_admit(&mut self, req: &Request, _now: Nanos) {
        self.tick += 1;
        self.last[req.adapter as usize] = self.tick;
    }

    fn on_load(&mut self, a: u32, _now: Nanos) {
        self.tick += 1;
        self.last[a as usize] = self.tick;
    }

    fn victim(&mut self, idle: &[u32], view: &CacheView<'_>) -> u32 {
        let mut pool = std::mem::take(&mut self.pool);
        pool.clear();
        if self.protect_queued {
            pool.extend(
                idle.iter()
                    .copied()
                    .filter(|&a| view.adapters[a as usize].queued == 0),
            );
        }
        if pool.is_empty() {
            pool.extend_from_slice(idle);
        }
        let freq: Vec<f64> = pool
            .iter()
            .map(|&a| self.frequency(a, view.now) as f64)
            .collect();
        let max_f = freq.iter().copied().fold(0.0, f64::max);
        let (lo, hi) = pool.iter().fold((u64::MAX, 0), |(lo, hi), &a| {
            let t = self.last[a as usize];
            (lo.min(t), hi.max(t))
        });
        let max_s = pool
            .iter()
            .map(|&a| view.adapters[a as usize].slots)
            .max()
            .unwrap_or(1)
            .max(1) as f64;
        let [wf, wr, ws] = self.weights;
        let score = |i: usize, a: u32| {
            let f = if max_f > 0.0 { freq[i] / max_f } else { 0.0 };
            let r = if hi > lo {
                (self.last[a as usize] - lo) as f64 / (hi - lo) as f64
            } else {
                1.0
            };
            let s = view.adapters[a as usize].slots as f64 / max_s;
            wf * f + wr * r + ws * s
        };
        let v = (0..pool.len())
            .min_by(|&i, &j| {
                score(i, pool[i])
                    .total_cmp(&score(j, pool[j]))
                    .then(pool[i].cmp(&pool[j]))
            })
            .map(|i| pool[i])
            .expect("non-empty");
        self.pool = pool;
        v
    }
}
