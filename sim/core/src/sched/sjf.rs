//! Shortest predicted job first, with linear aging so nothing starves.
//!
//! Priority = predicted output tokens - `aging` x seconds waited; lowest first. Since every waiting request
//! ages at the same rate, the order is fixed at arrival: by predicted + aging x arrival time. A request
//! predicted P tokens that has waited W seconds is offered before any later arrival once aging x W >= P, so
//! its wait is bounded by P / aging plus the time the requests ahead of it take. Like FIFO, admission stops at
//! the first request that does not fit (no skipping), which keeps the bound.

use std::collections::BTreeSet;

use crate::engine::api::{Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::{Error, Result};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "sjf",
    about: "shortest predicted output first, aged by `aging` tokens per second waited",
    params: &[Param::new(
        "aging",
        "10",
        "tokens of priority gained per second waited",
    )],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let aging: f64 = p.get("aging")?;
    if !(aging >= 0.0 && aging.is_finite()) {
        return Err(Error::msg(format!("sjf: aging must be >= 0, got {aging}")));
    }
    Ok(Box::new(Sjf {
        aging,
        predicted: ctx.predicted_output.to_vec(),
        queue: BTreeSet::new(),
    }))
}

pub struct Sjf {
    aging: f64,
    predicted: Vec<u32>,
    /// (priority key, id): key = predicted x 1e9 + aging x arrival ns, in integer units.
    queue: BTreeSet<(u128, u32)>,
}

impl Sjf {
    fn key(&self, r: &Request) -> (u128, u32) {
        let k = self.predicted[r.id as usize] as f64 * 1e9 + self.aging * r.arrival as f64;
        (k.round() as u128, r.id)
    }
}

impl Scheduler for Sjf {
    fn on_arrival(&mut self, req: &Request, _now: Nanos) {
        self.queue.insert(self.key(req));
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        while let Some(&(k, id)) = self.queue.first() {
            if !adm.try_admit(id) {
                break;
            }
            self.queue.remove(&(k, id));
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        super::visit_in_order(self.queue.iter().map(|&(_, id)| id), visit);
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }
}
