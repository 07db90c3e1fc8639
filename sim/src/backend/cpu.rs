//! The CPU backend: a tiny Llama-shaped decoder executed for real in plain Rust f32, so CI runs real mode end
//! to end. The math is the kernels crate's CPU references (`kernels::reference`: RMSNorm, RoPE, paged
//! attention, SiLU-MLP, batched mixed-rank LoRA), the same definitions the CUDA kernels are checked against;
//! only the dense matmuls (cuBLAS on the GPU) are written here.
//!
//! - Weights are random (seeded), at the tiny configuration's size; the cost does not depend on their values.
//! - KV cache: paged. Each layer has one K and one V cache of `[slots, kv_heads, head_dim]`; a request holds a
//!   list of fixed-size pages from a shared free list. The pool holds at most the engine's pool (in token
//!   slots, rounded up to pages) plus one page per sequence of slack for partly filled last pages; past that a
//!   forward pass fails with "out of KV pages", which stops the run cleanly like a CUDA out-of-memory error.
//! - Adapters: each adapter's weights are generated in "host" memory before the run (`prepare`, outside any
//!   timing) and copied into the "device" adapter store (one f32 pool, first-fit allocation) on `load`; `evict` frees
//!   them. The engine's memory accounting (KV slots + adapter slots in one pool) decides what is resident; the
//!   backend checks that every adapter a batch uses is in its store.
//! - Every iteration (prefill or decode) runs one batched forward pass over all its sequences, then greedy
//!   argmax picks each sequence's next token; `engine::Timed` makes its wall time the iteration's duration.

use std::collections::HashMap;
use std::time::Instant;

use kernels::reference::{self as kref, AdapterSlot, AttnShape, Paging};

use super::{Dims, Estimator};
use crate::cost::{BatchShape, CostModel};
use crate::engine::{Executor, Seq};
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::spec::Spec;
use crate::workload::{Adapter, NO_ADAPTER};

/// Shape of the tiny decoder. `head_dim = hidden / heads` must be a multiple of 32 (the attention kernels'
/// warp layout, kept on the CPU so both backends accept the same shapes).
#[derive(Clone, Debug, PartialEq)]
pub struct TinyConfig {
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    /// Tokens per KV page.
    pub page: usize,
    pub seed: u64,
}

impl Default for TinyConfig {
    fn default() -> Self {
        TinyConfig {
            layers: 2,
            hidden: 64,
            heads: 2,
            kv_heads: 2,
            intermediate: 128,
            vocab: 256,
            page: 16,
            seed: 0,
        }
    }
}

pub const PARAMS: &[&str] = &[
    "layers",
    "hidden",
    "heads",
    "kv_heads",
    "intermediate",
    "vocab",
    "page",
    "seed",
];

impl TinyConfig {
    /// Reads the `cpu[...]` parameters (defaults: `TinyConfig::default()`; `kv_heads` defaults to `heads`).
    pub fn from_spec(spec: &mut Spec) -> Result<TinyConfig> {
        let d = TinyConfig::default();
        let heads = spec.get("heads", d.heads)?;
        let c = TinyConfig {
            layers: spec.get("layers", d.layers)?,
            hidden: spec.get("hidden", d.hidden)?,
            heads,
            kv_heads: spec.get("kv_heads", heads)?,
            intermediate: spec.get("intermediate", d.intermediate)?,
            vocab: spec.get("vocab", d.vocab)?,
            page: spec.get("page", d.page)?,
            seed: spec.get("seed", d.seed)?,
        };
        spec.finish(PARAMS)?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::msg(format!("--backend cpu: {why}")));
        if [
            self.layers,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
            self.page,
        ]
        .contains(&0)
        {
            return bad("every size must be positive".into());
        }
        if !self.hidden.is_multiple_of(self.heads) {
            return bad(format!(
                "heads {} must divide hidden {}",
                self.heads, self.hidden
            ));
        }
        let sh = self.attn();
        sh.check().or_else(|e| bad(e.0))?;
        if self.layers * self.hidden * self.vocab.max(self.intermediate) > 1 << 28 {
            return bad(
                "the model is too large for the CPU backend (it is meant to be tiny)".into(),
            );
        }
        Ok(())
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

    /// Output width of projection p (q, k, v, o).
    fn proj_out(&self, p: usize) -> usize {
        if p == 1 || p == 2 {
            self.kv_row()
        } else {
            self.hidden
        }
    }

    /// Elements of one adapter of rank r: per layer, per projection q,k,v,o, A `[r, hidden]` then B `[r, out]`.
    pub fn adapter_len(&self, rank: u32) -> usize {
        let per_layer: usize = (0..4)
            .map(|p| rank as usize * (self.hidden + self.proj_out(p)))
            .sum();
        self.layers * per_layer
    }

    /// Offsets of (A, B) of projection p of layer l inside an adapter of rank r.
    pub fn adapter_offsets(&self, rank: u32, layer: usize, p: usize) -> (usize, usize) {
        let r = rank as usize;
        let mut off = layer * self.adapter_len(rank) / self.layers;
        for q in 0..p {
            off += r * (self.hidden + self.proj_out(q));
        }
        (off, off + r * self.hidden)
    }

    pub fn describe(&self) -> String {
        format!(
            "layers={},hidden={},heads={},kv_heads={},intermediate={},vocab={},page={},seed={}",
            self.layers,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
            self.page,
            self.seed
        )
    }
}

/// Deterministic values in [-scale, scale) (the kernels crate's generator, so weights need no RNG state).
fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut v = kref::pseudo_random(n, seed);
    v.iter_mut().for_each(|x| *x *= scale);
    v
}

