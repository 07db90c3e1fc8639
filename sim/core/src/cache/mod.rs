//! Cache policies decide which idle adapters stay resident and which go when memory is needed.
//! One file per policy, one line in `REGISTRY`.

mod belady;
mod chameleon;
mod gdsf;
mod lfu;
mod lru;
mod none;

use crate::engine::AdapterState;
use crate::error::{Error, Result};
use crate::policy::PolicyCtx;
use crate::spec::Spec;
use crate::time::Nanos;
use crate::workload::{Request, Workload};

/// What a policy may look at when choosing a victim.
pub struct CacheView<'a> {
    pub now: Nanos,
    pub workload: &'a Workload,
    /// Per adapter: residency, requests holding it, requests waiting for it.
    pub adapters: &'a [AdapterState],
}

/// Guarantees the engine gives a cache policy:
/// - an adapter in use by an admitted request, or being loaded, is never offered as a victim;
/// - `victim` is called only with a non-empty list of idle resident adapters, and the one returned is evicted;
/// - when `keeps_idle` is false, an adapter is freed as soon as no admitted request uses it and the
///   next-batch prefetch does not want it (S-LoRA).
pub trait CachePolicy {
    /// The spec with every parameter's value, e.g. `none`.
    fn describe(&self) -> String;
    /// Whether idle adapters stay resident until memory is needed.
    fn keeps_idle(&self) -> bool {
        true
    }
    /// A request for an adapter arrived (requests without an adapter are not reported).
    fn on_arrival(&mut self, _req: &Request, _now: Nanos) {}
    /// A request using an adapter was admitted (it uses the adapter from now on).
    fn on_admit(&mut self, _req: &Request, _now: Nanos) {}
    fn on_load(&mut self, _adapter: u32, _now: Nanos) {}
    fn on_evict(&mut self, _adapter: u32, _now: Nanos) {}
    /// Picks one of `idle` (non-empty) to evict.
    fn victim(&mut self, idle: &[u32], view: &CacheView<'_>) -> u32;
}

pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    pub params: &'static [(&'static str, &'static str)],
    pub build: fn(Spec, &PolicyCtx) -> Result<Box<dyn CachePolicy>>,
}

/// Every cache policy `--cache` accepts.
pub const REGISTRY: &[Entry] = &[
    none::ENTRY,
    lru::ENTRY,
    lfu::ENTRY,
    gdsf::ENTRY,
    chameleon::ENTRY,
    chameleon::FAIRSHARE,
    belady::ENTRY,
];

pub fn build(spec: &str, ctx: &PolicyCtx) -> Result<Box<dyn CachePolicy>> {
    let spec = Spec::parse(spec)?;
    match REGISTRY.iter().find(|e| e.name == spec.name) {
        Some(e) => (e.build)(spec, ctx),
        None => {
            let names: Vec<_> = REGISTRY.iter().map(|e| e.name).collect();
            Err(Error::msg(format!(
                "unknown cache policy '{}'; valid: {}",
                spec.name,
                names.join(", ")
            )))
        }
    }
}
