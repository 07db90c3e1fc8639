//! Adapter affinity: consistent hashing with bounded loads (Mirrokni, Thorup, Zadimoghaddam, SODA 2018).
//! Each replica owns `vnodes` points on a hash ring; a request goes to the first replica clockwise from its
//! adapter's point whose outstanding requests are below the bound `ceil(bound x (outstanding + 1) x
//! capacity share)`. An adapter stays on its replica, so that replica's cache keeps it, until the load bound
//! spills its requests to the next replicas on the ring: a hot adapter spreads over as many replicas as its
//! load needs. Requests without an adapter hash by their id.

use super::{Router, RouterCtx, Routers, mix};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::workload::{NO_ADAPTER, Request};

pub const ENTRY: Entry<Routers> = Entry {
    name: "adapter-affinity",
    about: "consistent hashing of adapters to replicas with bounded load (hot adapters spill over)",
    params: &[
        Param::new(
            "bound",
            "1.25",
            "load bound: a replica takes a request while below bound x the mean",
        ),
        Param::new("vnodes", "64", "ring points per replica"),
    ],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &RouterCtx) -> Result<Box<dyn Router>> {
    let bound: f64 = p.get("bound")?;
    let vnodes: u32 = p.get("vnodes")?;
    if !(bound >= 1.0 && bound.is_finite()) {
        return Err(p.bad("bound must be >= 1"));
    }
    if vnodes == 0 {
        return Err(p.bad("vnodes must be >= 1"));
    }
    Ok(Box::new(Affinity::new(ctx.replicas, vnodes, bound)))
}

pub(crate) struct Affinity {
    /// (point, replica), sorted.
    ring: Vec<(u64, u32)>,
    bound: f64,
}

impl Affinity {
    pub(crate) fn new(replicas: usize, vnodes: u32, bound: f64) -> Affinity {
        let mut ring: Vec<(u64, u32)> = (0..replicas as u32)
            .flat_map(|r| (0..vnodes).map(move |v| (mix(((r as u64) << 32) | v as u64), r)))
            .collect();
        ring.sort_unstable();
        Affinity { ring, bound }
    }
}

impl Router for Affinity {
    fn route(&mut self, req: &Request, view: &super::FleetView) -> usize {
        let key = if req.adapter == NO_ADAPTER {
            (1 << 40) | req.id as u64
        } else {
            req.adapter as u64
        };
        let total = view.total_outstanding() as f64 + 1.0;
        let share = view.total_capacity();
        let h = mix(key ^ 0xadab_7e25);
        let start = self.ring.partition_point(|&(p, _)| p < h);
        // Most requests stop at the first point: walk without allocating, checking each replica once
        // at most (a repeat of a replica already refused is refused again).
        for i in 0..self.ring.len() {
            let r = self.ring[(start + i) % self.ring.len()].1 as usize;
            let cap = (self.bound * total * view.capacity(r) / share).ceil();
            if (view.outstanding(r) as f64) < cap {
                return r;
            }
        }
        view.least_outstanding()
    }
}
