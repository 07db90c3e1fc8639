//! Routers: the global dispatcher in front of the replicas' own schedulers. One file per router, one line in
//! `REGISTRY` (`--router NAME[k=v,...]`, listed by `sim policies`). A router sees only `FleetView` (what a
//! real router could know at the arrival instant) and the request (its adapter, prompt length and predicted
//! output).

mod affinity;
mod cache_aware;
mod least_outstanding;
mod power_of_two;
mod random;
mod round_robin;

use super::view::FleetView;
use crate::registry::{Kind, Registry};
use crate::workload::{Request, Workload};

pub trait Router {
    /// The replica (0-based) for `req`, from what `view` shows at its arrival.
    fn route(&mut self, req: &Request, view: &FleetView) -> usize;
    /// Which replicas' state decisions read. Only those are brought to the arrival instant before a
    /// decision; the others' entries in the view may be stale and must not be read.
    fn reads(&self) -> Reads {
        Reads::All
    }
    /// With `Reads::Candidates`: the replicas the next `route` (called right after) will read.
    fn candidates(&mut self, _req: &Request, _out: &mut Vec<usize>) {}
}

/// What a router's decisions read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Any replica (the whole view is exact at each arrival).
    All,
    /// Only the replicas `candidates` names for each request.
    Candidates,
    /// Nothing: decided up front, the replicas run independently (in parallel with threads).
    Nothing,
}

/// What a router is built with.
pub struct RouterCtx<'a> {
    pub replicas: usize,
    /// The run's seed (a random router derives its stream from it).
    pub seed: u64,
    pub workload: &'a Workload,
    /// Per request, the output length the predictor gives.
    pub predicted_output: &'a [u32],
    /// Per replica, its relative capacity (1 for a homogeneous fleet).
    pub capacity: &'a [f64],
}

pub struct Routers;

impl Kind for Routers {
    type Made = dyn Router;
    type Ctx<'a> = RouterCtx<'a>;
    const NAME: &'static str = "router";
}

/// Every router `--router` accepts.
pub const REGISTRY: Registry<Routers> = Registry {
    entries: &[
        random::ENTRY,
        round_robin::ENTRY,
        least_outstanding::ENTRY,
        power_of_two::ENTRY,
        affinity::ENTRY,
        cache_aware::ENTRY,
    ],
};

/// `by=requests|tokens`: which outstanding work a load-balancing router compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum By {
    Requests,
    Tokens,
}

impl By {
    pub(crate) fn parse(p: &mut crate::registry::Params) -> crate::error::Result<By> {
        let by: String = p.get("by")?;
        match by.as_str() {
            "requests" => Ok(By::Requests),
            "tokens" => Ok(By::Tokens),
            _ => Err(p.bad(format!("by must be requests or tokens, got '{by}'"))),
        }
    }

    /// Replica `r`'s outstanding work per unit of capacity.
    pub(crate) fn load(self, v: &FleetView, r: usize) -> f64 {
        match self {
            By::Requests => v.outstanding(r) as f64 / v.capacity(r),
            By::Tokens => v.outstanding_tokens(r) as f64 / v.capacity(r),
        }
    }

    pub(crate) fn least(self, v: &FleetView) -> usize {
        match self {
            By::Requests => v.least_outstanding(),
            By::Tokens => v.least_outstanding_tokens(),
        }
    }
}

/// SplitMix64: the hash of consistent hashing and the seed mixer of random routers.
pub(crate) fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}
