//! The GPU as a calibration target: the kernels crate's decoder (`kernels::decoder`, the same forward pass
//! `sim real --backend cuda` runs) at full model size with random weights, each measurement timed with CUDA
//! events on the compute stream around the device work only (index uploads and the host's bookkeeping stay
//! outside, as they did when this module had its own forward pass). NOT RUN ON A GPU YET: written and
//! compiled on a machine without one.
//!
//! - iterations: one forward pass (all layers, final norm, LM head on each sequence's last token) over a KV
//!   cache paged per token, as S-LoRA does (page size 1); the residual stream starts from fresh random values
//!   each time (it grows by O(1) per layer and pass; a fresh start keeps it far from fp16 overflow);
//! - decode contexts are given without a prefill (`fill`): the cost does not depend on the cached values;
//! - LoRA: the pass's shrink + expand of q, k, v, o of every layer alone (`Decoder::run_lora`), segmented
//!   kernels when tokens come in runs of at least `SEGMENTED_MIN_TOKENS` per adapter, gathered ones otherwise;
//! - adapter loads: see `loads`.

use cudarc::driver::sys::CUevent_flags;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaEvent};
use indicatif::ProgressBar;
use kernels::decoder::gpu::{GpuOps, random_decoder};
use kernels::decoder::{Decoder, Ops, Step};
use sim_core::calibrate::{MAX_TOKENS, Plan, Target};
use sim_core::cost::LoadMethod;
use sim_core::engine::Seq;
use sim_core::model::ModelSpec;
use sim_core::time::Nanos;
use sim_core::workload::{Adapter, NO_ADAPTER};

use super::loads::LoadBench;
use crate::{Error, Result, gpu_err};

/// A pair of events for timing a stretch of one stream.
pub(super) fn events(ctx: &Arc<CudaContext>) -> Result<(CudaEvent, CudaEvent)> {
    let ev = || {
        ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv("event"))
    };
    Ok((ev()?, ev()?))
}

pub(super) fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {e}"))
}

/// Token slots of KV cache a plan needs at once (the loop never holds more than one point's sequences
/// beyond this): its largest prefill, LoRA batch or decode point, and the loop's 16-token warm-up.
pub fn kv_slots(plan: &Plan) -> u64 {
    let prefill = plan.prefill.iter().map(|p| p.0);
    let lora = plan.lora.iter().map(|l| l.0);
    let decode = plan.decode.iter().map(|&(b, c)| plan.decode_need(b, c));
    prefill.chain(lora).chain(decode).fold(16, u64::max)
}

pub struct GpuTarget {
    pub(super) dec: Decoder<GpuOps>,
    m: &'static ModelSpec,
    start: CudaEvent,
    end: CudaEvent,
    loads: LoadBench,
    bar: ProgressBar,
}

impl GpuTarget {
    /// Builds the decoder for `plan` (KV cache, adapter region and activations sized for its points) and
    /// fills what measurements read with random values: zeros would draw less power than real data.
    pub fn new(
        ops: GpuOps,
        m: &'static ModelSpec,
        plan: &Plan,
        bar: ProgressBar,
    ) -> Result<GpuTarget> {
        let shape = kernels::decoder::Shape::from_dims(m.dims());
        let h = shape.hidden;
        // Strided store: each adapter takes rank x 2h elements of every (layer, projection) sub-region.
        let region = (2 * h * plan.lora_rank_total() as usize).max(2 * h);
        let cap = kv_slots(plan) as usize;
        let mut dec = random_decoder(ops, shape, 0, 1, cap, region, false).map_err(gpu_err)?;
        dec.reserve(MAX_TOKENS as usize, plan.max_seqs() as usize)
            .map_err(gpu_err)?;
        let max_rank = plan
            .lora
            .iter()
            .flat_map(|p| p.1.iter())
            .fold(128, |a, &r| a.max(r as usize));
        dec.ops
            .reserve_lora(MAX_TOKENS as usize * max_rank)
            .map_err(gpu_err)?;
        for l in 0..shape.layers {
            let seed = 4 + 2 * l as u32;
            dec.ops
                .fill_random(&mut dec.kv.k[l], seed, 0.02)
                .map_err(gpu_err)?;
            dec.ops
                .fill_random(&mut dec.kv.v[l], seed + 1, 0.02)
                .map_err(gpu_err)?;
        }
        dec.ops
            .fill_random(&mut dec.store.pool, 6, 0.02)
            .map_err(gpu_err)?;
        dec.ops
            .fill_random(&mut dec.work.xn, 3, 0.02)
            .map_err(gpu_err)?;
        let (start, end) = events(&dec.ops.ctx)?;
        let loads = LoadBench::new(&mut dec, m, plan.load_ranks().into_iter().max())?;
        dec.ops
            .stream
            .synchronize()
            .map_err(drv("initialising the model"))?;
        Ok(GpuTarget {
            dec,
            m,
            start,
            end,
            loads,
            bar,
        })
    }

