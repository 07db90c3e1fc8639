//! The GPU measurement: a Llama-shaped model with random weights at full size (the cost does not depend on the
//! weight values), run through cuBLAS GEMMs and the NVRTC-compiled kernels of the `kernels` crate, timed with
//! CUDA events (warm-up runs, then the median of repeats).
//!
//! - prefill / decode: one full forward iteration (all layers, final norm, LM head on one row per sequence),
//!   without LoRA, the KV cache paged per token as S-LoRA does (block size 1);
//! - lora: shrink + expand for q, k, v, o of every layer, segmented kernels when each adapter has at least
//!   `SEGMENTED_MIN_TOKENS` tokens (prefill-like batches, S-LoRA's MBGMM), gathered ones otherwise (MBGMV);
//! - adapter loads: host->device copies on a second stream, per layer (8 copies per layer, as S-LoRA) or as
//!   one contiguous copy, from pinned or pageable memory, alone or while GEMMs run on the compute stream.
//!
//! This module has never run on a GPU yet (it was written on a machine without one); its CPU-testable parts
//! (memory budget, medians, layer layout) are tested below.

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaSlice, CudaStream, sys::CUevent_flags};
use indicatif::{ProgressBar, ProgressStyle};
use kernels::dtype::DType;
use kernels::gpu::{DeviceInfo, DeviceLora, DevicePaging, DeviceSeqs, DeviceSlots, Gemm, Kernels};
use kernels::reference::{AdapterSlot, AttnShape, Paging};
use sim::cost::LoadMethod;
use sim::cost::profile::{
    CostProfile, DecodePoint, GpuInfo, LoadPoint, LoraPoint, ModelInfo, PrefillPoint, Provenance,
    SCHEMA, VERSION,
};
use sim::model::ModelSpec;

use crate::plan::{MAX_TOKENS, Plan, split_tokens};
use crate::{Error, Result, gpu_err, sysinfo};

/// Tokens per adapter from which the segmented (matrix-matrix) LoRA kernels are used.
pub const SEGMENTED_MIN_TOKENS: u64 = 8;
/// Memory left unallocated for cuBLAS workspaces, the CUDA context and fragmentation.
pub const MARGIN_BYTES: u64 = 2 << 30;
const GIB: f64 = (1u64 << 30) as f64;

#[derive(Clone, Debug)]
pub struct Options {
    pub model: &'static ModelSpec,
    pub dtype: DType,
    pub device: usize,
    /// Use at most this much GPU memory (bytes); None: all that is free.
    pub mem_limit: Option<u64>,
    pub quick: bool,
    pub check: bool,
}

/// Element offsets of one decoder layer's weights in its buffer: wq, wk, wv, wo `[h, h]`, w_gate_up `[h, 2I]`,
/// w_down `[I, h]`, the two RMSNorm weights `[h]`; the last entry is the layer's size.
pub fn layer_offsets(m: &ModelSpec) -> [usize; 9] {
    let (h, i) = (m.hidden as usize, m.intermediate as usize);
    let mut o = [0; 9];
    let sizes = [h * h, h * h, h * h, h * h, 2 * h * i, i * h, h, h];
    for (k, s) in sizes.iter().enumerate() {
        o[k + 1] = o[k] + s;
    }
    o
}

/// Bytes of the activation buffers for up to `tokens` tokens and `seqs` LM-head rows.
pub fn activation_bytes(m: &ModelSpec, tokens: u64, seqs: u64, max_rank: u64) -> u64 {
    let (h, i) = (m.hidden, m.intermediate);
    let elems = 6 * tokens * h + 3 * tokens * i + seqs * m.vocab;
    elems * m.dtype_bytes + tokens * max_rank * 4 + tokens * 8
}

/// The LoRA pool for one point: every layer's q, k, v, o adapters (A and B) of ranks summing to `rank_sum`.
pub fn lora_pool_elems(m: &ModelSpec, rank_sum: u64) -> u64 {
    m.layers * 4 * 2 * m.hidden * rank_sum
}

