//! The CUDA backend: the decoder `--model` names at its real size and dtype (random weights: the cost does
//! not depend on their values) on one NVIDIA GPU, through the kernels crate (NVRTC-compiled kernels + cuBLAS
//! via cudarc). NOT RUN YET: it was written and compiled on a machine without a GPU (see
//! docs/real-execution.md, "Status").
//!
//! Per iteration (one batched forward pass, as S-LoRA runs prefill and decode separately):
//! embedding rows gathered on the host and copied in (the kernels crate has no gather kernel); per layer
//! RMSNorm, q/k/v GEMMs (cuBLAS) each plus LoRA (segmented shrink/expand for a prefill, gathered for a decode,
//! mixed ranks in one launch), RoPE, K/V written into the paged cache, packed causal attention (prefill) or
//! paged attention (decode), o GEMM + LoRA, residual, RMSNorm, gate/up GEMM, SiLU-mul, down GEMM, residual;
//! the LM head on each sequence's last token; logits copied back and the greedy argmax taken on the host. The
//! iteration's duration (`engine::Timed`) is the wall time from the first upload to the logits on the host.
//!
//! Memory: the weights, a paged KV cache of the engine's pool (`--pool-tokens` or the memory arithmetic,
//! rounded up to pages, plus one page per batch slot of slack), an adapter region (`adapter_gib`, default a
//! quarter of the pool's bytes), and activations for the largest iteration; allocation fails cleanly if they
//! do not fit. Unlike S-LoRA's unified paging, KV pages and adapters are separate regions (the LoRA kernels
//! read contiguous `[rank, hidden]` A and B, not scattered pages); the engine's accounting still treats them
//! as one pool, so a run whose resident adapters exceed the region stops with "adapter region full".
//!
//! Adapters: every adapter's weights are put in pinned host memory before the run (`prepare`, outside any
//! timing); `load` copies them layer by layer (8 x layers copies, S-LoRA's way) on a second stream and waits
//! for the copy, so `engine::Timed` measures it. The engine overlaps that duration with compute in its model
//! of the copy stream; on the GPU the copy is waited for before the next iteration uses the adapter.
//! Any CUDA error (out of memory, a failed launch) is returned to the engine, which stops the run cleanly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaSlice, CudaStream, PinnedHostSlice};
use kernels::dtype::DType;
use kernels::gpu::{DeviceLora, DevicePaging, DeviceSeqs, DeviceSlots, Gemm, Kernels};
use kernels::reference::{AdapterSlot, AttnShape, Paging};

use super::{Dims, Estimator};
use crate::cost::{BatchShape, CostModel};
use crate::engine::{Executor, Seq};
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::spec::Spec;
use crate::workload::{Adapter, NO_ADAPTER};

pub const PARAMS: &[&str] = &["device", "dtype", "page", "adapter_gib", "seed"];

#[derive(Clone, Debug, PartialEq)]
pub struct CudaConfig {
    pub device: usize,
    /// `fp16` or `bf16`.
    pub dtype: String,
    /// Tokens per KV page.
    pub page: usize,
    /// Size of the adapter region, GiB (default: a quarter of the pool's bytes).
    pub adapter_gib: Option<f64>,
    pub seed: u32,
}

impl CudaConfig {
    pub fn from_spec(spec: &mut Spec) -> Result<CudaConfig> {
        let c =
            CudaConfig {
                device: spec.get("device", 0)?,
                dtype: spec
                    .take_str("dtype")
                    .unwrap_or_else(|| "fp16".into())
                    .to_ascii_lowercase(),
                page: spec.get("page", 16)?,
                adapter_gib: match spec.take_str("adapter_gib") {
                    None => None,
                    Some(v) => Some(v.parse().map_err(|_| {
                        Error::msg(format!("--backend cuda: bad adapter_gib '{v}'"))
                    })?),
                },
                seed: spec.get("seed", 0)?,
            };
        spec.finish(PARAMS)?;
        DType::parse(&c.dtype).map_err(|e| Error::msg(format!("--backend cuda: {e}")))?;
        if c.page == 0 || c.adapter_gib.is_some_and(|g| !(g > 0.0 && g.is_finite())) {
            return Err(Error::msg(
                "--backend cuda: page and adapter_gib must be positive",
            ));
        }
        Ok(c)
    }
}

