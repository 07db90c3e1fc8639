//! The cost models as registered kinds (`--cost NAME[k=v,...]`, listed by `sim policies`): every parameter
//! declared once with its default and help, read through the registry's `Params`. This file only chooses
//! and configures a model; the models are `analytic.rs`, `fitted.rs` (engine profiles), `profile.rs`
//! (measured tables) and `tp.rs` (tensor parallelism around any of them).

use std::path::Path;
use std::sync::Arc;

use super::{
    CostModel, LoadMethod, LoraKernels, analytic, fitted, gpu_matches, profile, read_profile, tp,
};
use crate::error::{Error, Result};
use crate::model::{GpuSpec, ModelSpec};
use crate::registry::{Entry, Kind, Param, Params, Props, Registry};

/// The cost models, for `Registry`.
pub struct CostModels;

impl Kind for CostModels {
    type Made = dyn CostModel;
    type Ctx<'a> = CostCtx<'a>;
    const NAME: &'static str = "cost model";
}

/// What a cost model is built for.
pub struct CostCtx<'a> {
    pub model: &'a ModelSpec,
    pub gpu: &'static GpuSpec,
    /// `--profile` (a file, or a shipped profile's name).
    pub profile: Option<&'a Path>,
    /// `--allow-profile-mismatch`: a profile of another model or GPU is used anyway.
    pub allow_mismatch: bool,
    /// One GPU of a tensor-parallel replica: the shard GPU and the degree (`build_tp`).
    pub shard: Option<(&'static GpuSpec, u32)>,
}

/// `--cost`: the cost models.
pub const REGISTRY: Registry<CostModels> = Registry {
    entries: &[
        Entry {
            name: "analytic",
            about: "a roofline from datasheet peaks x assumed efficiencies, fitted to no measurement \
                    (where no profile ships for the GPU x model)",
            params: &[
                Param::new(
                    "compute_eff",
                    "0.6",
                    "fraction of peak FLOP/s in dense GEMMs and attention",
                ),
                Param::new(
                    "mem_eff",
                    "0.8",
                    "fraction of peak memory bandwidth streaming weights and KV",
                ),
                Param::new(
                    "lora_eff",
                    "0.2",
                    "fraction of peak FLOP/s in the LoRA kernels",
                ),
                Param::new(
                    "overhead_us",
                    "1000",
                    "fixed cost of an iteration (launches, sampling), us",
                ),
                Param::new(
                    "h2d_eff",
                    "0.8",
                    "fraction of nominal PCIe bandwidth a host-to-device copy reaches",
                ),
                Param::new("copy_latency_us", "10", "fixed cost of one copy call, us"),
                Param::new(
                    "pageable_factor",
                    "0.5",
                    "pageable host memory's share of the pinned bandwidth",
                ),
                Param::new(
                    "lora",
                    "slora",
                    "LoRA kernels: slora (padded, S-LoRA's), exact, bmm, off",
                ),
            ],
            props: Props::DEFAULT,
            build: build_analytic,
        },
        Entry {
            name: "profile",
            about: "the profile --profile names (the one shipped for the GPU x model by default): an engine \
                    profile's physical terms, or tables measured by calibrate",
            params: &PROFILE_PARAMS,
            props: Props::DEFAULT,
            build: build_profile,
        },
    ],
};

/// The parameters of an engine profile a spec may set beside its fitted ones.
const ENGINE_ONLY: [&str; 3] = ["member", "lora_kernels", "mem_pool"];

/// `profile`'s parameters: the measured tables' copy method, an engine profile's selections, and an override
/// for each of its fitted parameters (for a sensitivity study).
const PROFILE_PARAMS: [Param; fitted::N_PARAMS + 4] = {
    let mut out = [Param::optional("", ""); fitted::N_PARAMS + 4];
    out[0] = Param::new(
        "load",
        "per_layer_pinned",
        "measured tables: how adapters are copied (per_layer_pinned, per_layer_pageable, \
         contiguous_pinned, contiguous_pageable)",
    );
    out[1] = Param::optional(
        "member",
        "engine profile: run this member of its plausible set (0: the best fit)",
    );
    out[2] = Param::optional(
        "lora_kernels",
        "engine profile: these LoRA kernels instead of the profile's (slora, exact, bmm, off)",
    );
    out[3] = Param::new(
        "mem_pool",
        "true",
        "engine profile: adapters share the KV pool (false: S-LoRA's --no-mem-pool)",
    );
    let mut i = 0;
    while i < fitted::N_PARAMS {
        out[4 + i] = Param::optional(fitted::PARAMS[i].name, fitted::PARAMS[i].what);
        i += 1;
    }
    out
};

