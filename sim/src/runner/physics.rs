//! The physics of a run: its cost model (`--cost`, `--profile`, the shipped profile, else the roofline) and
//! the memory pool its GPU leaves after the weights.

use std::path::PathBuf;

use super::RunArgs;
use super::resolve::flagged;
use sim_core::cost;
use sim_core::error::{Error, Result};
use sim_core::model::{GpuSpec, ModelSpec};

/// The physics of a run on `gpu` (one GPU of a `tp` replica): `--cost` / `--profile` as given, and where
/// neither names a cost model, the engine profile shipped for the GPU x model whenever one exists and fits
/// the run, else the analytic roofline with a warning saying why (README, "Cost models"). The same rule
/// holds for every way a run is given: flags, a config file, a sweep, each GPU of a fleet.
pub fn cost_model(
    args: &RunArgs,
    model: &'static ModelSpec,
    gpu: &'static GpuSpec,
    tp: &cost::tp::Tp,
) -> Result<std::sync::Arc<dyn cost::CostModel>> {
    let explicit_analytic = args
        .cost
        .as_deref()
        .is_some_and(|c| !c.trim_start().starts_with("profile"));
    let (profile, fallback) = match &args.profile {
        Some(p) => (Some(p.clone()), None),
        None if explicit_analytic => (None, None),
        None => match default_profile(model, gpu) {
            Ok(name) => (Some(PathBuf::from(name)), None),
            Err(why) if args.cost.is_some() => {
                return Err(Error::msg(format!(
                    "--cost {}: needs --profile FILE: {why}",
                    args.cost.as_deref().unwrap_or_default()
                )));
            }
            Err(why) => (None, Some(why)),
        },
    };
    let spec = crate::ensemble::resolve_member(args).map_err(flagged("--member"))?;
    // S-LoRA's engine flags reach the cost model as its kernels and pool.
    let mut keys = Vec::new();
    if args.no_lora_compute {
        keys.push(("lora_kernels", "off"));
    }
    if args.bmm {
        keys.push(("lora_kernels", "bmm"));
    }
    if args.no_mem_pool {
        keys.push(("mem_pool", "false"));
    }
    let spec = if keys.is_empty() {
        spec
    } else {
        Some(with_keys(
            spec.as_deref().unwrap_or(if profile.is_some() {
                "profile"
            } else {
                "analytic"
            }),
            &keys,
        ))
    };
    let built = cost::build_tp(
        spec.as_deref(),
        profile.as_deref(),
        model,
        gpu,
        args.allow_profile_mismatch,
        tp,
    )
    .map_err(|e| {
        // A problem in the profile names its file; anything else is the --cost spec's.
        match &profile {
            Some(p) if e.to_string().starts_with(&p.display().to_string()) => e,
            _ => flagged("--cost")(e),
        }
    })?;
    Ok(match fallback {
        None => built,
        Some(why) => std::sync::Arc::new(cost::Warned {
            inner: built,
            warning: format!(
                "cost model: the analytic roofline (datasheet peaks x assumed efficiencies, fitted to no \
                 measurement), because {why}; --profile FILE gives a fitted or measured one, --cost analytic \
                 chooses this one and silences this warning"
            ),
        }),
    })
}

/// `spec` with `keys` added to its parameters (`profile` + mem_pool=false -> `profile[mem_pool=false]`); the
/// analytic model names its kernels `lora`, and has no pool to leave.
fn with_keys(spec: &str, keys: &[(&str, &str)]) -> String {
    let spec = spec.trim();
    let analytic = spec.starts_with("analytic");
    let add: Vec<String> = keys
        .iter()
        .filter(|(k, _)| !(analytic && *k == "mem_pool"))
        .map(|(k, v)| {
            let k = if analytic && *k == "lora_kernels" {
                "lora"
            } else {
                k
            };
            format!("{k}={v}")
        })
        .collect();
    if add.is_empty() {
        return spec.to_string();
    }
    match spec.strip_suffix(']') {
        Some(head) if head.contains('[') => format!("{head},{}]", add.join(",")),
        _ => format!("{spec}[{}]", add.join(",")),
    }
}

/// The shipped engine profile for `gpu` x `model`, or why there is none. It serves every run on that GPU x
/// model, a tensor-parallel replica's too (`cost::build_tp` keeps its parameters on the shard GPU and
/// replaces a measured dense table by the efficiencies it implies): one default physics.
pub fn default_profile(
    model: &ModelSpec,
    gpu: &GpuSpec,
) -> std::result::Result<&'static str, String> {
    cost::shipped_profile_for(gpu.name, model.name).ok_or_else(|| {
        let shipped: Vec<_> = cost::SHIPPED_PROFILES.iter().map(|p| p.0).collect();
        format!(
            "no engine profile ships for {} x {} (shipped: {})",
            gpu.name,
            model.name,
            shipped.join(", ")
        )
    })
}

/// Slots of the unified pool: GPU memory x utilisation - weights, in KV slots.
pub fn pool_slots(args: &RunArgs, model: &ModelSpec, gpu: &GpuSpec) -> Result<u64> {
    if let Some(n) = args.pool_tokens {
        return if n > 0 {
            Ok(n)
        } else {
            Err(Error::msg("--pool-tokens must be positive"))
        };
    }
    if !(args.mem_util > 0.0 && args.mem_util <= 1.0) {
        return Err(Error::msg(format!(
            "--mem-util must be in (0, 1], got {}",
            args.mem_util
        )));
    }
    let mem = match args.gpu_mem_gib {
        Some(g) if g > 0.0 && g.is_finite() => g * (1u64 << 30) as f64,
        Some(g) => {
            return Err(Error::msg(format!(
                "--gpu-mem-gib must be positive, got {g}"
            )));
        }
        None => gpu.memory_bytes as f64,
    };
    // A tensor-parallel replica's pool spans its GPUs.
    let mem = mem * args.tp.max(1) as f64;
    let pool = mem * args.mem_util - model.weight_bytes() as f64;
    if pool < model.kv_slot_bytes() as f64 {
        let memory = match args.gpu_mem_gib {
            Some(g) => format!("--gpu-mem-gib {g}"),
            None => format!("--gpu {}", gpu.name),
        };
        return Err(Error::msg(format!(
            "{memory}: {} ({:.1} GiB of weights) does not fit in {:.1} GiB x {} (--mem-util) of GPU memory",
            model.name,
            model.weight_bytes() as f64 / (1u64 << 30) as f64,
            mem / (1u64 << 30) as f64,
            args.mem_util
        )));
    }
    Ok((pool / model.kv_slot_bytes() as f64) as u64)
}
