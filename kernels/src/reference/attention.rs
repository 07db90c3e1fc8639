//! Attention (the `attention.cu` family): causal prefill over packed sequences, the paged KV-cache write
//! and paged decode attention, with the shape and paging checks the GPU launchers share.

use super::{check_segments, rows};
use crate::{Error, Result};

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::{close, pseudo_random};

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
}
