//! Typed launch functions, one per kernel: sizes are checked against the buffers and index data comes only
//! from the validated [`super::meta`] structs, so every `unsafe` launch below has its arguments checked.

use cudarc::driver::{CudaStream, CudaView, CudaViewMut, PushKernelArg};

use super::meta::{DeviceLora, DevicePaging, DeviceSeqs, DeviceSlots};
use super::{BLOCK, Kernels, SMEM_LIMIT, blocks, cfg, i32_of, launched, need};
use crate::reference::AttnShape;
use crate::source;
use crate::{Error, Result};

/// Grid z extent of the segmented LoRA kernels (the hardware allows at most 65535).
fn seg_chunks(meta: &DeviceLora) -> Result<u32> {
    let z = meta.max_seg_len.div_ceil(source::SEG_CHUNK).max(1);
    u32::try_from(z)
        .ok()
        .filter(|&z| z <= 65_535)
        .ok_or_else(|| {
            Error::msg(format!(
                "a LoRA segment of {} tokens is too long",
                meta.max_seg_len
            ))
        })
}

/// Which half of a LoRA product a launch computes.
pub enum LoraStep<'a, 'b> {
    /// v[t, :rank] = A_t . x[t]; v is `[tokens, max_rank]` fp32, entries past a token's rank are not written
    /// (zero v once if they are read back).
    Shrink {
        x: &'a CudaView<'b, u16>,
        v: &'a mut CudaViewMut<'b, f32>,
    },
    /// y[t] += scale * B_t^T . v[t, :rank].
    Expand {
        v: &'a CudaView<'b, f32>,
        y: &'a mut CudaViewMut<'b, u16>,
        scale: f32,
    },
}

/// How a batch's tokens meet the LoRA kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoraLayout {
    /// Tokens grouped by adapter (prefill): one block row per segment (SGMV).
    Segmented,
    /// Tokens in any order (decode): one block row per token (BGMV).
    Gathered,
}

/// The token-to-adapter index: segment starts and adapters, or each token's adapter.
fn push_index<'a>(b: &mut cudarc::driver::LaunchArgs<'a>, meta: &'a DeviceLora, segmented: bool) {
    if segmented {
        b.arg(&meta.seg_start).arg(&meta.seg_adapter);
    } else {
        b.arg(&meta.tok_adapter);
    }
}

impl Kernels {
    /// One LoRA step (shrink or expand) in either layout: the four kernels share their arguments (input, the
    /// adapter pool, A or B offsets, ranks, the token-to-adapter index, output, width, max rank[, scale]) and
    /// differ only in the index (segments or per token) and the grid.
    pub fn lora(
        &self,
        stream: &CudaStream,
        step: LoraStep<'_, '_>,
        pool: &CudaView<u16>,
        meta: &DeviceLora,
        layout: LoraLayout,
    ) -> Result<()> {
        let segmented = layout == LoraLayout::Segmented;
        let (shrink, scale) = match &step {
            LoraStep::Shrink { x, v } => {
                need("lora x", x.len(), meta.tokens * meta.h_in)?;
                need("lora v", v.len(), meta.tokens * meta.max_rank)?;
                (true, 0.0)
            }
            LoraStep::Expand { v, y, scale } => {
                need("lora v", v.len(), meta.tokens * meta.max_rank)?;
                need("lora y", y.len(), meta.tokens * meta.h_out)?;
                (false, *scale)
            }
        };
        let name = match (shrink, layout) {
            (true, LoraLayout::Segmented) => source::LORA_SHRINK_SGMV,
            (false, LoraLayout::Segmented) => source::LORA_EXPAND_SGMV,
            (true, LoraLayout::Gathered) => source::LORA_SHRINK_BGMV,
            (false, LoraLayout::Gathered) => source::LORA_EXPAND_BGMV,
        };
        // The segmented shrink stages one row of A in shared memory.
        let smem = if shrink && segmented {
            meta.h_in * 4
        } else {
            0
        };
        if smem > SMEM_LIMIT {
            return Err(Error::msg(format!(
                "{name}: h_in {} exceeds the shared-memory row limit",
                meta.h_in
            )));
        }
        let rows = if segmented {
            meta.num_segs
        } else {
            meta.tokens
        };
        if rows == 0 {
            return Ok(());
        }
        let f = self.function(name)?;
        let (width, what) = if shrink {
            (meta.h_in, "h_in")
        } else {
            (meta.h_out, "h_out")
        };
        let (h, r) = (i32_of(what, width)?, i32_of("max_rank", meta.max_rank)?);
        // Grid: x per segment or token; y over the rank (shrink: a warp per rank row when gathered) or over
        // output columns (expand); z over chunks of a long segment.
        let y = if !shrink {
            (meta.h_out as u32).div_ceil(BLOCK)
        } else if segmented {
            meta.max_rank as u32
        } else {
            (meta.max_rank as u32).div_ceil(BLOCK / 32)
        };
        let z = if segmented { seg_chunks(meta)? } else { 1 };
        let c = cfg((rows as u32, y, z), BLOCK, smem as u32);
        let mut b = stream.launch_builder(&f);
        let off = if shrink { &meta.a_off } else { &meta.b_off };
        match step {
            LoraStep::Shrink { x, v } => {
                b.arg(x).arg(pool).arg(off).arg(&meta.ranks);
                push_index(&mut b, meta, segmented);
                b.arg(v).arg(&h).arg(&r);
            }
            LoraStep::Expand { v, y, .. } => {
                b.arg(v).arg(pool).arg(off).arg(&meta.ranks);
                push_index(&mut b, meta, segmented);
                b.arg(y).arg(&h).arg(&r).arg(&scale);
            }
        }
        // SAFETY: the argument list matches the kernel's signature (kernels/cu/lora.cu); sizes were checked
        // above and indices at upload (`DeviceLora`).
        launched(name, unsafe { b.launch(c) })
    }