fn mix(seed: u64, a: u64, b: u64) -> u64 {
    seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)
        ^ a.wrapping_mul(0xbf58_476d_1ce4_e5b9)
        ^ b.wrapping_mul(0x94d0_49bb_1331_11eb)
        ^ 0x5555
}

struct LayerWeights {
    attn_norm: Vec<f32>,
    /// Row-major `[in, out]`: y = x . W.
    wq: Vec<f32>,
    wk: Vec<f32>,
    wv: Vec<f32>,
    wo: Vec<f32>,
    mlp_norm: Vec<f32>,
    w_gate_up: Vec<f32>,
    w_down: Vec<f32>,
}

pub struct Weights {
    embed: Vec<f32>,
    layers: Vec<LayerWeights>,
    final_norm: Vec<f32>,
    lm_head: Vec<f32>,
}

impl Weights {
    pub fn random(c: &TinyConfig) -> Weights {
        let h = c.hidden;
        let s = |i: u64, j: u64| mix(c.seed, i, j);
        let w = |n: usize, fan_in: usize, i: u64, j: u64| {
            random(n, s(i, j), 1.0 / (fan_in as f32).sqrt())
        };
        let norm = |i: u64, j: u64| random(h, s(i, j), 0.1).iter().map(|x| 1.0 + x).collect();
        Weights {
            embed: random(c.vocab * h, s(0, 0), 1.0),
            layers: (1..=c.layers as u64)
                .map(|l| LayerWeights {
                    attn_norm: norm(l, 1),
                    wq: w(h * h, h, l, 2),
                    wk: w(h * c.kv_row(), h, l, 3),
                    wv: w(h * c.kv_row(), h, l, 4),
                    wo: w(h * h, h, l, 5),
                    mlp_norm: norm(l, 6),
                    w_gate_up: w(h * 2 * c.intermediate, h, l, 7),
                    w_down: w(c.intermediate * h, c.intermediate, l, 8),
                })
                .collect(),
            final_norm: norm(0, 1),
            lm_head: w(h * c.vocab, h, 0, 2),
        }
    }
}

/// One adapter's weights of rank r in the store layout (`TinyConfig::adapter_offsets`), seeded by its id.
pub fn adapter_weights(c: &TinyConfig, adapter: u32, rank: u32) -> Vec<f32> {
    // Small B (real adapters start at B = 0 and stay small relative to the base weights).
    let mut w = random(
        c.adapter_len(rank),
        mix(c.seed, 1 << 40, adapter as u64),
        1.0,
    );
    for l in 0..c.layers {
        for p in 0..4 {
            let (a, b) = c.adapter_offsets(rank, l, p);
            let sa = 1.0 / (c.hidden as f32).sqrt();
            w[a..b].iter_mut().for_each(|x| *x *= sa);
            let sb = 0.5 / (rank as f32).sqrt();
            w[b..b + rank as usize * c.proj_out(p)]
                .iter_mut()
                .for_each(|x| *x *= sb);
        }
    }
    w
}

/// Sets every B of an adapter to zero (its LoRA then adds nothing).
pub fn zero_b(c: &TinyConfig, rank: u32, w: &mut [f32]) {
    for l in 0..c.layers {
        for p in 0..4 {
            let (_, b) = c.adapter_offsets(rank, l, p);
            w[b..b + rank as usize * c.proj_out(p)].fill(0.0);
        }
    }
}

/// y `[m, n]` = x `[m, k]` . w `[k, n]` (row-major).
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

fn kerr(e: kernels::Error) -> Error {
    Error::internal(format!("cpu backend: {e}"))
}

/// The paged KV cache: per layer one K and one V buffer of `[slots, kv_row]`, grown a page at a time up to
/// `cap_pages`.
pub struct KvPool {
    page: usize,
    row: usize,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    free: Vec<u32>,
    pages: usize,
    cap_pages: usize,
}

impl KvPool {
    pub fn new(c: &TinyConfig, cap_pages: usize) -> KvPool {
        KvPool {
            page: c.page,
            row: c.kv_row(),
            k: vec![Vec::new(); c.layers],
            v: vec![Vec::new(); c.layers],
            free: Vec::new(),
            pages: 0,
            cap_pages,
        }
    }

    fn alloc(&mut self) -> Result<u32> {
        if let Some(p) = self.free.pop() {
            return Ok(p);
        }
        if self.pages >= self.cap_pages {
            return Err(Error::internal(format!(
                "cpu backend: out of KV pages ({} pages of {} tokens in use)",
                self.cap_pages, self.page
            )));
        }
        let add = self.page * self.row;
        for buf in self.k.iter_mut().chain(self.v.iter_mut()) {
            buf.resize(buf.len() + add, 0.0);
        }
        self.pages += 1;
        Ok(self.pages as u32 - 1)
    }

    /// Pages allocated from the pool and not free.
    pub fn pages_in_use(&self) -> usize {
        self.pages - self.free.len()
    }
}

/// The "device" adapter store: one pool, adapters placed first-fit, freed ranges coalesced.
#[derive(Default)]
pub struct AdapterStore {
    pool: Vec<f32>,
    /// Free (offset, len) ranges, by offset.
    free: Vec<(usize, usize)>,
    /// adapter -> (offset, rank, len)
    resident: HashMap<u32, (usize, u32, usize)>,
}

impl AdapterStore {
    /// A store of `n` elements, zero-filled (so its pages are backed) and free.
    pub fn with_capacity(n: usize) -> AdapterStore {
        AdapterStore {
            pool: vec![0.0; n],
            free: if n > 0 { vec![(0, n)] } else { vec![] },
            resident: HashMap::new(),
        }
    }

