//! Greedy-Dual-Size-Frequency: priority = L + uses x load cost / size, where L rises to each victim's
//! priority (aging). Favours adapters that are often used and expensive to reload per slot they occupy.

use crate::engine::api::{CachePolicy, CacheView, Caches, PolicyCtx};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Caches> = Entry {
    name: "gdsf",
    about: "greedy-dual-size-frequency: evict lowest L + uses*load_time/size",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    let n = ctx.workload.adapters.len();
    Ok(Box::new(Gdsf {
        value: ctx
            .workload
            .adapters
            .iter()
            .map(|a| ctx.load_ns[a.id as usize] as f64 / a.slots.max(1) as f64)
            .collect(),
        uses: vec![0; n],
        prio: vec![0.0; n],
        inflation: 0.0,
    }))
}

pub struct Gdsf {
    /// Load time per slot: the cost of a miss per unit of cache space.
    value: Vec<f64>,
    uses: Vec<u64>,
    prio: Vec<f64>,
    inflation: f64,
}

impl CachePolicy for Gdsf {
    fn on_admit(&mut self, req: &Request, _now: Nanos) {
        let a = req.adapter as usize;
        self.uses[a] += 1;
        self.prio[a] = self.inflation + self.uses[a] as f64 * self.value[a];
    }

    fn on_evict(&mut self, a: u32, _now: Nanos) {
        self.uses[a as usize] = 0;
    }

    fn victim(&mut self, idle: &[u32], _view: &CacheView<'_>) -> u32 {
        let v = *idle
            .iter()
            .min_by(|&&a, &&b| {
                self.prio[a as usize]
                    .total_cmp(&self.prio[b as usize])
                    .then(a.cmp(&b))
            })
            .expect("non-empty");
        self.inflation = self.prio[v as usize];
        v
    }
}
