//! S-LoRA's scheduler: strict arrival order, stops at the first request that does not fit.

use std::collections::VecDeque;

use crate::engine::api::{Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "fifo",
    about: "first come, first served; head-of-line blocking (S-LoRA)",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    Ok(Box::new(Fifo::default()))
}

#[derive(Default)]
pub struct Fifo {
    queue: VecDeque<u32>,
}

impl Scheduler for Fifo {
    fn on_arrival(&mut self, req: &Request, _now: Nanos) {
        self.queue.push_back(req.id);
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        while let Some(&id) = self.queue.front() {
            if !adm.try_admit(id) {
                break;
            }
            self.queue.pop_front();
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        super::visit_in_order(self.queue.iter().copied(), visit);
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }
}