    fn insert(&mut self, adapter: u32, rank: u32, w: &[f32]) {
        self.remove(adapter);
        let n = w.len();
        let off = match self.free.iter().position(|&(_, len)| len >= n) {
            Some(i) => {
                let (off, len) = self.free[i];
                if len == n {
                    self.free.remove(i);
                } else {
                    self.free[i] = (off + n, len - n);
                }
                off
            }
            None => {
                self.pool.resize(self.pool.len() + n, 0.0);
                self.pool.len() - n
            }
        };
        self.pool[off..off + n].copy_from_slice(w);
        self.resident.insert(adapter, (off, rank, n));
    }

    fn remove(&mut self, adapter: u32) {
        let Some((off, _, len)) = self.resident.remove(&adapter) else {
            return;
        };
        let free = &mut self.free;
        let i = free.partition_point(|&(o, _)| o < off);
        free.insert(i, (off, len));
        let mut j = i.saturating_sub(1);
        while j + 1 < free.len() && j <= i {
            if free[j].0 + free[j].1 == free[j + 1].0 {
                free[j].1 += free[j + 1].1;
                free.remove(j + 1);
            } else {
                j += 1;
            }
        }
    }

    pub fn is_resident(&self, adapter: u32) -> bool {
        self.resident.contains_key(&adapter)
    }

    pub fn resident(&self) -> usize {
        self.resident.len()
    }
}

/// One request's state in the backend: its KV pages and the token it feeds next.
struct SeqState {
    pages: Vec<u32>,
    len: usize,
    next: u32,
}

/// One sequence of a forward pass: `tokens` are appended after what its KV cache holds.
#[derive(Clone, Debug, PartialEq)]
pub struct Step {
    pub request: u32,
    pub tokens: Vec<u32>,
    /// Index into the resident adapters (`None`: the base model).
    pub adapter: Option<u32>,
}

/// A forward pass's result: each sequence's next token (greedy) and its last position's logits.
#[derive(Clone, Debug, PartialEq)]
pub struct ForwardOut {
    pub next: Vec<u32>,
    pub logits: Vec<f32>,
}

/// The tiny decoder with its paged KV cache and adapter store.
pub struct TinyModel {
    pub cfg: TinyConfig,
    w: Weights,
    pub kv: KvPool,
    pub store: AdapterStore,
    seqs: HashMap<u32, SeqState>,
}

const LORA_SCALE: f32 = 1.0;
const EPS: f32 = 1e-5;
const THETA: f32 = 10_000.0;

impl TinyModel {
    pub fn new(cfg: TinyConfig, kv_cap_pages: usize) -> TinyModel {
        TinyModel {
            w: Weights::random(&cfg),
            kv: KvPool::new(&cfg, kv_cap_pages),
            store: AdapterStore::default(),
            seqs: HashMap::new(),
            cfg,
        }
    }

    /// Copies an adapter's weights into the store (replacing it if present).
    pub fn load_adapter(&mut self, adapter: u32, rank: u32, w: &[f32]) -> Result<()> {
        if rank == 0 || w.len() != self.cfg.adapter_len(rank) {
            return Err(Error::internal(format!(
                "cpu backend: adapter {adapter} of rank {rank} has {} weights, expected {}",
                w.len(),
                self.cfg.adapter_len(rank)
            )));
        }
        self.store.insert(adapter, rank, w);
        Ok(())
    }

    pub fn evict_adapter(&mut self, adapter: u32) {
        self.store.remove(adapter);
    }

    /// Frees a request's KV pages.
    pub fn release(&mut self, request: u32) {
        if let Some(s) = self.seqs.remove(&request) {
            self.kv.free.extend(s.pages);
        }
    }

    pub fn has_sequence(&self, request: u32) -> bool {
        self.seqs.contains_key(&request)
    }

    /// The token a request feeds at its next decode step (its last generated token).
    pub fn next_token(&self, request: u32) -> Option<u32> {
        self.seqs.get(&request).map(|s| s.next)
    }

    pub fn context_len(&self, request: u32) -> Option<usize> {
        self.seqs.get(&request).map(|s| s.len)
    }

