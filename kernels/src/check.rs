//! GPU correctness check: every kernel runs on small pseudo-random inputs and its output is compared with the
//! CPU reference on the same (dtype-rounded) inputs. `calibrate` runs it before timing anything, since a fast
//! wrong kernel would make a meaningless profile. The comparison logic is plain Rust and tested on the CPU.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use crate::dtype::DType;
use crate::gpu::{
    DeviceLora, DevicePaging, DeviceSeqs, DeviceSlots, Kernels, LoraLayout, LoraStep,
};
use crate::reference::{self as r, AttnShape, Paging, pseudo_random};
use crate::{Error, Result};

/// Outcome of one kernel's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    pub kernel: &'static str,
    /// Largest |gpu - cpu| / (1 + |cpu|) over all outputs.
    pub max_err: f32,
    pub tolerance: f32,
}

impl CheckResult {
    pub fn ok(&self) -> bool {
        self.max_err <= self.tolerance
    }
}

/// Tolerance for outputs that went through a handful of roundings to the 16-bit type plus fp32 sums:
/// a few units in the last place of the dtype.
pub fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 8.0 * 2f32.powi(-11),
        DType::Bf16 => 8.0 * 2f32.powi(-8),
    }
}

/// Largest error relative to (1 + |want|); NaN anywhere, or a length mismatch, counts as infinitely wrong.
pub fn compare(got: &[f32], want: &[f32]) -> f32 {
    if got.len() != want.len() {
        return f32::INFINITY;
    }
    got.iter().zip(want).fold(0.0, |m, (g, w)| {
        let e = (g - w).abs() / (1.0 + w.abs());
        if e.is_nan() { f32::INFINITY } else { m.max(e) }
    })
}

struct Ctx<'a> {
    s: &'a Arc<CudaStream>,
    dt: DType,
}

impl Ctx<'_> {
    fn round(&self, v: Vec<f32>) -> Vec<f32> {
        v.into_iter().map(|x| self.dt.round(x)).collect()
    }
    fn up(&self, v: &[f32]) -> Result<CudaSlice<u16>> {
        let bits: Vec<u16> = v.iter().map(|&x| self.dt.to_bits(x)).collect();
        self.s
            .clone_htod(&bits)
            .map_err(|e| Error::msg(format!("check upload: {e}")))
    }
    fn up_i32(&self, v: &[i32]) -> Result<CudaSlice<i32>> {
        self.s
            .clone_htod(v)
            .map_err(|e| Error::msg(format!("check upload: {e}")))
    }
    fn down(&self, d: &CudaSlice<u16>) -> Result<Vec<f32>> {
        let bits = self
            .s
            .clone_dtoh(d)
            .map_err(|e| Error::msg(format!("check download: {e}")))?;
        Ok(bits.into_iter().map(|b| self.dt.from_bits(b)).collect())
    }
    fn zeros_f32(&self, n: usize) -> Result<CudaSlice<f32>> {
        self.s
            .alloc_zeros(n)
            .map_err(|e| Error::msg(format!("check alloc: {e}")))
    }
}

