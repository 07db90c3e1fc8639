//! The decoder's operations on an NVIDIA GPU: the NVRTC-compiled kernels and cuBLAS of [`crate::gpu`], on
//! fp16/bf16 buffers (`u16` words). NOT RUN ON A GPU YET: written and compiled on a machine without one;
//! `cargo test -p kernels --features gpu-tests` compares it with [`super::cpu::CpuOps`] where there is one.
//!
//! Every launch is enqueued on one compute stream and nothing here synchronises except [`Ops::read`] (the
//! logits to the host) and adapter copies (timed as a whole, on their own stream). Lengths are checked
//! before any view is taken, so a short buffer is an error rather than a panic.

use std::sync::Arc;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, CudaView, CudaViewMut, DriverError, PinnedHostSlice,
};

use super::batch::{KvCache, Layout};
use super::ops::Ops;
use super::shape::{PROJECTIONS, Shape};
use super::store::{AdapterLayout, AdapterStore};
use super::weights::{Kind, Weights, mix, random};
use super::{Decoder, LORA_SCALE, THETA};
use crate::dtype::DType;
use crate::gpu::{
    DeviceLora, DevicePaging, DeviceSeqs, DeviceSlots, Gemm, Kernels, LoraLayout, LoraStep,
};
use crate::reference::{AdapterSlot, AttnShape};
use crate::{Error, Result};

fn drv(what: &'static str) -> impl Fn(DriverError) -> Error {
    move |e| Error::msg(format!("{what}: {e}"))
}

fn short<T>(what: &str, have: usize, want: usize) -> Result<T> {
    Err(Error::msg(format!(
        "{what}: buffer has {have} elements, needs {want}"
    )))
}

/// The first `n` elements of a device buffer.
fn view<'a, T>(b: &'a CudaSlice<T>, n: usize, what: &str) -> Result<CudaView<'a, T>> {
    match b.try_slice(..n) {
        Some(v) => Ok(v),
        None => short(what, b.len(), n),
    }
}

fn view_mut<'a, T>(b: &'a mut CudaSlice<T>, n: usize, what: &str) -> Result<CudaViewMut<'a, T>> {
    let len = b.len();
    match b.try_slice_mut(..n) {
        Some(v) => Ok(v),
        None => short(what, len, n),
    }
}

fn range_mut<'a, T>(
    b: &'a mut CudaSlice<T>,
    from: usize,
    n: usize,
    what: &str,
) -> Result<CudaViewMut<'a, T>> {
    let len = b.len();
    match b.try_slice_mut(from..from + n) {
        Some(v) => Ok(v),
        None => short(what, len, from + n),
    }
}

/// The GPU operations: a compute stream, a copy stream for adapter loads, the compiled kernels, cuBLAS.
pub struct GpuOps {
    pub ctx: Arc<CudaContext>,
    pub stream: Arc<CudaStream>,
    /// Adapter copies run here, apart from compute (S-LoRA's copy stream).
    pub copy: Arc<CudaStream>,
    pub kernels: Kernels,
    pub gemm: Gemm,
    pub dtype: DType,
    /// LoRA's rank-sized intermediate `[tokens, max_rank]`, fp32.
    lora_v: CudaSlice<f32>,
}

impl GpuOps {
    /// Creates the streams and the cuBLAS handle and compiles every kernel family now, so compilation
    /// never lands inside a timed region. Call `gpu::require_libraries(true, true)` first: cudarc panics
    /// when a library is missing.
    pub fn new(ctx: Arc<CudaContext>, dtype: DType) -> Result<GpuOps> {
        let stream = ctx.new_stream().map_err(drv("creating a stream"))?;
        let copy = ctx.new_stream().map_err(drv("creating the copy stream"))?;
        let kernels = Kernels::new(ctx.clone(), dtype)?;
        kernels.compile_all()?;
        let gemm = Gemm::new(stream.clone(), dtype)?;
        let lora_v = stream
            .alloc_zeros::<f32>(1)
            .map_err(drv("allocating the LoRA buffer"))?;
        Ok(GpuOps {
            ctx,
            stream,
            copy,
            kernels,
            gemm,
            dtype,
            lora_v,
        })
    }

