//! CPU reference implementations, in fp32, of every kernel in `kernels/cu`. They define what the kernels
//! compute (same layouts, same argument meaning); the GPU check compares against them with a dtype tolerance.
//! Every function validates its arguments and returns an error instead of indexing out of bounds, and the GPU
//! launchers call the same validators, because a bad offset on a device is a silent corruption, not a panic.
//!
//! - [`lora`]: batched mixed-rank LoRA (segmented and gathered);
//! - [`attention`]: causal prefill, paged KV-cache write and paged decode;
//! - here: RMSNorm, RoPE, SiLU-mul, the residual add, the dense matmul cuBLAS does on the GPU, and the
//!   deterministic generator tests and random weights use.

mod attention;
mod lora;

pub use attention::*;
pub use lora::*;

use crate::{Error, Result};

fn rows(len: usize, width: usize, what: &str) -> Result<usize> {
    if width == 0 || !len.is_multiple_of(width) {
        return Err(Error::msg(format!(
            "{what}: length {len} is not a multiple of the row width {width}"
        )));
    }
    Ok(len / width)
}

/// y = x / sqrt(mean(x^2) + eps) * w, per row of width `w.len()`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Result<Vec<f32>> {
    let h = w.len();
    rows(x.len(), h, "rms_norm x")?;
    Ok(x.chunks(h)
        .flat_map(|r| {
            let inv = 1.0 / (r.iter().map(|v| v * v).sum::<f32>() / h as f32 + eps).sqrt();
            r.iter().zip(w).map(move |(v, w)| v * inv * w)
        })
        .collect())
}

/// Llama's rotary embedding in place: q `[tokens, heads_q, d]`, k `[tokens, heads_k, d]`, dimension i paired
/// with i + d/2, angle pos * theta^(-2i/d).
pub fn rope_neox(
    q: &mut [f32],
    k: &mut [f32],
    pos: &[i32],
    heads_q: usize,
    heads_k: usize,
    head_dim: usize,
    theta: f32,
) -> Result<()> {
    if head_dim == 0 || !head_dim.is_multiple_of(2) {
        return Err(Error::msg(format!(
            "rope: head_dim {head_dim} must be even and positive"
        )));
    }
    let tokens = pos.len();
    if q.len() != tokens * heads_q * head_dim || k.len() != tokens * heads_k * head_dim {
        return Err(Error::msg(
            "rope: q or k does not match [tokens, heads, head_dim]",
        ));
    }
    let half = head_dim / 2;
    for (buf, heads) in [(q, heads_q), (k, heads_k)] {
        for (row, &p) in buf.chunks_mut(heads * head_dim).zip(pos) {
            for head in row.chunks_mut(head_dim) {
                for i in 0..half {
                    let inv_freq = theta.powf(-2.0 * i as f32 / head_dim as f32);
                    let (sn, cs) = (p as f32 * inv_freq).sin_cos();
                    let (x0, x1) = (head[i], head[i + half]);
                    head[i] = x0 * cs - x1 * sn;
                    head[i + half] = x1 * cs + x0 * sn;
                }
            }
        }
    }
    Ok(())
}

/// gate_up rows are `[gate (inter), up (inter)]`; out = silu(gate) * up, `[tokens, inter]`.
pub fn silu_mul(gate_up: &[f32], inter: usize) -> Result<Vec<f32>> {
    rows(gate_up.len(), 2 * inter, "silu_mul gate_up")?;
    Ok(gate_up
        .chunks(2 * inter)
        .flat_map(|r| (0..inter).map(move |i| r[i] / (1.0 + (-r[i]).exp()) * r[inter + i]))
        .collect())
}

pub fn add_inplace(acc: &mut [f32], x: &[f32]) -> Result<()> {
    if acc.len() != x.len() {
        return Err(Error::msg(format!(
            "add: lengths {} and {} differ",
            acc.len(),
            x.len()
        )));
    }
    acc.iter_mut().zip(x).for_each(|(a, x)| *a += x);
    Ok(())
}

/// y `[m, n]` = x `[m, k]` . w `[k, n]` (row-major): the reference for the cuBLAS GEMM. Row t of y depends
/// only on row t of x, so a batch gives each sequence the same bits as running it alone.
pub fn matmul(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    debug_assert_eq!(x.len(), m * k);
    debug_assert_eq!(w.len(), k * n);
    let mut y = vec![0.0f32; m * n];
    for (xr, yr) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        for (&a, wr) in xr.iter().zip(w.chunks_exact(n)) {
            yr.iter_mut().zip(wr).for_each(|(y, w)| *y += a * w);
        }
    }
    y
}