fn cuda(what: &'static str) -> impl Fn(cudarc::driver::DriverError) -> Error {
    move |e| Error::internal(format!("cuda backend: {what}: {e}"))
}

fn kerr(e: kernels::Error) -> Error {
    Error::internal(format!("cuda backend: {e}"))
}

const GIB: f64 = (1u64 << 30) as f64;

/// Element offsets of one layer's weights in its buffer: wq, wk, wv, wo, w_gate_up, w_down, the two norms.
fn layer_offsets(m: &ModelSpec) -> [usize; 9] {
    let (h, i) = (m.hidden as usize, m.intermediate as usize);
    let sizes = [h * h, h * h, h * h, h * h, 2 * h * i, i * h, h, h];
    let mut o = [0; 9];
    for (k, s) in sizes.iter().enumerate() {
        o[k + 1] = o[k] + s;
    }
    o
}

struct Bufs {
    x: CudaSlice<u16>,
    xn: CudaSlice<u16>,
    q: CudaSlice<u16>,
    k: CudaSlice<u16>,
    v: CudaSlice<u16>,
    o: CudaSlice<u16>,
    y: CudaSlice<u16>,
    gu: CudaSlice<u16>,
    act: CudaSlice<u16>,
    last: CudaSlice<u16>,
    logits: CudaSlice<u16>,
    lora_v: CudaSlice<f32>,
}

struct Resident {
    off: usize,
    len: usize,
    rank: u32,
    /// Recorded on the copy stream after the copy; the compute stream waits on it.
    ready: CudaEvent,
}

struct SeqState {
    pages: Vec<u32>,
    len: usize,
    next: u32,
}

struct Gpu {
    ctx: Arc<CudaContext>,
    s: Arc<CudaStream>,
    copy: Arc<CudaStream>,
    k: Kernels,
    gemm: Gemm,
    dtype: DType,
    m: &'static ModelSpec,
    page: usize,
    max_tokens: usize,
    max_rank: usize,
    layers: Vec<CudaSlice<u16>>,
    final_norm: CudaSlice<u16>,
    lm_head: CudaSlice<u16>,
    /// The embedding table on the host (fp16/bf16 bits), gathered per iteration.
    embed: Vec<u16>,
    kv_k: CudaSlice<u16>,
    kv_v: CudaSlice<u16>,
    cache_slots: usize,
    free_pages: Vec<u32>,
    /// The adapter region: 4 x layers equal sub-regions (one per layer and projection); an adapter sits at the
    /// same offset in each, A `[rank, h]` then B `[rank, h]`, so one LoRA metadata upload serves all of them.
    adapters: CudaSlice<u16>,
    region: usize,
    free_ranges: Vec<(usize, usize)>,
    resident: HashMap<u32, Resident>,
    host: HashMap<u32, PinnedHostSlice<u16>>,
    seqs: HashMap<u32, SeqState>,
    bufs: Bufs,
    seed: u32,
}

/// The CUDA backend as the engine sees it.
pub struct CudaBackend {
    g: Gpu,
    /// Reused buffer: the sequences of the iteration being run.
    batch: Vec<Seq>,
    describe: String,
    estimate: Estimator,
}

