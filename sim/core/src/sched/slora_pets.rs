//! S-LoRA's PETS queue (`--scheduler pets`: `slora/server/router/pets_req_queue.py`, S-LoRA c1ddf48), step
//! for step:
//!
//! - the queue is FIFO; with at most `threshold` (10) requests waiting it offers them in arrival order;
//! - with more, it plans the whole queue in two dynamic programmes and offers only the first macro-batch:
//!   1. intra-task: per adapter (in order of first appearance), requests sorted by prompt length (stable)
//!      are split into contiguous mini-batches minimising the sum of `beta(rank, size, longest prompt)`;
//!   2. inter-task: mini-batches sorted by their longest prompt (stable) are split into contiguous
//!      macro-batches minimising the sum of `alpha(requests, longest prompt)`;
//!
//!   the macro-batch of the shortest prompts is offered, mini-batch by mini-batch, each in ascending prompt
//!   length, stopping at the first request that does not fit (S-LoRA's `_can_add_new_req`).
//! - `alpha(bs, len)` is the measured time of a prefill of `bs` prompts of `len` tokens on the base model,
//!   `beta(rank, bs, len)` the extra time with one adapter of `rank` (`router/profiler.py`), profiled at
//!   start-up (`model_rpc.exposed_profile_prefill`) for even `bs` in 2..=pool / 2048 and `len` in 32..=1024
//!   step 32; a length is rounded up to a multiple of 32; `bs` 1 reads `bs` 2, an odd `bs` averages its two
//!   even neighbours, anything else is infinite (rank 0, the base model, costs 0). Here the profile is taken
//!   from the run's cost model, as S-LoRA takes it from its GPU. Ties go to the first candidate, as Python's
//!   strict `<` does.
//!
//! Deviations: S-LoRA asserts prompts of at most 1024 tokens; the table here extends to the longest prompt
//! the workload holds. The router's own time to run the programmes (Python, quadratic in the queue) is not
//! charged.

use crate::cost::BatchShape;
use crate::engine::api::{Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::{Error, Result};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::{NO_ADAPTER, Request};

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "slora-pets",
    about: "S-LoRA's PETS: per-adapter and cross-adapter prefill batching by dynamic programming",
    params: &[
        Param::new(
            "threshold",
            "10",
            "plan batches only with more than this many requests waiting (else FIFO)",
        ),
        Param::new(
            "tokens_per_bs",
            "2048",
            "profiled batch sizes: even sizes up to pool / this",
        ),
        Param::new("max_len", "1024", "profiled prompt lengths up to this"),
        Param::new("len_step", "32", "profiled prompt lengths step"),
    ],
    // The shortest prompts go first whenever more than `threshold` wait: a long prompt can wait forever.
    props: Props {
        starvation_free: false,
    },
    build,
};