fn build_analytic(p: &mut Params, ctx: &CostCtx<'_>) -> Result<Box<dyn CostModel>> {
    if ctx.profile.is_some() {
        return Err(Error::msg(
            "--profile and --cost analytic exclude each other",
        ));
    }
    let mut a = analytic::Analytic::new(ctx.model, ctx.gpu);
    a.compute_eff = p.get("compute_eff")?;
    a.mem_eff = p.get("mem_eff")?;
    a.lora_eff = p.get("lora_eff")?;
    // Times in microseconds, at most a second (a larger one would saturate the nanosecond clock).
    let mut micros = |k: &str| -> Result<crate::time::Nanos> {
        let v: f64 = p.get(k)?;
        crate::range::Range::NonNegative(1e6)
            .check(v)
            .map_err(|e| Error::msg(format!("analytic: {k} (us) {e}")))?;
        Ok((v * 1e3).round() as crate::time::Nanos)
    };
    a.overhead_ns = micros("overhead_us")?;
    a.copy_latency_ns = micros("copy_latency_us")?;
    a.h2d_eff = p.get("h2d_eff")?;
    a.pageable_factor = p.get("pageable_factor")?;
    a.lora = LoraKernels::parse(&p.get::<String>("lora")?)?;
    for (k, v) in [
        ("compute_eff", a.compute_eff),
        ("mem_eff", a.mem_eff),
        ("lora_eff", a.lora_eff),
        ("h2d_eff", a.h2d_eff),
        ("pageable_factor", a.pageable_factor),
    ] {
        if !(v > 0.0 && v <= 1.0) {
            return Err(Error::msg(format!(
                "analytic: {k} must be in (0, 1], got {}",
                crate::range::show(v)
            )));
        }
    }
    Ok(Box::new(a))
}

/// Whether a profile is an engine profile (`fitted`) rather than measured tables (`profile`): by its
/// top-level `schema` field, not by the schema's name appearing anywhere in the text. Text that is not a
/// JSON object goes to the measured-profile reader, which names the error.
fn is_engine_profile(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Head {
        schema: Option<String>,
    }
    serde_json::from_str::<Head>(text)
        .ok()
        .and_then(|h| h.schema)
        .as_deref()
        == Some(fitted::SCHEMA)
}

/// A profile for another model or GPU than the run's, naming the option that would match.
fn mismatch(what: &str, theirs: &str, ours: &str, path: &Path) -> Error {
    // A measured profile names its GPU as the device reports it.
    let fix = match what {
        "gpu" => crate::model::GPUS
            .iter()
            .find(|g| gpu_matches(theirs, g))
            .map(|g| format!("--gpu {}", g.name)),
        _ => crate::model::MODELS
            .iter()
            .find(|m| m.name == theirs)
            .map(|m| format!("--model {}", m.name)),
    };
    let fix = fix.unwrap_or_else(|| format!("no --{what} the simulator knows matches it"));
    Error::msg(format!(
        "{}: the profile is for {what} '{theirs}' but the run is on '{ours}' ({fix}, or \
         --allow-profile-mismatch to use it anyway)",
        path.display()
    ))
}

fn build_profile(p: &mut Params, ctx: &CostCtx<'_>) -> Result<Box<dyn CostModel>> {
    let Some(path) = ctx.profile else {
        return Err(Error::msg("cost model 'profile' needs --profile FILE"));
    };
    let (text, source) = read_profile(path)?;
    if is_engine_profile(&text) {
        if p.given("load").is_some() {
            return Err(p.bad(format!(
                "'load' applies to measured tables; {source} is an engine profile (its copies are its \
                 copy_us and h2d_eff)"
            )));
        }
        return engine_profile(p, ctx, path, &text, source);
    }
    for k in ENGINE_ONLY
        .into_iter()
        .chain(fitted::PARAMS.iter().map(|q| q.name))
    {
        if p.given(k).is_some() {
            return Err(p.bad(format!(
                "'{k}' applies to an engine profile; {source} holds measured tables (their parameter is \
                 load)"
            )));
        }
    }
    if let Some((_, degree)) = ctx.shard {
        return Err(Error::msg(format!(
            "{source}: a measured table profile is per GPU and cannot be sharded for --tp {degree}; use an \
             engine profile or the analytic model"
        )));
    }
    let load: String = p.get("load")?;
    let t = profile::CostProfile::parse(&text).map_err(|e| e.context(&source))?;
    let model = ctx.model;
    if model.lora_targets != crate::model::LoraTargets::QKVO {
        return Err(Error::msg(format!(
            "{source}: a measured profile's LoRA tables are for adapters on q,k,v,o, not --lora-targets {}",
            model.lora_targets
        )));
    }
    if !ctx.allow_mismatch && t.model.name != model.name {
        return Err(mismatch("model", &t.model.name, model.name, path));
    }
    if !ctx.allow_mismatch && !gpu_matches(&t.gpu.name, ctx.gpu) {
        return Err(mismatch("gpu", &t.gpu.name, ctx.gpu.name, path));
    }
    Ok(Box::new(profile::ProfileCost::new(
        t,
        &source,
        LoadMethod::parse(&load)?,
    )?))
}

