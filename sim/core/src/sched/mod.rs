//! Schedulers pick which waiting requests join the batch. One file per scheduler, one line in `REGISTRY`.

mod fifo;
mod mlq;
mod sjf;

use crate::engine::Admission;
use crate::error::{Error, Result};
use crate::policy::PolicyCtx;
use crate::spec::Spec;
use crate::time::Nanos;
use crate::workload::Request;

/// The engine calls a scheduler at these points; it never reorders or drops requests itself.
///
/// Guarantees the engine gives a scheduler:
/// - `on_arrival` is called once per request that was not rejected, in arrival order (ties: trace order);
/// - `select` is called only at S-LoRA merge points (empty batch, or every `max_wait_tokens` decode steps);
///   every request the scheduler passes to `Admission::try_admit` that returns true is admitted and must be
///   removed from the scheduler's queue; a request refused stays queued;
/// - `on_finish` is called once per admitted request when its last token is out;
/// - a request the scheduler squashes with `Admission::squash` loses its progress and is handed back: the
///   scheduler must queue it again itself (it gets no second `on_arrival`).
pub trait Scheduler {
    /// The spec with every parameter's value, e.g. `fifo`.
    fn describe(&self) -> String;
    fn on_arrival(&mut self, req: &Request, now: Nanos);
    /// Offers waiting requests to `adm` in the scheduler's order.
    fn select(&mut self, adm: &mut Admission<'_>);
    /// Visits waiting requests in the order `select` would offer them, until `visit` returns false
    /// (used to prefetch the adapters of the next batch).
    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool);
    fn on_finish(&mut self, _req: &Request, _now: Nanos) {}
    /// Number of waiting requests.
    fn waiting(&self) -> usize;
}

pub struct Entry {
    pub name: &'static str,
    pub about: &'static str,
    pub params: &'static [(&'static str, &'static str)],
    pub build: fn(Spec, &PolicyCtx) -> Result<Box<dyn Scheduler>>,
}

/// Every scheduler `--scheduler` accepts.
pub const REGISTRY: &[Entry] = &[fifo::ENTRY, sjf::ENTRY, mlq::ENTRY, mlq::STATIC];

pub fn build(spec: &str, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let spec = Spec::parse(spec)?;
    match REGISTRY.iter().find(|e| e.name == spec.name) {
        Some(e) => (e.build)(spec, ctx),
        None => {
            let names: Vec<_> = REGISTRY.iter().map(|e| e.name).collect();
            Err(Error::msg(format!(
                "unknown scheduler '{}'; valid: {}",
                spec.name,
                names.join(", ")
            )))
        }
    }
}
