//! Batched mixed-rank LoRA (the `lora.cu` family): adapter slots in a pool, segment validation, and the
//! segmented (SGMV) and gathered (BGMV) shrink/expand pairs, which compute the same thing.

use super::rows;
use crate::{Error, Result};

/// Where one adapter sits in the pool: A is `[rank, h_in]` at `a_off`, B is `[rank, h_out]` at `b_off`
/// (elements, row-major, rank-major so both kernels read contiguous rows).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdapterSlot {
    pub a_off: u64,
    pub b_off: u64,
    pub rank: u32,
}

/// Lays adapters of the given ranks out back to back (A then B of each), returns slots and pool length.
pub fn pack_adapters(ranks: &[u32], h_in: usize, h_out: usize) -> (Vec<AdapterSlot>, usize) {
    let mut off = 0u64;
    let slots = ranks
        .iter()
        .map(|&r| {
            let a_off = off;
            let b_off = a_off + r as u64 * h_in as u64;
            off = b_off + r as u64 * h_out as u64;
            AdapterSlot {
                a_off,
                b_off,
                rank: r,
            }
        })
        .collect();
    (slots, off as usize)
}

/// Checks that every adapter's A and B lie inside the pool and fit in `max_rank`.
pub fn check_adapters(
    pool_len: usize,
    slots: &[AdapterSlot],
    h_in: usize,
    h_out: usize,
    max_rank: usize,
) -> Result<()> {
    for (i, s) in slots.iter().enumerate() {
        let r = s.rank as u64;
        if s.rank == 0 || s.rank as usize > max_rank {
            return Err(Error::msg(format!(
                "adapter {i}: rank {} not in 1..={max_rank}",
                s.rank
            )));
        }
        if s.a_off + r * h_in as u64 > pool_len as u64
            || s.b_off + r * h_out as u64 > pool_len as u64
        {
            return Err(Error::msg(format!(
                "adapter {i}: A or B lies outside the pool of {pool_len} elements"
            )));
        }
    }
    Ok(())
}

/// Validates a segmentation of `tokens` tokens: starts at 0, non-decreasing, ends at `tokens`, and each
/// segment's adapter is -1 or a valid slot index.
pub fn check_segments(
    seg_start: &[i32],
    seg_adapter: &[i32],
    tokens: usize,
    adapters: usize,
) -> Result<()> {
    if seg_start.len() != seg_adapter.len() + 1 {
        return Err(Error::msg(
            "seg_start must have one more entry than seg_adapter",
        ));
    }
    if seg_start[0] != 0 || *seg_start.last().unwrap_or(&0) as usize != tokens {
        return Err(Error::msg(format!(
            "segments must start at token 0 and end at token {tokens}"
        )));
    }
    if seg_start.windows(2).any(|w| w[1] < w[0]) {
        return Err(Error::msg("seg_start must be non-decreasing"));
    }
    check_adapter_ids(seg_adapter, adapters)
}

pub fn check_adapter_ids(ids: &[i32], adapters: usize) -> Result<()> {
    match ids.iter().find(|&&a| a < -1 || a >= adapters as i32) {
        Some(a) => Err(Error::msg(format!(
            "adapter index {a} is not -1 or in 0..{adapters}"
        ))),
        None => Ok(()),
    }
}

/// Segments of a token list that is grouped by adapter (equal neighbours merge): (seg_start, seg_adapter).
pub fn segments(tok_adapter: &[i32]) -> (Vec<i32>, Vec<i32>) {
    let mut start = vec![0];
    let mut adapter = Vec::new();
    for (t, &a) in tok_adapter.iter().enumerate() {
        if adapter.last() != Some(&a) {
            if t > 0 {
                start.push(t as i32);
            }
            adapter.push(a);
        }
    }
    start.push(tok_adapter.len() as i32);
    if adapter.is_empty() {
        start.pop();
    }
    (start, adapter)
}

fn shrink_row(x: &[f32], pool: &[f32], s: &AdapterSlot, h_in: usize, v: &mut [f32]) {
    for (j, vj) in v.iter_mut().enumerate().take(s.rank as usize) {
        let a = &pool[s.a_off as usize + j * h_in..][..h_in];
        *vj = x.iter().zip(a).map(|(x, a)| x * a).sum();
    }
}

fn expand_row(v: &[f32], pool: &[f32], s: &AdapterSlot, h_out: usize, scale: f32, y: &mut [f32]) {
    for (col, yc) in y.iter_mut().enumerate() {
        let acc: f32 = (0..s.rank as usize)
            .map(|j| v[j] * pool[s.b_off as usize + j * h_out + col])
            .sum();
        *yc += scale * acc;
    }
}

/// Per-token adapter (gathered form) from a segmentation.
fn token_adapters(seg_start: &[i32], seg_adapter: &[i32]) -> Vec<i32> {
    seg_adapter
        .iter()
        .enumerate()
        .flat_map(|(s, &a)| std::iter::repeat_n(a, (seg_start[s + 1] - seg_start[s]) as usize))
        .collect()
}