/// Runs every kernel once on the GPU and compares with the CPU reference.
pub fn run(k: &Kernels, stream: &Arc<CudaStream>) -> Result<Vec<CheckResult>> {
    let c = Ctx {
        s: stream,
        dt: k.dtype(),
    };
    let tol = tolerance(c.dt);
    let mut out = Vec::new();
    let mut push = |kernel: &'static str, got: &[f32], want: &[f32]| {
        out.push(CheckResult {
            kernel,
            max_err: compare(got, want),
            tolerance: tol,
        });
    };

    // LoRA: 5 adapters of the paper's ranks, 11 tokens grouped by adapter, one token without an adapter.
    let (h_in, h_out, max_rank) = (96, 64, 128);
    let (slots, len) = r::pack_adapters(&[8, 16, 32, 64, 128], h_in, h_out);
    let tok = [0, 0, 3, 3, 3, -1, 4, 1, 1, 2, 2];
    let pool = c.round(pseudo_random(len, 1).iter().map(|x| x * 0.1).collect());
    let x = c.round(pseudo_random(tok.len() * h_in, 2));
    let y0 = c.round(pseudo_random(tok.len() * h_out, 3));
    let meta = DeviceLora::upload(stream, &slots, &tok, len, h_in, h_out, max_rank)?;
    let (d_pool, d_x) = (c.up(&pool)?, c.up(&x)?);
    let v_ref = r::lora_shrink_bgmv(&x, &pool, &slots, &tok, h_in, max_rank)?;
    let mut y_ref = y0.clone();
    r::lora_expand_bgmv(
        &v_ref, &pool, &slots, &tok, &mut y_ref, h_out, max_rank, 0.5,
    )?;
    for segmented in [true, false] {
        let mut v = c.zeros_f32(tok.len() * max_rank)?;
        let mut y = c.up(&y0)?;
        let layout = if segmented {
            LoraLayout::Segmented
        } else {
            LoraLayout::Gathered
        };
        let (x, p) = (d_x.as_view(), d_pool.as_view());
        let mut vv = v.as_view_mut();
        k.lora(
            stream,
            LoraStep::Shrink { x: &x, v: &mut vv },
            &p,
            &meta,
            layout,
        )?;
        let (vr, mut yv) = (v.as_view(), y.as_view_mut());
        let step = LoraStep::Expand {
            v: &vr,
            y: &mut yv,
            scale: 0.5,
        };
        k.lora(stream, step, &p, &meta, layout)?;
        let v_got = stream
            .clone_dtoh(&v)
            .map_err(|e| Error::msg(format!("check download: {e}")))?;
        let names = if segmented {
            ["lora_shrink_sgmv", "lora_expand_sgmv"]
        } else {
            ["lora_shrink_bgmv", "lora_expand_bgmv"]
        };
        push(names[0], &v_got, &v_ref);
        push(names[1], &c.down(&y)?, &y_ref);
    }

    // RMSNorm, SiLU-and-multiply, residual add.
    let (tokens, h, inter) = (3, 4096, 512);
    let xn = c.round(pseudo_random(tokens * h, 4));
    let w = c.round(pseudo_random(h, 5));
    let (d_xn, d_w) = (c.up(&xn)?, c.up(&w)?);
    let mut d_y = c.up(&vec![0.0; tokens * h])?;
    k.rms_norm(
        stream,
        &d_xn.as_view(),
        &d_w.as_view(),
        &mut d_y.as_view_mut(),
        tokens,
        1e-5,
    )?;
    push("rms_norm", &c.down(&d_y)?, &r::rms_norm(&xn, &w, 1e-5)?);
    let gu = c.round(
        pseudo_random(tokens * 2 * inter, 6)
            .iter()
            .map(|x| x * 4.0)
            .collect(),
    );
    let d_gu = c.up(&gu)?;
    let mut d_act = c.up(&vec![0.0; tokens * inter])?;
    k.silu_mul(
        stream,
        &d_gu.as_view(),
        &mut d_act.as_view_mut(),
        tokens,
        inter,
    )?;
    push("silu_mul", &c.down(&d_act)?, &r::silu_mul(&gu, inter)?);
    let mut acc = xn.clone();
    r::add_inplace(&mut acc, &xn)?;
    let mut d_acc = c.up(&xn)?;
    k.add_inplace(stream, &mut d_acc.as_view_mut(), &d_xn.as_view())?;
    push("add_inplace", &c.down(&d_acc)?, &acc);

    // RoPE at small and large positions.
    let sh = AttnShape {
        heads: 4,
        kv_heads: 2,
        head_dim: 128,
    };
    let pos = [0, 1, 17, 4095];
    let (mut q, mut kk) = (
        c.round(pseudo_random(pos.len() * sh.heads * sh.head_dim, 7)),
        c.round(pseudo_random(pos.len() * sh.kv_heads * sh.head_dim, 8)),
    );
    let (mut d_q, mut d_k, d_pos) = (c.up(&q)?, c.up(&kk)?, c.up_i32(&pos)?);
    k.rope_neox(
        stream,
        &mut d_q.as_view_mut(),
        &mut d_k.as_view_mut(),
        &d_pos.as_view(),
        sh.heads,
        sh.kv_heads,
        sh.head_dim,
        10000.0,
    )?;
    r::rope_neox(
        &mut q,
        &mut kk,
        &pos,
        sh.heads,
        sh.kv_heads,
        sh.head_dim,
        10000.0,
    )?;
    let mut got = c.down(&d_q)?;
    got.extend(c.down(&d_k)?);
    let mut want = q;
    want.extend(kk);
    push("rope_neox", &got, &want);

    // Prefill attention over two packed sequences, then the same K/V written to a paged cache and decoded.
    let lens = [5usize, 3];
    let t = lens.iter().sum::<usize>();
    let row = sh.kv_heads * sh.head_dim;
    let scale = 1.0 / (sh.head_dim as f32).sqrt();
    let q = c.round(pseudo_random(t * sh.heads * sh.head_dim, 9));
    let kv_k = c.round(pseudo_random(t * row, 10));
    let kv_v = c.round(pseudo_random(t * row, 11));
    let seqs = DeviceSeqs::upload(stream, &lens)?;
    let (d_q, d_kk, d_vv) = (c.up(&q)?, c.up(&kv_k)?, c.up(&kv_v)?);
    let mut d_o = c.up(&vec![0.0; q.len()])?;
    k.attn_prefill(
        stream,
        &d_q.as_view(),
        &d_kk.as_view(),
        &d_vv.as_view(),
        &mut d_o.as_view_mut(),
        &seqs,
        sh,
        scale,
    )?;
    let pre = r::attn_prefill(&q, &kv_k, &kv_v, &[0, 5, 8], sh, scale)?;
    push("attn_prefill", &c.down(&d_o)?, &pre);

    let pg = Paging {
        block_size: 2,
        max_blocks: 3,
    };
    let block_table = vec![4, 0, 2, 1, 5, 3];
    let cache_slots = 6 * pg.block_size;
    let slot: Vec<i32> = lens
        .iter()
        .enumerate()
        .flat_map(|(b, &n)| {
            let bt = &block_table;
            (0..n).map(move |p| {
                bt[b * pg.max_blocks + p / pg.block_size] * pg.block_size as i32
                    + (p % pg.block_size) as i32
            })
        })
        .collect();
    let (mut kc, mut vc) = (vec![0.0; cache_slots * row], vec![0.0; cache_slots * row]);
    r::kv_cache_write(&kv_k, &kv_v, &mut kc, &mut vc, &slot, row)?;
    let d_slots = DeviceSlots::upload(stream, &slot, cache_slots)?;
    let (mut d_kc, mut d_vc) = (c.up(&vec![0.0; kc.len()])?, c.up(&vec![0.0; vc.len()])?);
    k.kv_cache_write(
        stream,
        &d_kk.as_view(),
        &d_vv.as_view(),
        &mut d_kc.as_view_mut(),
        &mut d_vc.as_view_mut(),
        &d_slots,
        sh.kv_heads,
        sh.head_dim,
        cache_slots,
    )?;
    let mut got = c.down(&d_kc)?;
    got.extend(c.down(&d_vc)?);
    let mut want = kc.clone();
    want.extend(vc.iter().copied());
    push("kv_cache_write", &got, &want);

    let ctx_lens: Vec<i32> = lens.iter().map(|&n| n as i32).collect();
    let qd = c.round(pseudo_random(lens.len() * sh.heads * sh.head_dim, 12));
    let paging = DevicePaging::upload(stream, &block_table, &ctx_lens, pg, cache_slots)?;
    let d_qd = c.up(&qd)?;
    let mut d_od = c.up(&vec![0.0; qd.len()])?;
    k.attn_decode_paged(
        stream,
        &d_qd.as_view(),
        &d_kc.as_view(),
        &d_vc.as_view(),
        &paging,
        &mut d_od.as_view_mut(),
        sh,
        scale,
    )?;
    let dec = r::attn_decode_paged(&qd, &kc, &vc, &block_table, &ctx_lens, sh, pg, scale)?;
    push("attn_decode_paged", &c.down(&d_od)?, &dec);

    stream
        .synchronize()
        .map_err(|e| Error::msg(format!("check: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_is_relative_and_treats_nan_as_failure() {
        assert_eq!(compare(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!((compare(&[101.0], &[100.0]) - 1.0 / 101.0).abs() < 1e-7);
        assert_eq!(compare(&[f32::NAN], &[1.0]), f32::INFINITY);
        assert_eq!(compare(&[1.0], &[1.0, 2.0]), f32::INFINITY);
        let r = CheckResult {
            kernel: "k",
            max_err: 0.01,
            tolerance: tolerance(DType::Bf16),
        };
        assert!(r.ok());
        assert!(
            !CheckResult {
                tolerance: tolerance(DType::F16),
                ..r
            }
            .ok()
        );
    }

    #[test]
    fn check_covers_every_kernel_except_the_filler() {
        // The list of names pushed in `run` must cover every exported kernel, so a new kernel cannot be added
        // without a GPU check. fill_uniform writes arbitrary values by design and has nothing to compare.
        let src = include_str!("check.rs");
        for f in crate::source::Family::ALL {
            for name in f.kernels() {
                if *name != crate::source::FILL_UNIFORM {
                    assert!(
                        src.contains(&format!("\"{name}\"")),
                        "{name} is not checked"
                    );
                }
            }
        }
    }
}
