//! Adapter-load points: host-to-device copies of an adapter's size on the copy stream, per layer (8 copies
//! per layer, as S-LoRA) or as one contiguous copy, from pinned or pageable memory, alone or while GEMMs
//! run on the compute stream. A bandwidth and latency measurement: the copies land in a scratch buffer,
//! not in the decoder's adapter region. NOT RUN ON A GPU YET.

use cudarc::driver::{CudaEvent, CudaSlice, PinnedHostSlice};
use kernels::decoder::gpu::GpuOps;
use kernels::decoder::{Decoder, Ops};
use sim_core::cost::LoadMethod;
use sim_core::model::ModelSpec;
use sim_core::time::Nanos;

use super::target::{drv, events};
use crate::{Result, gpu_err};

/// Tokens of the concurrent compute: the MLP up-projection of 4096 tokens, repeated to outlast the copy.
const GEMM_TOKENS: usize = 4096;

pub struct LoadBench {
    pinned: PinnedHostSlice<u16>,
    /// Non-zero so the pages are really backed (an untouched zero allocation copies from one shared page).
    pageable: Vec<u16>,
    dst: CudaSlice<u16>,
    start: CudaEvent,
    end: CudaEvent,
    /// Device time of one concurrent GEMM.
    gemm_ns: u64,
}

/// One concurrent GEMM on the compute stream (activations and the first layer's gate/up weights).
fn gemm_once(d: &mut Decoder<GpuOps>) -> kernels::Result<()> {
    let s = d.shape;
    d.ops.gemm(
        &d.work.xn,
        &d.w.layers[0].w_gate_up,
        &mut d.work.gu,
        GEMM_TOKENS.min(crate::measure::MAX_TOKENS as usize),
        2 * s.intermediate,
        s.hidden,
    )
}

impl LoadBench {
    /// Buffers for adapters up to `max_rank`; times the concurrent GEMM once (1 warm-up, median of 3).
    pub fn new(d: &mut Decoder<GpuOps>, m: &ModelSpec, max_rank: Option<u32>) -> Result<LoadBench> {
        let n_max = (m.adapter_bytes(max_rank.unwrap_or(1)) / m.dtype_bytes) as usize;
        // SAFETY: plain page-locked allocation (no write-combining: S-LoRA's host copies are ordinary
        // pinned tensors); initialised right below before any read.
        let mut pinned = unsafe { d.ops.ctx.alloc_pinned_with_flags::<u16>(n_max.max(1), 0) }
            .map_err(drv("pinned host memory"))?;
        pinned
            .as_mut_slice()
            .map_err(drv("pinned host memory"))?
            .fill(0x3c00);
        let pageable: Vec<u16> = (0..n_max).map(|j| j as u16).collect();
        let dst = d.ops.alloc(n_max).map_err(gpu_err)?;
        let (start, end) = events(&d.ops.ctx)?;
        let s = d.ops.stream.clone();
        gemm_once(d).map_err(gpu_err)?;
        let mut times = Vec::new();
        for _ in 0..3 {
            start.record(&s).map_err(drv("event record"))?;
            gemm_once(d).map_err(gpu_err)?;
            end.record(&s).map_err(drv("event record"))?;
            end.synchronize().map_err(drv("kernel execution"))?;
            times.push(start.elapsed_ms(&end).map_err(drv("event time"))? as f64 * 1e6);
        }
        let gemm_ns = sim_core::metrics::median(&mut times)
            .unwrap_or(1.0)
            .max(1.0) as u64;
        Ok(LoadBench {
            pinned,
            pageable,
            dst,
            start,
            end,
            gemm_ns,
        })
    }

    /// One copy of an adapter of `bytes` (in the engine's model) by `method`, timed by events on the copy
    /// stream, with enough GEMMs queued on the compute stream to cover it when `with_compute`.
    pub fn measure(
        &mut self,
        d: &mut Decoder<GpuOps>,
        m: &ModelSpec,
        bytes: u64,
        method: LoadMethod,
        with_compute: bool,
    ) -> Result<Nanos> {
        let n = (bytes / m.dtype_bytes) as usize;
        let host: &[u16] = match method {
            LoadMethod::PerLayerPinned | LoadMethod::ContiguousPinned => {
                self.pinned.as_slice().map_err(drv("pinned host memory"))?
            }
            _ => &self.pageable,
        };
        if n == 0 || n > host.len() || n > self.dst.len() {
            return Err(crate::Error::internal(format!(
                "an adapter of {bytes} bytes does not fit the load buffers"
            )));
        }
        let per_layer = matches!(
            method,
            LoadMethod::PerLayerPinned | LoadMethod::PerLayerPageable
        );
        // S-LoRA copies A and B of q, k, v, o separately for every layer: 8 x layers copies.
        let chunk = if per_layer {
            (n / (8 * m.layers as usize)).max(1)
        } else {
            n
        };
        // Enough GEMMs to cover twice a pessimistic estimate of the copy (8 GB/s, 20 us per copy).
        let est_ns = bytes as f64 / 8.0 + n.div_ceil(chunk) as f64 * 20e3;
        let gemms = if with_compute {
            (2.0 * est_ns / self.gemm_ns as f64).ceil() as usize + 1
        } else {
            0
        };
        for _ in 0..gemms {
            gemm_once(d).map_err(gpu_err)?;
        }
        let copy = d.ops.copy.clone();
        self.start.record(&copy).map_err(drv("event record"))?;
        for c in (0..n).step_by(chunk) {
            let e = (c + chunk).min(n);
            copy.memcpy_htod(&host[c..e], &mut self.dst.slice_mut(c..e))
                .map_err(drv("host-to-device copy"))?;
        }
        self.end.record(&copy).map_err(drv("event record"))?;
        self.end.synchronize().map_err(drv("host-to-device copy"))?;
        d.ops.stream.synchronize().map_err(drv("compute stream"))?;
        let ms = self
            .start
            .elapsed_ms(&self.end)
            .map_err(drv("event time"))?;
        Ok((ms as f64 * 1e6).round().max(1.0) as Nanos)
    }
}
