//! Least recently used: evict the idle adapter whose last use (admission or load) is oldest.

use crate::engine::api::{CachePolicy, CacheView, Caches, PolicyCtx};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Caches> = Entry {
    name: "lru",
    about: "keep idle adapters; evict the least recently used",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
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