    /// Fills a buffer with uniform values in [-scale, scale) (timing runs need finite non-zero operands:
    /// zeros draw less power and let the GPU clock higher than real weights would).
    pub fn fill_random(&mut self, buf: &mut CudaSlice<u16>, seed: u32, scale: f32) -> Result<()> {
        self.kernels
            .fill_uniform(&self.stream, &mut buf.as_view_mut(), seed, scale)
    }

    /// Sizes LoRA's intermediate for `elems` = tokens x largest rank up front, so the first iteration with
    /// adapters does not allocate it.
    pub fn reserve_lora(&mut self, elems: usize) -> Result<()> {
        if self.lora_v.len() < elems {
            self.lora_v = self
                .stream
                .alloc_zeros::<f32>(elems)
                .map_err(drv("allocating the LoRA buffer"))?;
        }
        Ok(())
    }

    pub fn random(&mut self, n: usize, seed: u32, scale: f32) -> Result<CudaSlice<u16>> {
        let mut b = self.alloc(n)?;
        self.fill_random(&mut b, seed, scale)?;
        Ok(b)
    }

    fn bits(&self, v: &[f32]) -> Vec<u16> {
        v.iter().map(|&x| self.dtype.to_bits(x)).collect()
    }
}

/// A batch's index data on the device.
pub struct GpuMeta {
    tokens: usize,
    pos: CudaSlice<i32>,
    slots: DeviceSlots,
    cache_slots: usize,
    prefill: Option<DeviceSeqs>,
    decode: Option<DevicePaging>,
    /// LoRA metadata per output width (k and v are narrower than q and o under grouped-query attention).
    lora: Vec<(usize, DeviceLora)>,
    region: usize,
    segmented: bool,
    max_rank: usize,
}

impl Ops for GpuOps {
    type Buf = CudaSlice<u16>;
    type Embed = Vec<u16>;
    type HostAdapter = PinnedHostSlice<u16>;
    type Meta = GpuMeta;

    fn alloc(&mut self, n: usize) -> Result<CudaSlice<u16>> {
        // SAFETY: the decoder writes every buffer before reading it: activations by the operation that
        // produces them, KV slots by kv_write before attention reads them, adapter pieces by a copy (or a
        // fill) before LoRA reads them. The driver rejects empty allocations, hence at least one element.
        unsafe { self.stream.alloc::<u16>(n.max(1)) }.map_err(|e| {
            Error::msg(format!(
                "allocating {:.2} GiB on the GPU (out of memory?): {e}",
                (2 * n) as f64 / (1u64 << 30) as f64
            ))
        })
    }

    fn len(buf: &CudaSlice<u16>) -> usize {
        buf.len()
    }

    fn reserve(&mut self, buf: &mut CudaSlice<u16>, n: usize) -> Result<()> {
        if buf.len() < n {
            *buf = self.alloc(n)?;
        }
        Ok(())
    }

    fn grow(&mut self, buf: &mut CudaSlice<u16>, n: usize) -> Result<()> {
        if buf.len() < n {
            return Err(Error::msg(format!(
                "GPU buffers are allocated at full size up front: {} elements, {n} needed",
                buf.len()
            )));
        }
        Ok(())
    }

    fn upload_tensor(&mut self, v: Vec<f32>) -> Result<CudaSlice<u16>> {
        let bits = self.bits(&v);
        self.stream
            .clone_htod(&bits)
            .map_err(drv("uploading weights"))
    }

    fn embed_table(&mut self, v: Vec<f32>) -> Result<Vec<u16>> {
        Ok(self.bits(&v))
    }

    fn host_adapter(&mut self, w: Vec<f32>) -> Result<Box<PinnedHostSlice<u16>>> {
        // SAFETY: page-locked allocation (no write-combining: S-LoRA's host copies are ordinary pinned
        // tensors), written right below before any read.
        let mut p = unsafe { self.ctx.alloc_pinned_with_flags::<u16>(w.len().max(1), 0) }
            .map_err(drv("pinned host memory"))?;
        let dst = p.as_mut_slice().map_err(drv("pinned host memory"))?;
        for (d, &x) in dst.iter_mut().zip(&w) {
            *d = self.dtype.to_bits(x);
        }
        Ok(Box::new(p))
    }

