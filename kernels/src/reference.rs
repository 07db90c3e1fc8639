//! CPU reference implementations, in fp32, of every kernel in `kernels/cu`. They define what the kernels
//! compute (same layouts, same argument meaning); the GPU check compares against them with a dtype tolerance.
//! Every function validates its arguments and returns an error instead of indexing out of bounds, and the GPU
//! launchers call the same validators, because a bad offset on a device is a silent corruption, not a panic.

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

fn rows(len: usize, width: usize, what: &str) -> Result<usize> {
    if width == 0 || !len.is_multiple_of(width) {
        return Err(Error::msg(format!(
            "{what}: length {len} is not a multiple of the row width {width}"
        )));
    }
    Ok(len / width)
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

/// Head layout shared by the attention kernels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

impl AttnShape {
    pub fn check(&self) -> Result<()> {
        if self.head_dim == 0
            || !self.head_dim.is_multiple_of(32)
            || self.head_dim > crate::source::MAX_HEAD_DIM
        {
            return Err(Error::msg(format!(
                "attention: head_dim {} must be a positive multiple of 32, at most {}",
                self.head_dim,
                crate::source::MAX_HEAD_DIM
            )));
        }
        if self.kv_heads == 0 || !self.heads.is_multiple_of(self.kv_heads) {
            return Err(Error::msg(format!(
                "attention: kv_heads {} must divide heads {}",
                self.kv_heads, self.heads
            )));
        }
        Ok(())
    }
}

/// softmax(scale * q.K^T) . V for one query over the given key/value rows.
pub fn attention_dense(q: &[f32], keys: &[&[f32]], values: &[&[f32]], scale: f32) -> Vec<f32> {
    let s: Vec<f32> = keys
        .iter()
        .map(|k| scale * q.iter().zip(*k).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let m = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f32> = s.iter().map(|x| (x - m).exp()).collect();
    let z: f32 = e.iter().sum();
    let mut out = vec![0.0; q.len()];
    for (w, v) in e.iter().zip(values) {
        out.iter_mut().zip(*v).for_each(|(o, v)| *o += w / z * v);
    }
    out
}

/// Causal attention over packed sequences: q `[tokens, heads, d]`, k/v `[tokens, kv_heads, d]`, sequence s
/// is tokens `cu_seqlens[s]..cu_seqlens[s+1]`.
pub fn attn_prefill(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    cu_seqlens: &[i32],
    sh: AttnShape,
    scale: f32,
) -> Result<Vec<f32>> {
    sh.check()?;
    let d = sh.head_dim;
    let tokens = rows(q.len(), sh.heads * d, "attn_prefill q")?;
    if k.len() != tokens * sh.kv_heads * d || v.len() != k.len() {
        return Err(Error::msg(
            "attn_prefill: k and v must be [tokens, kv_heads, head_dim]",
        ));
    }
    if cu_seqlens.len() < 2 {
        return Err(Error::msg(
            "attn_prefill: cu_seqlens needs at least two entries",
        ));
    }
    check_segments(cu_seqlens, &vec![-1; cu_seqlens.len() - 1], tokens, 0)?;
    let group = sh.heads / sh.kv_heads;
    let mut out = vec![0.0; q.len()];
    for w in cu_seqlens.windows(2) {
        for t in w[0] as usize..w[1] as usize {
            for h in 0..sh.heads {
                let row = |j: usize| {
                    (j * sh.kv_heads + h / group) * d..(j * sh.kv_heads + h / group + 1) * d
                };
                let ks: Vec<&[f32]> = (w[0] as usize..=t).map(|j| &k[row(j)]).collect();
                let vs: Vec<&[f32]> = (w[0] as usize..=t).map(|j| &v[row(j)]).collect();
                let o = attention_dense(&q[(t * sh.heads + h) * d..][..d], &ks, &vs, scale);
                out[(t * sh.heads + h) * d..][..d].copy_from_slice(&o);
            }
        }
    }
    Ok(out)
}

/// Writes token t's K and V rows into cache slot `slot[t]`; caches are `[slots, kv_heads, d]`.
pub fn kv_cache_write(
    k: &[f32],
    v: &[f32],
    k_cache: &mut [f32],
    v_cache: &mut [f32],
    slot: &[i32],
    row: usize,
) -> Result<()> {
    let slots = rows(k_cache.len(), row, "kv cache")?;
    if k.len() != slot.len() * row || v.len() != k.len() || v_cache.len() != k_cache.len() {
        return Err(Error::msg(
            "kv_cache_write: k, v must be [tokens, row] and the caches the same size",
        ));
    }
    for (t, &s) in slot.iter().enumerate() {
        if s < 0 || s as usize >= slots {
            return Err(Error::msg(format!(
                "kv_cache_write: slot {s} of token {t} not in 0..{slots}"
            )));
        }
        k_cache[s as usize * row..][..row].copy_from_slice(&k[t * row..][..row]);
        v_cache[s as usize * row..][..row].copy_from_slice(&v[t * row..][..row]);
    }
    Ok(())
}

/// Paged-cache decode geometry: block b of sequence s is physical block `block_table[s * max_blocks + b]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Paging {
    pub block_size: usize,
    pub max_blocks: usize,
}

/// Checks a block table against the cache size; returns the number of sequences.
pub fn check_paging(
    block_table: &[i32],
    context_lens: &[i32],
    pg: Paging,
    cache_slots: usize,
) -> Result<usize> {
    let seqs = context_lens.len();
    if pg.block_size == 0 || block_table.len() != seqs * pg.max_blocks {
        return Err(Error::msg(
            "paged attention: block_table must be [seqs, max_blocks] and block_size positive",
        ));
    }
    let blocks = cache_slots / pg.block_size;
    for (s, &len) in context_lens.iter().enumerate() {
        if len < 1 || len as usize > pg.max_blocks * pg.block_size {
            return Err(Error::msg(format!(
                "paged attention: context length {len} of sequence {s} not in 1..={}",
                pg.max_blocks * pg.block_size
            )));
        }
        let used = (len as usize).div_ceil(pg.block_size);
        if let Some(b) = block_table[s * pg.max_blocks..][..used]
            .iter()
            .find(|&&b| b < 0 || b as usize >= blocks)
        {
            return Err(Error::msg(format!(
                "paged attention: block {b} of sequence {s} not in 0..{blocks}"
            )));
        }
    }
    Ok(seqs)
}

/// One decode step: q `[seqs, heads, d]` attends over its sequence's cached tokens.
#[allow(clippy::too_many_arguments)]
pub fn attn_decode_paged(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    block_table: &[i32],
    context_lens: &[i32],
    sh: AttnShape,
    pg: Paging,
    scale: f32,
) -> Result<Vec<f32>> {
    sh.check()?;
    let d = sh.head_dim;
    let row = sh.kv_heads * d;
    let slots = rows(k_cache.len(), row, "attn_decode k_cache")?;
    let seqs = check_paging(block_table, context_lens, pg, slots)?;
    if q.len() != seqs * sh.heads * d || v_cache.len() != k_cache.len() {
        return Err(Error::msg(
            "attn_decode: q must be [seqs, heads, head_dim] and the caches the same size",
        ));
    }
    let group = sh.heads / sh.kv_heads;
    let mut out = vec![0.0; q.len()];
    for s in 0..seqs {
        let slot_of = |p: usize| {
            block_table[s * pg.max_blocks + p / pg.block_size] as usize * pg.block_size
                + p % pg.block_size
        };
        for h in 0..sh.heads {
            let at = |p: usize| {
                let o = (slot_of(p) * sh.kv_heads + h / group) * d;
                o..o + d
            };
            let n = context_lens[s] as usize;
            let ks: Vec<&[f32]> = (0..n).map(|p| &k_cache[at(p)]).collect();
            let vs: Vec<&[f32]> = (0..n).map(|p| &v_cache[at(p)]).collect();
            let o = attention_dense(&q[(s * sh.heads + h) * d..][..d], &ks, &vs, scale);
            out[(s * sh.heads + h) * d..][..d].copy_from_slice(&o);
        }
    }
    Ok(out)
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
mod tests {
    use super::*;

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

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

    fn sh(heads: usize, kv_heads: usize, head_dim: usize) -> AttnShape {
        AttnShape {
            heads,
            kv_heads,
            head_dim,
        }
    }

    #[test]
    fn prefill_attention_is_causal() {
        // The first token can only see itself, so its output is its own V; equal scores average the V rows.
        let d = 32;
        let q = vec![0.0; 2 * d];
        let k = pseudo_random(2 * d, 1);
        let v: Vec<f32> = (0..2 * d).map(|i| if i < d { 1.0 } else { 3.0 }).collect();
        let out = attn_prefill(&q, &k, &v, &[0, 2], sh(1, 1, d), 1.0).unwrap();
        assert!(close(&out[..d], &[1.0; 32], 1e-6));
        assert!(close(&out[d..], &[2.0; 32], 1e-6));
        // Two sequences of one token each: every token sees only itself.
        let out = attn_prefill(&q, &k, &v, &[0, 1, 2], sh(1, 1, d), 1.0).unwrap();
        assert!(close(&out[d..], &[3.0; 32], 1e-6));
        assert!(attn_prefill(&q, &k, &v, &[0, 3], sh(1, 1, d), 1.0).is_err());
        assert!(
            attn_prefill(&q, &k, &v, &[0, 2], sh(1, 1, 16), 1.0)
                .unwrap_err()
                .0
                .contains("multiple of 32")
        );
    }

    #[test]
    fn paged_decode_equals_dense_attention_and_prefill() {
        // Two sequences (lengths 5 and 3) with grouped heads, written into a paged cache through a scrambled
        // block table; decode must give the dense softmax over the same rows, and the last prefill row.
        let s = sh(4, 2, 32);
        let row = s.kv_heads * s.head_dim;
        let lens = [5usize, 3];
        let pg = Paging {
            block_size: 2,
            max_blocks: 3,
        };
        let block_table = vec![4, 0, 2, 1, 5, -1];
        let mut k_cache = vec![0.0; 6 * pg.block_size * row];
        let mut v_cache = k_cache.clone();
        let scale = 1.0 / (s.head_dim as f32).sqrt();
        let mut q_dec = Vec::new();
        let mut want = Vec::new();
        for (b, &n) in lens.iter().enumerate() {
            let q = pseudo_random(n * s.heads * s.head_dim, 10 + b as u64);
            let k = pseudo_random(n * row, 20 + b as u64);
            let v = pseudo_random(n * row, 30 + b as u64);
            let slot: Vec<i32> = (0..n)
                .map(|p| {
                    block_table[b * pg.max_blocks + p / pg.block_size] * pg.block_size as i32
                        + (p % pg.block_size) as i32
                })
                .collect();
            kv_cache_write(&k, &v, &mut k_cache, &mut v_cache, &slot, row).unwrap();
            let pre = attn_prefill(&q, &k, &v, &[0, n as i32], s, scale).unwrap();
            let last = (n - 1) * s.heads * s.head_dim;
            q_dec.extend_from_slice(&q[last..]);
            want.extend_from_slice(&pre[last..]);
            // Dense attention over head 3 (kv head 1) by hand-built row lists.
            let d = s.head_dim;
            let ks: Vec<&[f32]> = (0..n).map(|j| &k[j * row + d..][..d]).collect();
            let vs: Vec<&[f32]> = (0..n).map(|j| &v[j * row + d..][..d]).collect();
            let dense = attention_dense(&q[last + 3 * d..][..d], &ks, &vs, scale);
            assert!(close(&pre[last + 3 * d..][..d], &dense, 1e-6));
        }
        let ctx: Vec<i32> = lens.iter().map(|&n| n as i32).collect();
        let got = attn_decode_paged(&q_dec, &k_cache, &v_cache, &block_table, &ctx, s, pg, scale)
            .unwrap();
        assert!(close(&got, &want, 1e-5));

        let bad = vec![4, 0, 9, 1, 5, -1];
        let e =
            attn_decode_paged(&q_dec, &k_cache, &v_cache, &bad, &ctx, s, pg, scale).unwrap_err();
        assert!(e.0.contains("block 9"), "{e}");
        assert!(
            attn_decode_paged(
                &q_dec,
                &k_cache,
                &v_cache,
                &block_table,
                &[7, 3],
                s,
                pg,
                scale
            )
            .is_err()
        );
        assert!(
            kv_cache_write(
                &[0.0; 64],
                &[0.0; 64],
                &mut k_cache,
                &mut v_cache,
                &[99],
                row
            )
            .is_err()
        );
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