/// How memory is split: weights and activations first, then the KV cache gets what is left.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub usable: u64,
    pub weights: u64,
    pub activations: u64,
    pub kv_tokens: u64,
}

pub fn budget(
    m: &ModelSpec,
    free: u64,
    limit: Option<u64>,
    plan_rank_sum: u64,
    plan_seqs: u64,
) -> Result<Budget> {
    let usable = limit
        .map_or(free, |l| l.min(free))
        .saturating_sub(MARGIN_BYTES);
    let weights = m.weight_bytes();
    let activations = activation_bytes(m, MAX_TOKENS, plan_seqs, 128);
    let pool = lora_pool_elems(m, plan_rank_sum) * m.dtype_bytes;
    let fixed = weights + activations;
    if fixed + pool.max(m.kv_slot_bytes() * MAX_TOKENS) > usable {
        return Err(Error::msg(format!(
            "--model {}: weights ({:.1} GiB) + activations ({:.1} GiB) + working space ({:.1} GiB) exceed the \
             {:.1} GiB usable (free memory or --mem-limit-gib, less {:.0} GiB margin)",
            m.name,
            weights as f64 / GIB,
            activations as f64 / GIB,
            pool.max(m.kv_slot_bytes() * MAX_TOKENS) as f64 / GIB,
            usable as f64 / GIB,
            MARGIN_BYTES as f64 / GIB
        )));
    }
    Ok(Budget {
        usable,
        weights,
        activations,
        kv_tokens: (usable - fixed) / m.kv_slot_bytes(),
    })
}

/// Median of the samples (mean of the middle two for an even count); None when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::internal(format!("{what}: {e}"))
}

struct Gpu {
    ctx: Arc<CudaContext>,
    s: Arc<CudaStream>,
    k: Kernels,
    gemm: Gemm,
}

impl Gpu {
    fn alloc(&self, n: usize, what: &str) -> Result<CudaSlice<u16>> {
        // SAFETY: every buffer is filled before it is read (fill_uniform or a kernel's output).
        unsafe { self.s.alloc::<u16>(n.max(1)) }.map_err(|e| {
            Error::internal(format!(
                "allocating {what} ({:.2} GiB): {e}",
                (2 * n) as f64 / GIB
            ))
        })
    }

    fn random(&self, n: usize, seed: u32, what: &str) -> Result<CudaSlice<u16>> {
        let mut b = self.alloc(n, what)?;
        // 0.02: the usual initialisation scale, keeps activations finite through all layers.
        self.k
            .fill_uniform(&self.s, &mut b.as_view_mut(), seed, 0.02)
            .map_err(gpu_err)?;
        Ok(b)
    }

    /// The residual stream grows by O(1) per layer and iteration; starting each point afresh keeps it far
    /// from fp16 overflow however many repeats run.
    fn reset_residual(&self, b: &mut Bufs) -> Result<()> {
        self.k
            .fill_uniform(&self.s, &mut b.x.as_view_mut(), 7, 1.0)
            .map_err(gpu_err)
    }

    fn i32s(&self, v: &[i32]) -> Result<CudaSlice<i32>> {
        self.s.clone_htod(v).map_err(drv("upload"))
    }

    /// Median duration in ns of `f` on the compute stream: `warmup` untimed runs, then `repeats` timed ones.
    fn time(&self, warmup: u32, repeats: u32, mut f: impl FnMut() -> Result<()>) -> Result<u64> {
        for _ in 0..warmup {
            f()?;
        }
        let ev = || {
            self.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(drv("event"))
        };
        let (start, end) = (ev()?, ev()?);
        let mut ms = Vec::with_capacity(repeats as usize);
        for _ in 0..repeats.max(1) {
            start.record(&self.s).map_err(drv("event record"))?;
            f()?;
            end.record(&self.s).map_err(drv("event record"))?;
            end.synchronize().map_err(drv("kernel execution"))?;
            ms.push(start.elapsed_ms(&end).map_err(drv("event time"))? as f64);
        }
        Ok((median(&mut ms).unwrap_or(0.0) * 1e6).round().max(1.0) as u64)
    }
}

