//! The model's weights (one structure for every backend) and the deterministic generators of host values:
//! model tensors, adapters and prompts, all from a seed, so two backends (or a test and a backend) build
//! the same model without sharing state.

use super::shape::{PROJECTIONS, Shape};
use crate::Result;
use crate::reference::pseudo_random;

/// One decoder layer. Matrices are row-major `[in, out]`: y = x . W.
pub struct LayerWeights<B> {
    pub attn_norm: B,
    pub wq: B,
    pub wk: B,
    pub wv: B,
    pub wo: B,
    pub mlp_norm: B,
    /// `[hidden, 2 x intermediate]`: gate then up, so one GEMM computes both.
    pub w_gate_up: B,
    pub w_down: B,
}

/// Every weight. The embedding table has its own type: both backends keep it in host memory and gather
/// rows on the host (the kernels crate has no gather kernel).
pub struct Weights<B, E> {
    pub embed: E,
    pub layers: Vec<LayerWeights<B>>,
    pub final_norm: B,
    pub lm_head: B,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Embedding,
    Norm,
    Matrix { fan_in: usize },
}

/// One weight tensor, for initialisers: its role, its length and a stable identity `(layer, index)`
/// (layers count from 1; layer 0 holds the embedding, the final norm and the LM head).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tensor {
    pub kind: Kind,
    pub len: usize,
    pub id: (u64, u64),
}

impl<B, E> Weights<B, E> {
    /// Makes every tensor with `make` (the embedding with `embed`), both given `ctx` (e.g. the ops).
    pub fn build<C: ?Sized>(
        s: &Shape,
        ctx: &mut C,
        mut make: impl FnMut(&mut C, Tensor) -> Result<B>,
        embed: impl FnOnce(&mut C, Tensor) -> Result<E>,
    ) -> Result<Self> {
        let (h, kv, i) = (s.hidden, s.kv_row(), s.intermediate);
        let norm = |l, j| Tensor {
            kind: Kind::Norm,
            len: h,
            id: (l, j),
        };
        let mat = |len, fan_in, l, j| Tensor {
            kind: Kind::Matrix { fan_in },
            len,
            id: (l, j),
        };
        let embed = embed(
            ctx,
            Tensor {
                kind: Kind::Embedding,
                len: s.vocab * h,
                id: (0, 0),
            },
        )?;
        let mut layers = Vec::with_capacity(s.layers);
        for l in 1..=s.layers as u64 {
            layers.push(LayerWeights {
                attn_norm: make(ctx, norm(l, 1))?,
                wq: make(ctx, mat(h * h, h, l, 2))?,
                wk: make(ctx, mat(h * kv, h, l, 3))?,
                wv: make(ctx, mat(h * kv, h, l, 4))?,
                wo: make(ctx, mat(h * h, h, l, 5))?,
                mlp_norm: make(ctx, norm(l, 6))?,
                w_gate_up: make(ctx, mat(h * 2 * i, h, l, 7))?,
                w_down: make(ctx, mat(i * h, i, l, 8))?,
            });
        }
        Ok(Weights {
            embed,
            layers,
            final_norm: make(ctx, norm(0, 1))?,
            lm_head: make(ctx, mat(h * s.vocab, h, 0, 2))?,
        })
    }
}

/// A generator seed from a model seed and two identities.
pub fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ a.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ b.wrapping_mul(0x94d0_49bb_1331_11eb)
        ^ 0x5555
}

/// Deterministic values in [-scale, scale).
pub fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut v = pseudo_random(n, seed);
    v.iter_mut().for_each(|x| *x *= scale);
    v
}

/// Host values of a tensor: matrices scaled by 1/sqrt(fan_in) (activations keep their size through the
/// layers), norms near 1, the embedding in [-1, 1).
pub fn host_tensor(seed: u64, t: &Tensor) -> Vec<f32> {
    let s = mix(seed, t.id.0, t.id.1);
    match t.kind {
        Kind::Embedding => random(t.len, s, 1.0),
        Kind::Norm => random(t.len, s, 0.1).iter().map(|x| 1.0 + x).collect(),
        Kind::Matrix { fan_in } => random(t.len, s, 1.0 / (fan_in as f32).sqrt()),
    }
}

/// One adapter's weights of rank r in the packed order of [`Shape::adapter_offsets`], seeded by its id.
/// B is small (real adapters start at B = 0 and stay small relative to the base weights).
pub fn adapter_weights(s: &Shape, seed: u64, adapter: u32, rank: u32) -> Vec<f32> {
    let mut w = random(s.adapter_len(rank), mix(seed, 1 << 40, adapter as u64), 1.0);
    for l in 0..s.layers {
        for p in 0..PROJECTIONS {
            let (a, b) = s.adapter_offsets(rank, l, p);
            let sa = 1.0 / (s.hidden as f32).sqrt();
            w[a..b].iter_mut().for_each(|x| *x *= sa);
            let sb = 0.5 / (rank as f32).sqrt();
            w[b..b + rank as usize * s.proj_out(p)]
                .iter_mut()
                .for_each(|x| *x *= sb);
        }
    }
    w
}

/// Sets every B of an adapter to zero (its LoRA then adds nothing).
pub fn zero_b(s: &Shape, rank: u32, w: &mut [f32]) {
    for l in 0..s.layers {
        for p in 0..PROJECTIONS {
            let (_, b) = s.adapter_offsets(rank, l, p);
            w[b..b + rank as usize * s.proj_out(p)].fill(0.0);
        }
    }
}

/// A request's prompt: deterministic pseudo-random tokens from its id (traces carry lengths, not text).
pub fn prompt(seed: u64, vocab: usize, request: u32, len: usize) -> Vec<u32> {
    let mut s = mix(seed, 2 << 40, request as u64) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % vocab as u64) as u32
        })
        .collect()
}
