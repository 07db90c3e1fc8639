//! S-LoRA: no cache. An adapter is freed as soon as no running request uses it (unless prefetched for the
//! next batch), so every later request for it loads it again.

use crate::engine::api::{CachePolicy, CacheView, Caches, PolicyCtx};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};

pub const ENTRY: Entry<Caches> = Entry {
    name: "none",
    about: "free adapters when unused (S-LoRA)",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    Ok(Box::new(NoCache))
}

pub struct NoCache;

impl CachePolicy for NoCache {
    fn keeps_idle(&self) -> bool {
        false
    }

    /// Only prefetched adapters are ever idle here; drop the lowest id (any choice is S-LoRA-faithful).
    fn victim(&mut self, idle: &[u32], _view: &CacheView<'_>) -> u32 {
        idle.iter().copied().min().expect("non-empty")
    }
}
