//! Last come, first served: the newest waiting request first, stopping at the first that does not fit. A
//! deliberately unfair baseline (under sustained load the oldest requests can wait forever), registered as
//! not starvation-free.

use crate::engine::api::{Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "lifo",
    about: "last come, first served: an unfair baseline",
    params: &[],
    props: Props {
        starvation_free: false,
    },
    build,
};

fn build(_p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(Lifo::default()))
}

#[derive(Default)]
pub struct Lifo {
    stack: Vec<u32>,
}

impl Scheduler for Lifo {
    fn on_arrival(&mut self, req: &Request, _now: Nanos) {
        self.stack.push(req.id);
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        while let Some(&id) = self.stack.last() {
            if !adm.try_admit(id) {
                break;
            }
            self.stack.pop();
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        super::visit_in_order(self.stack.iter().rev().copied(), visit);
    }

    fn waiting(&self) -> usize {
        self.stack.len()
    }
}