    fn host_len(host: &PinnedHostSlice<u16>) -> usize {
        host.len()
    }

    fn upload(&mut self, lay: &Layout) -> Result<GpuMeta> {
        if !lay.adapters.is_empty() {
            self.reserve_lora(lay.tokens.len() * lay.max_rank)?;
        }
        let s = &self.stream;
        let t = lay.tokens.len();
        let prefill = if lay.prefill_runs.is_empty() {
            None
        } else {
            let lens: Vec<usize> = lay.prefill_runs.iter().map(|r| r.1).collect();
            Some(DeviceSeqs::upload(s, &lens)?)
        };
        let decode = if lay.decode_runs.is_empty() {
            None
        } else {
            Some(DevicePaging::upload(
                s,
                &lay.block_table,
                &lay.ctx_lens,
                lay.paging,
                lay.cache_slots,
            )?)
        };
        let (mut lora, mut region) = (Vec::new(), 0);
        if !lay.adapters.is_empty() {
            let AdapterLayout::Strided { region: r } = lay.adapter_layout else {
                return Err(Error::msg(
                    "the GPU's LoRA kernels need a strided adapter store (one offset table for every projection)",
                ));
            };
            region = r;
            let h = lay.shape.hidden;
            // Offsets inside one (layer, projection) sub-region: the same for every sub-region.
            let slots: Vec<AdapterSlot> = lay
                .adapters
                .iter()
                .map(|&(_, off, rank)| AdapterSlot {
                    a_off: off as u64,
                    b_off: (off + rank as usize * h) as u64,
                    rank,
                })
                .collect();
            let mut widths = vec![h, lay.shape.kv_row()];
            widths.dedup();
            for h_out in widths {
                let meta =
                    DeviceLora::upload(s, &slots, &lay.tok_adapter, r, h, h_out, lay.max_rank)?;
                lora.push((h_out, meta));
            }
        }
        Ok(GpuMeta {
            tokens: t,
            pos: s.clone_htod(&lay.pos).map_err(drv("uploading positions"))?,
            slots: DeviceSlots::upload(s, &lay.slots, lay.cache_slots)?,
            cache_slots: lay.cache_slots,
            prefill,
            decode,
            lora,
            region,
            segmented: lay.segmented,
            max_rank: lay.max_rank,
        })
    }

    fn embed(
        &mut self,
        table: &Vec<u16>,
        tokens: &[u32],
        hidden: usize,
        x: &mut CudaSlice<u16>,
    ) -> Result<()> {
        // Gathered on the host (the kernels crate has no gather kernel): one copy of tokens x hidden.
        let mut rows = Vec::with_capacity(tokens.len() * hidden);
        for &t in tokens {
            let from = t as usize * hidden;
            let src = table
                .get(from..from + hidden)
                .ok_or_else(|| Error::msg(format!("token {t} outside the embedding table")))?;
            rows.extend_from_slice(src);
        }
        let mut dst = view_mut(x, rows.len(), "embedding x")?;
        self.stream
            .memcpy_htod(&rows, &mut dst)
            .map_err(drv("embedding upload"))
    }

    fn rms_norm(
        &mut self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let n = rows * w.len();
        let (xv, mut yv) = (view(x, n, "rms_norm x")?, view_mut(y, n, "rms_norm y")?);
        self.kernels
            .rms_norm(&self.stream, &xv, &w.as_view(), &mut yv, rows, eps)
    }

    fn gemm(
        &mut self,
        x: &CudaSlice<u16>,
        w: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let (xv, wv) = (view(x, m * k, "gemm x")?, view(w, k * n, "gemm w")?);
        let mut yv = view_mut(y, m * n, "gemm y")?;
        self.gemm.run(&self.stream, &xv, &wv, &mut yv, m, n, k)
    }