/// v = x . A^T per token, for the tokens' adapters; v is `[tokens, max_rank]`, zero beyond each rank and for
/// tokens without an adapter.
pub fn lora_shrink_bgmv(
    x: &[f32],
    pool: &[f32],
    slots: &[AdapterSlot],
    tok_adapter: &[i32],
    h_in: usize,
    max_rank: usize,
) -> Result<Vec<f32>> {
    let tokens = rows(x.len(), h_in, "lora shrink x")?;
    if tok_adapter.len() != tokens {
        return Err(Error::msg(format!(
            "{} token adapters for {tokens} tokens",
            tok_adapter.len()
        )));
    }
    check_adapters(pool.len(), slots, h_in, 0, max_rank)?;
    check_adapter_ids(tok_adapter, slots.len())?;
    let mut v = vec![0.0; tokens * max_rank];
    for (t, &a) in tok_adapter.iter().enumerate() {
        if a >= 0 {
            shrink_row(
                &x[t * h_in..][..h_in],
                pool,
                &slots[a as usize],
                h_in,
                &mut v[t * max_rank..][..max_rank],
            );
        }
    }
    Ok(v)
}

/// y += scale * v . B per token; tokens without an adapter are left alone.
#[allow(clippy::too_many_arguments)]
pub fn lora_expand_bgmv(
    v: &[f32],
    pool: &[f32],
    slots: &[AdapterSlot],
    tok_adapter: &[i32],
    y: &mut [f32],
    h_out: usize,
    max_rank: usize,
    scale: f32,
) -> Result<()> {
    let tokens = rows(y.len(), h_out, "lora expand y")?;
    if tok_adapter.len() != tokens || v.len() != tokens * max_rank {
        return Err(Error::msg(format!(
            "lora expand: need {tokens} token adapters and a [{tokens}, {max_rank}] v"
        )));
    }
    check_adapters(pool.len(), slots, 0, h_out, max_rank)?;
    check_adapter_ids(tok_adapter, slots.len())?;
    for (t, &a) in tok_adapter.iter().enumerate() {
        if a >= 0 {
            let (vr, yr) = (&v[t * max_rank..][..max_rank], &mut y[t * h_out..][..h_out]);
            expand_row(vr, pool, &slots[a as usize], h_out, scale, yr);
        }
    }
    Ok(())
}

/// Segmented form: the same result as [`lora_shrink_bgmv`] with every token of segment s using adapter
/// `seg_adapter[s]`. The GPU kernel differs in how it reuses A, not in what it computes.
pub fn lora_shrink_sgmv(
    x: &[f32],
    pool: &[f32],
    slots: &[AdapterSlot],
    seg_start: &[i32],
    seg_adapter: &[i32],
    h_in: usize,
    max_rank: usize,
) -> Result<Vec<f32>> {
    check_segments(
        seg_start,
        seg_adapter,
        rows(x.len(), h_in, "lora shrink x")?,
        slots.len(),
    )?;
    lora_shrink_bgmv(
        x,
        pool,
        slots,
        &token_adapters(seg_start, seg_adapter),
        h_in,
        max_rank,
    )
}

