//! S-LoRA: no cache. An adapter is freed as soon as no running request uses it (unless prefetched for the
//! next batch), so every later request for it loads it again.

use super::{CachePolicy, CacheView, Entry};
use crate::error::Result;
use crate::policy::PolicyCtx;
use crate::spec::Spec;

pub const ENTRY: Entry = Entry {
    name: "none",
    about: "free adapters when unused (S-LoRA)",
    params: &[],
    build,
};

fn build(spec: Spec, _ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    spec.finish(&[])?;
    Ok(Box::new(NoCache))
}

pub struct NoCache;

impl CachePolicy for NoCache {
    fn describe(&self) -> String {
        "none".into()
    }

    fn keeps_idle(&self) -> bool {
        false
    }

    /// Only prefetched adapters are ever idle here; drop the lowest id (any choice is S-LoRA-faithful).
    fn victim(&mut self, idle: &[u32], _view: &CacheView<'_>) -> u32 {
        idle.iter().copied().min().expect("non-empty")
    }
}
