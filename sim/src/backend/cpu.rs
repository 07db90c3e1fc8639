//! The CPU backend: a tiny Llama-shaped decoder executed for real in plain Rust f32, so CI runs real mode end
//! to end. The decoder is the kernels crate's (`kernels::decoder`, the same forward pass the CUDA backend
//! runs) over its CPU operations (`kernels::reference`: RMSNorm, RoPE, paged attention, SiLU-MLP, batched
//! mixed-rank LoRA, the dense matmul), the definitions the CUDA kernels are checked against.
//!
//! - Weights are random (seeded), at the tiny configuration's size; the cost does not depend on their values.
//! - KV cache: paged. Each layer has one K and one V cache of `[slots, kv_heads, head_dim]`; a request holds a
//!   list of fixed-size pages from a shared free list. The pool holds at most the engine's pool (in token
//!   slots, rounded up to pages) plus one page per sequence of slack for partly filled last pages; past that a
//!   forward pass fails with "out of KV pages", which stops the run cleanly like a CUDA out-of-memory error.
//! - Adapters: each adapter's weights are generated in "host" memory before the run (`prepare`, outside any
//!   timing) and copied into the "device" adapter store (one f32 pool, first-fit allocation) on `load`; `evict`
//!   frees them. The engine's memory accounting (KV slots + adapter slots in one pool) decides what is
//!   resident; the backend checks that every adapter a batch uses is in its store.
//! - Every iteration (prefill or decode) runs one batched forward pass over all its sequences, then greedy
//!   argmax picks each sequence's next token; `engine::Timed` makes its wall time the iteration's duration.

use std::ops::{Deref, DerefMut};

use kernels::decoder::{self, AdapterStore, Decoder, KvCache, Shape, cpu::CpuOps};
use kernels::reference::AttnShape;

pub use kernels::decoder::{ForwardOut, Step};

use super::real::RealBackend;
use sim_core::error::{Error, Result};
use sim_core::model::ModelSpec;
use sim_core::registry::{Param, Params};

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

/// The parameters of `cpu[...]`, with `TinyConfig::default()`'s values.
pub const PARAMS: &[Param] = &[
    Param::new("layers", "2", "decoder layers"),
    Param::new("hidden", "64", "hidden size (a multiple of 32)"),
    Param::new("heads", "2", "attention heads"),
    Param::optional("kv_heads", "KV heads (absent: heads)"),
    Param::new("intermediate", "128", "MLP size"),
    Param::new("vocab", "256", "vocabulary"),
    Param::new("page", "16", "tokens per KV page"),
    Param::new("seed", "0", "random weights' seed"),
];