impl CudaBackend {
    /// Opens the GPU, compiles the kernels and allocates everything; a one-line error (exit code 2) when the
    /// CUDA libraries or the device are missing.
    pub fn new(
        c: &CudaConfig,
        m: &'static ModelSpec,
        pool_slots: u64,
        max_batch: u32,
        max_tokens: u64,
    ) -> Result<CudaBackend> {
        // cudarc panics when a library it needs cannot be loaded: check first.
        kernels::gpu::require_libraries(true, true).map_err(|e| Error::msg(e.0))?;
        let (ctx, info) = kernels::gpu::open_device(c.device).map_err(|e| Error::msg(e.0))?;
        let dtype = DType::parse(&c.dtype).map_err(|e| Error::msg(e.0))?;
        let s = ctx.new_stream().map_err(cuda("stream"))?;
        let copy = ctx.new_stream().map_err(cuda("copy stream"))?;
        let k = Kernels::new(ctx.clone(), dtype).map_err(kerr)?;
        k.compile_all().map_err(kerr)?;
        let gemm = Gemm::new(s.clone(), dtype).map_err(kerr)?;

        let (h, i, vocab) = (m.hidden as usize, m.intermediate as usize, m.vocab as usize);
        let max_tokens = (max_tokens as usize).max(max_batch as usize).max(1);
        let max_rank = 128usize;
        let pages = (pool_slots as usize).div_ceil(c.page) + max_batch as usize;
        let cache_slots = pages * c.page;
        let kv_elems = m.layers as usize * cache_slots * h;
        let adapter_bytes = c
            .adapter_gib
            .map_or(pool_slots as f64 * m.kv_slot_bytes() as f64 / 4.0, |g| {
                g * GIB
            });
        let region = ((adapter_bytes / 2.0) as usize / (4 * m.layers as usize)).max(2 * h);
        let o = layer_offsets(m);
        let act = 6 * max_tokens * h + 3 * max_tokens * i + max_batch as usize * (h + vocab);
        let need = 2.0
            * (m.layers as usize * o[8]
                + h
                + h * vocab
                + 2 * kv_elems
                + 4 * m.layers as usize * region
                + act) as f64
            + (max_tokens * max_rank * 4) as f64;
        let (free, _) = ctx.mem_get_info().map_err(cuda("memory info"))?;
        if need > free as f64 {
            return Err(Error::msg(format!(
                "--backend cuda: {} weights + KV pool of {pool_slots} slots + {:.1} GiB adapter region + activations \
                 need {:.1} GiB, but {} has {:.1} GiB free (lower --pool-tokens/--mem-util or adapter_gib)",
                m.name,
                adapter_bytes / GIB,
                need / GIB,
                info.name,
                free as f64 / GIB
            )));
        }
        // SAFETY: every buffer below is written (fill_uniform, a copy or a kernel) before it is read.
        let alloc = |n: usize| {
            unsafe { s.alloc::<u16>(n.max(1)) }.map_err(cuda("allocation (out of memory?)"))
        };
        let random = |n: usize, seed: u32| -> Result<CudaSlice<u16>> {
            let mut b = alloc(n)?;
            k.fill_uniform(&s, &mut b.as_view_mut(), seed, 0.02)
                .map_err(kerr)?;
            Ok(b)
        };
        let mut layers = Vec::with_capacity(m.layers as usize);
        for l in 0..m.layers as u32 {
            layers.push(random(o[8], c.seed.wrapping_add(1000 + l))?);
        }
        let final_norm = random(h, c.seed.wrapping_add(1))?;
        let lm_head = random(h * vocab, c.seed.wrapping_add(2))?;
        let embed: Vec<u16> = kernels::reference::pseudo_random(vocab * h, c.seed as u64 + 3)
            .into_iter()
            .map(|x| dtype.to_bits(x))
            .collect();
        let kv_k = alloc(kv_elems)?;
        let kv_v = alloc(kv_elems)?;
        let adapters = alloc(4 * m.layers as usize * region)?;
        let bufs = Bufs {
            x: alloc(max_tokens * h)?,
            xn: alloc(max_tokens * h)?,
            q: alloc(max_tokens * h)?,
            k: alloc(max_tokens * h)?,
            v: alloc(max_tokens * h)?,
            o: alloc(max_tokens * h)?,
            y: alloc(max_tokens * h)?,
            gu: alloc(2 * max_tokens * i)?,
            act: alloc(max_tokens * i)?,
            last: alloc(max_batch as usize * h)?,
            logits: alloc(max_batch as usize * vocab)?,
            lora_v: s
                .alloc_zeros::<f32>(max_tokens * max_rank)
                .map_err(cuda("allocation (out of memory?)"))?,
        };
        s.synchronize().map_err(cuda("initialisation"))?;
        let g = Gpu {
            ctx,
            s,
            copy,
            k,
            gemm,
            dtype,
            m,
            page: c.page,
            max_tokens,
            max_rank,
            layers,
            final_norm,
            lm_head,
            embed,
            kv_k,
            kv_v,
            cache_slots,
            free_pages: (0..pages as u32).rev().collect(),
            adapters,
            region,
            free_ranges: vec![(0, region)],
            resident: HashMap::new(),
            host: HashMap::new(),
            seqs: HashMap::new(),
            bufs,
            seed: c.seed,
        };
        let describe = format!(
            "real: cuda backend, {} ({}, random weights) on {} (device {}, driver CUDA {}, NVRTC {}); wall clock per \
             iteration, adapter copies timed by CUDA events; idle gaps not slept; KV pool {} slots in pages of {}, \
             adapter region {:.2} GiB",
            m.name,
            dtype.name(),
            info.name,
            c.device,
            info.driver,
            info.nvrtc,
            pool_slots,
            c.page,
            adapter_bytes / GIB
        );
        let mut backend = CudaBackend {
            g,
            batch: Vec::new(),
            describe,
            estimate: Estimator {
                dims: Dims {
                    layers: m.layers as f64,
                    hidden: h as f64,
                    kv_row: h as f64,
                    intermediate: i as f64,
                    vocab: vocab as f64,
                },
                ns_per_flop: 1.0 / 100e3,
                ns_per_byte: 1.0 / 20.0,
                bytes_ratio: 1.0,
                fixed_ns: 0.0,
            },
        };
        backend.warm_up()?;
        Ok(backend)
    }