    /// Runs one batched forward pass: appends each step's tokens to its sequence's KV cache (a sequence
    /// unknown to the model starts empty) and returns each sequence's greedy next token.
    pub fn forward(&mut self, steps: &[Step]) -> Result<ForwardOut> {
        let c = self.cfg.clone();
        let (h, row, d) = (c.hidden, c.kv_row(), c.head_dim());
        if steps.is_empty() {
            return Ok(ForwardOut {
                next: vec![],
                logits: vec![],
            });
        }
        // Positions, cache slots (allocating pages), per-token adapters.
        let mut tokens = Vec::new();
        let mut pos = Vec::new();
        let mut slot = Vec::new();
        let mut seq_ctx = Vec::with_capacity(steps.len());
        let mut distinct: Vec<u32> = Vec::new();
        let mut tok_adapter = Vec::new();
        for st in steps {
            if st.tokens.is_empty() {
                return Err(Error::internal(format!(
                    "cpu backend: request {} has no tokens to run",
                    st.request
                )));
            }
            if let Some(t) = st.tokens.iter().find(|&&t| t as usize >= c.vocab) {
                return Err(Error::internal(format!(
                    "cpu backend: token {t} outside the vocabulary"
                )));
            }
            let ai = match st.adapter {
                None => -1,
                Some(a) => {
                    if !self.store.is_resident(a) {
                        return Err(Error::internal(format!(
                            "cpu backend: request {} uses adapter {a}, which is not loaded",
                            st.request
                        )));
                    }
                    match distinct.iter().position(|&x| x == a) {
                        Some(i) => i as i32,
                        None => {
                            distinct.push(a);
                            distinct.len() as i32 - 1
                        }
                    }
                }
            };
            let s = self.seqs.entry(st.request).or_insert(SeqState {
                pages: vec![],
                len: 0,
                next: 0,
            });
            let start = s.len;
            seq_ctx.push(start);
            for (i, &t) in st.tokens.iter().enumerate() {
                let p = start + i;
                if p / c.page >= s.pages.len() {
                    s.pages.push(self.kv.alloc()?);
                }
                slot.push((s.pages[p / c.page] as usize * c.page + p % c.page) as i32);
                pos.push(p as i32);
                tokens.push(t);
                tok_adapter.push(ai);
            }
        }
        let t_n = tokens.len();
        let mut x = Vec::with_capacity(t_n * h);
        for &t in &tokens {
            x.extend_from_slice(&self.w.embed[t as usize * h..][..h]);
        }
        // LoRA slots of the batch's adapters for one (layer, projection).
        let ranks: Vec<u32> = distinct.iter().map(|a| self.store.resident[a].1).collect();
        let max_rank = ranks.iter().copied().max().unwrap_or(0) as usize;
        let lora_slots = |l: usize, p: usize| -> Vec<AdapterSlot> {
            distinct
                .iter()
                .map(|a| {
                    let (off, rank, _) = self.store.resident[a];
                    let (ao, bo) = c.adapter_offsets(rank, l, p);
                    AdapterSlot {
                        a_off: (off + ao) as u64,
                        b_off: (off + bo) as u64,
                        rank,
                    }
                })
                .collect()
        };
        let pool = &self.store.pool;
        let lora =
            |xin: &[f32], y: &mut [f32], slots: &[AdapterSlot], h_out: usize| -> Result<()> {
                if max_rank == 0 {
                    return Ok(());
                }
                let v = kref::lora_shrink_bgmv(xin, pool, slots, &tok_adapter, h, max_rank)
                    .map_err(kerr)?;
                kref::lora_expand_bgmv(
                    &v,
                    pool,
                    slots,
                    &tok_adapter,
                    y,
                    h_out,
                    max_rank,
                    LORA_SCALE,
                )
                .map_err(kerr)
            };
        // Prefill sequences (empty cache before this pass) use packed causal attention over their new tokens;
        // the others attend over the paged cache, one query per new token.
        let prefill: Vec<bool> = seq_ctx.iter().map(|&s| s == 0).collect();
        let sh = c.attn();
        let scale = 1.0 / (d as f32).sqrt();
        let max_blocks = self.seqs_max_pages(steps);
        for (l, lw) in self.w.layers.iter().enumerate() {
            let xn = kref::rms_norm(&x, &lw.attn_norm, EPS).map_err(kerr)?;
            let mut q = matmul(&xn, &lw.wq, t_n, h, h);
            let mut k = matmul(&xn, &lw.wk, t_n, h, row);
            let mut v = matmul(&xn, &lw.wv, t_n, h, row);
            lora(&xn, &mut q, &lora_slots(l, 0), h)?;
            lora(&xn, &mut k, &lora_slots(l, 1), row)?;
            lora(&xn, &mut v, &lora_slots(l, 2), row)?;
            kref::rope_neox(&mut q, &mut k, &pos, c.heads, c.kv_heads, d, THETA).map_err(kerr)?;
            kref::kv_cache_write(&k, &v, &mut self.kv.k[l], &mut self.kv.v[l], &slot, row)
                .map_err(kerr)?;
            let mut attn = vec![0.0f32; t_n * h];
            // Packed prefill.
            let (mut cu, mut rows_p) = (vec![0i32], Vec::new());
            // Paged decode: one query per token, context = its position + 1.
            let (mut table, mut ctx_lens, mut rows_d) = (Vec::new(), Vec::new(), Vec::new());
            let mut t0 = 0;
            for (si, st) in steps.iter().enumerate() {
                let n = st.tokens.len();
                if prefill[si] {
                    cu.push(cu.last().unwrap() + n as i32);
                    rows_p.extend(t0..t0 + n);
                } else {
                    let pages = &self.seqs[&st.request].pages;
                    for i in 0..n {
                        let mut tb: Vec<i32> = pages.iter().map(|&p| p as i32).collect();
                        tb.resize(max_blocks, -1);
                        table.extend(tb);
                        ctx_lens.push((seq_ctx[si] + i + 1) as i32);
                        rows_d.push(t0 + i);
                    }
                }
                t0 += n;
            }
            let gather = |src: &[f32], rows: &[usize], w: usize| -> Vec<f32> {
                rows.iter()
                    .flat_map(|&r| src[r * w..][..w].iter().copied())
                    .collect()
            };
            if !rows_p.is_empty() {
                let (qp, kp, vp) = (
                    gather(&q, &rows_p, h),
                    gather(&k, &rows_p, row),
                    gather(&v, &rows_p, row),
                );
                let o = kref::attn_prefill(&qp, &kp, &vp, &cu, sh, scale).map_err(kerr)?;
                for (i, &r) in rows_p.iter().enumerate() {
                    attn[r * h..][..h].copy_from_slice(&o[i * h..][..h]);
                }
            }
            if !rows_d.is_empty() {
                let qd = gather(&q, &rows_d, h);
                let pg = Paging {
                    block_size: c.page,
                    max_blocks,
                };
                let o = kref::attn_decode_paged(
                    &qd,
                    &self.kv.k[l],
                    &self.kv.v[l],
                    &table,
                    &ctx_lens,
                    sh,
                    pg,
                    scale,
                )
                .map_err(kerr)?;
                for (i, &r) in rows_d.iter().enumerate() {
                    attn[r * h..][..h].copy_from_slice(&o[i * h..][..h]);
                }
            }
            let mut o = matmul(&attn, &lw.wo, t_n, h, h);
            lora(&attn, &mut o, &lora_slots(l, 3), h)?;
            kref::add_inplace(&mut x, &o).map_err(kerr)?;
            let xn = kref::rms_norm(&x, &lw.mlp_norm, EPS).map_err(kerr)?;
            let gu = matmul(&xn, &lw.w_gate_up, t_n, h, 2 * c.intermediate);
            let a = kref::silu_mul(&gu, c.intermediate).map_err(kerr)?;
            let down = matmul(&a, &lw.w_down, t_n, c.intermediate, h);
            kref::add_inplace(&mut x, &down).map_err(kerr)?;
        }
        // LM head on each sequence's last token only, then greedy argmax.
        let mut last = Vec::with_capacity(steps.len() * h);
        let mut t0 = 0;
        for st in steps {
            t0 += st.tokens.len();
            last.extend_from_slice(&x[(t0 - 1) * h..][..h]);
        }
        let xn = kref::rms_norm(&last, &self.w.final_norm, EPS).map_err(kerr)?;
        let logits = matmul(&xn, &self.w.lm_head, steps.len(), h, c.vocab);
        let mut next = Vec::with_capacity(steps.len());
        for (st, lg) in steps.iter().zip(logits.chunks_exact(c.vocab)) {
            let tok = argmax(lg).ok_or_else(|| {
                Error::internal(format!(
                    "cpu backend: non-finite logits for request {}",
                    st.request
                ))
            })?;
            let s = self
                .seqs
                .get_mut(&st.request)
                .expect("sequence created above");
            s.len += st.tokens.len();
            s.next = tok;
            next.push(tok);
        }
        Ok(ForwardOut { next, logits })
    }

