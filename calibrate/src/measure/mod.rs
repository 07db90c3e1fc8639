//! The GPU measurement: the kernels crate's decoder (the forward pass `sim real --backend cuda` runs) for a
//! Llama model at full size with random weights (the cost does not depend on the weight values), measured
//! by the calibration loop `sim fidelity` uses too (`sim_core::calibrate`: the plan's points in rounds,
//! each point the median of its repeats), timed with CUDA events.
//!
//! - [`target`]: the GPU as the loop's target (prefill, decode, LoRA points);
//! - [`loads`]: adapter-load points (per layer or contiguous, pinned or pageable, alone or with compute);
//! - [`budget`]: how memory is split, which cuts the plan to what fits.
//!
//! This module has never run on a GPU yet (it was written on a machine without one); its CPU-testable parts
//! (memory budget, layer layout, the plan and the loop) are tested without one.

pub mod budget;
pub mod loads;
pub mod target;

use indicatif::{ProgressBar, ProgressStyle};
use kernels::decoder::SEGMENTED_MIN_TOKENS;
use kernels::decoder::gpu::GpuOps;
use kernels::dtype::DType;
use kernels::gpu::DeviceInfo;
use sim_core::calibrate::{Plan, measure};
use sim_core::cost::profile::{CostProfile, GpuInfo, ModelInfo, Provenance, SCHEMA, VERSION};
use sim_core::model::ModelSpec;

pub use budget::{Budget, MARGIN_BYTES, activation_bytes, budget, lora_pool_elems};
pub use sim_core::calibrate::MAX_TOKENS;

use crate::{Error, Result, gpu_err, sysinfo};
use target::{GpuTarget, drv, kv_slots};

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

/// Everything the profile's provenance needs besides the tables.
pub struct Measured {
    pub profile: CostProfile,
    pub device: DeviceInfo,
    pub budget: Budget,
}

/// Runs every kernel once against the CPU reference: a fast wrong kernel would make a meaningless profile.
fn check_kernels(ops: &GpuOps) -> Result<()> {
    let results = kernels::check::run(&ops.kernels, &ops.stream).map_err(gpu_err)?;
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
    Ok(())
}

pub fn run(opts: &Options) -> Result<Measured> {
    let (ctx, device) = kernels::gpu::open_device(opts.device).map_err(gpu_err)?;
    kernels::gpu::require_libraries(true, true).map_err(gpu_err)?;
    let m = opts.model;
    // cudarc's automatic cross-stream tracking records events on every launch argument; this code orders its
    // two streams explicitly, and the extra host work would inflate launch-bound (small decode) iterations.
    // SAFETY: buffers are only shared between streams by adapter copies (the decoder's, which wait for the
    // copy and make the compute stream wait on it, and the load bench's, which synchronises both streams).
    unsafe { ctx.disable_event_tracking() };
    let ops = GpuOps::new(ctx.clone(), opts.dtype).map_err(gpu_err)?;
    if opts.check {
        check_kernels(&ops)?;
    }

    let (free, _) = ctx.mem_get_info().map_err(drv("memory info"))?;
    let probe = Plan::new(opts.quick, u64::MAX);
    let bud = budget(
        m,
        free as u64,
        opts.mem_limit,
        probe.lora_rank_total(),
        probe.max_seqs(),
    )?;
    // The LoRA adapters and the load buffer sit next to the KV cache: the plan gets what they leave.
    let side = lora_pool_elems(m, probe.lora_rank_total()) * m.dtype_bytes
        + m.adapter_bytes(probe.max_load_rank());
    let plan = Plan::new(
        opts.quick,
        bud.kv_tokens
            .saturating_sub(side.div_ceil(m.kv_slot_bytes())),
    );
    plan.usable()
        .map_err(|e| Error::msg(format!("--mem-limit-gib: {e}")))?;

    let bar = ProgressBar::new(plan.points() * plan.rounds() as u64);
    if let Ok(style) =
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message("allocating weights");
    let mut target = GpuTarget::new(ops, m, &plan, bar.clone())?;
    let tables = measure(&mut target, &plan, m, kv_slots(&plan))?;
    bar.finish_and_clear();

    let cc = device.compute_capability;
    let driver = match sysinfo::nvidia_driver_version() {
        Some(v) => format!("{v} (CUDA {} driver API)", device.driver),
        None => format!("CUDA {} driver API", device.driver),
    };
    let mut notes = format!(
        "{} {} with random weights, the forward pass of kernels::decoder (as sim real --backend cuda); KV \
         cache paged per token (block size 1), decode contexts one token longer each round; GPU memory usable \
         {:.1} GiB (weights {:.1} GiB, KV capacity {} tokens); prefill attention is a simple warp-per-query \
         kernel, not FlashAttention, so long-sequence prefill is pessimistic; iteration_overhead_ns = 0 (host \
         serving-loop cost not measured)",
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
                "CUDA events on the compute stream (copy stream for adapter loads); {} warm-up rounds, then the \
                 median of {} rounds, each measuring every point once; cuBLAS GemmEx (fp32 accumulate) + NVRTC \
                 kernels; LoRA segmented when >= {} tokens per adapter, gathered otherwise",
                plan.warmup, plan.repeats, SEGMENTED_MIN_TOKENS
            ),
            notes: Some(notes),
            transferred_from: None,
        },
        iteration_overhead_ns: 0,
        prefill: tables.prefill,
        decode: tables.decode,
        lora: tables.lora,
        adapter_load: tables.adapter_load,
    };
    profile.validate()?;
    Ok(Measured {
        profile,
        device,
        budget: bud,
    })
}