    /// Device time of `f`'s work on the compute stream, by CUDA events.
    fn timed(
        &mut self,
        f: impl FnOnce(&mut Decoder<GpuOps>) -> kernels::Result<()>,
    ) -> Result<Nanos> {
        let s = self.dec.ops.stream.clone();
        self.start.record(&s).map_err(drv("event record"))?;
        f(&mut self.dec).map_err(gpu_err)?;
        self.end.record(&s).map_err(drv("event record"))?;
        self.end.synchronize().map_err(drv("kernel execution"))?;
        let ms = self
            .start
            .elapsed_ms(&self.end)
            .map_err(drv("event time"))?;
        Ok((ms as f64 * 1e6).round().max(1.0) as Nanos)
    }

    /// Decoder steps for the loop's sequences: token values do not matter (nothing is embedded).
    fn steps(&mut self, seqs: &[Seq]) -> Vec<Step> {
        seqs.iter()
            .map(|s| {
                let n = if s.context == 0 {
                    self.dec.release(s.request);
                    s.new_tokens as usize
                } else {
                    1
                };
                Step {
                    request: s.request,
                    tokens: vec![0; n],
                    adapter: (s.adapter != NO_ADAPTER).then_some(s.adapter),
                }
            })
            .collect()
    }
}

impl Target for GpuTarget {
    /// Nothing to do: LoRA adapters are placed in the adapter region, which holds random values already,
    /// and load points copy from the bench's own host buffers.
    fn prepare(&mut self, _adapters: &[Adapter]) -> Result<()> {
        Ok(())
    }

    fn iteration(&mut self, seqs: &[Seq]) -> Result<Nanos> {
        let steps = self.steps(seqs);
        let lay = self.dec.layout(&steps).map_err(gpu_err)?;
        let meta = self.dec.ops.upload(&lay).map_err(gpu_err)?;
        let n = lay.tokens.len() * self.dec.shape.hidden;
        let d = &mut self.dec;
        let Some(mut x) = d.work.x.try_slice_mut(..n) else {
            return Err(Error::internal(format!(
                "an iteration of {} tokens exceeds the activation buffers",
                lay.tokens.len()
            )));
        };
        d.ops
            .kernels
            .fill_uniform(&d.ops.stream, &mut x, 7, 1.0)
            .map_err(gpu_err)?;
        let ns = self.timed(|d| d.run(&lay, &meta))?;
        self.dec.advance(&lay);
        Ok(ns)
    }

    fn fill(&mut self, seqs: &[Seq]) -> Result<()> {
        for s in seqs {
            self.dec
                .skip_prefill(s.request, s.new_tokens as usize)
                .map_err(gpu_err)?;
        }
        Ok(())
    }

    fn lora(&mut self, seqs: &[Seq]) -> Result<Nanos> {
        let steps = self.steps(seqs);
        let lay = self.dec.layout(&steps).map_err(gpu_err)?;
        let meta = self.dec.ops.upload(&lay).map_err(gpu_err)?;
        self.timed(|d| d.run_lora(&lay, &meta))
    }

    /// Places an adapter in the region (no copy: its values only need to be finite).
    fn load(&mut self, adapter: u32, bytes: u64) -> Result<Nanos> {
        let rank = (bytes / self.m.adapter_bytes(1)) as u32;
        let t = std::time::Instant::now();
        self.dec.place_adapter(adapter, rank).map_err(gpu_err)?;
        Ok((t.elapsed().as_nanos() as Nanos).max(1))
    }

    fn measure_load(
        &mut self,
        _adapter: u32,
        bytes: u64,
        method: LoadMethod,
        with_compute: bool,
    ) -> Result<Nanos> {
        self.loads
            .measure(&mut self.dec, self.m, bytes, method, with_compute)
    }

    fn release(&mut self, request: u32) {
        self.dec.release(request);
    }

    fn evict(&mut self, adapter: u32) {
        self.dec.evict_adapter(adapter);
    }

    fn progress(&mut self, what: &str) {
        self.bar.set_message(what.to_string());
        self.bar.inc(1);
    }
}
