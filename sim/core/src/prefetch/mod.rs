//! Prefetchers name adapters to load ahead into free memory after each merge (the contract:
//! `engine::api::Prefetcher`). One file per prefetcher, one line in `REGISTRY`.

mod histogram;
mod none;
mod queued;
mod slora;

use crate::engine::api::{PrefetchView, Prefetchers};
use crate::registry::Registry;

/// Every prefetcher `--prefetch` accepts.
pub const REGISTRY: Registry<Prefetchers> = Registry {
    entries: &[none::ENTRY, queued::ENTRY, histogram::ENTRY, slora::ENTRY],
};

/// Appends the adapters of the first `window` waiting requests, in the scheduler's order (S-LoRA's next
/// batch), skipping base-model requests and duplicates.
pub(crate) fn next_batch(view: &PrefetchView<'_>, window: u32, want: &mut Vec<u32>) {
    let mut left = window;
    if left == 0 {
        return;
    }
    let w = view.workload;
    view.scheduler.peek(&mut |id| {
        let a = w.requests[id as usize].adapter;
        if a != crate::workload::NO_ADAPTER && !want.contains(&a) {
            want.push(a);
        }
        left -= 1;
        left > 0
    });
}