    /// Times a prefill and a few decode steps (fastest of three) for the policies' estimates.
    fn warm_up(&mut self) -> Result<()> {
        let ids = [u32::MAX - 2, u32::MAX - 1];
        let n = 256u32;
        let mut best = f64::INFINITY;
        for _ in 0..3 {
            let t = Instant::now();
            let pre: Vec<Seq> = ids
                .iter()
                .map(|&r| Seq {
                    request: r,
                    new_tokens: n,
                    context: 0,
                    adapter: NO_ADAPTER,
                    rank: 0,
                })
                .collect();
            self.g.forward(&pre)?;
            for step in 0..4 {
                let dec: Vec<Seq> = ids
                    .iter()
                    .map(|&r| Seq {
                        request: r,
                        new_tokens: 1,
                        context: n + 1 + step,
                        adapter: NO_ADAPTER,
                        rank: 0,
                    })
                    .collect();
                self.g.forward(&dec)?;
            }
            best = best.min(t.elapsed().as_nanos() as f64);
            ids.iter().for_each(|&r| self.g.release(r));
        }
        let k = ids.len() as u64;
        let d = self.estimate.dims;
        let flops = d.flops(&BatchShape {
            prefill_seqs: k,
            prefill_tokens: k * n as u64,
            prefill_sq_tokens: k * (n * n) as u64,
            ..Default::default()
        }) + 4.0
            * d.flops(&BatchShape {
                decode_seqs: k,
                decode_context: k * (n as u64 + 2),
                ..Default::default()
            });
        self.estimate.ns_per_flop = best / flops;
        let a = u32::MAX - 3;
        let g = &mut self.g;
        let bytes = g.m.adapter_bytes(16);
        g.host_adapter(a, 16)?;
        let t = Instant::now();
        g.load(a, 16)?;
        self.estimate.ns_per_byte = t.elapsed().as_nanos() as f64 / bytes as f64;
        g.evict(a);
        g.host.remove(&a);
        g.seqs.clear();
        Ok(())
    }
}

impl Gpu {
    fn alloc_range(&mut self, n: usize) -> Option<usize> {
        let i = self.free_ranges.iter().position(|&(_, len)| len >= n)?;
        let (off, len) = self.free_ranges[i];
        if len == n {
            self.free_ranges.remove(i);
        } else {
            self.free_ranges[i] = (off + n, len - n);
        }
        Some(off)
    }

    fn free_range(&mut self, off: usize, len: usize) {
        let f = &mut self.free_ranges;
        let i = f.partition_point(|&(o, _)| o < off);
        f.insert(i, (off, len));
        let mut j = i.saturating_sub(1);
        while j + 1 < f.len() && j <= i {
            if f[j].0 + f[j].1 == f[j + 1].0 {
                f[j].1 += f[j + 1].1;
                f.remove(j + 1);
            } else {
                j += 1;
            }
        }
    }

    fn release(&mut self, request: u32) {
        if let Some(s) = self.seqs.remove(&request) {
            self.free_pages.extend(s.pages);
        }
    }

    fn evict(&mut self, adapter: u32) {
        if let Some(r) = self.resident.remove(&adapter) {
            self.free_range(r.off, r.len);
        }
    }