#[allow(clippy::too_many_arguments)]
pub fn lora_expand_sgmv(
    v: &[f32],
    pool: &[f32],
    slots: &[AdapterSlot],
    seg_start: &[i32],
    seg_adapter: &[i32],
    y: &mut [f32],
    h_out: usize,
    max_rank: usize,
    scale: f32,
) -> Result<()> {
    check_segments(
        seg_start,
        seg_adapter,
        rows(y.len(), h_out, "lora expand y")?,
        slots.len(),
    )?;
    lora_expand_bgmv(
        v,
        pool,
        slots,
        &token_adapters(seg_start, seg_adapter),
        y,
        h_out,
        max_rank,
        scale,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::pseudo_random;

    /// Two tokens, two adapters of ranks 1 and 2, h_in = 3, h_out = 2, numbers worked out by hand:
    /// A0 = [1 2 3], B0 = [1 -1]; A1 = [[1 0 0], [0 1 1]], B1 = [[1 0], [0 2]].
    /// x0 = [1 1 1] (adapter 0): v0 = [6, 0], y0 = [10, 10] + [6, -6] = [16, 4].
    /// x1 = [2 3 4] (adapter 1): v1 = [2, 7], y1 = [0, 0] + [2, 14].
    fn hand_case() -> (Vec<f32>, Vec<AdapterSlot>, Vec<f32>) {
        let (slots, len) = pack_adapters(&[1, 2], 3, 2);
        assert_eq!(len, 15);
        assert_eq!(
            slots[1],
            AdapterSlot {
                a_off: 5,
                b_off: 11,
                rank: 2
            }
        );
        let pool = vec![1., 2., 3., 1., -1., 1., 0., 0., 0., 1., 1., 1., 0., 0., 2.];
        (pool, slots, vec![1., 1., 1., 2., 3., 4.])
    }

    #[test]
    fn mixed_rank_shrink_expand_by_hand() {
        let (pool, slots, x) = hand_case();
        let v = lora_shrink_bgmv(&x, &pool, &slots, &[0, 1], 3, 2).unwrap();
        assert_eq!(v, vec![6., 0., 2., 7.]);
        let mut y = vec![10., 10., 0., 0.];
        lora_expand_bgmv(&v, &pool, &slots, &[0, 1], &mut y, 2, 2, 1.0).unwrap();
        assert_eq!(y, vec![16., 4., 2., 14.]);

        let vs = lora_shrink_sgmv(&x, &pool, &slots, &[0, 1, 2], &[0, 1], 3, 2).unwrap();
        assert_eq!(vs, v);
        let mut ys = vec![10., 10., 0., 0.];
        lora_expand_sgmv(&vs, &pool, &slots, &[0, 1, 2], &[0, 1], &mut ys, 2, 2, 0.5).unwrap();
        assert_eq!(ys, vec![13., 7., 1., 7.]);
    }

    #[test]
    fn tokens_without_adapter_are_untouched() {
        let (pool, slots, x) = hand_case();
        let v = lora_shrink_bgmv(&x, &pool, &slots, &[-1, 1], 3, 2).unwrap();
        assert_eq!(v, vec![0., 0., 2., 7.]);
        let mut y = vec![5., 5., 0., 0.];
        lora_expand_bgmv(&v, &pool, &slots, &[-1, 1], &mut y, 2, 2, 1.0).unwrap();
        assert_eq!(y, vec![5., 5., 2., 14.]);
    }

    #[test]
    fn segmented_equals_gathered_on_a_random_mixed_batch() {
        let (h_in, h_out) = (64, 48);
        let ranks = [8, 16, 32, 64, 128];
        let (slots, len) = pack_adapters(&ranks, h_in, h_out);
        let pool = pseudo_random(len, 1);
        let tok: Vec<i32> = vec![0, 0, 0, 2, 2, 4, 1, 1, 1, 1, 3];
        let x = pseudo_random(tok.len() * h_in, 2);
        let (start, adapter) = segments(&tok);
        assert_eq!(start, vec![0, 3, 5, 6, 10, 11]);
        assert_eq!(adapter, vec![0, 2, 4, 1, 3]);
        let vg = lora_shrink_bgmv(&x, &pool, &slots, &tok, h_in, 128).unwrap();
        let vs = lora_shrink_sgmv(&x, &pool, &slots, &start, &adapter, h_in, 128).unwrap();
        assert_eq!(vg, vs);
        // Entries past a token's rank stay zero: the expand reads only the first `rank` of them.
        assert!(vg[..128].iter().skip(8).all(|&z| z == 0.0));
        let mut yg = pseudo_random(tok.len() * h_out, 3);
        let mut ys = yg.clone();
        lora_expand_bgmv(&vg, &pool, &slots, &tok, &mut yg, h_out, 128, 2.0).unwrap();
        lora_expand_sgmv(
            &vs, &pool, &slots, &start, &adapter, &mut ys, h_out, 128, 2.0,
        )
        .unwrap();
        assert_eq!(yg, ys);
    }

    #[test]
    fn bad_lora_arguments_are_errors() {
        let (pool, slots, x) = hand_case();
        assert!(
            lora_shrink_bgmv(&x, &pool, &slots, &[0, 2], 3, 2)
                .unwrap_err()
                .0
                .contains("adapter index 2")
        );
        assert!(
            lora_shrink_bgmv(&x, &pool, &slots, &[0, 1], 3, 1)
                .unwrap_err()
                .0
                .contains("rank 2")
        );
        assert!(lora_shrink_bgmv(&x[..5], &pool, &slots, &[0, 1], 3, 2).is_err());
        assert!(
            lora_shrink_bgmv(&x, &pool[..10], &slots, &[0, 1], 3, 2)
                .unwrap_err()
                .0
                .contains("outside the pool")
        );
        // Shrink reads only A: a pool cut inside the last B is still fine for it, not for the expand.
        assert!(lora_shrink_bgmv(&x, &pool[..14], &slots, &[0, 1], 3, 2).is_ok());
        let mut y = vec![0.0; 4];
        assert!(
            lora_expand_bgmv(&[0.0; 4], &pool[..14], &slots, &[0, 1], &mut y, 2, 2, 1.0).is_err()
        );
        assert!(lora_shrink_sgmv(&x, &pool, &slots, &[0, 2, 1], &[0, 1], 3, 2).is_err());
        assert!(
            lora_shrink_sgmv(&x, &pool, &slots, &[0, 1], &[0], 3, 2)
                .unwrap_err()
                .0
                .contains("end at token 2")
        );
    }
}
