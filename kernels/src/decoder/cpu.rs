//! The decoder's operations on the CPU: the references of [`crate::reference`] in f32. This is the
//! definition the GPU operations are compared with, and it runs for real (`sim real --backend cpu`).

use super::batch::Layout;
use super::ops::Ops;
use super::shape::{PROJECTIONS, Shape};
use super::store::AdapterLayout;
use super::{LORA_SCALE, THETA};
use crate::reference::{self as r, AdapterSlot, AttnShape, Paging};
use crate::{Error, Result};

/// The CPU operations (stateless: buffers are `Vec<f32>`).
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuOps;

/// A batch's index data on the CPU: the layout's, with each (layer, projection)'s adapter slots.
pub struct CpuMeta {
    tokens: usize,
    pos: Vec<i32>,
    slots: Vec<i32>,
    tok_adapter: Vec<i32>,
    seg_start: Vec<i32>,
    seg_adapter: Vec<i32>,
    segmented: bool,
    max_rank: usize,
    lora: Vec<Vec<AdapterSlot>>,
    cu_seqlens: Vec<i32>,
    block_table: Vec<i32>,
    ctx_lens: Vec<i32>,
    paging: Paging,
}

fn short(what: &str, have: usize, want: usize) -> Error {
    Error::msg(format!("{what}: buffer has {have} elements, needs {want}"))
}

/// The first `n` elements of a buffer, or an error naming it.
fn head<'a>(b: &'a [f32], n: usize, what: &str) -> Result<&'a [f32]> {
    b.get(..n).ok_or_else(|| short(what, b.len(), n))
}

fn head_mut<'a>(b: &'a mut [f32], n: usize, what: &str) -> Result<&'a mut [f32]> {
    let len = b.len();
    b.get_mut(..n).ok_or_else(|| short(what, len, n))
}

/// Writes a reference's result into the destination buffer.
fn put(dst: &mut [f32], v: &[f32], what: &str) -> Result<()> {
    head_mut(dst, v.len(), what)?.copy_from_slice(v);
    Ok(())
}

fn put_at(pool: &mut [f32], at: usize, v: &[f32]) -> Result<()> {
    let len = pool.len();
    pool.get_mut(at..at + v.len())
        .ok_or_else(|| short("adapter pool", len, at + v.len()))?
        .copy_from_slice(v);
    Ok(())
}

impl Ops for CpuOps {
    type Buf = Vec<f32>;
    type Embed = Vec<f32>;
    type HostAdapter = [f32];
    type Meta = CpuMeta;

    fn alloc(&mut self, n: usize) -> Result<Vec<f32>> {
        Ok(vec![0.0; n])
    }

    fn len(buf: &Vec<f32>) -> usize {
        buf.len()
    }

    fn reserve(&mut self, buf: &mut Vec<f32>, n: usize) -> Result<()> {
        self.grow(buf, n)
    }

    fn grow(&mut self, buf: &mut Vec<f32>, n: usize) -> Result<()> {
        if buf.len() < n {
            buf.resize(n, 0.0);
        }
        Ok(())
    }

    fn upload_tensor(&mut self, v: Vec<f32>) -> Result<Vec<f32>> {
        Ok(v)
    }

    fn embed_table(&mut self, v: Vec<f32>) -> Result<Vec<f32>> {
        Ok(v)
    }

    fn host_adapter(&mut self, w: Vec<f32>) -> Result<Box<[f32]>> {
        Ok(w.into_boxed_slice())
    }

    fn host_len(host: &[f32]) -> usize {
        host.len()
    }

    fn upload(&mut self, lay: &Layout) -> Result<CpuMeta> {
        let (seg_start, seg_adapter) = r::segments(&lay.tok_adapter);
        let groups = lay.shape.layers * PROJECTIONS;
        let lora = if lay.adapters.is_empty() {
            Vec::new()
        } else {
            (0..groups)
                .map(|g| lay.lora_slots(g / PROJECTIONS, g % PROJECTIONS))
                .collect()
        };
        Ok(CpuMeta {
            tokens: lay.tokens.len(),
            pos: lay.pos.clone(),
            slots: lay.slots.clone(),
            tok_adapter: lay.tok_adapter.clone(),
            seg_start,
            seg_adapter,
            segmented: lay.segmented,
            max_rank: lay.max_rank,
            lora,
            cu_seqlens: lay.cu_seqlens.clone(),
            block_table: lay.block_table.clone(),
            ctx_lens: lay.ctx_lens.clone(),
            paging: lay.paging,
        })
    }

    fn embed(
        &mut self,
        table: &Vec<f32>,
        tokens: &[u32],
        hidden: usize,
        x: &mut Vec<f32>,
    ) -> Result<()> {
        let x = head_mut(x, tokens.len() * hidden, "embedding x")?;
        for (row, &t) in x.chunks_exact_mut(hidden).zip(tokens) {
            let from = t as usize * hidden;
            let src = table
                .get(from..from + hidden)
                .ok_or_else(|| Error::msg(format!("token {t} outside the embedding table")))?;
            row.copy_from_slice(src);
        }
        Ok(())
    }

    fn rms_norm(
        &mut self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        y: &mut Vec<f32>,
        rows: usize,
        eps: f32,
    ) -> Result<()> {
        let out = r::rms_norm(head(x, rows * w.len(), "rms_norm x")?, w, eps)?;
        put(y, &out, "rms_norm y")
    }

    fn gemm(
        &mut self,
        x: &Vec<f32>,
        w: &Vec<f32>,
        y: &mut Vec<f32>,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        let out = r::matmul(
            head(x, m * k, "gemm x")?,
            head(w, k * n, "gemm w")?,
            m,
            k,
            n,
        );
        put(y, &out, "gemm y")
    }