    fn lora(
        &mut self,
        meta: &GpuMeta,
        pool: &CudaSlice<u16>,
        group: usize,
        x: &CudaSlice<u16>,
        y: &mut CudaSlice<u16>,
        h_in: usize,
        h_out: usize,
    ) -> Result<()> {
        let dl = meta
            .lora
            .iter()
            .find(|(w, _)| *w == h_out)
            .map(|(_, d)| d)
            .ok_or_else(|| Error::msg(format!("no LoRA metadata for output width {h_out}")))?;
        if dl.h_in != h_in {
            return Err(Error::msg(format!(
                "LoRA metadata is for inputs of {}, not {h_in}",
                dl.h_in
            )));
        }
        let t = meta.tokens;
        let r = meta.region;
        let pv = match pool.try_slice(group * r..(group + 1) * r) {
            Some(v) => v,
            None => return short("adapter region", pool.len(), (group + 1) * r),
        };
        let xv = view(x, t * h_in, "lora x")?;
        let mut yv = view_mut(y, t * h_out, "lora y")?;
        let mut v = view_mut(&mut self.lora_v, t * meta.max_rank, "lora v")?;
        let (k, s) = (&self.kernels, &self.stream);
        let layout = if meta.segmented {
            LoraLayout::Segmented
        } else {
            LoraLayout::Gathered
        };
        k.lora(s, LoraStep::Shrink { x: &xv, v: &mut v }, &pv, dl, layout)?;
        let step = LoraStep::Expand {
            v: &v.as_view(),
            y: &mut yv,
            scale: LORA_SCALE,
        };
        k.lora(s, step, &pv, dl, layout)
    }

    fn rope(
        &mut self,
        meta: &GpuMeta,
        q: &mut CudaSlice<u16>,
        k: &mut CudaSlice<u16>,
        s: &Shape,
    ) -> Result<()> {
        let t = meta.tokens;
        let mut qv = view_mut(q, t * s.hidden, "rope q")?;
        let mut kv = view_mut(k, t * s.kv_row(), "rope k")?;
        let pos = view(&meta.pos, t, "rope positions")?;
        self.kernels.rope_neox(
            &self.stream,
            &mut qv,
            &mut kv,
            &pos,
            s.heads,
            s.kv_heads,
            s.head_dim(),
            THETA,
        )
    }

    fn kv_write(
        &mut self,
        meta: &GpuMeta,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        k_cache: &mut CudaSlice<u16>,
        v_cache: &mut CudaSlice<u16>,
        sh: AttnShape,
    ) -> Result<()> {
        let n = meta.tokens * sh.kv_heads * sh.head_dim;
        self.kernels.kv_cache_write(
            &self.stream,
            &view(k, n, "kv_cache_write k")?,
            &view(v, n, "kv_cache_write v")?,
            &mut k_cache.as_view_mut(),
            &mut v_cache.as_view_mut(),
            &meta.slots,
            sh.kv_heads,
            sh.head_dim,
            meta.cache_slots,
        )
    }

    fn attn_prefill(
        &mut self,
        meta: &GpuMeta,
        q: &CudaSlice<u16>,
        k: &CudaSlice<u16>,
        v: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        let seqs = meta
            .prefill
            .as_ref()
            .ok_or_else(|| Error::msg("prefill attention on a batch without prefill rows"))?;
        let (qn, kn) = (
            seqs.tokens * sh.heads * sh.head_dim,
            seqs.tokens * sh.kv_heads * sh.head_dim,
        );
        self.kernels.attn_prefill(
            &self.stream,
            &view(q, qn, "attn q")?,
            &view(k, kn, "attn k")?,
            &view(v, kn, "attn v")?,
            &mut view_mut(out, qn, "attn out")?,
            seqs,
            sh,
            scale,
        )
    }

    fn attn_decode(
        &mut self,
        meta: &GpuMeta,
        q: &CudaSlice<u16>,
        k_cache: &CudaSlice<u16>,
        v_cache: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        let paging = meta
            .decode
            .as_ref()
            .ok_or_else(|| Error::msg("decode attention on a batch without decode rows"))?;
        let n = paging.seqs * sh.heads * sh.head_dim;
        self.kernels.attn_decode_paged(
            &self.stream,
            &view(q, n, "decode q")?,
            &k_cache.as_view(),
            &v_cache.as_view(),
            paging,
            &mut view_mut(out, n, "decode out")?,
            sh,
            scale,
        )
    }

    fn silu_mul(
        &mut self,
        gate_up: &CudaSlice<u16>,
        out: &mut CudaSlice<u16>,
        rows: usize,
        inter: usize,
    ) -> Result<()> {
        self.kernels.silu_mul(
            &self.stream,
            &view(gate_up, 2 * rows * inter, "silu_mul gate_up")?,
            &mut view_mut(out, rows * inter, "silu_mul out")?,
            rows,
            inter,
        )
    }

