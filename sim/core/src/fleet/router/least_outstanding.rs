//! The replica with the least outstanding work (requests, or prompt + predicted output tokens) per unit of
//! capacity; the lowest index among equals.

use super::{By, Router, RouterCtx, Routers};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::workload::Request;

pub const ENTRY: Entry<Routers> = Entry {
    name: "least-outstanding",
    about: "least outstanding work: requests, or their prompt + predicted output tokens",
    params: &[Param::new("by", "requests", "requests | tokens")],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, _ctx: &RouterCtx) -> Result<Box<dyn Router>> {
    Ok(Box::new(LeastOutstanding { by: By::parse(p)? }))
}

struct LeastOutstanding {
    by: By,
}

impl Router for LeastOutstanding {
    fn route(&mut self, _req: &Request, view: &super::FleetView) -> usize {
        self.by.least(view)
    }
}