struct Weights {
    layers: Vec<CudaSlice<u16>>,
    final_norm: CudaSlice<u16>,
    lm_head: CudaSlice<u16>,
}

struct Bufs {
    x: CudaSlice<u16>,
    xn: CudaSlice<u16>,
    q: CudaSlice<u16>,
    k: CudaSlice<u16>,
    v: CudaSlice<u16>,
    o: CudaSlice<u16>,
    gu: CudaSlice<u16>,
    act: CudaSlice<u16>,
    logits: CudaSlice<u16>,
}

struct Kv {
    k: CudaSlice<u16>,
    v: CudaSlice<u16>,
    slots: usize,
}

enum Attn<'a> {
    Prefill(&'a DeviceSeqs),
    Decode(&'a DevicePaging),
}

/// One forward iteration over `t` tokens, `rows` of which go through the LM head.
#[allow(clippy::too_many_arguments)]
fn forward(
    g: &Gpu,
    m: &ModelSpec,
    w: &Weights,
    b: &mut Bufs,
    kv: &mut Kv,
    t: usize,
    rows: usize,
    pos: &CudaSlice<i32>,
    slots: &DeviceSlots,
    attn: &Attn,
) -> Result<()> {
    let (h, i) = (m.hidden as usize, m.intermediate as usize);
    let sh = AttnShape {
        heads: m.heads as usize,
        kv_heads: m.heads as usize,
        head_dim: h / m.heads as usize,
    };
    let scale = 1.0 / (sh.head_dim as f32).sqrt();
    let o = layer_offsets(m);
    let per_layer = kv.slots * h;
    let (k, s, gm) = (&g.k, &g.s, &g.gemm);
    let th = t * h;
    for (l, lw) in w.layers.iter().enumerate() {
        let wv = |idx: usize| lw.slice(o[idx]..o[idx + 1]);
        k.rms_norm(
            s,
            &b.x.slice(..th),
            &wv(6),
            &mut b.xn.slice_mut(..th),
            t,
            1e-5,
        )
        .map_err(gpu_err)?;
        for (idx, dst) in [(0, &mut b.q), (1, &mut b.k), (2, &mut b.v)] {
            gm.run(
                s,
                &b.xn.slice(..th),
                &wv(idx),
                &mut dst.slice_mut(..th),
                t,
                h,
                h,
            )
            .map_err(gpu_err)?;
        }
        k.rope_neox(
            s,
            &mut b.q.slice_mut(..th),
            &mut b.k.slice_mut(..th),
            &pos.slice(..t),
            sh.heads,
            sh.kv_heads,
            sh.head_dim,
            10000.0,
        )
        .map_err(gpu_err)?;
        let layer = l * per_layer..(l + 1) * per_layer;
        k.kv_cache_write(
            s,
            &b.k.slice(..th),
            &b.v.slice(..th),
            &mut kv.k.slice_mut(layer.clone()),
            &mut kv.v.slice_mut(layer.clone()),
            slots,
            sh.kv_heads,
            sh.head_dim,
            kv.slots,
        )
        .map_err(gpu_err)?;
        match attn {
            Attn::Prefill(seqs) => k.attn_prefill(
                s,
                &b.q.slice(..th),
                &b.k.slice(..th),
                &b.v.slice(..th),
                &mut b.o.slice_mut(..th),
                seqs,
                sh,
                scale,
            ),
            Attn::Decode(paging) => k.attn_decode_paged(
                s,
                &b.q.slice(..th),
                &kv.k.slice(layer.clone()),
                &kv.v.slice(layer),
                paging,
                &mut b.o.slice_mut(..th),
                sh,
                scale,
            ),
        }
        .map_err(gpu_err)?;
        gm.run(
            s,
            &b.o.slice(..th),
            &wv(3),
            &mut b.xn.slice_mut(..th),
            t,
            h,
            h,
        )
        .map_err(gpu_err)?;
        k.add_inplace(s, &mut b.x.slice_mut(..th), &b.xn.slice(..th))
            .map_err(gpu_err)?;
        k.rms_norm(
            s,
            &b.x.slice(..th),
            &wv(7),
            &mut b.xn.slice_mut(..th),
            t,
            1e-5,
        )
        .map_err(gpu_err)?;
        gm.run(
            s,
            &b.xn.slice(..th),
            &wv(4),
            &mut b.gu.slice_mut(..2 * t * i),
            t,
            2 * i,
            h,
        )
        .map_err(gpu_err)?;
        k.silu_mul(
            s,
            &b.gu.slice(..2 * t * i),
            &mut b.act.slice_mut(..t * i),
            t,
            i,
        )
        .map_err(gpu_err)?;
        gm.run(
            s,
            &b.act.slice(..t * i),
            &wv(5),
            &mut b.xn.slice_mut(..th),
            t,
            h,
            i,
        )
        .map_err(gpu_err)?;
        k.add_inplace(s, &mut b.x.slice_mut(..th), &b.xn.slice(..th))
            .map_err(gpu_err)?;
    }
    // The LM head runs on one row per sequence; which rows does not change the cost.
    let rh = rows * h;
    k.rms_norm(
        s,
        &b.x.slice(..rh),
        &w.final_norm.as_view(),
        &mut b.xn.slice_mut(..rh),
        rows,
        1e-5,
    )
    .map_err(gpu_err)?;
    let vocab = m.vocab as usize;
    gm.run(
        s,
        &b.xn.slice(..rh),
        &w.lm_head,
        &mut b.logits.slice_mut(..rows * vocab),
        rows,
        vocab,
        h,
    )
    .map_err(gpu_err)
}

/// Everything the profile's provenance needs besides the tables.
pub struct Measured {
    pub profile: CostProfile,
    pub device: DeviceInfo,
    pub budget: Budget,
}

pub fn run(opts: &Options) -> Result<Measured> {
    let (ctx, device) = kernels::gpu::open_device(opts.device).map_err(gpu_err)?;
    kernels::gpu::require_libraries(true, true).map_err(gpu_err)?;
    let m = opts.model;
    // cudarc's automatic cross-stream tracking records events on every launch argument; this code orders its
    // two streams explicitly, and the extra host work would inflate launch-bound (small decode) iterations.
    // SAFETY: buffers are only shared between streams in `measure_loads`, which synchronizes both streams.
    unsafe { ctx.disable_event_tracking() };
    let s = ctx.new_stream().map_err(drv("creating a stream"))?;
    let k = Kernels::new(ctx.clone(), opts.dtype).map_err(gpu_err)?;
    k.compile_all().map_err(gpu_err)?;
    if opts.check {
        let results = kernels::check::run(&k, &s).map_err(gpu_err)?;
        let bad: Vec<String> = results
            .iter()
            .filter(|r| !r.ok())
            .map(|r| {
                format!(
                    "{} (error {:.2e} > {:.2e})",
                    r.kernel, r.max_err, r.tolerance
                )
            })
            .collect();
        if !bad.is_empty() {
            return Err(Error::internal(format!(
                "GPU kernels disagree with the CPU reference: {}",
                bad.join(", ")
            )));
        }
    }
    let gemm = Gemm::new(s.clone(), opts.dtype).map_err(gpu_err)?;
    let g = Gpu {
        ctx: ctx.clone(),
        s,
        k,
        gemm,
    };

    let (free, _) = ctx.mem_get_info().map_err(drv("memory info"))?;
    let probe = Plan::new(opts.quick, u64::MAX);
    let bud = budget(
        m,
        free as u64,
        opts.mem_limit,
        probe.max_rank_sum(),
        probe.max_seqs(),
    )?;
    let plan = Plan::new(opts.quick, bud.kv_tokens);
    plan.usable()
        .map_err(|e| Error::msg(format!("--mem-limit-gib: {e}")))?;

    let bar = ProgressBar::new(plan.points());
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("allocating weights");

    let o = layer_offsets(m);
    let mut layers = Vec::with_capacity(m.layers as usize);
    for l in 0..m.layers as u32 {
        layers.push(g.random(o[8], 1000 + l, "layer weights")?);
    }
    let (h, i, v) = (m.hidden as usize, m.intermediate as usize, m.vocab as usize);
    let w = Weights {
        layers,
        final_norm: g.random(h, 1, "final norm")?,
        lm_head: g.random(h * v, 2, "LM head")?,
    };
    let t_max = MAX_TOKENS as usize;
    let mut b = Bufs {
        x: g.random(t_max * h, 3, "activations")?,
        xn: g.alloc(t_max * h, "activations")?,
        q: g.alloc(t_max * h, "activations")?,
        k: g.alloc(t_max * h, "activations")?,
        v: g.alloc(t_max * h, "activations")?,
        o: g.alloc(t_max * h, "activations")?,
        gu: g.alloc(2 * t_max * i, "activations")?,
        act: g.alloc(t_max * i, "activations")?,
        logits: g.alloc(plan.max_seqs() as usize * v, "logits")?,
    };

    let kv_slots = plan
        .prefill
        .iter()
        .map(|p| p.0)
        .chain(plan.decode.iter().map(|d| d.0 * d.1))
        .max()
        .unwrap_or(1) as usize;
    let mut kv = Kv {
        k: g.random(m.layers as usize * kv_slots * h, 4, "KV cache")?,
        v: g.random(m.layers as usize * kv_slots * h, 5, "KV cache")?,
        slots: kv_slots,
    };

    let mut prefill = Vec::new();
    for &(t, seqs) in &plan.prefill {
        bar.set_message(format!("prefill {t} tokens in {seqs} sequences"));
        let len = (t / seqs) as usize;
        let lens = vec![len; seqs as usize];
        let d_seqs = DeviceSeqs::upload(&g.s, &lens).map_err(gpu_err)?;
        let slot_ids: Vec<i32> = (0..t as i32).collect();
        let slots = DeviceSlots::upload(&g.s, &slot_ids, kv.slots).map_err(gpu_err)?;
        let pos_h: Vec<i32> = (0..t as usize).map(|j| (j % len) as i32).collect();
        let pos = g.i32s(&pos_h)?;
        let attn = Attn::Prefill(&d_seqs);
        g.reset_residual(&mut b)?;
        let ns = g.time(plan.warmup, plan.repeats, || {
            forward(
                &g,
                m,
                &w,
                &mut b,
                &mut kv,
                t as usize,
                seqs as usize,
                &pos,
                &slots,
                &attn,
            )
        })?;
        prefill.push(PrefillPoint {
            tokens: t,
            seqs,
            time_ns: ns,
        });
        bar.inc(1);
    }

    let mut decode = Vec::new();
    for &(batch, context) in &plan.decode {
        bar.set_message(format!("decode batch {batch}, context {context}"));
        let (bs, c) = (batch as usize, context as usize);
        // Sequence j owns slots j*c .. (j+1)*c; the new token is its last position.
        let table: Vec<i32> = (0..(bs * c) as i32).collect();
        let lens = vec![context as i32; bs];
        let paging = DevicePaging::upload(
            &g.s,
            &table,
            &lens,
            Paging {
                block_size: 1,
                max_blocks: c,
            },
            kv.slots,
        )
        .map_err(gpu_err)?;
        let new_slots: Vec<i32> = (0..bs).map(|j| (j * c + c - 1) as i32).collect();
        let slots = DeviceSlots::upload(&g.s, &new_slots, kv.slots).map_err(gpu_err)?;
        let pos = g.i32s(&vec![context as i32 - 1; bs])?;
        let attn = Attn::Decode(&paging);
        g.reset_residual(&mut b)?;
        let ns = g.time(plan.warmup, plan.repeats, || {
            forward(&g, m, &w, &mut b, &mut kv, bs, bs, &pos, &slots, &attn)
        })?;
        decode.push(DecodePoint {
            batch,
            context,
            time_ns: ns,
        });
        bar.inc(1);
    }
    drop(kv);

    let lora = measure_lora(&g, m, &plan, &mut b, &bar)?;
    let adapter_load = measure_loads(&g, m, &plan, &w, &mut b, &bar)?;
    bar.finish_and_clear();

    let cc = device.compute_capability;
    let driver = match sysinfo::nvidia_driver_version() {
        Some(v) => format!("{v} (CUDA {} driver API)", device.driver),
        None => format!("CUDA {} driver API", device.driver),
    };
    let mut notes = format!(
        "{} {} with random weights; KV cache paged per token (block size 1); GPU memory usable {:.1} GiB \
         (weights {:.1} GiB, KV capacity {} tokens); prefill attention is a simple warp-per-query kernel, not \
         FlashAttention, so long-sequence prefill is pessimistic; iteration_overhead_ns = 0 (host serving-loop \
         cost not measured)",
        m.name,
        opts.dtype.name(),
        bud.usable as f64 / GIB,
        bud.weights as f64 / GIB,
        bud.kv_tokens
    );
    if !plan.skipped.is_empty() {
        notes.push_str(&format!(
            "; skipped (KV cache too small): {}",
            plan.skipped.join(", ")
        ));
    }
    let profile = CostProfile {
        schema: SCHEMA.into(),
        version: VERSION,
        gpu: GpuInfo {
            name: device.name.clone(),
            memory_bytes: device.memory_bytes,
            driver: Some(driver),
            cuda: Some(format!("NVRTC {}", device.nvrtc)),
            compute_capability: Some(format!("{}.{}", cc.0, cc.1)),
        },
        model: ModelInfo {
            name: m.name.into(),
            layers: m.layers,
            hidden: m.hidden,
            intermediate: m.intermediate,
            heads: m.heads,
            vocab: m.vocab,
            dtype: opts.dtype.name().into(),
        },
        provenance: Provenance {
            date: sysinfo::today_utc(),
            tool: format!(
                "calibrate {}{}",
                env!("CARGO_PKG_VERSION"),
                if opts.quick { " --quick" } else { "" }
            ),
            method: format!(
                "CUDA events on the compute stream (copy stream for adapter loads); {} warm-up + median of {} \
                 repeats per point; cuBLAS GemmEx (fp32 accumulate) + NVRTC kernels; LoRA segmented when >= {} \
                 tokens per adapter, gathered otherwise",
                plan.warmup, plan.repeats, SEGMENTED_MIN_TOKENS
            ),
            notes: Some(notes),
            transferred_from: None,
        },
        iteration_overhead_ns: 0,
        prefill,
        decode,
        lora,
        adapter_load,
    };
    profile.validate()?;
    Ok(Measured {
        profile,
        device,
        budget: bud,
    })
}

fn measure_lora(
    g: &Gpu,
    m: &ModelSpec,
    plan: &Plan,
    b: &mut Bufs,
    bar: &ProgressBar,
) -> Result<Vec<LoraPoint>> {
    let h = m.hidden as usize;
    let pool_len = lora_pool_elems(m, plan.max_rank_sum()) as usize;
    let pool = g.random(pool_len, 6, "LoRA pool")?;
    let max_rank = 128usize.max(
        plan.lora
            .iter()
            .flat_map(|p| p.1.iter())
            .copied()
            .max()
            .unwrap_or(1) as usize,
    );
    let mut v: CudaSlice<f32> =
        g.s.alloc_zeros(MAX_TOKENS as usize * max_rank)
            .map_err(drv("LoRA buffer"))?;
    let mut out = Vec::new();
    for (t, ranks) in &plan.lora {
        bar.set_message(format!("LoRA {t} tokens, ranks {ranks:?}"));
        let rank_sum: u64 = ranks.iter().map(|&r| r as u64).sum();
        let tok = split_tokens(*t, ranks.len());
        let mut metas = Vec::with_capacity(4 * m.layers as usize);
        for proj in 0..4 * m.layers {
            let mut off = proj * 2 * m.hidden * rank_sum;
            let slots: Vec<AdapterSlot> = ranks
                .iter()
                .map(|&r| {
                    let a_off = off;
                    off += 2 * m.hidden * r as u64;
                    AdapterSlot {
                        a_off,
                        b_off: a_off + m.hidden * r as u64,
                        rank: r,
                    }
                })
                .collect();
            metas.push(
                DeviceLora::upload(&g.s, &slots, &tok, pool_len, h, h, max_rank)
                    .map_err(gpu_err)?,
            );
        }
        let segmented = *t / ranks.len() as u64 >= SEGMENTED_MIN_TOKENS;
        let th = *t as usize * h;
        let ns = g.time(plan.warmup, plan.repeats, || {
            for meta in &metas {
                let (x, p) = (b.xn.slice(..th), pool.as_view());
                let mut vv = v.slice_mut(..*t as usize * max_rank);
                if segmented {
                    g.k.lora_shrink_sgmv(&g.s, &x, &p, meta, &mut vv)
                        .map_err(gpu_err)?;
                    g.k.lora_expand_sgmv(
                        &g.s,
                        &vv.as_view(),
                        &p,
                        meta,
                        &mut b.q.slice_mut(..th),
                        1.0,
                    )
                    .map_err(gpu_err)?;
                } else {
                    g.k.lora_shrink_bgmv(&g.s, &x, &p, meta, &mut vv)
                        .map_err(gpu_err)?;
                    g.k.lora_expand_bgmv(
                        &g.s,
                        &vv.as_view(),
                        &p,
                        meta,
                        &mut b.q.slice_mut(..th),
                        1.0,
                    )
                    .map_err(gpu_err)?;
                }
            }
            Ok(())
        })?;
        out.push(LoraPoint {
            tokens: *t,
            ranks: ranks.clone(),
            time_ns: ns,
        });
        bar.inc(1);
    }
    Ok(out)
}

fn measure_loads(
    g: &Gpu,
    m: &ModelSpec,
    plan: &Plan,
    w: &Weights,
    b: &mut Bufs,
    bar: &ProgressBar,
) -> Result<Vec<LoadPoint>> {
    let n_max = (m.adapter_bytes(plan.max_load_rank()) / m.dtype_bytes) as usize;
    // SAFETY: plain page-locked allocation (no write-combining: S-LoRA's host copies are ordinary pinned
    // tensors); initialised right below before any read.
    let mut pinned = unsafe { g.ctx.alloc_pinned_with_flags::<u16>(n_max.max(1), 0) }
        .map_err(drv("pinned host memory"))?;
    let pp = pinned.as_mut_ptr().map_err(drv("pinned host memory"))?;
    // SAFETY: pp points to n_max u16 the driver just allocated for us.
    unsafe { std::ptr::write_bytes(pp, 0x3c, n_max.max(1)) };
    // Non-zero so the pages are really backed (an untouched zero allocation copies from one shared page).
    let pageable: Vec<u16> = (0..n_max).map(|j| j as u16).collect();
    let mut dst = g.alloc(n_max, "adapter load destination")?;
    let copy = g.ctx.new_stream().map_err(drv("copy stream"))?;
    let ev = || {
        g.ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(drv("event"))
    };
    let (start, end) = (ev()?, ev()?);

    // The concurrent compute: the MLP up-projection of 4096 tokens, repeated to outlast the copy.
    let (h, i) = (m.hidden as usize, m.intermediate as usize);
    let o = layer_offsets(m);
    let w_gu = w.layers[0].slice(o[4]..o[5]);
    let gemm_tokens = 4096usize;
    let mut gemm_once = || {
        g.gemm.run(
            &g.s,
            &b.xn.slice(..gemm_tokens * h),
            &w_gu,
            &mut b.gu.slice_mut(..2 * gemm_tokens * i),
            gemm_tokens,
            2 * i,
            h,
        )
    };
    let gemm_ns = g.time(1, 3, || gemm_once().map_err(gpu_err))?;

    let mut out = Vec::new();
    for &(rank, method, with_compute) in &plan.loads {
        bar.set_message(format!(
            "load rank {rank} {} {}",
            method.name(),
            if with_compute {
                "with compute"
            } else {
                "alone"
            }
        ));
        let bytes = m.adapter_bytes(rank);
        let n = (bytes / m.dtype_bytes) as usize;
        let host: &[u16] = match method {
            LoadMethod::PerLayerPinned | LoadMethod::ContiguousPinned => {
                &pinned.as_slice().map_err(drv("pinned host memory"))?[..n]
            }
            _ => &pageable[..n],
        };
        let per_layer = matches!(
            method,
            LoadMethod::PerLayerPinned | LoadMethod::PerLayerPageable
        );
        // S-LoRA copies A and B of q, k, v, o separately for every layer: 8 x layers copies of hidden x rank.
        let chunk = if per_layer {
            n / (8 * m.layers as usize)
        } else {
            n
        };
        // Enough GEMMs to cover twice a pessimistic estimate of the copy (8 GB/s, 20 us per copy).
        let est_ns = bytes as f64 / 8.0 + (n / chunk) as f64 * 20e3;
        let gemms = if with_compute {
            (2.0 * est_ns / gemm_ns as f64).ceil() as usize + 1
        } else {
            0
        };
        let mut ms = Vec::new();
        for rep in 0..plan.warmup + plan.repeats {
            for _ in 0..gemms {
                gemm_once().map_err(gpu_err)?;
            }
            start.record(&copy).map_err(drv("event record"))?;
            for c in (0..n).step_by(chunk) {
                let e = (c + chunk).min(n);
                copy.memcpy_htod(&host[c..e], &mut dst.slice_mut(c..e))
                    .map_err(drv("host-to-device copy"))?;
            }
            end.record(&copy).map_err(drv("event record"))?;
            end.synchronize().map_err(drv("host-to-device copy"))?;
            g.s.synchronize().map_err(drv("compute stream"))?;
            if rep >= plan.warmup {
                ms.push(start.elapsed_ms(&end).map_err(drv("event time"))? as f64);
            }
        }
        let ns = (median(&mut ms).unwrap_or(0.0) * 1e6).round().max(1.0) as u64;
        out.push(LoadPoint {
            bytes,
            method: method.name().into(),
            with_compute,
            time_ns: ns,
        });
        bar.inc(1);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_layout_matches_the_model_parameter_count() {
        for m in sim::model::MODELS {
            assert_eq!(layer_offsets(m)[8] as u64, m.layer_params(), "{}", m.name);
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn memory_budget_on_known_gpus() {
        let m7 = ModelSpec::by_name("llama-7b").unwrap();
        let gib = 1u64 << 30;
        let b = budget(m7, 79 * gib, None, 248, 256).unwrap();
        assert_eq!(b.weights, m7.weight_bytes());
        // 77 GiB usable - 12.6 GiB weights - 0.9 GiB activations: about 63.5 GiB of KV at 512 KiB per token.
        assert_eq!(b.usable, 77 * gib);
        assert_eq!(
            b.kv_tokens,
            (b.usable - b.weights - b.activations) / (512 * 1024)
        );
        assert!(b.kv_tokens > 125_000 && b.kv_tokens < 135_000, "{b:?}");
        let limited = budget(m7, 79 * gib, Some(24 * gib), 248, 256).unwrap();
        assert!(limited.kv_tokens < b.kv_tokens);
        let m30 = ModelSpec::by_name("llama-30b").unwrap();
        let e = budget(m30, 47 * gib, None, 248, 256).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.to_string().contains("--model llama-30b"), "{e}");
    }
}
