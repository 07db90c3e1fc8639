//! Power of two choices: two distinct replicas at random, the less loaded of them (the first drawn among
//! equals). Reads only those two replicas' load (`Reads::Candidates`): only they are advanced to the
//! arrival instant.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::{By, Router, RouterCtx, Routers, mix};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::workload::Request;

pub const ENTRY: Entry<Routers> = Entry {
    name: "power-of-two",
    about: "two random replicas, the less loaded one",
    params: &[
        Param::new("by", "requests", "requests | tokens"),
        Param::new("seed", "0", "mixed with the run's seed"),
    ],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &RouterCtx) -> Result<Box<dyn Router>> {
    let by = By::parse(p)?;
    let seed: u64 = p.get("seed")?;
    Ok(Box::new(PowerOfTwo {
        by,
        rng: StdRng::seed_from_u64(mix(ctx.seed ^ mix(seed ^ 0x7032_6368))),
        n: ctx.replicas,
        drawn: (0, 0),
    }))
}

struct PowerOfTwo {
    by: By,
    rng: StdRng,
    n: usize,
    /// The two replicas drawn for the request being routed.
    drawn: (usize, usize),
}

impl Router for PowerOfTwo {
    fn reads(&self) -> super::Reads {
        super::Reads::Candidates
    }

    fn candidates(&mut self, _req: &Request, out: &mut Vec<usize>) {
        if self.n == 1 {
            self.drawn = (0, 0);
        } else {
            let a = self.rng.random_range(0..self.n);
            let mut b = self.rng.random_range(0..self.n - 1);
            if b >= a {
                b += 1;
            }
            self.drawn = (a, b);
        }
        out.extend([self.drawn.0, self.drawn.1]);
    }

    fn route(&mut self, _req: &Request, view: &super::FleetView) -> usize {
        let (a, b) = self.drawn;
        if self.by.load(view, b) < self.by.load(view, a) {
            b
        } else {
            a
        }
    }
}
