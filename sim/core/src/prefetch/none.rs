//! No prefetch: adapters are loaded only when a request that needs them is admitted.

use crate::engine::api::{PolicyCtx, PrefetchView, Prefetcher, Prefetchers};
use crate::error::Result;
use crate::registry::{Entry, Params, Props};

pub const ENTRY: Entry<Prefetchers> = Entry {
    name: "none",
    about: "no prefetch: load an adapter when its request is admitted",
    params: &[],
    props: Props::DEFAULT,
    build,
};

fn build(_p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Prefetcher>> {
    Ok(Box::new(NoPrefetch))
}

struct NoPrefetch;

impl Prefetcher for NoPrefetch {
    fn wanted(&mut self, _view: &PrefetchView<'_>, _want: &mut Vec<u32>) {}
}