    fn seqs_max_pages(&self, steps: &[Step]) -> usize {
        steps
            .iter()
            .map(|s| self.seqs[&s.request].pages.len())
            .max()
            .unwrap_or(1)
            .max(1)
    }
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

/// A request's prompt: deterministic pseudo-random tokens from its id (the traces carry lengths, not text).
pub fn prompt(cfg: &TinyConfig, request: u32, len: usize) -> Vec<u32> {
    let mut s = mix(cfg.seed, 2 << 40, request as u64) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s % cfg.vocab as u64) as u32
        })
        .collect()
}

struct HostAdapter {
    rank: u32,
    weights: Vec<f32>,
}

/// The CPU backend: a tiny decoder that really runs, as an `Executor`.
pub struct CpuBackend {
    model: TinyModel,
    /// "Host memory": every adapter's weights, made by `prepare` before the run (outside any timing).
    host: HashMap<u32, HostAdapter>,
    /// Counters, for tests and the description.
    iterations: u64,
    tokens_generated: u64,
    /// The engine's model: converts the engine's adapter bytes into a rank.
    engine_model: &'static ModelSpec,
    describe: String,
    estimate: Estimator,
}

impl CpuBackend {
    /// `pool_slots` is the engine's unified pool in KV token slots; the KV page pool holds that many tokens
    /// (rounded up to pages) plus `max_batch` pages of slack for partly filled last pages.
    pub fn new(
        cfg: TinyConfig,
        pool_slots: u64,
        max_batch: u32,
        engine_model: &'static ModelSpec,
    ) -> CpuBackend {
        let cap = (pool_slots as usize).div_ceil(cfg.page) + max_batch as usize;
        let describe = format!(
            "real: cpu backend, tiny llama [{}] in f32 on {} (wall clock per iteration, std::time::Instant; idle gaps \
             not slept; memory accounting and adapter bytes of {})",
            cfg.describe(),
            std::env::consts::ARCH,
            engine_model.name
        );
        let mut model = TinyModel::new(cfg, cap);
        // The "device" adapter store can hold as many adapters as the engine's pool (4 x rank slots each),
        // allocated and touched up front as GPU memory would be, so a load never pays for growing it or for
        // first-touch page faults (it still grows past this, up to 256 MiB, if ever needed).
        let most = (pool_slots as usize / 4).saturating_mul(model.cfg.adapter_len(1));
        model.store = AdapterStore::with_capacity(most.min(1 << 26));
        let estimate = warm_up(&mut model, engine_model);
        CpuBackend {
            model,
            host: HashMap::new(),
            iterations: 0,
            tokens_generated: 0,
            engine_model,
            describe,
            estimate,
        }
    }

    pub fn estimator(&self) -> Estimator {
        self.estimate
    }

    pub fn config(&self) -> TinyConfig {
        self.model.cfg.clone()
    }

    /// (KV pages in use, adapters resident, sequences held): what the backend holds now.
    pub fn occupancy(&self) -> (usize, usize, usize) {
        (
            self.model.kv.pages_in_use(),
            self.model.store.resident(),
            self.model.seqs.len(),
        )
    }

    /// (iterations run, tokens generated).
    pub fn counters(&self) -> (u64, u64) {
        (self.iterations, self.tokens_generated)
    }

    fn rank_of(&self, adapter: u32, bytes: u64) -> Result<u32> {
        let per_rank = self.engine_model.adapter_bytes(1);
        if bytes == 0 || !bytes.is_multiple_of(per_rank) {
            return Err(Error::internal(format!(
                "cpu backend: adapter {adapter}: {bytes} bytes is not a whole rank of {}",
                self.engine_model.name
            )));
        }
        Ok((bytes / per_rank) as u32)
    }
}