/// Deterministic pseudo-random values in [-1, 1) for tests and the GPU check (no RNG dependency).
pub fn pseudo_random(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
pub(crate) fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_of_a_known_vector() {
        // mean([9, 16]) = 12.5, rms = 3.5355339; [3, 4] / rms * [1, 2].
        let y = rms_norm(&[3., 4., 0., 0.], &[1., 2.], 0.0).unwrap();
        assert!(close(&y[..2], &[0.848_528_1, 2.262_741_7], 1e-6), "{y:?}");
        // A zero row stays zero thanks to eps (no division by zero).
        let y = rms_norm(&[0., 0.], &[1., 1.], 1e-6).unwrap();
        assert_eq!(y, vec![0., 0.]);
        assert!(rms_norm(&[1., 2., 3.], &[1., 1.], 0.0).is_err());
    }

    #[test]
    fn rope_matches_hand_values_and_preserves_norms() {
        // d = 4, pos = 1: pair (0, 2) turns by 1 rad, pair (1, 3) by 10000^-0.5 = 0.01 rad.
        let mut q = vec![1., 2., 3., 4.];
        let mut k = vec![1., 0., 0., 0.];
        rope_neox(&mut q, &mut k, &[1], 1, 1, 4, 10000.0).unwrap();
        let (s1, c1) = 1f32.sin_cos();
        let (s2, c2) = 0.01f32.sin_cos();
        let want = [
            c1 - 3. * s1,
            2. * c2 - 4. * s2,
            3. * c1 + s1,
            4. * c2 + 2. * s2,
        ];
        assert!(close(&q, &want, 1e-6), "{q:?} vs {want:?}");
        assert!((q[0] + 1.984_111).abs() < 1e-5);
        assert!(close(&k, &[c1, 0., s1, 0.], 1e-6));

        let d = 128;
        let orig = pseudo_random(3 * 2 * d, 9);
        let (mut q, mut k) = (orig.clone(), orig[..3 * d].to_vec());
        rope_neox(&mut q, &mut k, &[0, 7, 4000], 2, 1, d, 10000.0).unwrap();
        assert_eq!(&q[..2 * d], &orig[..2 * d], "position 0 is the identity");
        for (a, b) in q.chunks(d).zip(orig.chunks(d)) {
            let n = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((n(a) - n(b)).abs() < 1e-4 * n(b));
        }
    }

    #[test]
    fn rope_scores_depend_only_on_relative_position() {
        let d = 64;
        let score = |m: i32, n: i32| {
            let (mut q, mut k) = (pseudo_random(d, 4), pseudo_random(d, 5));
            let mut dummy = vec![0.0; d];
            rope_neox(&mut q, &mut dummy, &[m], 1, 1, d, 10000.0).unwrap();
            rope_neox(&mut k, &mut dummy, &[n], 1, 1, d, 10000.0).unwrap();
            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((score(10, 3) - score(107, 100)).abs() < 1e-4);
        assert!((score(10, 3) - score(10, 4)).abs() > 1e-4);
    }

    #[test]
    fn silu_mul_by_hand() {
        // silu(0) = 0; silu(1) = 1 / (1 + e^-1) = 0.7310586; silu(-2) = -2 / (1 + e^2) = -0.2384058.
        let out = silu_mul(&[0., 1., -2., 5., 2., 3.], 3).unwrap();
        assert!(
            close(&out, &[0., 1.462_117_2, -0.715_217_4], 1e-6),
            "{out:?}"
        );
        assert!(silu_mul(&[1., 2., 3.], 2).is_err());
        let mut a = vec![1., 2.];
        add_inplace(&mut a, &[0.5, -2.]).unwrap();
        assert_eq!(a, vec![1.5, 0.]);
    }

    #[test]
    fn pseudo_random_is_deterministic_and_bounded() {
        let a = pseudo_random(1000, 7);
        assert_eq!(a, pseudo_random(1000, 7));
        assert_ne!(a, pseudo_random(1000, 8));
        assert!(a.iter().all(|x| (-1.0..1.0).contains(x)));
        let mean = a.iter().sum::<f32>() / 1000.0;
        assert!(mean.abs() < 0.1);
    }
}