/// An engine profile with the spec's selections applied (`member=K`, parameter overrides, `lora_kernels`,
/// `mem_pool`), checked against the run's model and GPU, on the run's GPU or re-targeted to a
/// tensor-parallel shard.
fn engine_profile(
    p: &mut Params,
    ctx: &CostCtx<'_>,
    path: &Path,
    text: &str,
    source: String,
) -> Result<Box<dyn CostModel>> {
    let mut e = fitted::EngineProfile::parse(text, &source)?;
    // The re-judging runs one member of the plausible set (`profile[member=K]`, 0 = the best
    // fit); a sensitivity study may override parameters or the kernels:
    // `--cost profile[bgmv_eff=0.2,lora_kernels=exact]`.
    let mut changed = Vec::new();
    if let Some(k) = p.given("member") {
        let n = e.members.len();
        let i: usize = k.parse().ok().filter(|&i| i < n.max(1)).ok_or_else(|| {
            Error::msg(format!(
                "--cost profile[member=..]: '{k}' is not a member of {source} (it has {n}: 0..{})",
                n.saturating_sub(1)
            ))
        })?;
        if n > 0 {
            e.params = e.members[i];
        }
        changed.push(format!("member {i} of {n}"));
    }
    let mut v = e.params.to_vec();
    for (i, name) in fitted::EngineParams::NAMES.iter().enumerate() {
        if let Some(x) = p.given(name) {
            v[i] = x.parse().map_err(|_| {
                Error::msg(format!("--cost profile[{name}=..]: '{x}' is not a number"))
            })?;
            changed.push(format!("{name}={x}"));
        }
    }
    if let Some(k) = p.given("lora_kernels") {
        LoraKernels::parse(&k).map_err(|e| e.context("--cost profile[lora_kernels=..]"))?;
        changed.push(format!("lora_kernels={k}"));
        e.lora_kernels = k;
    }
    let mem_pool = match p.get::<String>("mem_pool")?.as_str() {
        "true" => true,
        "false" => {
            changed.push("no unified pool".into());
            false
        }
        x => {
            return Err(Error::msg(format!(
                "--cost profile[mem_pool=..]: '{x}' is not true or false"
            )));
        }
    };
    e.params = fitted::EngineParams::from_slice(&v);
    e.params
        .validate()
        .map_err(|e| e.context("--cost profile[..]"))?;
    let source = if changed.is_empty() {
        source
    } else {
        format!("{source} with {} overridden", changed.join(", "))
    };
    let (model, gpu) = (ctx.model, ctx.gpu);
    if !ctx.allow_mismatch && e.model != model.name {
        return Err(mismatch("model", &e.model, model.name, path));
    }
    if !ctx.allow_mismatch && e.gpu != gpu.name {
        return Err(mismatch("gpu", &e.gpu, gpu.name, path));
    }
    let c = match ctx.shard {
        None => fitted::EngineCost::from_profile(&e, &source)?,
        // The same parameters on the shard GPU; a measured dense table is per GPU, so the shard runs the
        // dense roofline at the profile's efficiencies (which the table implies).
        Some((shard, degree)) => {
            let source = if e.dense_table.is_some() {
                format!("{source}, dense table replaced by its efficiencies for --tp {degree}")
            } else {
                source
            };
            fitted::EngineCost::new(
                e.params,
                ModelSpec::by_name(&e.model)?,
                shard,
                LoraKernels::parse(&e.lora_kernels)?,
                None,
                &source,
            )
        }
    };
    Ok(Box::new(if mem_pool { c } else { c.without_mem_pool() }))
}

/// Builds the cost model: `--profile FILE` reads a profile (an engine profile fitted by `sim fit`, or
/// tables measured by `calibrate`, whose spec may set `profile[load=METHOD]`), otherwise `cost` names a
/// model, e.g. `analytic[compute_eff=0.5]` (`REGISTRY`). A profile for another model or GPU than the run's
/// is an error unless `allow_mismatch`.
pub fn build(
    cost: Option<&str>,
    profile: Option<&Path>,
    model: &ModelSpec,
    gpu: &'static GpuSpec,
    allow_mismatch: bool,
) -> Result<Arc<dyn CostModel>> {
    build_in(cost, profile, model, gpu, allow_mismatch, None)
}