    /// Puts an adapter's weights in pinned host memory (before the run: S-LoRA holds every adapter there).
    fn host_adapter(&mut self, adapter: u32, rank: u32) -> Result<()> {
        if self.host.contains_key(&adapter) {
            return Ok(());
        }
        let n = 4 * self.m.layers as usize * 2 * rank as usize * self.m.hidden as usize;
        // SAFETY: page-locked allocation, written right below before any read.
        let mut p = unsafe { self.ctx.alloc_pinned_with_flags::<u16>(n, 0) }
            .map_err(cuda("pinned host memory"))?;
        let vals =
            kernels::reference::pseudo_random(n, ((self.seed as u64) << 32) ^ adapter as u64);
        let dst = p.as_mut_slice().map_err(cuda("pinned host memory"))?;
        for (d, v) in dst.iter_mut().zip(vals) {
            *d = self.dtype.to_bits(0.02 * v);
        }
        self.host.insert(adapter, p);
        Ok(())
    }

    /// Copies an adapter host -> device on the copy stream, 8 x layers copies, and waits for it.
    fn load(&mut self, adapter: u32, rank: u32) -> Result<()> {
        let h = self.m.hidden as usize;
        let r = rank as usize;
        if r == 0 || r > self.max_rank {
            return Err(Error::internal(format!(
                "cuda backend: adapter {adapter}: rank {rank} not in 1..={}",
                self.max_rank
            )));
        }
        if let Some(old) = self.resident.remove(&adapter) {
            self.free_range(old.off, old.len);
        }
        let per = 2 * r * h;
        if !self.host.contains_key(&adapter) {
            return Err(Error::internal(format!(
                "cuda backend: adapter {adapter} is not in host memory (prepare it first)"
            )));
        }
        let off = self.alloc_range(per).ok_or_else(|| {
            Error::internal(format!(
                "cuda backend: adapter region full loading adapter {adapter} of rank {rank} ({} adapters resident; \
                 raise adapter_gib)",
                self.resident.len()
            ))
        })?;
        let ev = || {
            self.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(cuda("event"))
        };
        let (start, end) = (ev()?, ev()?);
        start.record(&self.copy).map_err(cuda("event record"))?;
        let host = self.host[&adapter]
            .as_slice()
            .map_err(cuda("pinned host memory"))?;
        for sub in 0..4 * self.m.layers as usize {
            let base = sub * self.region + off;
            for half in 0..2 {
                let src = &host[sub * per + half * r * h..][..r * h];
                let d0 = base + half * r * h;
                self.copy
                    .memcpy_htod(src, &mut self.adapters.slice_mut(d0..d0 + r * h))
                    .map_err(cuda("adapter copy"))?;
            }
        }
        end.record(&self.copy).map_err(cuda("event record"))?;
        end.synchronize().map_err(cuda("adapter copy"))?;
        self.resident.insert(
            adapter,
            Resident {
                off,
                len: per,
                rank,
                ready: end,
            },
        );
        Ok(())
    }

