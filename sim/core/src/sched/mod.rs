//! Schedulers pick which waiting requests join the batch (the contract: `engine::api::Scheduler`). One file
//! per scheduler, one line in `REGISTRY`.

mod backfill;
mod fifo;
mod lifo;
pub mod mlq;
mod pack;
mod sjf;
mod slora_abort;
mod slora_pets;

use crate::engine::api::Schedulers;
use crate::registry::Registry;

/// Every scheduler `--scheduler` accepts.
pub const REGISTRY: Registry<Schedulers> = Registry {
    entries: &[
        fifo::ENTRY,
        sjf::ENTRY,
        mlq::ENTRY,
        mlq::STATIC,
        lifo::ENTRY,
        pack::ENTRY,
        backfill::ENTRY,
        slora_abort::ENTRY,
        slora_pets::ENTRY,
    ],
};

/// `Scheduler::peek` over `ids` in the order given, stopping where `visit` says.
pub fn visit_in_order(ids: impl IntoIterator<Item = u32>, visit: &mut dyn FnMut(u32) -> bool) {
    for id in ids {
        if !visit(id) {
            break;
        }
    }
}
