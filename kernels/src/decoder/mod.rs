//! The Llama decoder, written once: a batched forward pass over a paged KV cache with batched mixed-rank
//! LoRA, generic over [`Ops`], the operations it is made of. Two implementations:
//! - [`cpu::CpuOps`]: the CPU references of [`crate::reference`] in f32, the definition;
//! - [`gpu::GpuOps`]: the NVRTC kernels and cuBLAS of [`crate::gpu`] in fp16/bf16. NOT RUN ON A GPU YET: it
//!   was written and compiled on a machine without one (`cargo test -p kernels --features gpu-tests`
//!   compares it with the CPU where there is a GPU).
//!
//! The host-side bookkeeping is shared as well: [`KvCache`] (pages from a free list), [`AdapterStore`]
//! (first-fit ranges, freed ranges coalesced), [`Layout`] (a batch's tokens, positions, cache slots, page
//! tables and per-token adapters).
//!
//! One forward pass ([`Decoder::forward`]): embedding rows gathered on the host; per layer RMSNorm, q/k/v
//! GEMMs each plus LoRA (segmented kernels when tokens come in long runs of one adapter, gathered ones
//! otherwise; mixed ranks in one launch), RoPE, K/V written into the paged cache, causal attention over the
//! new tokens of a sequence whose cache was empty (packed prefill) or paged attention over the cache for the
//! others (one query per new token), o GEMM plus LoRA, residual, RMSNorm, gate/up GEMM, SiLU-mul, down GEMM,
//! residual; the final norm and the LM head on each sequence's last token; greedy argmax on the host.

mod batch;
pub mod cpu;
pub mod gpu;
mod ops;
mod shape;
mod store;
#[cfg(test)]
mod tests;
mod weights;

use std::collections::HashMap;

pub use batch::{ForwardOut, KvCache, Layout, SeqState, Step, argmax};
pub use ops::Ops;
pub use shape::{PROJECTIONS, Shape};
pub use store::{AdapterLayout, AdapterStore, Resident};
pub use weights::{
    Kind, LayerWeights, Tensor, Weights, adapter_weights, host_tensor, mix, prompt, random, zero_b,
};

use crate::reference::{Paging, segments};
use crate::{Error, Result};

pub const EPS: f32 = 1e-5;
pub const THETA: f32 = 10_000.0;
pub const LORA_SCALE: f32 = 1.0;
/// Tokens per adapter run from which LoRA uses the segmented (matrix-matrix) kernels, which reuse each row
/// of A across a run; shorter runs (decode steps) use the gathered (matrix-vector) ones.
pub const SEGMENTED_MIN_TOKENS: usize = 8;

/// Activation buffers, allocated once and reused by every pass.
pub struct Work<B> {
    pub x: B,
    pub xn: B,
    pub q: B,
    pub k: B,
    pub v: B,
    pub o: B,
    pub y: B,
    pub gu: B,
    pub act: B,
    pub last: B,
    pub logits: B,
    /// Rows gathered for attention when a batch mixes prefill and decode sequences.
    pub gq: B,
    pub gk: B,
    pub gv: B,
    pub go: B,
}

/// The decoder with its weights, paged KV cache, adapter store and the sequences it holds.
pub struct Decoder<O: Ops> {
    pub ops: O,
    pub shape: Shape,
    pub w: Weights<O::Buf, O::Embed>,
    pub kv: KvCache<O::Buf>,
    pub store: AdapterStore<O::Buf>,
    pub seqs: HashMap<u32, SeqState>,
    pub work: Work<O::Buf>,
}

impl<O: Ops> Decoder<O> {
    pub fn new(
        mut ops: O,
        shape: Shape,
        w: Weights<O::Buf, O::Embed>,
        kv: KvCache<O::Buf>,
        store: AdapterStore<O::Buf>,
    ) -> Result<Decoder<O>> {
        let mut a = || ops.alloc(0);
        let work = Work {
            x: a()?,
            xn: a()?,
            q: a()?,
            k: a()?,
            v: a()?,
            o: a()?,
            y: a()?,
            gu: a()?,
            act: a()?,
            last: a()?,
            logits: a()?,
            gq: a()?,
            gk: a()?,
            gv: a()?,
            go: a()?,
        };
        Ok(Decoder {
            ops,
            shape,
            w,
            kv,
            store,
            seqs: HashMap::new(),
            work,
        })
    }