fn build_in(
    cost: Option<&str>,
    profile: Option<&Path>,
    model: &ModelSpec,
    gpu: &'static GpuSpec,
    allow_mismatch: bool,
    shard: Option<(&'static GpuSpec, u32)>,
) -> Result<Arc<dyn CostModel>> {
    let ctx = CostCtx {
        model,
        gpu,
        profile,
        allow_mismatch,
        shard,
    };
    let name = cost.unwrap_or(if profile.is_some() {
        "profile"
    } else {
        "analytic"
    });
    Ok(Arc::from(REGISTRY.build(name, &ctx)?.made))
}

/// `build` for one GPU of a tensor-parallel replica (`tp.rs`): the same model built for the shard GPU
/// (`degree` times the peaks) and wrapped with the all-reduces and per-shard loads. Degree 1 is `build`.
/// An engine profile is checked against the run's GPU and re-targeted to the shard (without a measured
/// dense table, which is per GPU); a measured table profile cannot be sharded.
pub fn build_tp(
    cost: Option<&str>,
    profile: Option<&Path>,
    model: &'static ModelSpec,
    gpu: &'static GpuSpec,
    allow_mismatch: bool,
    tp: &tp::Tp,
) -> Result<Arc<dyn CostModel>> {
    if tp.degree <= 1 {
        return build(cost, profile, model, gpu, allow_mismatch);
    }
    let shard = gpu.tp_shard(tp.degree);
    let inner = match profile {
        None => build(cost, None, model, shard, allow_mismatch)?,
        Some(_) => build_in(
            cost,
            profile,
            model,
            gpu,
            allow_mismatch,
            Some((shard, tp.degree)),
        )?,
    };
    Ok(Arc::new(tp::TensorParallel::new(inner, tp.clone(), model)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::SHIPPED_PROFILES;

    #[test]
    fn a_profile_is_told_by_its_schema_field_not_a_substring() {
        assert!(is_engine_profile(SHIPPED_PROFILES[0].1));
        let measured = include_str!("../../../../docs/example-profile.json");
        assert!(!is_engine_profile(measured));
        // A measured profile that mentions the engine schema in its text is still a measured profile.
        let mentions = measured.replacen(
            "\"method\": \"",
            "\"method\": \"not a lora-serving-engine-profile; ",
            1,
        );
        assert!(mentions.contains(fitted::SCHEMA) && !is_engine_profile(&mentions));
        assert!(!is_engine_profile("{ not json"));
    }

    fn ctx<'a>(profile: Option<&'a Path>) -> CostCtx<'a> {
        CostCtx {
            model: ModelSpec::by_name("llama-7b").unwrap(),
            gpu: GpuSpec::by_name("a40").unwrap(),
            profile,
            allow_mismatch: false,
            shard: None,
        }
    }

    #[test]
    fn every_cost_model_builds_from_its_declared_defaults() {
        let shipped = Path::new("a40-llama-7b");
        for e in REGISTRY.entries {
            let profile = (e.name == "profile").then_some(shipped);
            let b = REGISTRY.build(e.name, &ctx(profile)).unwrap();
            assert!(!b.made.describe().is_empty(), "{}", e.name);
            // The full spec it printed builds the same model.
            let again = REGISTRY.build(&b.spec, &ctx(profile)).unwrap();
            assert_eq!(again.made.describe(), b.made.describe(), "{}", b.spec);
        }
        // The analytic defaults declared in the registry are the roofline's own.
        let a = REGISTRY.build("analytic", &ctx(None)).unwrap().made;
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let own = analytic::Analytic::new(m, GpuSpec::by_name("a40").unwrap());
        assert_eq!(a.describe(), own.describe());
    }

    #[test]
    fn bad_specs_name_the_parameter() {
        let e = |t: &str, profile: Option<&Path>| {
            REGISTRY
                .build(t, &ctx(profile))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(e("analytic[mem_eff=1.5]", None).contains("mem_eff"));
        assert!(e("analytic[bogus=1]", None).contains("unknown parameter 'bogus'"));
        assert!(e("analytic", Some(Path::new("a40-llama-7b"))).contains("exclude each other"));
        assert!(e("profile", None).contains("needs --profile"));
        let shipped = Some(Path::new("a40-llama-7b"));
        assert!(
            e("profile[load=contiguous_pinned]", shipped).contains("'load' applies to measured")
        );
        assert!(e("profile[mem_pool=maybe]", shipped).contains("'maybe' is not true or false"));
        assert!(e("nope", None).contains("unknown cost model 'nope'; valid: analytic, profile"));
    }
}
