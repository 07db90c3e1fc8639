//! Least frequently used: evict the idle adapter admitted the fewest times (ties: least recently used).

use crate::engine::api::{CachePolicy, CacheView, Caches, PolicyCtx};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Caches> = Entry {
    name: "lfu",
    about: "keep idle adapters; evict the least frequently used (all-time count)",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    let n = ctx.workload.adapters.len();
    Ok(Box::new(Lfu {
        uses: vec![0; n],
        last: vec![0; n],
        tick: 0,
    }))
}

pub struct Lfu {
    uses: Vec<u64>,
    last: Vec<u64>,
    tick: u64,
}

impl CachePolicy for Lfu {
    fn on_admit(&mut self, req: &Request, _now: Nanos) {
        self.tick += 1;
        self.uses[req.adapter as usize] += 1;
        self.last[req.adapter as usize] = self.tick;
    }

    fn victim(&mut self, idle: &[u32], _view: &CacheView<'_>) -> u32 {
        *idle
            .iter()
            .min_by_key(|&&a| (self.uses[a as usize], self.last[a as usize], a))
            .expect("non-empty")
    }
}