    /// A decoder whose weights are the host generator's ([`host_tensor`]) for `seed`: the same model on
    /// every backend.
    pub fn from_host(
        mut ops: O,
        shape: Shape,
        seed: u64,
        kv: impl FnOnce(&mut O) -> Result<KvCache<O::Buf>>,
        store: AdapterStore<O::Buf>,
    ) -> Result<Decoder<O>> {
        shape.check()?;
        let w = Weights::build(
            &shape,
            &mut ops,
            |o, t| o.upload_tensor(host_tensor(seed, &t)),
            |o, t| o.embed_table(host_tensor(seed, &t)),
        )?;
        let kv = kv(&mut ops)?;
        Decoder::new(ops, shape, w, kv, store)
    }

    /// Sizes the activation buffers for `tokens` tokens in `seqs` sequences (only ever grows them).
    pub fn reserve(&mut self, tokens: usize, seqs: usize) -> Result<()> {
        let s = self.shape;
        let (h, row, i) = (s.hidden, s.kv_row(), s.intermediate);
        let w = &mut self.work;
        for (b, n) in [
            (&mut w.x, tokens * h),
            (&mut w.xn, tokens * h),
            (&mut w.q, tokens * h),
            (&mut w.k, tokens * row),
            (&mut w.v, tokens * row),
            (&mut w.o, tokens * h),
            (&mut w.y, tokens * h),
            (&mut w.gu, 2 * tokens * i),
            (&mut w.act, tokens * i),
            (&mut w.last, seqs * h),
            (&mut w.logits, seqs * s.vocab),
        ] {
            self.ops.reserve(b, n)?;
        }
        Ok(())
    }

    /// Copies an adapter's host weights into the store (replacing it if present).
    pub fn load_adapter(&mut self, adapter: u32, rank: u32, host: &O::HostAdapter) -> Result<()> {
        let s = self.shape;
        if rank == 0 || O::host_len(host) != s.adapter_len(rank) {
            return Err(Error::msg(format!(
                "adapter {adapter} of rank {rank} has {} weights, expected {}",
                O::host_len(host),
                s.adapter_len(rank)
            )));
        }
        let off = self.place_adapter(adapter, rank)?;
        let layout = self.store.layout;
        let copied = self
            .ops
            .copy_adapter(&mut self.store.pool, layout, &s, off, rank, host);
        if copied.is_err() {
            self.store.remove(adapter);
        }
        copied
    }

    /// Makes room for an adapter and marks it resident without copying weights (the pool holds whatever
    /// it held: enough to measure the cost of LoRA, whose work does not depend on the values).
    pub fn place_adapter(&mut self, adapter: u32, rank: u32) -> Result<usize> {
        let s = self.shape;
        let off = self.store.insert(&s, adapter, rank)?;
        let n = self.store.pool_len(&s);
        if let Err(e) = self.ops.grow(&mut self.store.pool, n) {
            self.store.remove(adapter);
            return Err(e);
        }
        Ok(off)
    }

    pub fn evict_adapter(&mut self, adapter: u32) {
        self.store.remove(adapter);
    }

    /// Frees a request's KV pages.
    pub fn release(&mut self, request: u32) {
        if let Some(s) = self.seqs.remove(&request) {
            self.kv.release(s.pages);
        }
    }

    /// The token a request feeds at its next decode step (its last generated token).
    pub fn next_token(&self, request: u32) -> Option<u32> {
        self.seqs.get(&request).map(|s| s.next)
    }

    pub fn context_len(&self, request: u32) -> Option<usize> {
        self.seqs.get(&request).map(|s| s.len)
    }

    /// Gives a request `tokens` cached tokens without computing them (their K/V are whatever the cache
    /// holds): a decode step's cost does not depend on the values, so a measurement need not prefill.
    pub fn skip_prefill(&mut self, request: u32, tokens: usize) -> Result<()> {
        self.release(request);
        let page = self.kv.page;
        let s = self.seqs.entry(request).or_default();
        for _ in 0..tokens.div_ceil(page) {
            s.pages.push(self.kv.alloc(&mut self.ops)?);
        }
        s.len = tokens;
        Ok(())
    }