    fn lora(
        &mut self,
        meta: &CpuMeta,
        pool: &Vec<f32>,
        group: usize,
        x: &Vec<f32>,
        y: &mut Vec<f32>,
        h_in: usize,
        h_out: usize,
    ) -> Result<()> {
        let (t, mr) = (meta.tokens, meta.max_rank);
        let slots = meta
            .lora
            .get(group)
            .ok_or_else(|| Error::msg(format!("no LoRA slots for group {group}")))?;
        let x = head(x, t * h_in, "lora x")?;
        let y = head_mut(y, t * h_out, "lora y")?;
        // The two forms compute the same values; the choice follows the GPU's, so both run the same path.
        if meta.segmented {
            let (ss, sa) = (&meta.seg_start, &meta.seg_adapter);
            let v = r::lora_shrink_sgmv(x, pool, slots, ss, sa, h_in, mr)?;
            r::lora_expand_sgmv(&v, pool, slots, ss, sa, y, h_out, mr, LORA_SCALE)
        } else {
            let ta = &meta.tok_adapter;
            let v = r::lora_shrink_bgmv(x, pool, slots, ta, h_in, mr)?;
            r::lora_expand_bgmv(&v, pool, slots, ta, y, h_out, mr, LORA_SCALE)
        }
    }

    fn rope(
        &mut self,
        meta: &CpuMeta,
        q: &mut Vec<f32>,
        k: &mut Vec<f32>,
        s: &Shape,
    ) -> Result<()> {
        let t = meta.tokens;
        let q = head_mut(q, t * s.hidden, "rope q")?;
        let k = head_mut(k, t * s.kv_row(), "rope k")?;
        r::rope_neox(q, k, &meta.pos, s.heads, s.kv_heads, s.head_dim(), THETA)
    }

    fn kv_write(
        &mut self,
        meta: &CpuMeta,
        k: &Vec<f32>,
        v: &Vec<f32>,
        k_cache: &mut Vec<f32>,
        v_cache: &mut Vec<f32>,
        sh: AttnShape,
    ) -> Result<()> {
        let row = sh.kv_heads * sh.head_dim;
        let n = meta.tokens * row;
        r::kv_cache_write(
            head(k, n, "kv_cache_write k")?,
            head(v, n, "kv_cache_write v")?,
            k_cache,
            v_cache,
            &meta.slots,
            row,
        )
    }

    fn attn_prefill(
        &mut self,
        meta: &CpuMeta,
        q: &Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        out: &mut Vec<f32>,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        let n = *meta.cu_seqlens.last().unwrap_or(&0) as usize;
        let (qr, kr) = (sh.heads * sh.head_dim, sh.kv_heads * sh.head_dim);
        let o = r::attn_prefill(
            head(q, n * qr, "attn q")?,
            head(k, n * kr, "attn k")?,
            head(v, n * kr, "attn v")?,
            &meta.cu_seqlens,
            sh,
            scale,
        )?;
        put(out, &o, "attn out")
    }

    fn attn_decode(
        &mut self,
        meta: &CpuMeta,
        q: &Vec<f32>,
        k_cache: &Vec<f32>,
        v_cache: &Vec<f32>,
        out: &mut Vec<f32>,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        let n = meta.ctx_lens.len() * sh.heads * sh.head_dim;
        let o = r::attn_decode_paged(
            head(q, n, "decode q")?,
            k_cache,
            v_cache,
            &meta.block_table,
            &meta.ctx_lens,
            sh,
            meta.paging,
            scale,
        )?;
        put(out, &o, "decode out")
    }

    fn silu_mul(
        &mut self,
        gate_up: &Vec<f32>,
        out: &mut Vec<f32>,
        rows: usize,
        inter: usize,
    ) -> Result<()> {
        let o = r::silu_mul(head(gate_up, rows * 2 * inter, "silu_mul gate_up")?, inter)?;
        put(out, &o, "silu_mul out")
    }

    fn add(&mut self, acc: &mut Vec<f32>, x: &Vec<f32>, n: usize) -> Result<()> {
        r::add_inplace(head_mut(acc, n, "add acc")?, head(x, n, "add x")?)
    }

    fn copy_rows(
        &mut self,
        src: &Vec<f32>,
        from: usize,
        dst: &mut Vec<f32>,
        to: usize,
        rows: usize,
        width: usize,
    ) -> Result<()> {
        let s = src
            .get(from * width..(from + rows) * width)
            .ok_or_else(|| short("copy_rows src", src.len(), (from + rows) * width))?;
        let len = dst.len();
        dst.get_mut(to * width..(to + rows) * width)
            .ok_or_else(|| short("copy_rows dst", len, (to + rows) * width))?
            .copy_from_slice(s);
        Ok(())
    }

    fn read(&mut self, buf: &Vec<f32>, n: usize) -> Result<Vec<f32>> {
        Ok(head(buf, n, "read")?.to_vec())
    }

    fn copy_adapter(
        &mut self,
        pool: &mut Vec<f32>,
        layout: AdapterLayout,
        s: &Shape,
        off: usize,
        rank: u32,
        host: &[f32],
    ) -> Result<()> {
        match layout {
            // One block, as the host holds it.
            AdapterLayout::Packed => put_at(pool, off, host),
            AdapterLayout::Strided { .. } => {
                for (from, to, n) in layout.pieces(s, off, rank) {
                    let src = host
                        .get(from..from + n)
                        .ok_or_else(|| short("adapter host weights", host.len(), from + n))?;
                    put_at(pool, to, src)?;
                }
                Ok(())
            }
        }
    }
}
