//! Cache policies decide which idle adapters stay resident and which go when memory is needed (the
//! contract: `engine::api::CachePolicy`). One file per policy, one line in `REGISTRY`.

mod belady;
mod chameleon;
mod gdsf;
mod lfu;
mod lru;
mod none;

use crate::engine::api::Caches;
use crate::registry::Registry;

/// Every cache policy `--cache` accepts.
pub const REGISTRY: Registry<Caches> = Registry {
    entries: &[
        none::ENTRY,
        lru::ENTRY,
        lfu::ENTRY,
        gdsf::ENTRY,
        chameleon::ENTRY,
        chameleon::FAIRSHARE,
        belady::ENTRY,
    ],
};
