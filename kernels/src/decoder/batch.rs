//! Host-side bookkeeping of a forward pass, the same for every backend: the paged KV cache's pages, each
//! request's sequence, and a batch's [`Layout`] (tokens, positions, cache slots, page tables, per-token
//! adapters), which the ops validate and, on the GPU, upload.

use super::ops::Ops;
use super::shape::Shape;
use super::store::AdapterLayout;
use crate::reference::{AdapterSlot, Paging};
use crate::{Error, Result};

/// One sequence of a forward pass: `tokens` are appended after what its KV cache holds (a request the
/// decoder does not know starts empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub request: u32,
    pub tokens: Vec<u32>,
    /// A resident adapter's id (`None`: the base model).
    pub adapter: Option<u32>,
}

/// A forward pass's result: each sequence's next token (greedy) and its last position's logits.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOut {
    pub next: Vec<u32>,
    pub logits: Vec<f32>,
}

/// Index of the largest value (the first on ties); `None` if any value is not finite.
pub fn argmax(v: &[f32]) -> Option<u32> {
    if v.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    Some(best as u32)
}

/// One request's state: its KV pages, its length and the token it feeds next (its last generated one).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeqState {
    pub pages: Vec<u32>,
    pub len: usize,
    pub next: u32,
}

/// The paged KV cache: per layer one K and one V buffer of `[slots, kv_row]`; pages of `page` slots are
/// handed out from a free list, up to `cap_pages`. The buffers are either allocated at full size up front
/// (the GPU: no allocation inside a timed iteration) or grown a page at a time (the CPU: a tiny model with a
/// large engine pool would otherwise allocate memory it never touches).
pub struct KvCache<B> {
    pub k: Vec<B>,
    pub v: Vec<B>,
    pub page: usize,
    row: usize,
    free: Vec<u32>,
    /// Page ids handed out at least once: 0..pages.
    pages: usize,
    /// Pages the buffers hold.
    backed: usize,
    cap_pages: usize,
}

impl<B> KvCache<B> {
    pub fn new<O: Ops<Buf = B>>(
        ops: &mut O,
        s: &Shape,
        page: usize,
        cap_pages: usize,
        up_front: bool,
    ) -> Result<KvCache<B>> {
        if page == 0 {
            return Err(Error::msg("KV pages must hold at least one token"));
        }
        let backed = if up_front { cap_pages } else { 0 };
        let n = backed * page * s.kv_row();
        let mut k = Vec::with_capacity(s.layers);
        let mut v = Vec::with_capacity(s.layers);
        for _ in 0..s.layers {
            k.push(ops.alloc(n)?);
            v.push(ops.alloc(n)?);
        }
        Ok(KvCache {
            k,
            v,
            page,
            row: s.kv_row(),
            free: Vec::new(),
            pages: 0,
            backed,
            cap_pages,
        })
    }

    /// A page: a freed one if any, else a new one (growing the buffers if they are not backed yet).
    pub fn alloc<O: Ops<Buf = B>>(&mut self, ops: &mut O) -> Result<u32> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        if self.pages >= self.cap_pages {
            return Err(Error::msg(format!(
                "out of KV pages ({} pages of {} tokens in use)",
                self.cap_pages, self.page
            )));
        }
        if self.pages >= self.backed {
            let n = (self.backed + 1) * self.page * self.row;
            for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
                ops.grow(buf, n)?;
            }
            self.backed += 1;
        }
        self.pages += 1;
        Ok(self.pages as u32 - 1)
    }

    pub fn release(&mut self, pages: impl IntoIterator<Item = u32>) {
        self.free.extend(pages);
    }

    /// Pages allocated from the pool and not free.
    pub fn pages_in_use(&self) -> usize {
        self.pages - self.free.len()
    }

    /// Token slots the buffers hold (what slot indices are checked against).
    pub fn slots(&self) -> usize {
        self.backed * self.page
    }

    /// Token slots the cache can grow to.
    pub fn capacity(&self) -> usize {
        self.cap_pages * self.page
    }
}

/// A batch laid out for one forward pass. Prefill sequences (empty cache before this pass) attend causally
/// over their new tokens, packed; the others attend over the paged cache, one query per new token (its
/// context: its position + 1). Rows are token indices in batch order.
#[derive(Clone, Debug, PartialEq)]
pub struct Layout {
    pub shape: Shape,
    /// (request, new tokens) per sequence, in batch order.
    pub steps: Vec<(u32, usize)>,
    pub tokens: Vec<u32>,
    pub pos: Vec<i32>,
    /// Each token's cache slot: page * page_size + offset.
    pub slots: Vec<i32>,
    /// Each token's index into `adapters`, -1 for none.
    pub tok_adapter: Vec<i32>,
    /// The batch's distinct adapters: (id, offset in the store, rank).
    pub adapters: Vec<(u32, usize, u32)>,
    pub max_rank: usize,
    /// LoRA through the segmented (matrix-matrix) kernels: tokens come in long runs of one adapter.
    pub segmented: bool,
    /// (first row, rows) of each prefill sequence, and their boundaries in the packed prefill rows.
    pub prefill_runs: Vec<(usize, usize)>,
    pub cu_seqlens: Vec<i32>,
    /// (first row, rows) of each other sequence, and per decode row its block table row and context.
    pub decode_runs: Vec<(usize, usize)>,
    pub block_table: Vec<i32>,
    pub ctx_lens: Vec<i32>,
    pub paging: Paging,
    /// Each sequence's last row: the LM head's input.
    pub last_rows: Vec<usize>,
    /// What the index data is checked against: the KV cache's slots, the adapter pool.
    pub cache_slots: usize,
    pub adapter_layout: AdapterLayout,
    pub pool_len: usize,
}

impl Layout {
    pub fn prefill_rows(&self) -> usize {
        self.prefill_runs.iter().map(|r| r.1).sum()
    }

    pub fn decode_rows(&self) -> usize {
        self.decode_runs.iter().map(|r| r.1).sum()
    }

    /// The batch's adapters' A and B for projection p of layer l, in adapter index order.
    pub fn lora_slots(&self, layer: usize, p: usize) -> Vec<AdapterSlot> {
        self.adapters
            .iter()
            .map(|&(_, off, rank)| self.adapter_layout.slot(&self.shape, off, rank, layer, p))
            .collect()
    }
}
