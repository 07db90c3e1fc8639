//! Uniformly random replica: Vidur's baseline. Reads nothing.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{Router, RouterCtx, Routers, mix};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::workload::Request;

pub const ENTRY: Entry<Routers> = Entry {
    name: "random",
    about: "uniformly random replica (reads no state)",
    params: &[Param::new("seed", "0", "mixed with the run's seed")],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &RouterCtx) -> Result<Box<dyn Router>> {
    let seed: u64 = p.get("seed")?;
    Ok(Box::new(Random {
        rng: StdRng::seed_from_u64(mix(ctx.seed ^ mix(seed ^ 0x726f_7574_6572))),
        n: ctx.replicas,
    }))
}

struct Random {
    rng: StdRng,
    n: usize,
}

impl Router for Random {
    fn route(&mut self, _req: &Request, _view: &super::FleetView) -> usize {
        self.rng.random_range(0..self.n)
    }
    fn reads(&self) -> super::Reads {
        super::Reads::Nothing
    }
}
