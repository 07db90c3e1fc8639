//! Replicas in turn. Reads nothing.

use super::{Router, RouterCtx, Routers};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};
use crate::workload::Request;

pub const ENTRY: Entry<Routers> = Entry {
    name: "round-robin",
    about: "replicas in turn (reads no state)",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, ctx: &RouterCtx) -> Result<Box<dyn Router>> {
    Ok(Box::new(RoundRobin {
        next: 0,
        n: ctx.replicas,
    }))
}

struct RoundRobin {
    next: usize,
    n: usize,
}

impl Router for RoundRobin {
    fn route(&mut self, _req: &Request, _view: &super::FleetView) -> usize {
        let r = self.next;
        self.next = (self.next + 1) % self.n;
        r
    }
    fn reads(&self) -> super::Reads {
        super::Reads::Nothing
    }
}
