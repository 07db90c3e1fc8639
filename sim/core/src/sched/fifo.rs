//! S-LoRA's scheduler: strict arrival order, stops at the first request that does not fit.

use std::collections::VecDeque;

use super::{Entry, Scheduler};
use crate::engine::Admission;
use crate::error::Result;
use crate::policy::PolicyCtx;
use crate::spec::Spec;
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry = Entry {
    name: "fifo",
    about: "first come, first served; head-of-line blocking (S-LoRA)",
    params: &[],
    build,
};

fn build(spec: Spec, _ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    spec.finish(&[])?;
    Ok(Box::new(Fifo::default()))
}

#[derive(Default)]
pub struct Fifo {
    queue: VecDeque<u32>,
}

impl Scheduler for Fifo {
    fn describe(&self) -> String {
        "fifo".into()
    }

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
        for &id in &self.queue {
            if !visit(id) {
                break;
            }
        }
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }
}