    /// One batched forward pass over `seqs` (all prefills or all decodes); returns each sequence's next token.
    fn forward(&mut self, seqs: &[Seq]) -> Result<Vec<u32>> {
        let m = self.m;
        let (h, i, vocab) = (m.hidden as usize, m.intermediate as usize, m.vocab as usize);
        let prefill = seqs.iter().all(|s| s.context == 0);
        if !prefill && seqs.iter().any(|s| s.context == 0 || s.new_tokens != 1) {
            return Err(Error::internal(
                "cuda backend: an iteration mixing prefill and decode (the engine never builds one)",
            ));
        }
        // Host side: tokens, positions, cache slots, page tables, per-token adapters.
        let mut tokens: Vec<u32> = Vec::new();
        let (mut pos, mut slots, mut tok_adapter) = (Vec::new(), Vec::new(), Vec::new());
        let mut distinct: Vec<u32> = Vec::new();
        let mut last_rows = Vec::with_capacity(seqs.len());
        for s in seqs {
            let ai = if s.adapter == NO_ADAPTER {
                -1
            } else {
                let r = self.resident.get(&s.adapter).ok_or_else(|| {
                    Error::internal(format!(
                        "cuda backend: request {} uses adapter {}, which is not loaded",
                        s.request, s.adapter
                    ))
                })?;
                self.s
                    .wait(&r.ready)
                    .map_err(cuda("waiting for an adapter copy"))?;
                match distinct.iter().position(|&a| a == s.adapter) {
                    Some(p) => p as i32,
                    None => {
                        distinct.push(s.adapter);
                        distinct.len() as i32 - 1
                    }
                }
            };
            let new: Vec<u32> = if prefill {
                self.release(s.request);
                let mut x = (s.request as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
                (0..s.new_tokens)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x % vocab as u64) as u32
                    })
                    .collect()
            } else {
                let st = self.seqs.get(&s.request).ok_or_else(|| {
                    Error::internal(format!(
                        "cuda backend: request {} decodes before its prefill",
                        s.request
                    ))
                })?;
                vec![st.next]
            };
            let page = self.page;
            let st = self.seqs.entry(s.request).or_insert(SeqState {
                pages: vec![],
                len: 0,
                next: 0,
            });
            for (j, &t) in new.iter().enumerate() {
                let p = st.len + j;
                if p / page >= st.pages.len() {
                    let pg = self.free_pages.pop().ok_or_else(|| {
                        Error::internal("cuda backend: out of KV pages (the pool is full)")
                    })?;
                    st.pages.push(pg);
                }
                slots.push((st.pages[p / page] as usize * page + p % page) as i32);
                pos.push(p as i32);
                tokens.push(t);
                tok_adapter.push(ai);
            }
            last_rows.push(tokens.len() - 1);
        }
        let t = tokens.len();
        if t > self.max_tokens || seqs.len() > self.bufs.logits.len() / vocab {
            return Err(Error::internal(format!(
                "cuda backend: an iteration of {t} tokens / {} sequences exceeds the buffers ({} / {})",
                seqs.len(),
                self.max_tokens,
                self.bufs.logits.len() / vocab
            )));
        }
        let mut x_host = Vec::with_capacity(t * h);
        for &tok in &tokens {
            x_host.extend_from_slice(&self.embed[tok as usize * h..][..h]);
        }
        let s = self.s.clone();
        let b = &mut self.bufs;
        s.memcpy_htod(&x_host, &mut b.x.slice_mut(..t * h))
            .map_err(cuda("embedding upload"))?;
        let pos_d = s.clone_htod(&pos).map_err(cuda("upload positions"))?;
        let slots_d = DeviceSlots::upload(&s, &slots, self.cache_slots).map_err(kerr)?;
        let lora_slots: Vec<AdapterSlot> = distinct
            .iter()
            .map(|a| {
                let r = &self.resident[a];
                AdapterSlot {
                    a_off: r.off as u64,
                    b_off: (r.off + r.rank as usize * h) as u64,
                    rank: r.rank,
                }
            })
            .collect();
        let lora = if distinct.is_empty() {
            None
        } else {
            Some(
                DeviceLora::upload(
                    &s,
                    &lora_slots,
                    &tok_adapter,
                    self.region,
                    h,
                    h,
                    self.max_rank,
                )
                .map_err(kerr)?,
            )
        };
        let sh = AttnShape {
            heads: m.heads as usize,
            kv_heads: m.heads as usize,
            head_dim: h / m.heads as usize,
        };
        let attn_seqs = if prefill {
            let lens: Vec<usize> = seqs.iter().map(|q| q.new_tokens as usize).collect();
            Some(DeviceSeqs::upload(&s, &lens).map_err(kerr)?)
        } else {
            None
        };
        let paging = if prefill {
            None
        } else {
            let max_blocks = seqs
                .iter()
                .map(|q| self.seqs[&q.request].pages.len())
                .max()
                .unwrap_or(1)
                .max(1);
            let mut table = Vec::with_capacity(seqs.len() * max_blocks);
            let mut ctx = Vec::with_capacity(seqs.len());
            for q in seqs {
                let st = &self.seqs[&q.request];
                let mut row: Vec<i32> = st.pages.iter().map(|&p| p as i32).collect();
                row.resize(max_blocks, -1);
                table.extend(row);
                ctx.push((st.len + 1) as i32);
            }
            let pg = Paging {
                block_size: self.page,
                max_blocks,
            };
            Some(DevicePaging::upload(&s, &table, &ctx, pg, self.cache_slots).map_err(kerr)?)
        };
        let scale = 1.0 / (sh.head_dim as f32).sqrt();
        let o = layer_offsets(m);
        let per_layer = self.cache_slots * h;
        let (k, gm) = (&self.k, &self.gemm);
        let th = t * h;
        let region = self.region;
        let layers = m.layers as usize;
        for (l, lw) in self.layers.iter().enumerate() {
            let wv = |idx: usize| lw.slice(o[idx]..o[idx + 1]);
            k.rms_norm(
                &s,
                &b.x.slice(..th),
                &wv(6),
                &mut b.xn.slice_mut(..th),
                t,
                1e-5,
            )
            .map_err(kerr)?;
            for (p, dst) in [(0usize, &mut b.q), (1, &mut b.k), (2, &mut b.v)] {
                gm.run(
                    &s,
                    &b.xn.slice(..th),
                    &wv(p),
                    &mut dst.slice_mut(..th),
                    t,
                    h,
                    h,
                )
                .map_err(kerr)?;
                if let Some(meta) = &lora {
                    let sub = (l * 4 + p) * region;
                    let pool = self.adapters.slice(sub..sub + region);
                    let mut v = b.lora_v.slice_mut(..t * self.max_rank);
                    if prefill {
                        k.lora_shrink_sgmv(&s, &b.xn.slice(..th), &pool, meta, &mut v)
                            .map_err(kerr)?;
                        k.lora_expand_sgmv(
                            &s,
                            &v.as_view(),
                            &pool,
                            meta,
                            &mut dst.slice_mut(..th),
                            1.0,
                        )
                        .map_err(kerr)?;
                    } else {
                        k.lora_shrink_bgmv(&s, &b.xn.slice(..th), &pool, meta, &mut v)
                            .map_err(kerr)?;
                        k.lora_expand_bgmv(
                            &s,
                            &v.as_view(),
                            &pool,
                            meta,
                            &mut dst.slice_mut(..th),
                            1.0,
                        )
                        .map_err(kerr)?;
                    }
                }
            }
            k.rope_neox(
                &s,
                &mut b.q.slice_mut(..th),
                &mut b.k.slice_mut(..th),
                &pos_d.slice(..t),
                sh.heads,
                sh.kv_heads,
                sh.head_dim,
                10000.0,
            )
            .map_err(kerr)?;
            let lay = l * per_layer..(l + 1) * per_layer;
            k.kv_cache_write(
                &s,
                &b.k.slice(..th),
                &b.v.slice(..th),
                &mut self.kv_k.slice_mut(lay.clone()),
                &mut self.kv_v.slice_mut(lay.clone()),
                &slots_d,
                sh.kv_heads,
                sh.head_dim,
                self.cache_slots,
            )
            .map_err(kerr)?;
            match (&attn_seqs, &paging) {
                (Some(sq), _) => k.attn_prefill(
                    &s,
                    &b.q.slice(..th),
                    &b.k.slice(..th),
                    &b.v.slice(..th),
                    &mut b.o.slice_mut(..th),
                    sq,
                    sh,
                    scale,
                ),
                (None, Some(pg)) => k.attn_decode_paged(
                    &s,
                    &b.q.slice(..th),
                    &self.kv_k.slice(lay.clone()),
                    &self.kv_v.slice(lay),
                    pg,
                    &mut b.o.slice_mut(..th),
                    sh,
                    scale,
                ),
                (None, None) => unreachable!("prefill or decode"),
            }
            .map_err(kerr)?;
            gm.run(
                &s,
                &b.o.slice(..th),
                &wv(3),
                &mut b.y.slice_mut(..th),
                t,
                h,
                h,
            )
            .map_err(kerr)?;
            if let Some(meta) = &lora {
                let sub = (l * 4 + 3) * region;
                let pool = self.adapters.slice(sub..sub + region);
                let mut v = b.lora_v.slice_mut(..t * self.max_rank);
                if prefill {
                    k.lora_shrink_sgmv(&s, &b.o.slice(..th), &pool, meta, &mut v)
                        .map_err(kerr)?;
                    k.lora_expand_sgmv(
                        &s,
                        &v.as_view(),
                        &pool,
                        meta,
                        &mut b.y.slice_mut(..th),
                        1.0,
                    )
                    .map_err(kerr)?;
                } else {
                    k.lora_shrink_bgmv(&s, &b.o.slice(..th), &pool, meta, &mut v)
                        .map_err(kerr)?;
                    k.lora_expand_bgmv(
                        &s,
                        &v.as_view(),
                        &pool,
                        meta,
                        &mut b.y.slice_mut(..th),
                        1.0,
                    )
                    .map_err(kerr)?;
                }
            }
            k.add_inplace(&s, &mut b.x.slice_mut(..th), &b.y.slice(..th))
                .map_err(kerr)?;
            k.rms_norm(
                &s,
                &b.x.slice(..th),
                &wv(7),
                &mut b.xn.slice_mut(..th),
                t,
                1e-5,
            )
            .map_err(kerr)?;
            gm.run(
                &s,
                &b.xn.slice(..th),
                &wv(4),
                &mut b.gu.slice_mut(..2 * t * i),
                t,
                2 * i,
                h,
            )
            .map_err(kerr)?;
            k.silu_mul(
                &s,
                &b.gu.slice(..2 * t * i),
                &mut b.act.slice_mut(..t * i),
                t,
                i,
            )
            .map_err(kerr)?;
            gm.run(
                &s,
                &b.act.slice(..t * i),
                &wv(5),
                &mut b.y.slice_mut(..th),
                t,
                h,
                i,
            )
            .map_err(kerr)?;
            k.add_inplace(&s, &mut b.x.slice_mut(..th), &b.y.slice(..th))
                .map_err(kerr)?;
        }
        debug_assert_eq!(self.layers.len(), layers);
        // The LM head on each sequence's last token.
        let rows = seqs.len();
        for (j, &r) in last_rows.iter().enumerate() {
            s.memcpy_dtod(
                &b.x.slice(r * h..(r + 1) * h),
                &mut b.last.slice_mut(j * h..(j + 1) * h),
            )
            .map_err(cuda("gathering last tokens"))?;
        }
        k.rms_norm(
            &s,
            &b.last.slice(..rows * h),
            &self.final_norm.as_view(),
            &mut b.xn.slice_mut(..rows * h),
            rows,
            1e-5,
        )
        .map_err(kerr)?;
        gm.run(
            &s,
            &b.xn.slice(..rows * h),
            &self.lm_head,
            &mut b.logits.slice_mut(..rows * vocab),
            rows,
            vocab,
            h,
        )
        .map_err(kerr)?;
        let logits = s
            .clone_dtoh(&b.logits.slice(..rows * vocab))
            .map_err(cuda("forward pass (launch failure or out of memory)"))?;
        s.synchronize().map_err(cuda("forward pass"))?;
        let mut next = Vec::with_capacity(rows);
        for (q, lg) in seqs.iter().zip(logits.chunks_exact(vocab)) {
            let mut best = (f32::NEG_INFINITY, 0u32);
            for (j, &bits) in lg.iter().enumerate() {
                let v = self.dtype.from_bits(bits);
                if v > best.0 {
                    best = (v, j as u32);
                }
            }
            let st = self
                .seqs
                .get_mut(&q.request)
                .expect("sequence created above");
            st.len += q.new_tokens as usize;
            st.next = best.1;
            next.push(best.1);
        }
        Ok(next)
    }
}

impl Executor for CudaBackend {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn estimates(&self) -> &dyn CostModel {
        &self.estimate
    }

    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
        for a in adapters {
            self.g.host_adapter(a.id, a.rank)?;
        }
        Ok(())
    }

    fn run_iteration(&mut self, seqs: &mut dyn Iterator<Item = Seq>) -> Result<()> {
        let mut batch = std::mem::take(&mut self.batch);
        batch.clear();
        batch.extend(seqs);
        let out = if batch.is_empty() {
            Ok(Vec::new())
        } else {
            self.g.forward(&batch)
        };
        self.batch = batch;
        out.map(|_| ())
    }

    fn load(&mut self, adapter: u32, bytes: u64) -> Result<()> {
        let per_rank = self.g.m.adapter_bytes(1);
        if bytes == 0 || !bytes.is_multiple_of(per_rank) {
            return Err(Error::internal(format!(
                "cuda backend: adapter {adapter}: {bytes} bytes is not a whole rank of {}",
                self.g.m.name
            )));
        }
        self.g.load(adapter, (bytes / per_rank) as u32)
    }

    fn release(&mut self, request: u32) {
        self.g.release(request);
    }

    fn evict(&mut self, adapter: u32) {
        self.g.evict(adapter);
    }
}
