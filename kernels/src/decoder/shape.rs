//! The decoder's dimensions and the layouts that follow from them: weight tensor sizes and where each
//! (layer, projection) of a LoRA adapter sits in its packed weights.

use crate::reference::AttnShape;
use crate::{Error, Result};

/// A Llama decoder's dimensions. `head_dim = hidden / heads` must be a multiple of 32 (the attention
/// kernels' warp layout; the CPU references check the same, so both accept the same shapes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
}

/// LoRA is applied to these projections, in this order (index `p` of [`Shape::adapter_offsets`]).
pub const PROJECTIONS: usize = 4;

impl Shape {
    /// From a model's layers, hidden, heads, KV heads, intermediate and vocabulary sizes.
    pub fn from_dims([layers, hidden, heads, kv_heads, intermediate, vocab]: [u64; 6]) -> Shape {
        Shape {
            layers: layers as usize,
            hidden: hidden as usize,
            heads: heads as usize,
            kv_heads: kv_heads as usize,
            intermediate: intermediate as usize,
            vocab: vocab as usize,
        }
    }

    pub fn check(&self) -> Result<()> {
        if [
            self.layers,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
        ]
        .contains(&0)
        {
            return Err(Error::msg("every size must be positive"));
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return Err(Error::msg(format!(
                "heads {} must divide hidden {}",
                self.heads, self.hidden
            )));
        }
        self.attn().check()
    }

    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Width of one token's K (or V) row in one layer.
    pub fn kv_row(&self) -> usize {
        self.kv_heads * self.head_dim()
    }

    pub fn attn(&self) -> AttnShape {
        AttnShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim(),
        }
    }

    /// Output width of projection p (q, k, v, o); every input is `hidden` wide.
    pub fn proj_out(&self, p: usize) -> usize {
        if p == 1 || p == 2 {
            self.kv_row()
        } else {
            self.hidden
        }
    }

    /// Elements of one adapter of rank r: per layer, per projection q,k,v,o, A `[r, hidden]` then B `[r, out]`.
    pub fn adapter_len(&self, rank: u32) -> usize {
        let per_layer: usize = (0..PROJECTIONS)
            .map(|p| rank as usize * (self.hidden + self.proj_out(p)))
            .sum();
        self.layers * per_layer
    }

    /// Offsets of (A, B) of projection p of layer l inside an adapter of rank r (the packed order adapters
    /// have in host memory, and in the CPU's adapter pool).
    pub fn adapter_offsets(&self, rank: u32, layer: usize, p: usize) -> (usize, usize) {
        let r = rank as usize;
        let mut off = layer * self.adapter_len(rank) / self.layers;
        for q in 0..p {
            off += r * (self.hidden + self.proj_out(q));
        }
        (off, off + r * self.hidden)
    }

    /// Elements of one layer's tensors: wq, wk, wv, wo, w_gate_up, w_down, attn_norm, mlp_norm.
    pub fn layer_sizes(&self) -> [usize; 8] {
        let (h, kv, i) = (self.hidden, self.kv_row(), self.intermediate);
        [h * h, h * kv, h * kv, h * h, 2 * h * i, i * h, h, h]
    }

    /// Elements of one layer's weights.
    pub fn layer_len(&self) -> usize {
        self.layer_sizes().iter().sum()
    }

    /// Elements of every weight: the layers, the embedding, the final norm and the LM head.
    pub fn weights_len(&self) -> usize {
        self.layers * self.layer_len() + 2 * self.vocab * self.hidden + self.hidden
    }
}