/// Times a few small forward passes and adapter copies (fastest of three) for the policies' estimates, and
/// leaves the model empty again.
fn warm_up(m: &mut TinyModel, engine_model: &ModelSpec) -> Estimator {
    let c = m.cfg.clone();
    let dims = Dims {
        layers: c.layers as f64,
        hidden: c.hidden as f64,
        kv_row: c.kv_row() as f64,
        intermediate: c.intermediate as f64,
        vocab: c.vocab as f64,
    };
    let ids = [u32::MAX - 2, u32::MAX - 1];
    let (n, steps) = (32usize, 4u64);
    let mut best = f64::INFINITY;
    let mut best_load = f64::INFINITY;
    let w = adapter_weights(&c, u32::MAX - 1, 8);
    for _ in 0..3 {
        let t = Instant::now();
        let pre: Vec<Step> = ids
            .iter()
            .map(|&r| Step {
                request: r,
                tokens: prompt(&c, r, n),
                adapter: None,
            })
            .collect();
        let mut ok = m.forward(&pre).is_ok();
        for _ in 0..steps {
            let dec: Vec<Step> = ids
                .iter()
                .map(|&r| Step {
                    request: r,
                    tokens: vec![m.next_token(r).unwrap_or(0)],
                    adapter: None,
                })
                .collect();
            ok &= m.forward(&dec).is_ok();
        }
        best = best.min(t.elapsed().as_nanos() as f64);
        ids.iter().for_each(|&r| m.release(r));
        let t = Instant::now();
        ok &= m.load_adapter(u32::MAX - 1, 8, &w).is_ok();
        best_load = best_load.min(t.elapsed().as_nanos() as f64);
        m.evict_adapter(u32::MAX - 1);
        if !ok {
            break;
        }
    }
    let k = ids.len() as u64;
    let pre = BatchShape {
        prefill_seqs: k,
        prefill_tokens: k * n as u64,
        prefill_sq_tokens: k * (n * n) as u64,
        ..Default::default()
    };
    let dec = BatchShape {
        decode_seqs: k,
        decode_context: k * (n as u64 + steps / 2),
        ..Default::default()
    };
    let flops = dims.flops(&pre) + steps as f64 * dims.flops(&dec);
    let own_bytes = (c.adapter_len(1) * 4) as f64;
    Estimator {
        dims,
        ns_per_flop: if best.is_finite() { best / flops } else { 1.0 },
        ns_per_byte: if best_load.is_finite() {
            best_load / (8.0 * own_bytes)
        } else {
            0.1
        },
        bytes_ratio: own_bytes / engine_model.adapter_bytes(1) as f64,
        fixed_ns: 0.0,
    }
}

