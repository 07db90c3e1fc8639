//! The CUDA backend: the decoder `--model` names at its real size and dtype (random weights: the cost does
//! not depend on their values) on one NVIDIA GPU: the kernels crate's decoder (`kernels::decoder`, the same
//! forward pass the CPU backend runs and `calibrate` times) over its GPU operations (NVRTC-compiled kernels
//! and cuBLAS via cudarc). NOT RUN YET: it was written and compiled on a machine without a GPU (see
//! docs/real-execution.md, "Status").
//!
//! Per iteration, one batched forward pass (see `kernels::decoder`): embedding rows gathered on the host and
//! copied in (the kernels crate has no gather kernel); the layers with LoRA (segmented kernels for long runs
//! of one adapter, gathered ones for decode steps, mixed ranks in one launch) and paged attention; the LM
//! head on each sequence's last token; logits copied back and the greedy argmax taken on the host. The
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

use kernels::decoder::gpu::{GpuOps, random_decoder};
use kernels::dtype::DType;

use super::model_shape;
use super::real::RealBackend;
use sim_core::error::{Error, Result};
use sim_core::model::ModelSpec;
use sim_core::registry::{Param, Params};

/// The parameters of `cuda[...]`.
pub const PARAMS: &[Param] = &[
    Param::new("device", "0", "CUDA device index"),
    Param::new("dtype", "fp16", "fp16 or bf16"),
    Param::new("page", "16", "tokens per KV page"),
    Param::optional(
        "adapter_gib",
        "adapter region, GiB (absent: a quarter of the pool's bytes)",
    ),
    Param::new("seed", "0", "random weights' seed"),
];

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
    pub fn from_params(p: &mut Params) -> Result<CudaConfig> {
        let c =
            CudaConfig {
                device: p.get("device")?,
                dtype: p.get::<String>("dtype")?.to_ascii_lowercase(),
                page: p.get("page")?,
                adapter_gib: match p.given("adapter_gib") {
                    None => None,
                    Some(v) => Some(v.parse().map_err(|_| {
                        Error::msg(format!("--backend cuda: bad adapter_gib '{v}'"))
                    })?),
                },
                seed: p.get("seed")?,
            };
        DType::parse(&c.dtype).map_err(|e| Error::msg(format!("--backend cuda: {e}")))?;
        if c.page == 0 || c.adapter_gib.is_some_and(|g| !(g > 0.0 && g.is_finite())) {
            return Err(Error::msg(
                "--backend cuda: page and adapter_gib must be positive",
            ));
        }
        Ok(c)
    }
}

fn kerr(e: kernels::Error) -> Error {
    Error::internal(format!("cuda backend: {e}"))
}

const GIB: f64 = (1u64 << 30) as f64;
/// Largest adapter rank the LoRA buffer is sized for up front (a larger one grows it).
const MAX_RANK: usize = 128;

/// The CUDA backend as the engine sees it.
pub type CudaBackend = RealBackend<GpuOps>;

impl RealBackend<GpuOps> {
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
        let shape = model_shape(m);
        let (h, i, vocab) = (shape.hidden, shape.intermediate, shape.vocab);
        let layers = shape.layers;
        let max_tokens = (max_tokens as usize).max(max_batch as usize).max(1);
        let pages = (pool_slots as usize).div_ceil(c.page) + max_batch as usize;
        let kv_elems = layers * pages * c.page * shape.kv_row();
        let adapter_bytes = c
            .adapter_gib
            .map_or(pool_slots as f64 * m.kv_slot_bytes() as f64 / 4.0, |g| {
                g * GIB
            });
        let region = ((adapter_bytes / 2.0) as usize / (4 * layers)).max(2 * h);
        // The decoder's activation buffers (kernels::decoder::Work) for the largest iteration.
        let act = 7 * max_tokens * h + 3 * max_tokens * i + max_batch as usize * (h + vocab);
        let need = 2.0
            * (layers * shape.layer_len()
                + h
                + h * vocab
                + 2 * kv_elems
                + 4 * layers * region
                + act) as f64
            + (max_tokens * MAX_RANK * 4) as f64;
        let (free, _) = ctx
            .mem_get_info()
            .map_err(|e| Error::internal(format!("cuda backend: memory info: {e}")))?;
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
        let mut ops = GpuOps::new(ctx, dtype).map_err(kerr)?;
        ops.reserve_lora(max_tokens * MAX_RANK).map_err(kerr)?;
        let mut model =
            random_decoder(ops, shape, c.seed, c.page, pages, region, true).map_err(kerr)?;
        model
            .reserve(max_tokens, max_batch as usize)
            .map_err(kerr)?;
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
        let mut b = RealBackend::from_decoder(
            model,
            "cuda backend",
            c.seed as u64,
            " (raise adapter_gib)",
            m,
            describe,
            2,
        );
        b.warm_up(256, 16)?;
        Ok(b)
    }
}