impl TinyConfig {
    /// Reads the `cpu[...]` parameters (`kv_heads` defaults to `heads`).
    pub fn from_params(p: &mut Params) -> Result<TinyConfig> {
        let heads = p.get("heads")?;
        let c = TinyConfig {
            layers: p.get("layers")?,
            hidden: p.get("hidden")?,
            heads,
            kv_heads: match p.given("kv_heads") {
                None => heads,
                Some(v) => v
                    .parse()
                    .map_err(|_| p.bad(format!("parameter 'kv_heads' has bad value '{v}'")))?,
            },
            intermediate: p.get("intermediate")?,
            vocab: p.get("vocab")?,
            page: p.get("page")?,
            seed: p.get("seed")?,
        };
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::msg(format!("--backend cpu: {why}")));
        if self.page == 0 {
            return bad("every size must be positive".into());
        }
        self.shape().check().or_else(|e| bad(e.0))?;
        if self.layers * self.hidden * self.vocab.max(self.intermediate) > 1 << 28 {
            return bad(
                "the model is too large for the CPU backend (it is meant to be tiny)".into(),
            );
        }
        Ok(())
    }

    pub fn shape(&self) -> Shape {
        Shape {
            layers: self.layers,
            hidden: self.hidden,
            heads: self.heads,
            kv_heads: self.kv_heads,
            intermediate: self.intermediate,
            vocab: self.vocab,
        }
    }

    pub fn head_dim(&self) -> usize {
        self.shape().head_dim()
    }

    /// Width of one token's K (or V) row in one layer.
    pub fn kv_row(&self) -> usize {
        self.shape().kv_row()
    }

    pub fn attn(&self) -> AttnShape {
        self.shape().attn()
    }

    /// Elements of one adapter of rank r: per layer, per projection q,k,v,o, A `[r, hidden]` then B `[r, out]`.
    pub fn adapter_len(&self, rank: u32) -> usize {
        self.shape().adapter_len(rank)
    }

    /// Offsets of (A, B) of projection p of layer l inside an adapter of rank r.
    pub fn adapter_offsets(&self, rank: u32, layer: usize, p: usize) -> (usize, usize) {
        self.shape().adapter_offsets(rank, layer, p)
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

/// One adapter's weights of rank r in the store layout (`TinyConfig::adapter_offsets`), seeded by its id.
pub fn adapter_weights(c: &TinyConfig, adapter: u32, rank: u32) -> Vec<f32> {
    decoder::adapter_weights(&c.shape(), c.seed, adapter, rank)
}

/// Sets every B of an adapter to zero (its LoRA then adds nothing).
pub fn zero_b(c: &TinyConfig, rank: u32, w: &mut [f32]) {
    decoder::zero_b(&c.shape(), rank, w)
}

/// A request's prompt: deterministic pseudo-random tokens from its id (the traces carry lengths, not text).
pub fn prompt(cfg: &TinyConfig, request: u32, len: usize) -> Vec<u32> {
    decoder::prompt(cfg.seed, cfg.vocab, request, len)
}

fn kerr(e: kernels::Error) -> Error {
    Error::internal(format!("cpu backend: {e}"))
}

/// The tiny decoder on the CPU operations: a KV cache of at most `kv_cap_pages` pages grown as used, and an
/// adapter store of `store` elements allocated (and touched) up front, as GPU memory would be, so a load
/// never pays for growing it or for first-touch page faults (it still grows if ever needed).
fn tiny_decoder(cfg: &TinyConfig, kv_cap_pages: usize, store: usize) -> Decoder<CpuOps> {
    let s = cfg.shape();
    Decoder::from_host(
        CpuOps,
        s,
        cfg.seed,
        |o| KvCache::new(o, &s, cfg.page, kv_cap_pages, false),
        AdapterStore::packed(vec![0.0; store], store),
    )
    .expect("the CPU decoder builds from any validated TinyConfig")
}

/// The tiny decoder with its paged KV cache and adapter store, erroring as the CPU backend (the decoder's
/// fields and other methods are reached through `Deref`).
pub struct TinyModel {
    pub cfg: TinyConfig,
    dec: Decoder<CpuOps>,
}

impl Deref for TinyModel {
    type Target = Decoder<CpuOps>;
    fn deref(&self) -> &Decoder<CpuOps> {
        &self.dec
    }
}

impl DerefMut for TinyModel {
    fn deref_mut(&mut self) -> &mut Decoder<CpuOps> {
        &mut self.dec
    }
}

impl TinyModel {
    /// Panics if `cfg` is invalid (`TinyConfig::from_spec` validates).
    pub fn new(cfg: TinyConfig, kv_cap_pages: usize) -> TinyModel {
        TinyModel {
            dec: tiny_decoder(&cfg, kv_cap_pages, 0),
            cfg,
        }
    }

    /// Copies an adapter's weights into the store (replacing it if present).
    pub fn load_adapter(&mut self, adapter: u32, rank: u32, w: &[f32]) -> Result<()> {
        self.dec.load_adapter(adapter, rank, w).map_err(kerr)
    }

    /// Runs one batched forward pass: appends each step's tokens to its sequence's KV cache (a sequence
    /// unknown to the model starts empty) and returns each sequence's greedy next token.
    pub fn forward(&mut self, steps: &[Step]) -> Result<ForwardOut> {
        self.dec.forward(steps).map_err(kerr)
    }
}

/// The CPU backend: the tiny decoder as an `Executor`.
pub type CpuBackend = RealBackend<CpuOps>;

impl RealBackend<CpuOps> {
    /// `pool_slots` is the engine's unified pool in KV token slots; the KV page pool holds that many tokens
    /// (rounded up to pages) plus `max_batch` pages of slack for partly filled last pages. Panics if `cfg`
    /// is invalid (`TinyConfig::from_spec` validates).
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
        // The store can hold as many adapters as the engine's pool (4 x rank slots each).
        let most = (pool_slots as usize / 4).saturating_mul(cfg.adapter_len(1));
        let model = tiny_decoder(&cfg, cap, most.min(1 << 26));
        let mut b = RealBackend::from_decoder(
            model,
            "cpu backend",
            cfg.seed,
            "",
            engine_model,
            describe,
            4,
        );
        // A pool too small for the warm-up leaves the default estimates; the run itself reports the error.
        let _ = b.warm_up(32, 8);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kernels::decoder::{EPS, THETA, argmax};
    use kernels::reference::{self as kref, matmul};
    use sim_core::cost::BatchShape;
    use sim_core::engine::{Clock, LoadPath, Seq, Timed};
    use sim_core::workload::{Adapter, NO_ADAPTER};

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
        let parse = |s: &str| -> Result<TinyConfig> {
            match super::super::BackendSpec::parse(s)? {
                super::super::BackendSpec::Cpu(c) => Ok(c),
                other => panic!("{other:?}"),
            }
        };
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