    /// Runs one batched forward pass: appends each step's tokens to its sequence's KV cache and returns
    /// each sequence's greedy next token.
    pub fn forward(&mut self, steps: &[Step]) -> Result<ForwardOut> {
        if steps.is_empty() {
            return Ok(ForwardOut {
                next: vec![],
                logits: vec![],
            });
        }
        let lay = self.layout(steps)?;
        let meta = self.ops.upload(&lay)?;
        self.reserve(lay.tokens.len(), steps.len())?;
        self.ops.embed(
            &self.w.embed,
            &lay.tokens,
            self.shape.hidden,
            &mut self.work.x,
        )?;
        self.run(&lay, &meta)?;
        let logits = self
            .ops
            .read(&self.work.logits, steps.len() * self.shape.vocab)?;
        self.finish(&lay, logits)
    }

    /// Lays a batch out: checks its tokens and adapters, allocates the KV pages its new tokens need.
    pub fn layout(&mut self, steps: &[Step]) -> Result<Layout> {
        let s = self.shape;
        let page = self.kv.page;
        let mut lay = Layout {
            shape: s,
            steps: Vec::with_capacity(steps.len()),
            tokens: Vec::new(),
            pos: Vec::new(),
            slots: Vec::new(),
            tok_adapter: Vec::new(),
            adapters: Vec::new(),
            max_rank: 0,
            segmented: false,
            prefill_runs: Vec::new(),
            cu_seqlens: vec![0],
            decode_runs: Vec::new(),
            block_table: Vec::new(),
            ctx_lens: Vec::new(),
            paging: Paging {
                block_size: page,
                max_blocks: 1,
            },
            last_rows: Vec::with_capacity(steps.len()),
            cache_slots: 0,
            adapter_layout: self.store.layout,
            pool_len: self.store.pool_len(&s),
        };
        let mut seq_ctx = Vec::with_capacity(steps.len());
        for st in steps {
            if st.tokens.is_empty() {
                return Err(Error::msg(format!(
                    "request {} has no tokens to run",
                    st.request
                )));
            }
            if let Some(t) = st.tokens.iter().find(|&&t| t as usize >= s.vocab) {
                return Err(Error::msg(format!("token {t} outside the vocabulary")));
            }
            let ai = match st.adapter {
                None => -1,
                Some(a) => {
                    let r = self.store.get(a).ok_or_else(|| {
                        Error::msg(format!(
                            "request {} uses adapter {a}, which is not loaded",
                            st.request
                        ))
                    })?;
                    match lay.adapters.iter().position(|x| x.0 == a) {
                        Some(i) => i as i32,
                        None => {
                            lay.adapters.push((a, r.off, r.rank));
                            lay.adapters.len() as i32 - 1
                        }
                    }
                }
            };
            let seq = self.seqs.entry(st.request).or_default();
            let start = seq.len;
            seq_ctx.push(start);
            for (i, &t) in st.tokens.iter().enumerate() {
                let p = start + i;
                if p / page >= seq.pages.len() {
                    seq.pages.push(self.kv.alloc(&mut self.ops)?);
                }
                lay.slots
                    .push((seq.pages[p / page] as usize * page + p % page) as i32);
                lay.pos.push(p as i32);
                lay.tokens.push(t);
                lay.tok_adapter.push(ai);
            }
            lay.steps.push((st.request, st.tokens.len()));
        }
        lay.cache_slots = self.kv.slots();
        let max_blocks = steps
            .iter()
            .map(|st| self.seqs[&st.request].pages.len())
            .max()
            .unwrap_or(1)
            .max(1);
        lay.paging.max_blocks = max_blocks;
        let mut t0 = 0;
        for (st, &ctx) in steps.iter().zip(&seq_ctx) {
            let n = st.tokens.len();
            if ctx == 0 {
                lay.cu_seqlens.push((lay.prefill_rows() + n) as i32);
                lay.prefill_runs.push((t0, n));
            } else {
                let pages = &self.seqs[&st.request].pages;
                for i in 0..n {
                    let mut row: Vec<i32> = pages.iter().map(|&p| p as i32).collect();
                    row.resize(max_blocks, -1);
                    lay.block_table.extend(row);
                    lay.ctx_lens.push((ctx + i + 1) as i32);
                }
                lay.decode_runs.push((t0, n));
            }
            t0 += n;
            lay.last_rows.push(t0 - 1);
        }
        lay.max_rank = lay.adapters.iter().map(|a| a.2 as usize).max().unwrap_or(0);
        if !lay.adapters.is_empty() {
            let runs = segments(&lay.tok_adapter).1.len().max(1);
            lay.segmented = lay.tokens.len() / runs >= SEGMENTED_MIN_TOKENS;
        }
        Ok(lay)
    }