    /// y = RMSNorm(x) * w over rows of `w.len()`.
    pub fn rms_norm(
        &self,
        stream: &CudaStream,
        x: &CudaView<u16>,
        w: &CudaView<u16>,
        y: &mut CudaViewMut<u16>,
        tokens: usize,
        eps: f32,
    ) -> Result<()> {
        let h = w.len();
        need("rms_norm x", x.len(), tokens * h)?;
        need("rms_norm y", y.len(), tokens * h)?;
        if tokens == 0 {
            return Ok(());
        }
        let f = self.function(source::RMS_NORM)?;
        let hi = i32_of("hidden", h)?;
        let mut b = stream.launch_builder(&f);
        b.arg(x).arg(w).arg(y).arg(&hi).arg(&eps);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::RMS_NORM, unsafe {
            b.launch(cfg((tokens as u32, 1, 1), BLOCK, 0))
        })
    }

    /// Rotary embedding in place on q `[tokens, heads_q, d]` and k `[tokens, heads_k, d]`; `pos` holds each
    /// token's position (any values: positions are data, not indices).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_neox(
        &self,
        stream: &CudaStream,
        q: &mut CudaViewMut<u16>,
        k: &mut CudaViewMut<u16>,
        pos: &CudaView<i32>,
        heads_q: usize,
        heads_k: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<()> {
        let tokens = pos.len();
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::msg(format!(
                "rope: head_dim {head_dim} must be even and positive"
            )));
        }
        need("rope q", q.len(), tokens * heads_q * head_dim)?;
        need("rope k", k.len(), tokens * heads_k * head_dim)?;
        if tokens == 0 {
            return Ok(());
        }
        let f = self.function(source::ROPE_NEOX)?;
        let (hq, hk, d) = (
            i32_of("heads", heads_q)?,
            i32_of("kv heads", heads_k)?,
            i32_of("head_dim", head_dim)?,
        );
        let mut b = stream.launch_builder(&f);
        b.arg(q)
            .arg(k)
            .arg(pos)
            .arg(&hq)
            .arg(&hk)
            .arg(&d)
            .arg(&theta);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::ROPE_NEOX, unsafe {
            b.launch(cfg((tokens as u32, 1, 1), BLOCK, 0))
        })
    }

    /// out `[tokens, inter]` = silu(gate) * up from gate_up `[tokens, 2 * inter]`.
    pub fn silu_mul(
        &self,
        stream: &CudaStream,
        gate_up: &CudaView<u16>,
        out: &mut CudaViewMut<u16>,
        tokens: usize,
        inter: usize,
    ) -> Result<()> {
        let n = tokens * inter;
        need("silu_mul gate_up", gate_up.len(), 2 * n)?;
        need("silu_mul out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(source::SILU_MUL)?;
        let (i, n64) = (i32_of("intermediate", inter)?, n as u64);
        let mut b = stream.launch_builder(&f);
        b.arg(gate_up).arg(out).arg(&i).arg(&n64);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::SILU_MUL, unsafe {
            b.launch(cfg((blocks(n64), 1, 1), BLOCK, 0))
        })
    }

    /// acc += x (the residual stream).
    pub fn add_inplace(
        &self,
        stream: &CudaStream,
        acc: &mut CudaViewMut<u16>,
        x: &CudaView<u16>,
    ) -> Result<()> {
        let n = x.len().min(acc.len()) as u64;
        if x.len() != acc.len() {
            return Err(Error::msg(format!(
                "add: lengths {} and {} differ",
                acc.len(),
                x.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let f = self.function(source::ADD_INPLACE)?;
        let mut b = stream.launch_builder(&f);
        b.arg(acc).arg(x).arg(&n);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::ADD_INPLACE, unsafe {
            b.launch(cfg((blocks(n), 1, 1), BLOCK, 0))
        })
    }

    /// Fills a buffer with uniform values in [-scale, scale), deterministic in `seed`.
    pub fn fill_uniform(
        &self,
        stream: &CudaStream,
        out: &mut CudaViewMut<u16>,
        seed: u32,
        scale: f32,
    ) -> Result<()> {
        let n = out.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(source::FILL_UNIFORM)?;
        let mut b = stream.launch_builder(&f);
        b.arg(out).arg(&n).arg(&seed).arg(&scale);
        // SAFETY: argument list matches the kernel.
        launched(source::FILL_UNIFORM, unsafe {
            b.launch(cfg((blocks(n), 1, 1), BLOCK, 0))
        })
    }

    /// Writes K and V of new tokens (`[tokens, kv_heads, d]`) into cache slots (`[slots, kv_heads, d]`).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_cache_write(
        &self,
        stream: &CudaStream,
        k: &CudaView<u16>,
        v: &CudaView<u16>,
        k_cache: &mut CudaViewMut<u16>,
        v_cache: &mut CudaViewMut<u16>,
        slots: &DeviceSlots,
        kv_heads: usize,
        head_dim: usize,
        cache_slots: usize,
    ) -> Result<()> {
        let row = kv_heads * head_dim;
        need("kv_cache_write k", k.len(), slots.tokens * row)?;
        need("kv_cache_write v", v.len(), slots.tokens * row)?;
        need("k cache", k_cache.len(), cache_slots * row)?;
        need("v cache", v_cache.len(), cache_slots * row)?;
        let f = self.function(source::KV_CACHE_WRITE)?;
        let (kh, d) = (i32_of("kv heads", kv_heads)?, i32_of("head_dim", head_dim)?);
        let mut b = stream.launch_builder(&f);
        b.arg(k)
            .arg(v)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&slots.slots)
            .arg(&kh)
            .arg(&d);
        // SAFETY: argument list matches the kernel; slots were range-checked at upload against the cache size
        // the caller passes here, and the cache buffers are checked to be at least that large.
        launched(source::KV_CACHE_WRITE, unsafe {
            b.launch(cfg((slots.tokens as u32, 1, 1), BLOCK, 0))
        })
    }

    /// Causal attention over packed sequences; q/out `[tokens, heads, d]`, k/v `[tokens, kv_heads, d]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attn_prefill(
        &self,
        stream: &CudaStream,
        q: &CudaView<u16>,
        k: &CudaView<u16>,
        v: &CudaView<u16>,
        out: &mut CudaViewMut<u16>,
        seqs: &DeviceSeqs,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        sh.check()?;
        let t = seqs.tokens;
        need("attn q", q.len(), t * sh.heads * sh.head_dim)?;
        need("attn out", out.len(), t * sh.heads * sh.head_dim)?;
        need("attn k", k.len(), t * sh.kv_heads * sh.head_dim)?;
        need("attn v", v.len(), t * sh.kv_heads * sh.head_dim)?;
        let f = self.function(source::ATTN_PREFILL)?;
        let ints = [
            i32_of("sequences", seqs.num_seqs)?,
            i32_of("tokens", t)?,
            i32_of("heads", sh.heads)?,
            i32_of("kv heads", sh.kv_heads)?,
            i32_of("head_dim", sh.head_dim)?,
        ];
        let mut b = stream.launch_builder(&f);
        b.arg(q).arg(k).arg(v).arg(out).arg(&seqs.cu_seqlens);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        let warps = (t * sh.heads) as u64;
        let grid = warps.div_ceil((BLOCK / 32) as u64);
        let grid =
            u32::try_from(grid).map_err(|_| Error::msg("attn_prefill: too many tokens x heads"))?;
        // SAFETY: argument list matches the kernel; sizes and cu_seqlens validated.
        launched(source::ATTN_PREFILL, unsafe {
            b.launch(cfg((grid, 1, 1), BLOCK, 0))
        })
    }

    /// One decode step over the paged cache; q/out `[seqs, heads, d]`, caches `[slots, kv_heads, d]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attn_decode_paged(
        &self,
        stream: &CudaStream,
        q: &CudaView<u16>,
        k_cache: &CudaView<u16>,
        v_cache: &CudaView<u16>,
        paging: &DevicePaging,
        out: &mut CudaViewMut<u16>,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        sh.check()?;
        let n = paging.seqs * sh.heads * sh.head_dim;
        need("decode q", q.len(), n)?;
        need("decode out", out.len(), n)?;
        let row = sh.kv_heads * sh.head_dim;
        need("k cache", k_cache.len(), paging.cache_slots * row)?;
        need("v cache", v_cache.len(), paging.cache_slots * row)?;
        let f = self.function(source::ATTN_DECODE_PAGED)?;
        let ints = [
            i32_of("heads", sh.heads)?,
            i32_of("kv heads", sh.kv_heads)?,
            i32_of("head_dim", sh.head_dim)?,
            i32_of("block size", paging.paging.block_size)?,
            i32_of("max blocks", paging.paging.max_blocks)?,
        ];
        let mut b = stream.launch_builder(&f);
        b.arg(q)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&paging.block_table)
            .arg(&paging.context_lens)
            .arg(out);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        let c = cfg(
            (paging.seqs as u32, sh.heads as u32, 1),
            32 * source::DECODE_WARPS,
            0,
        );
        // SAFETY: argument list matches the kernel; the block table was validated against cache_slots.
        launched(source::ATTN_DECODE_PAGED, unsafe { b.launch(c) })
    }
}
