//! Belady's offline optimum: evict the idle adapter whose next use lies furthest in the future. The simulator
//! knows every future arrival, so this is the bound no online policy can beat on a fixed reference string
//! with equal-size adapters and a fixed cache size. `size_aware=true` evicts the largest
//! (time to next use x size) instead, the usual heuristic when sizes differ (exact optimality is NP-hard then).
//!
//! "Next use" of an adapter = arrival time of its earliest request not yet admitted (now, if one is queued).

use crate::engine::api::{CachePolicy, CacheView, Caches, PolicyCtx};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Caches> = Entry {
    name: "belady",
    about: "offline optimum: evict the adapter needed furthest in the future (knows the trace)",
    params: &[Param::new(
        "size_aware",
        "false",
        "evict the largest (time to next use x size)",
    )],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    let size_aware = p.get("size_aware")?;
    let w = ctx.workload;
    let mut uses: Vec<Vec<(Nanos, u32)>> = vec![Vec::new(); w.adapters.len()];
    for r in &w.requests {
        if let Some(u) = uses.get_mut(r.adapter as usize) {
            u.push((r.arrival, r.id));
        }
    }
    Ok(Box::new(Belady {
        size_aware,
        next: vec![0; uses.len()],
        uses,
        admitted: vec![false; w.requests.len()],
    }))
}

pub struct Belady {
    size_aware: bool,
    /// Per adapter, its requests in arrival order.
    uses: Vec<Vec<(Nanos, u32)>>,
    /// Per adapter, index of its first request that may not be admitted yet.
    next: Vec<usize>,
    admitted: Vec<bool>,
}

impl Belady {
    fn next_use(&mut self, a: u32) -> Option<Nanos> {
        let (uses, i) = (&self.uses[a as usize], &mut self.next[a as usize]);
        while *i < uses.len() && self.admitted[uses[*i].1 as usize] {
            *i += 1;
        }
        // Admission out of arrival order (e.g. SJF) leaves holes after `i`; they are skipped above lazily.
        uses.get(*i).map(|u| u.0)
    }
}

impl CachePolicy for Belady {
    fn on_admit(&mut self, req: &Request, _now: Nanos) {
        self.admitted[req.id as usize] = true;
    }

    fn victim(&mut self, idle: &[u32], view: &CacheView<'_>) -> u32 {
        let mut best = (0u128, 0u64, 0u32);
        for (k, &a) in idle.iter().enumerate() {
            let slots = view.adapters[a as usize].slots;
            let dist = self
                .next_use(a)
                .map_or(u64::MAX as u128, |t| t.saturating_sub(view.now) as u128);
            let key = if self.size_aware {
                dist.saturating_mul(slots as u128)
            } else {
                dist
            };
            // Furthest first; ties: the larger adapter, then the lower id.
            if k == 0 || (key, slots) > (best.0, best.1) {
                best = (key, slots, a);
            }
        }
        best.2
    }
}
