//! What times the engine's work. A simulated run asks a cost model (`Simulated`); a real run executes each
//! iteration and copy on an `Executor` and measures it (`Timed`). The engine sees only `Clock`, and tells
//! it, in order, of everything that changes what the GPU holds: loads, iterations, finished or squashed
//! requests, evictions.

use std::time::Instant;

use crate::cost::{BatchShape, CostModel, LoadShape};
use crate::error::Result;
use crate::time::Nanos;
use crate::workload::Adapter;

/// One sequence of an iteration, for clocks that execute batches for real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seq {
    pub request: u32,
    /// Tokens this iteration computes for it: its prompt in a prefill, 1 in a decode.
    pub new_tokens: u32,
    /// Tokens already in its KV cache.
    pub context: u32,
    /// `workload::NO_ADAPTER` for the base model.
    pub adapter: u32,
    pub rank: u32,
}

pub trait Clock {
    /// One line naming the cost model or backend and its assumptions; printed in every output.
    fn describe(&self) -> String;
    /// Cost estimates for policies (service times, load times). A real clock answers with estimates too.
    fn estimates(&self) -> &dyn CostModel;
    /// Called once before the run with every adapter of the workload (a real clock puts them in host
    /// memory, outside any timing, as S-LoRA holds every adapter on the host).
    fn prepare(&mut self, _adapters: &[Adapter]) -> Result<()> {
        Ok(())
    }
    /// Duration of one iteration (the engine clamps it to at least 1 ns). `seqs` lists its sequences; a
    /// simulated clock need not look at them (the iterator is lazy, so that costs nothing).
    fn iteration(
        &mut self,
        shape: &BatchShape,
        seqs: &mut dyn Iterator<Item = Seq>,
    ) -> Result<Nanos>;
    /// Duration of copying `adapter` (`bytes` long) to the GPU the way `load` describes.
    fn load(&mut self, adapter: u32, bytes: u64, load: &LoadShape) -> Result<Nanos>;
    /// Host time of issuing that load's copy calls, which holds up the host loop when it issues them
    /// between iterations (S-LoRA's prefetch). A real clock's loads are timed whole: 0.
    fn load_issue(&self, _load: &LoadShape) -> Nanos {
        0
    }
    /// A request left the batch (finished or squashed): its KV cache can be freed.
    fn release(&mut self, _request: u32) {}
    /// An adapter was evicted from GPU memory.
    fn evict(&mut self, _adapter: u32) {}
}

/// The simulated clock: every duration from a cost model.
pub struct Simulated<'a>(pub &'a dyn CostModel);

impl Clock for Simulated<'_> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn estimates(&self) -> &dyn CostModel {
        self.0
    }
    fn iteration(&mut self, shape: &BatchShape, _: &mut dyn Iterator<Item = Seq>) -> Result<Nanos> {
        Ok(self.0.iteration(shape))
    }
    fn load(&mut self, _adapter: u32, _bytes: u64, load: &LoadShape) -> Result<Nanos> {
        Ok(self.0.adapter_load(load))
    }
    fn load_issue(&self, load: &LoadShape) -> Nanos {
        self.0.adapter_load_host(load)
    }
}

/// A model that runs for real (`sim real`): it executes what the engine asks, synchronously, and owns its
/// memory (KV cache, adapter copies). `Timed` turns it into a clock.
pub trait Executor {
    fn describe(&self) -> String;
    /// Estimates for policies (e.g. from a short timed warm-up).
    fn estimates(&self) -> &dyn CostModel;
    /// Puts every adapter of the workload in host memory, before the run and outside any timing.
    fn prepare(&mut self, _adapters: &[Adapter]) -> Result<()> {
        Ok(())
    }
    /// Runs one iteration of `seqs` and returns when it has finished; an error (out of memory, a failed
    /// launch) stops the run cleanly.
    fn run_iteration(&mut self, seqs: &mut dyn Iterator<Item = Seq>) -> Result<()>;
    /// Copies `adapter` (`bytes` long in the engine's model) to the device and returns when it is there.
    fn load(&mut self, adapter: u32, bytes: u64) -> Result<()>;
    fn release(&mut self, request: u32);
    fn evict(&mut self, adapter: u32);
}

/// An executor timed by the wall clock: each iteration and each load takes as long as it really took.
pub struct Timed<E>(pub E);

fn elapsed(t: Instant) -> Nanos {
    (t.elapsed().as_nanos() as Nanos).max(1)
}

impl<E: Executor> Clock for Timed<E> {
    fn describe(&self) -> String {
        self.0.describe()
    }
    fn estimates(&self) -> &dyn CostModel {
        self.0.estimates()
    }
    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
        self.0.prepare(adapters)
    }
    fn iteration(
        &mut self,
        _shape: &BatchShape,
        seqs: &mut dyn Iterator<Item = Seq>,
    ) -> Result<Nanos> {
        let t = Instant::now();
        self.0.run_iteration(seqs)?;
        Ok(elapsed(t))
    }
    fn load(&mut self, adapter: u32, bytes: u64, _load: &LoadShape) -> Result<Nanos> {
        let t = Instant::now();
        self.0.load(adapter, bytes)?;
        Ok(elapsed(t))
    }
    fn release(&mut self, request: u32) {
        self.0.release(request)
    }
    fn evict(&mut self, adapter: u32) {
        self.0.evict(adapter)
    }
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn estimates(&self) -> &dyn CostModel {
        (**self).estimates()
    }
    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
        (**self).prepare(adapters)
    }
    fn run_iteration(&mut self, seqs: &mut dyn Iterator<Item = Seq>) -> Result<()> {
        (**self).run_iteration(seqs)
    }
    fn load(&mut self, adapter: u32, bytes: u64) -> Result<()> {
        (**self).load(adapter, bytes)
    }
    fn release(&mut self, request: u32) {
        (**self).release(request)
    }
    fn evict(&mut self, adapter: u32) {
        (**self).evict(adapter)
    }
}