    fn add(&mut self, acc: &mut CudaSlice<u16>, x: &CudaSlice<u16>, n: usize) -> Result<()> {
        self.kernels.add_inplace(
            &self.stream,
            &mut view_mut(acc, n, "add acc")?,
            &view(x, n, "add x")?,
        )
    }

    fn copy_rows(
        &mut self,
        src: &CudaSlice<u16>,
        from: usize,
        dst: &mut CudaSlice<u16>,
        to: usize,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        let n = rows * width;
        let sv = match src.try_slice(from * width..from * width + n) {
            Some(v) => v,
            None => return short("copy_rows src", src.len(), from * width + n),
        };
        let mut dv = range_mut(dst, to * width, n, "copy_rows dst")?;
        self.stream
            .memcpy_dtod(&sv, &mut dv)
            .map_err(drv("copying rows"))
    }

    fn read(&mut self, buf: &CudaSlice<u16>, n: usize) -> Result<Vec<f32>> {
        let bits = self
            .stream
            .clone_dtoh(&view(buf, n, "read")?)
            .map_err(drv("forward pass (launch failure or out of memory)"))?;
        self.stream
            .synchronize()
            .map_err(drv("forward pass (launch failure or out of memory)"))?;
        Ok(bits.into_iter().map(|b| self.dtype.from_bits(b)).collect())
    }

    fn copy_adapter(
        &mut self,
        pool: &mut CudaSlice<u16>,
        layout: AdapterLayout,
        s: &Shape,
        off: usize,
        rank: u32,
        host: &PinnedHostSlice<u16>,
    ) -> Result<()> {
        let host = host.as_slice().map_err(drv("pinned host memory"))?;
        // A and B of every (layer, projection) separately: 8 x layers copies, as S-LoRA does.
        for (from, to, n) in layout.pieces(s, off, rank) {
            let Some(src) = host.get(from..from + n) else {
                return short("adapter host weights", host.len(), from + n);
            };
            let mut dst = range_mut(pool, to, n, "adapter pool")?;
            self.copy
                .memcpy_htod(src, &mut dst)
                .map_err(drv("adapter copy"))?;
        }
        // Waited for here so the load is timed as a whole; the compute stream then waits on the copy's
        // event, so no later launch can read the adapter before it is there.
        let done = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv("event"))?;
        done.record(&self.copy).map_err(drv("event record"))?;
        done.synchronize().map_err(drv("adapter copy"))?;
        self.stream
            .wait(&done)
            .map_err(drv("waiting for an adapter copy"))
    }
}

/// A decoder of `shape` for timing and serving at full size: random weights made on the device (values
/// only need to be finite; 0.02 is the usual initialisation scale and keeps activations finite through
/// every layer), the embedding table on the host when `embed` (else empty: the caller fills the residual
/// stream itself), a KV cache of `cap_pages` pages of `page` tokens allocated up front, and a strided
/// adapter region of `region` elements per (layer, projection).
#[allow(clippy::too_many_arguments)]
pub fn random_decoder(
    mut ops: GpuOps,
    shape: Shape,
    seed: u32,
    page: usize,
    cap_pages: usize,
    region: usize,
    embed: bool,
) -> Result<Decoder<GpuOps>> {
    shape.check()?;
    let w = Weights::build(
        &shape,
        &mut ops,
        |o, t| {
            let s = mix(seed as u64, t.id.0, t.id.1) as u32;
            o.random(t.len, s, 0.02)
        },
        |o, t| {
            debug_assert_eq!(t.kind, Kind::Embedding);
            Ok(if embed {
                o.bits(&random(t.len, mix(seed as u64, 0, 0), 1.0))
            } else {
                Vec::new()
            })
        },
    )?;
    let kv = KvCache::new(&mut ops, &shape, page, cap_pages, true)?;
    let pool = ops.alloc(PROJECTIONS * shape.layers * region)?;
    let store = AdapterStore::strided(pool, region);
    ops.stream
        .synchronize()
        .map_err(drv("initialising the model"))?;
    Decoder::new(ops, shape, w, kv, store)
}