fn build(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let threshold: usize = p.get("threshold")?;
    let tokens_per_bs: u64 = p.get("tokens_per_bs")?;
    let max_len: u32 = p.get("max_len")?;
    let step: u32 = p.get("len_step")?;
    if tokens_per_bs == 0 || step == 0 || max_len < step {
        return Err(Error::msg(format!(
            "slora-pets: need tokens_per_bs >= 1 and max_len >= len_step >= 1, got {tokens_per_bs}, {max_len}, {step}"
        )));
    }
    let w = ctx.workload;
    let longest = w.requests.iter().map(|r| r.input).max().unwrap_or(0);
    let top = max_len.max(longest).div_ceil(step) * step;
    // Bounded only to keep the table small for pools far beyond any single GPU's.
    let max_bs = (ctx.pool_slots / tokens_per_bs).min(2048) as usize;
    let mut ranks: Vec<u32> = w.adapters.iter().map(|a| a.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    Ok(Box::new(Pets {
        queue: Vec::new(),
        threshold,
        profile: Profile::take(ctx, max_bs, step, top, &ranks),
        rank: w.adapters.iter().map(|a| a.rank).collect(),
        input: w.requests.iter().map(|r| r.input).collect(),
        adapter: w.requests.iter().map(|r| r.adapter).collect(),
        order: Vec::new(),
    }))
}

/// The start-up profile: prefill times (ns) by batch size and prompt length, base and per rank.
struct Profile {
    /// Profiled batch sizes are 2, 4, .. `max_bs`.
    max_bs: usize,
    step: u32,
    /// `base[bs / 2 - 1][len / step - 1]`.
    base: Vec<Vec<f64>>,
    /// (rank, table like `base` of adapter-on prefill times).
    lora: Vec<(u32, Vec<Vec<f64>>)>,
}

impl Profile {
    fn take(ctx: &PolicyCtx, max_bs: usize, step: u32, top: u32, ranks: &[u32]) -> Profile {
        let lens: Vec<u64> = (1..=top / step).map(|k| (k * step) as u64).collect();
        let sizes: Vec<u64> = (2..=max_bs as u64).step_by(2).collect();
        let table = |rank: Option<u64>| -> Vec<Vec<f64>> {
            sizes
                .iter()
                .map(|&bs| {
                    lens.iter()
                        .map(|&len| {
                            let mut s = BatchShape::default();
                            for i in 0..bs {
                                s.add_prompt(len, rank.map(|r| (r, i == 0)));
                            }
                            ctx.cost.iteration(&s) as f64
                        })
                        .collect()
                })
                .collect()
        };
        Profile {
            max_bs,
            step,
            base: table(None),
            lora: ranks
                .iter()
                .filter(|&&r| r > 0)
                .map(|&r| (r, table(Some(r as u64))))
                .collect(),
        }
    }

    /// S-LoRA's lookup: exact even sizes, 1 reads 2, an odd size averages its neighbours, else infinite.
    fn lookup(&self, t: &dyn Fn(usize) -> f64, bs: usize) -> f64 {
        let has = |b: usize| b >= 2 && b.is_multiple_of(2) && b <= self.max_bs;
        if bs == 0 {
            0.0
        } else if has(bs) {
            t(bs)
        } else if bs == 1 && has(2) {
            t(2)
        } else if !bs.is_multiple_of(2) && has(bs - 1) && has(bs + 1) {
            (t(bs - 1) + t(bs + 1)) / 2.0
        } else {
            f64::INFINITY
        }
    }

    fn col(&self, len: u32) -> usize {
        (len.max(1).div_ceil(self.step) - 1) as usize
    }

    /// `AlphaModel.get_latency`: a base-model prefill of `bs` prompts of `len` tokens.
    fn alpha(&self, bs: usize, len: u32) -> f64 {
        let c = self.col(len);
        self.lookup(&|b| self.base[b / 2 - 1][c], bs)
    }

    /// `BetaModel.get_latency`: what one adapter of `rank` adds to that prefill.
    fn beta(&self, rank: u32, bs: usize, len: u32) -> f64 {
        if rank == 0 {
            return 0.0;
        }
        let c = self.col(len);
        let t = &self
            .lora
            .iter()
            .find(|(r, _)| *r == rank)
            .expect("profiled")
            .1;
        self.lookup(&|b| t[b / 2 - 1][c] - self.base[b / 2 - 1][c], bs)
    }
}

pub struct Pets {
    /// Waiting requests in arrival order.
    queue: Vec<u32>,
    threshold: usize,
    profile: Profile,
    /// Per adapter, its rank; per request, its prompt and adapter.
    rank: Vec<u32>,
    input: Vec<u32>,
    adapter: Vec<u32>,
    /// Reused: the offer order of the last plan.
    order: Vec<u32>,
}

/// Backtracks a DP's split table: the groups [split[end] + 1, end], last group first (as S-LoRA's loop).
fn groups(split: &[usize], mut end: usize, mut f: impl FnMut(usize, usize)) {
    while end > 0 {
        let start = split[end] + 1;
        f(start, end);
        end = split[end];
    }
}

/// One DP over `n` items (1-based): `state[j] = min_k state[k-1] + cost(k, j)`, first minimum kept (strict
/// `<`, starting from infinity with split 0, as S-LoRA). `window`: only groups of at most this many items
/// can have a finite cost (fewer candidates, same result).
fn dp(n: usize, window: Option<usize>, cost: impl Fn(usize, usize) -> f64) -> Vec<usize> {
    let mut state = vec![0.0f64; n + 1];
    let mut split = vec![0usize; n + 1];
    for j in 1..=n {
        let mut best = f64::INFINITY;
        let mut at = 0;
        let lo = window.map_or(1, |w| (j + 1).saturating_sub(w).max(1));
        for k in lo..=j {
            let c = state[k - 1] + cost(k, j);
            if c < best {
                best = c;
                at = k - 1;
            }
        }
        split[j] = at;
        state[j] = best;
    }
    split
}

impl Pets {
    /// The offer order when more than `threshold` wait: the first macro-batch of S-LoRA's two programmes.
    fn plan(&self, order: &mut Vec<u32>) {
        order.clear();
        let p = &self.profile;
        // Clusters by adapter, in order of first appearance in the queue.
        let mut clusters: Vec<(u32, Vec<u32>)> = Vec::new();
        let mut at = vec![usize::MAX; self.rank.len() + 1];
        for &id in &self.queue {
            let a = self.adapter[id as usize];
            let k = if a == NO_ADAPTER {
                self.rank.len()
            } else {
                a as usize
            };
            if at[k] == usize::MAX {
                at[k] = clusters.len();
                clusters.push((a, Vec::new()));
            }
            clusters[at[k]].1.push(id);
        }
        // Intra-task: mini-batches (requests, longest prompt), appended last group first per cluster.
        let mut minis: Vec<(Vec<u32>, u32)> = Vec::new();
        for (a, mut q) in clusters {
            q.sort_by_key(|&id| self.input[id as usize]);
            let rank = if a == NO_ADAPTER {
                0
            } else {
                self.rank[a as usize]
            };
            let len = |j: usize| self.input[q[j - 1] as usize];
            let split = if rank == 0 {
                // Every split costs 0: the first candidate (the whole prefix) wins each time.
                vec![0; q.len() + 1]
            } else {
                dp(q.len(), Some(p.max_bs + 1), |k, j| {
                    p.beta(rank, j - k + 1, len(j))
                })
            };
            groups(&split, q.len(), |s, e| {
                minis.push((q[s - 1..e].to_vec(), len(e)));
            });
        }
        // Inter-task: macro-batches over mini-batches sorted by longest prompt (stable).
        minis.sort_by_key(|m| m.1);
        let mut sum = vec![0usize; minis.len() + 1];
        for (i, m) in minis.iter().enumerate() {
            sum[i + 1] = sum[i] + m.0.len();
        }
        let split = dp(minis.len(), Some(p.max_bs + 1), |k, j| {
            p.alpha(sum[j] - sum[k - 1], minis[j - 1].1)
        });
        // The macro-batch S-LoRA runs is the last one its loop appends: the one starting at mini-batch 1.
        let mut first = (1, 0);
        groups(&split, minis.len(), |s, e| first = (s, e));
        for m in &minis[first.0 - 1..first.1] {
            order.extend_from_slice(&m.0);
        }
    }
}

impl Scheduler for Pets {
    fn on_arrival(&mut self, req: &Request, _now: Nanos) {
        self.queue.push(req.id);
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        let mut order = std::mem::take(&mut self.order);
        if self.queue.len() > self.threshold {
            self.plan(&mut order);
        } else {
            order.clear();
            order.extend_from_slice(&self.queue);
        }
        let mut admitted = 0;
        for &id in &order {
            if !adm.try_admit(id) {
                break;
            }
            admitted += 1;
        }
        if admitted > 0 {
            let taken = &order[..admitted];
            self.queue.retain(|id| !taken.contains(id));
        }
        self.order = order;
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        let mut order = Vec::new();
        if self.queue.len() > self.threshold {
            self.plan(&mut order);
        } else {
            order.extend_from_slice(&self.queue);
        }
        super::visit_in_order(order, visit);
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }
}
