//! S-LoRA's next-batch prefetch: the adapters of the next `window` waiting requests.

use crate::engine::api::{PolicyCtx, PrefetchView, Prefetcher, Prefetchers};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};

pub const ENTRY: Entry<Prefetchers> = Entry {
    name: "queued",
    about: "adapters of the next `window` waiting requests (S-LoRA's next batch)",
    params: &[Param::new("window", "16", "waiting requests looked at")],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Prefetcher>> {
    Ok(Box::new(Queued {
        window: p.get("window")?,
    }))
}

struct Queued {
    window: u32,
}

impl Prefetcher for Queued {
    fn wanted(&mut self, view: &PrefetchView<'_>, want: &mut Vec<u32>) {
        super::next_batch(view, self.window, want);
    }
}
