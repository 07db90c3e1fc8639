//! Least recently used: evict the idle adapter whose last use (admission or load) is oldest.

use super::{CachePolicy, CacheView, Entry};
use crate::error::Result;
use crate::policy::PolicyCtx;
use crate::spec::Spec;
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry = Entry {
    name: "lru",
    about: "keep idle adapters; evict the least recently used",
    params: &[],
    build,
};

fn build(spec: Spec, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    spec.finish(&[])?;
    Ok(Box::new(Lru {
        last: vec![0; ctx.workload.adapters.len()],
        tick: 0,
    }))
}

/// Uses are ordered by a counter, not the clock, so uses at the same instant still have an order.
pub struct Lru {
    last: Vec<u64>,
    tick: u64,
}

impl Lru {
    fn touch(&mut self, a: u32) {
        self.tick += 1;
        self.last[a as usize] = self.tick;
    }
}

impl CachePolicy for Lru {
    fn describe(&self) -> String {
        "lru".into()
    }

    fn on_admit(&mut self, req: &Request, _now: Nanos) {
        self.touch(req.adapter);
    }

    fn on_load(&mut self, a: u32, _now: Nanos) {
        self.touch(a);
    }

    fn victim(&mut self, idle: &[u32], _view: &CacheView<'_>) -> u32 {
        *idle
            .iter()
            .min_by_key(|&&a| (self.last[a as usize], a))
            .expect("non-empty")
    }
}