    /// The layers and the LM head over a laid-out batch whose embedding rows are in `work.x` (not
    /// synchronised: on the GPU it only enqueues work). The logits land in `work.logits`.
    pub fn run(&mut self, lay: &Layout, meta: &O::Meta) -> Result<()> {
        let s = self.shape;
        let (h, row, i) = (s.hidden, s.kv_row(), s.intermediate);
        let (t, n) = (lay.tokens.len(), lay.last_rows.len());
        if O::len(&self.work.x) < t * h {
            return Err(Error::msg(format!(
                "the residual stream holds fewer than {t} tokens"
            )));
        }
        self.reserve(t, n)?;
        let sh = s.attn();
        let scale = 1.0 / (sh.head_dim as f32).sqrt();
        let lora = !lay.adapters.is_empty();
        let (ops, w, wk, kv, pool) = (
            &mut self.ops,
            &self.w,
            &mut self.work,
            &mut self.kv,
            &self.store.pool,
        );
        for (l, lw) in w.layers.iter().enumerate() {
            ops.rms_norm(&wk.x, &lw.attn_norm, &mut wk.xn, t, EPS)?;
            ops.gemm(&wk.xn, &lw.wq, &mut wk.q, t, h, h)?;
            ops.gemm(&wk.xn, &lw.wk, &mut wk.k, t, row, h)?;
            ops.gemm(&wk.xn, &lw.wv, &mut wk.v, t, row, h)?;
            if lora {
                for (p, y) in [(0, &mut wk.q), (1, &mut wk.k), (2, &mut wk.v)] {
                    ops.lora(meta, pool, l * PROJECTIONS + p, &wk.xn, y, h, s.proj_out(p))?;
                }
            }
            ops.rope(meta, &mut wk.q, &mut wk.k, &s)?;
            ops.kv_write(meta, &wk.k, &wk.v, &mut kv.k[l], &mut kv.v[l], sh)?;
            attention(ops, lay, meta, wk, &kv.k[l], &kv.v[l], &s, scale)?;
            ops.gemm(&wk.o, &lw.wo, &mut wk.y, t, h, h)?;
            if lora {
                ops.lora(meta, pool, l * PROJECTIONS + 3, &wk.o, &mut wk.y, h, h)?;
            }
            ops.add(&mut wk.x, &wk.y, t * h)?;
            ops.rms_norm(&wk.x, &lw.mlp_norm, &mut wk.xn, t, EPS)?;
            ops.gemm(&wk.xn, &lw.w_gate_up, &mut wk.gu, t, 2 * i, h)?;
            ops.silu_mul(&wk.gu, &mut wk.act, t, i)?;
            ops.gemm(&wk.act, &lw.w_down, &mut wk.y, t, h, i)?;
            ops.add(&mut wk.x, &wk.y, t * h)?;
        }
        // The LM head on each sequence's last token only (a decode batch's rows already are those).
        let all_last = n == t && lay.last_rows.iter().enumerate().all(|(j, &r)| j == r);
        if !all_last {
            for (j, &r) in lay.last_rows.iter().enumerate() {
                ops.copy_rows(&wk.x, r, &mut wk.last, j, 1, h)?;
            }
        }
        let src = if all_last { &wk.x } else { &wk.last };
        ops.rms_norm(src, &w.final_norm, &mut wk.xn, n, EPS)?;
        ops.gemm(&wk.xn, &w.lm_head, &mut wk.logits, n, s.vocab, h)
    }

