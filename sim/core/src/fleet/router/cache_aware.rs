//! Cache-aware: weighs each replica's cache contents against its queue. A replica's score is its outstanding
//! requests per unit of capacity, plus `miss` if it does not hold the request's adapter (a load, PCIe
//! traffic and an eviction there); the lowest score wins, the lowest index among equals. Exact over all
//! replicas in O(holders): the best replica not holding the adapter is the least loaded one.

use super::{Router, RouterCtx, Routers};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::workload::{NO_ADAPTER, Request};

pub const ENTRY: Entry<Routers> = Entry {
    name: "cache-aware",
    about: "least outstanding requests + a penalty where the adapter is not held",
    params: &[Param::new(
        "miss",
        "2",
        "penalty of a replica without the adapter, in outstanding requests",
    )],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, _ctx: &RouterCtx) -> Result<Box<dyn Router>> {
    let miss: f64 = p.get("miss")?;
    if !(miss >= 0.0 && miss.is_finite()) {
        return Err(p.bad("miss must be >= 0"));
    }
    Ok(Box::new(CacheAware { miss }))
}

struct CacheAware {
    miss: f64,
}

impl Router for CacheAware {
    fn route(&mut self, req: &Request, view: &super::FleetView) -> usize {
        let any = view.least_outstanding();
        if req.adapter == NO_ADAPTER {
            return any;
        }
        let score = |r: usize| {
            view.load(r)
                + if view.holds(r, req.adapter) {
                    0.0
                } else {
                    self.miss
                }
        };
        let mut best = (score(any), any);
        for &h in view.holders(req.adapter) {
            let s = (score(h as usize), h as usize);
            if s < best {
                best = s;
            }
        }
        best.1
    }
}