impl Executor for CpuBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn estimates(&self) -> &dyn CostModel {
        &self.estimate
    }

    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
        let cfg = self.model.cfg.clone();
        for a in adapters {
            self.host.insert(
                a.id,
                HostAdapter {
                    rank: a.rank,
                    weights: adapter_weights(&cfg, a.id, a.rank),
                },
            );
        }
        Ok(())
    }

    fn run_iteration(&mut self, seqs: &mut dyn Iterator<Item = Seq>) -> Result<()> {
        let cfg = self.model.cfg.clone();
        let mut steps = Vec::new();
        for s in seqs {
            let adapter = (s.adapter != NO_ADAPTER).then_some(s.adapter);
            let tokens = if s.context == 0 {
                // A prefill; a request squashed and re-admitted starts over.
                self.model.release(s.request);
                prompt(&cfg, s.request, s.new_tokens as usize)
            } else {
                let next = self.model.next_token(s.request).ok_or_else(|| {
                    Error::internal(format!(
                        "cpu backend: request {} decodes before its prefill",
                        s.request
                    ))
                })?;
                vec![next; s.new_tokens.min(1) as usize]
            };
            steps.push(Step {
                request: s.request,
                tokens,
                adapter,
            });
        }
        let out = self.model.forward(&steps)?;
        self.iterations += 1;
        self.tokens_generated += out.next.len() as u64;
        Ok(())
    }

    fn load(&mut self, adapter: u32, bytes: u64) -> Result<()> {
        let rank = self.rank_of(adapter, bytes)?;
        let host = self.host.get(&adapter).ok_or_else(|| {
            Error::internal(format!("cpu backend: adapter {adapter} was never prepared"))
        })?;
        if host.rank != rank {
            return Err(Error::internal(format!(
                "cpu backend: adapter {adapter} loaded with rank {rank}, prepared with {}",
                host.rank
            )));
        }
        self.model.load_adapter(adapter, rank, &host.weights)
    }

    fn release(&mut self, request: u32) {
        self.model.release(request);
    }

    fn evict(&mut self, adapter: u32) {
        self.model.evict_adapter(adapter);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Clock, LoadPath, Timed};

    fn cfg() -> TinyConfig {
        TinyConfig {
            page: 4,
            ..TinyConfig::default()
        }
    }

    fn close(a: &[f32], b: &[f32], tol: f32) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| (x - y).abs() <= tol * (1.0 + y.abs()))
    }

    fn model_with(adapters: &[(u32, u32)]) -> TinyModel {
        let c = cfg();
        let mut m = TinyModel::new(c.clone(), 1000);
        for &(a, r) in adapters {
            m.load_adapter(a, r, &adapter_weights(&c, a, r)).unwrap();
        }
        m
    }

    /// A dense single-sequence forward written directly from the definitions (full causal recompute, no
    /// paging, LoRA as x.A^T.B by explicit loops): the oracle for the batched, paged model.
    fn naive_logits(m: &TinyModel, tokens: &[u32], adapter: Option<(u32, &[f32])>) -> Vec<f32> {
        let c = &m.cfg;
        let (h, row, d) = (c.hidden, c.kv_row(), c.head_dim());
        let n = tokens.len();
        let mut x: Vec<f32> = tokens
            .iter()
            .flat_map(|&t| m.w.embed[t as usize * h..][..h].to_vec())
            .collect();
        let lora = |l: usize, p: usize, xin: &[f32], y: &mut [f32], h_out: usize| {
            if let Some((rank, w)) = adapter {
                let (ao, bo) = c.adapter_offsets(rank, l, p);
                for t in 0..n {
                    for j in 0..rank as usize {
                        let vj: f32 = (0..h).map(|i| xin[t * h + i] * w[ao + j * h + i]).sum();
                        for o in 0..h_out {
                            y[t * h_out + o] += vj * w[bo + j * h_out + o];
                        }
                    }
                }
            }
        };
        for (l, lw) in m.w.layers.iter().enumerate() {
            let xn = kref::rms_norm(&x, &lw.attn_norm, EPS).unwrap();
            let mut q = matmul(&xn, &lw.wq, n, h, h);
            let mut k = matmul(&xn, &lw.wk, n, h, row);
            let mut v = matmul(&xn, &lw.wv, n, h, row);
            lora(l, 0, &xn, &mut q, h);
            lora(l, 1, &xn, &mut k, row);
            lora(l, 2, &xn, &mut v, row);
            let pos: Vec<i32> = (0..n as i32).collect();
            kref::rope_neox(&mut q, &mut k, &pos, c.heads, c.kv_heads, d, THETA).unwrap();
            let mut attn = vec![0.0; n * h];
            let group = c.heads / c.kv_heads;
            for t in 0..n {
                for hd in 0..c.heads {
                    let kh = hd / group;
                    let ks: Vec<&[f32]> = (0..=t).map(|j| &k[j * row + kh * d..][..d]).collect();
                    let vs: Vec<&[f32]> = (0..=t).map(|j| &v[j * row + kh * d..][..d]).collect();
                    let o = kref::attention_dense(
                        &q[t * h + hd * d..][..d],
                        &ks,
                        &vs,
                        1.0 / (d as f32).sqrt(),
                    );
                    attn[t * h + hd * d..][..d].copy_from_slice(&o);
                }
            }
            let mut o = matmul(&attn, &lw.wo, n, h, h);
            lora(l, 3, &attn, &mut o, h);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let xn = kref::rms_norm(&x, &lw.mlp_norm, EPS).unwrap();
            let gu = matmul(&xn, &lw.w_gate_up, n, h, 2 * c.intermediate);
            let a = kref::silu_mul(&gu, c.intermediate).unwrap();
            let down = matmul(&a, &lw.w_down, n, c.intermediate, h);
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += b);
        }
        let xn = kref::rms_norm(&x[(n - 1) * h..], &m.w.final_norm, EPS).unwrap();
        matmul(&xn, &m.w.lm_head, 1, h, c.vocab)
    }

    #[test]
    fn prefill_and_paged_decode_match_a_naive_dense_forward() {
        let c = cfg();
        let w8 = adapter_weights(&c, 7, 8);
        let mut m = model_with(&[(7, 8)]);
        let toks = prompt(&c, 1, 6);
        let out = m
            .forward(&[Step {
                request: 1,
                tokens: toks.clone(),
                adapter: Some(7),
            }])
            .unwrap();
        let want = naive_logits(&m, &toks, Some((8, &w8)));
        assert!(close(&out.logits, &want, 1e-4));
        // Three decode steps through the paged cache (page = 4: crosses a page boundary) against a dense
        // recompute of the whole sequence.
        let mut seq = toks;
        let mut next = out.next[0];
        for _ in 0..3 {
            seq.push(next);
            let o = m
                .forward(&[Step {
                    request: 1,
                    tokens: vec![next],
                    adapter: Some(7),
                }])
                .unwrap();
            let want = naive_logits(&m, &seq, Some((8, &w8)));
            assert!(close(&o.logits, &want, 1e-4), "decode at {}", seq.len());
            assert_eq!(o.next[0], argmax(&want).unwrap());
            next = o.next[0];
        }
        assert_eq!(m.context_len(1), Some(9));
        assert_eq!(m.kv.pages_in_use(), 3);
        m.release(1);
        assert_eq!(m.kv.pages_in_use(), 0);
    }

    #[test]
    fn a_batch_equals_its_sequences_run_one_at_a_time() {
        let c = cfg();
        let specs: [(u32, usize, Option<u32>); 4] = [
            (10, 5, Some(1)),
            (11, 9, None),
            (12, 3, Some(2)),
            (13, 7, Some(1)),
        ];
        let adapters = [(1, 8), (2, 32)];
        let mut batched = model_with(&adapters);
        let steps: Vec<Step> = specs
            .iter()
            .map(|&(r, n, a)| Step {
                request: r,
                tokens: prompt(&c, r, n),
                adapter: a,
            })
            .collect();
        let mut b_out = vec![batched.forward(&steps).unwrap()];
        for _ in 0..4 {
            let dec: Vec<Step> = specs
                .iter()
                .map(|&(r, _, a)| Step {
                    request: r,
                    tokens: vec![batched.next_token(r).unwrap()],
                    adapter: a,
                })
                .collect();
            b_out.push(batched.forward(&dec).unwrap());
        }
        for (i, st) in steps.iter().enumerate() {
            let mut alone = model_with(&adapters);
            let mut o = alone.forward(std::slice::from_ref(st)).unwrap();
            for b in &b_out {
                assert_eq!(o.next[0], b.next[i], "request {}", st.request);
                assert_eq!(o.logits[..], b.logits[i * c.vocab..][..c.vocab]);
                let dec = Step {
                    request: st.request,
                    tokens: vec![o.next[0]],
                    adapter: st.adapter,
                };
                o = alone.forward(&[dec]).unwrap();
            }
        }
    }

    #[test]
    fn an_adapter_with_zero_b_equals_the_base_model() {
        let c = cfg();
        let mut w = adapter_weights(&c, 3, 16);
        zero_b(&c, 16, &mut w);
        let mut m = model_with(&[]);
        m.load_adapter(3, 16, &w).unwrap();
        let toks = prompt(&c, 5, 8);
        let with = m
            .forward(&[Step {
                request: 1,
                tokens: toks.clone(),
                adapter: Some(3),
            }])
            .unwrap();
        let base = m
            .forward(&[Step {
                request: 2,
                tokens: toks.clone(),
                adapter: None,
            }])
            .unwrap();
        assert_eq!(with, base);
        // A real adapter changes the output.
        m.load_adapter(3, 16, &adapter_weights(&c, 3, 16)).unwrap();
        let lora = m
            .forward(&[Step {
                request: 3,
                tokens: toks,
                adapter: Some(3),
            }])
            .unwrap();
        assert_ne!(lora.logits, base.logits);
    }

    #[test]
    fn adapter_store_reuses_freed_space_and_rejects_unloaded_adapters() {
        let c = cfg();
        let mut m = model_with(&[(1, 8), (2, 16), (3, 8)]);
        let len = m.store.pool.len();
        m.evict_adapter(1);
        m.evict_adapter(2);
        assert_eq!(
            m.store.free,
            vec![(0, c.adapter_len(8) + c.adapter_len(16))]
        );
        m.load_adapter(4, 16, &adapter_weights(&c, 4, 16)).unwrap();
        m.load_adapter(5, 8, &adapter_weights(&c, 5, 8)).unwrap();
        assert_eq!(m.store.pool.len(), len, "freed space reused");
        let e = m
            .forward(&[Step {
                request: 1,
                tokens: vec![1, 2],
                adapter: Some(2),
            }])
            .unwrap_err();
        assert!(
            e.to_string().contains("adapter 2, which is not loaded"),
            "{e}"
        );
        assert!(m.load_adapter(6, 8, &[0.0; 3]).is_err());
    }

    #[test]
    fn running_out_of_kv_pages_is_an_error() {
        let c = cfg();
        let mut m = TinyModel::new(c.clone(), 2);
        m.forward(&[Step {
            request: 1,
            tokens: prompt(&c, 1, 8),
            adapter: None,
        }])
        .unwrap();
        let e = m
            .forward(&[Step {
                request: 2,
                tokens: vec![1],
                adapter: None,
            }])
            .unwrap_err();
        assert!(e.to_string().contains("out of KV pages"), "{e}");
        m.release(1);
        m.release(2);
        m.forward(&[Step {
            request: 3,
            tokens: prompt(&c, 3, 8),
            adapter: None,
        }])
        .unwrap();
    }

    #[test]
    fn the_backend_follows_the_engines_calls() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let mut b = Timed(CpuBackend::new(cfg(), 1000, 8, m));
        assert_eq!(
            b.0.occupancy(),
            (0, 0, 0),
            "the warm-up leaves nothing behind"
        );
        let seq = |request, new_tokens, context, adapter, rank| Seq {
            request,
            new_tokens,
            context,
            adapter,
            rank,
        };
        let shape = BatchShape::default();
        let ad = |id, rank| Adapter {
            id,
            rank,
            bytes: m.adapter_bytes(rank),
            slots: m.adapter_slots(rank),
        };
        b.prepare(&[ad(5, 16), ad(6, 8)]).unwrap();
        let run = |b: &mut Timed<CpuBackend>, seqs: &[Seq]| {
            b.iteration(&shape, &mut seqs.iter().copied())
        };
        // Adapter bytes of the engine's model give the rank.
        let once = LoadPath::slora(1);
        let bytes = m.adapter_bytes(16);
        assert!(b.load(5, bytes, &once.shape(bytes)).unwrap() > 0);
        assert!(b.load(6, 12345, &once.shape(12345)).is_err());
        let pre = [seq(1, 6, 0, 5, 16), seq(2, 3, 0, NO_ADAPTER, 0)];
        assert!(run(&mut b, &pre).unwrap() > 0);
        let dec = [seq(1, 1, 7, 5, 16), seq(2, 1, 4, NO_ADAPTER, 0)];
        run(&mut b, &dec).unwrap();
        assert_eq!(b.0.occupancy(), (3, 1, 2));
        // A squashed request prefilled again starts over: its old pages are freed, not leaked.
        b.release(2);
        run(&mut b, &[seq(2, 3, 0, NO_ADAPTER, 0)]).unwrap();
        run(&mut b, &[seq(1, 6, 0, 5, 16)]).unwrap();
        assert_eq!(b.0.occupancy(), (3, 1, 2));
        let e = run(&mut b, &[seq(9, 1, 5, NO_ADAPTER, 0)]).unwrap_err();
        assert!(e.to_string().contains("before its prefill"), "{e}");
        // A resident adapter serves decode steps; once evicted it can no longer be used (the engine reports
        // evictions in order, before any load).
        run(&mut b, &[seq(1, 1, 7, 5, 16)]).unwrap();
        b.evict(5);
        assert!(run(&mut b, &[seq(1, 1, 8, 5, 16)]).is_err());
        b.release(1);
        b.release(2);
        assert_eq!(b.0.occupancy(), (0, 0, 0));
        assert_eq!(b.0.counters(), (5, 7));
    }

    #[test]
    fn config_spec_is_validated() {
        let parse = |s: &str| TinyConfig::from_spec(&mut Spec::parse(s).unwrap());
        assert_eq!(parse("cpu").unwrap(), TinyConfig::default());
        let c = parse("cpu[layers=3,hidden=128,heads=4,kv_heads=2]").unwrap();
        assert_eq!((c.layers, c.head_dim(), c.kv_row()), (3, 32, 64));
        assert!(
            parse("cpu[hidden=48]")
                .unwrap_err()
                .to_string()
                .contains("multiple of 32")
        );
        assert!(parse("cpu[heads=3]").is_err());
        assert!(
            parse("cpu[depth=3]")
                .unwrap_err()
                .to_string()
                .contains("unknown parameter")
        );
        assert!(parse("cpu[layers=0]").is_err());
    }
}