    /// The batch's LoRA alone (shrink and expand of q, k, v and o of every layer, reading `work.xn`), to
    /// measure its cost apart from the rest of the pass.
    pub fn run_lora(&mut self, lay: &Layout, meta: &O::Meta) -> Result<()> {
        let s = self.shape;
        self.reserve(lay.tokens.len(), lay.last_rows.len())?;
        if lay.adapters.is_empty() {
            return Ok(());
        }
        let (ops, wk, pool) = (&mut self.ops, &mut self.work, &self.store.pool);
        for g in 0..s.layers * PROJECTIONS {
            let p = g % PROJECTIONS;
            ops.lora(meta, pool, g, &wk.xn, &mut wk.q, s.hidden, s.proj_out(p))?;
        }
        Ok(())
    }

    /// Ends a pass: greedy next tokens from the logits, sequences advanced.
    pub fn finish(&mut self, lay: &Layout, logits: Vec<f32>) -> Result<ForwardOut> {
        let vocab = self.shape.vocab;
        let mut next = Vec::with_capacity(lay.steps.len());
        for (&(request, n), lg) in lay.steps.iter().zip(logits.chunks_exact(vocab)) {
            let tok = argmax(lg)
                .ok_or_else(|| Error::msg(format!("non-finite logits for request {request}")))?;
            let s = self.seqs.get_mut(&request).expect("sequence laid out");
            s.len += n;
            s.next = tok;
            next.push(tok);
        }
        Ok(ForwardOut { next, logits })
    }

    /// Ends a pass whose logits are not needed (a measurement): the sequences advance, next tokens stay.
    pub fn advance(&mut self, lay: &Layout) {
        for &(request, n) in &lay.steps {
            if let Some(s) = self.seqs.get_mut(&request) {
                s.len += n;
            }
        }
    }
}

/// Attention of every row into `wk.o`. A batch of only prefills or only decodes runs in place; a mixed one
/// gathers each kind's rows, attends, and scatters the results back.
#[allow(clippy::too_many_arguments)]
fn attention<O: Ops>(
    ops: &mut O,
    lay: &Layout,
    meta: &O::Meta,
    wk: &mut Work<O::Buf>,
    k_cache: &O::Buf,
    v_cache: &O::Buf,
    s: &Shape,
    scale: f32,
) -> Result<()> {
    let sh = s.attn();
    let (h, row, t) = (s.hidden, s.kv_row(), lay.tokens.len());
    if lay.decode_runs.is_empty() {
        return ops.attn_prefill(meta, &wk.q, &wk.k, &wk.v, &mut wk.o, sh, scale);
    }
    if lay.prefill_runs.is_empty() {
        return ops.attn_decode(meta, &wk.q, k_cache, v_cache, &mut wk.o, sh, scale);
    }
    ops.reserve(&mut wk.gq, t * h)?;
    ops.reserve(&mut wk.gk, t * row)?;
    ops.reserve(&mut wk.gv, t * row)?;
    ops.reserve(&mut wk.go, t * h)?;
    let runs = &lay.prefill_runs;
    copy_runs(ops, &wk.q, &mut wk.gq, runs, h, false)?;
    copy_runs(ops, &wk.k, &mut wk.gk, runs, row, false)?;
    copy_runs(ops, &wk.v, &mut wk.gv, runs, row, false)?;
    ops.attn_prefill(meta, &wk.gq, &wk.gk, &wk.gv, &mut wk.go, sh, scale)?;
    copy_runs(ops, &wk.go, &mut wk.o, runs, h, true)?;
    let runs = &lay.decode_runs;
    copy_runs(ops, &wk.q, &mut wk.gq, runs, h, false)?;
    ops.attn_decode(meta, &wk.gq, k_cache, v_cache, &mut wk.go, sh, scale)?;
    copy_runs(ops, &wk.go, &mut wk.o, runs, h, true)
}

/// Copies the rows of `runs` ((first row, rows) in `src`) to consecutive rows of `dst`, or back when
/// `back` (consecutive rows of `src` to the runs' places in `dst`).
fn copy_runs<O: Ops>(
    ops: &mut O,
    src: &O::Buf,
    dst: &mut O::Buf,
    runs: &[(usize, usize)],
    width: usize,
    back: bool,
) -> Result<()> {
    let mut at = 0;
    for &(first, rows) in runs {
        let (from, to) = if back { (at, first) } else { (first, at) };
        ops.copy_rows(src, from, dst, to, rows, width)?;
        at += rows;
    }
    Ok(())
}
