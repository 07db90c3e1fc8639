//! Cost models: how long one iteration and one adapter load take.
//!
//! The engine describes an iteration by a handful of sums (no per-request data, no allocation), and asks a
//! `CostModel` for its duration (through its `Clock`, see `engine::clock`). Two implementations: `analytic` (a roofline from GPU datasheet figures) and
//! `profile` (tables measured by `calibrate`, see docs/profile-schema.md).

pub mod analytic;
pub mod fitted;
pub mod profile;
pub mod tp;
pub mod transfer;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::{GpuSpec, ModelSpec};
use crate::spec::Spec;
use crate::time::Nanos;

/// The shape of one iteration: either a prefill of newly admitted requests or one decode step of the running
/// batch (S-LoRA runs them as separate iterations), described by sums the engine maintains incrementally.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BatchShape {
    /// Prefill: number of sequences, their total tokens, the sum of squared lengths (causal attention) and
    /// the longest prompt.
    pub prefill_seqs: u64,
    pub prefill_tokens: u64,
    pub prefill_sq_tokens: u64,
    pub prefill_max_len: u64,
    /// Decode: sequences decoding one token each and their total context (KV tokens read).
    pub decode_seqs: u64,
    pub decode_context: u64,
    /// LoRA: tokens that carry an adapter, the sum over them of their adapter's rank, and the sum over
    /// distinct adapters of their ranks; sequences that carry an adapter and the largest rank among them.
    pub lora_tokens: u64,
    pub lora_token_rank: u64,
    pub lora_distinct_rank: u64,
    pub lora_distinct: u64,
    pub lora_seqs: u64,
    pub lora_max_rank: u64,
    /// BMM kernels only (`LoraKernels::Bmm`): runs of consecutive sequences sharing an adapter in batch order
    /// (S-LoRA's `adapter_sep`) and the most tokens in one run; 0 = unknown (estimated from the sums).
    pub lora_segments: u64,
    pub lora_max_segment: u64,
}

impl BatchShape {
    /// Adds one prompt of `input` tokens to a prefill; `lora`: its adapter's rank and whether the adapter is
    /// new to this batch (`None`: the base model).
    pub fn add_prompt(&mut self, input: u64, lora: Option<(u64, bool)>) {
        self.prefill_seqs += 1;
        self.prefill_tokens += input;
        self.prefill_sq_tokens += input * input;
        self.prefill_max_len = self.prefill_max_len.max(input);
        if let Some((rank, first)) = lora {
            self.lora_tokens += input;
            self.lora_token_rank += input * rank;
            self.lora_seqs += 1;
            self.lora_max_rank = self.lora_max_rank.max(rank);
            if first {
                self.lora_distinct += 1;
                self.lora_distinct_rank += rank;
            }
        }
    }

    pub fn tokens(&self) -> u64 {
        self.prefill_tokens + self.decode_seqs
    }

    /// The LoRA work of this iteration under `kernels`, in token x rank units.
    pub fn lora_work(&self, kernels: LoraKernels) -> LoraWork {
        let s = self;
        if s.lora_tokens == 0 {
            return LoraWork::default();
        }
        let rows = s.lora_distinct_rank as f64;
        match kernels {
            LoraKernels::Exact => LoraWork {
                bgmv: s.lora_token_rank as f64,
                weight_rows: rows,
                ..Default::default()
            },
            LoraKernels::Slora if s.mbgmm() => {
                // Triton MBGMM (`lora_prefill.py`): a grid of requests x ceil(longest prompt / 32) tiles of 32
                // rows, each a dot product over the batch's largest rank (`BLOCK_RANK = max_rank`); masked rows
                // are computed as zeros, so the work is padded in both.
                LoraWork {
                    mbgmm: s.prefill_seqs as f64
                        * (s.prefill_max_len.div_ceil(32) * 32) as f64
                        * s.lora_max_rank as f64,
                    weight_rows: rows,
                    ..Default::default()
                }
            }
            // BGMV (`bgmv_impl.cuh`): launched for the batch's largest rank, but the shrink's block j returns
            // at `j >= lora_rank` and the expand's lanes past the adapter's rank load nothing, so each token
            // costs its own adapter's rank.
            LoraKernels::Slora => LoraWork {
                bgmv: s.lora_token_rank as f64,
                weight_rows: rows,
                ..Default::default()
            },
            LoraKernels::Bmm => {
                let (segs, max_seg) = s.bmm_segments();
                LoraWork {
                    bmm: segs as f64 * max_seg as f64 * s.lora_max_rank as f64,
                    weight_rows: rows,
                    ..Default::default()
                }
            }
            LoraKernels::Off => LoraWork::default(),
        }
    }

    /// Whether S-LoRA runs this iteration's LoRA on the Triton MBGMM kernels: a prefill of at least two
    /// requests, the longest prompt at least 200 tokens and the largest rank at least 64
    /// (`lora_unordered_batch_infer.py`, `_lora_get_qkv`: `max_b_seq_len >= 200 and max_lora_dim >= 64 and
    /// len(b_seq_len) >= 2`).
    pub fn mbgmm(&self) -> bool {
        self.prefill_seqs >= 2
            && self.prefill_max_len >= 200
            && self.lora_max_rank >= 64
            && self.lora_tokens > 0
    }

    /// BMM kernels: the adapter runs in batch order and the most tokens in one, exact when the engine filled
    /// them, else estimated: one run per distinct adapter, the longest as long as the tokens per run.
    pub fn bmm_segments(&self) -> (u64, u64) {
        if self.lora_segments > 0 {
            return (self.lora_segments, self.lora_max_segment.max(1));
        }
        let segs = self.lora_distinct.max(1);
        (segs, self.lora_tokens.div_ceil(segs).max(1))
    }
}

/// Which LoRA kernels run the batch's adapters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum LoraKernels {
    /// Each token pays its own adapter's rank; each distinct adapter's weights are read once (ideal
    /// segmented kernels, as `calibrate` measures).
    Exact,
    /// S-LoRA's (c1ddf48, `lora_unordered_batch_infer.py`): a prefill of >= 2 requests with a prompt of >= 200
    /// tokens and a rank >= 64 runs the Triton MBGMM kernels, whose grid is padded to the batch's largest
    /// rank and prompt; every other batch runs BGMV, whose blocks and lanes past each adapter's own rank do
    /// nothing (`bgmv_impl.cuh`), so it costs each token's own rank.
    #[default]
    Slora,
    /// S-LoRA's `--bmm` (`models/bmm/lora_bmm_infer.py`): each iteration copies the batch's adapters into
    /// zero-padded [layers, 4, runs, hidden, max rank] buffers and runs padded batched GEMMs per adapter run.
    Bmm,
    /// S-LoRA's `--no-lora-compute`: adapters are loaded but no LoRA kernel runs.
    Off,
}

impl LoraKernels {
    pub fn parse(s: &str) -> Result<LoraKernels> {
        match s {
            "exact" => Ok(LoraKernels::Exact),
            "slora" => Ok(LoraKernels::Slora),
            "bmm" => Ok(LoraKernels::Bmm),
            "off" => Ok(LoraKernels::Off),
            _ => Err(Error::msg(format!(
                "lora kernels must be 'slora' (S-LoRA's MBGMM + BGMV), 'exact', 'bmm' (S-LoRA's --bmm) or 'off' \
                 (--no-lora-compute), got '{s}'"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            LoraKernels::Exact => "exact",
            LoraKernels::Slora => "slora",
            LoraKernels::Bmm => "bmm",
            LoraKernels::Off => "off",
        }
    }
}

/// LoRA work of an iteration, in token x rank units per kernel family: `mbgmm` multiply-adds of the padded
/// Triton grid and `bmm` of the padded batched GEMMs (x 16 x layers x hidden FLOPs for q,k,v,o shrink +
/// expand), `bgmv` rank rows touched per token (x 8 x layers x hidden weight elements), and `weight_rows`
/// of the distinct adapters (x 8 x layers x hidden x dtype bytes read at least once).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LoraWork {
    pub mbgmm: f64,
    pub bgmv: f64,
    pub bmm: f64,
    pub weight_rows: f64,
}

impl LoraWork {
    /// All multiply-add work in token x rank units (the analytic model charges it at one efficiency).
    pub fn compute(&self) -> f64 {
        self.mbgmm + self.bgmv + self.bmm
    }
}

/// One adapter load as it crosses the host-device link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadShape {
    /// Bytes moved (S-LoRA moves each layer's A+B block twice: twice the adapter's size).
    pub bytes: u64,
    /// Separate copy calls.
    pub copies: u64,
    /// From pinned (page-locked) host memory.
    pub pinned: bool,
}

/// How an adapter is copied host->device. S-LoRA copies each layer's tensors separately.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadMethod {
    PerLayerPinned,
    PerLayerPageable,
    ContiguousPinned,
    ContiguousPageable,
}

impl LoadMethod {
    pub const ALL: [LoadMethod; 4] = [
        Self::PerLayerPinned,
        Self::PerLayerPageable,
        Self::ContiguousPinned,
        Self::ContiguousPageable,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::PerLayerPinned => "per_layer_pinned",
            Self::PerLayerPageable => "per_layer_pageable",
            Self::ContiguousPinned => "contiguous_pinned",
            Self::ContiguousPageable => "contiguous_pageable",
        }
    }

    pub fn parse(s: &str) -> Result<LoadMethod> {
        Self::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Self::ALL.iter().map(|m| m.name()).collect();
                Error::msg(format!(
                    "unknown adapter load method '{s}'; valid: {}",
                    names.join(", ")
                ))
            })
    }
}

/// How long things take, estimated from an iteration's shape: a pure function of its inputs (the engine's
/// `Clock` turns it into simulated time; real executors answer the same questions with estimates).
pub trait CostModel: Send + Sync {
    /// One line saying which model this is and its key assumptions; printed in every output.
    fn describe(&self) -> String;
    /// Duration of one iteration. Policies also call this (through `PolicyCtx`) for service-time estimates.
    fn iteration(&self, shape: &BatchShape) -> Nanos;
    /// Duration of one adapter load over the host-device link, when the link is free.
    fn adapter_load(&self, load: &LoadShape) -> Nanos;
    /// GPU time of re-packing `resident_bytes` of adapters when one is added or freed: 0 in S-LoRA's
    /// unified pool; with `--no-mem-pool` the adapters' per-layer buffers are concatenated on a load and
    /// gathered on a free (`naive_infer_adapter.py`).
    fn adapter_repack(&self, _resident_bytes: u64) -> Nanos {
        0
    }
    /// What a reader should know about this model before trusting a result (the summary's `warnings`),
    /// e.g. that it is a fallback.
    fn warnings(&self) -> Vec<String> {
        Vec::new()
    }
}

/// A cost model with a warning attached (`CostModel::warnings`): the same costs and description.
pub struct Warned {
    pub inner: Arc<dyn CostModel>,
    pub warning: String,
}

impl CostModel for Warned {
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn iteration(&self, shape: &BatchShape) -> Nanos {
        self.inner.iteration(shape)
    }
    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        self.inner.adapter_load(load)
    }
    fn adapter_repack(&self, resident_bytes: u64) -> Nanos {
        self.inner.adapter_repack(resident_bytes)
    }
    fn warnings(&self) -> Vec<String> {
        let mut w = self.inner.warnings();
        w.push(self.warning.clone());
        w
    }
}

/// Whether a profile measured for `name` (a device name such as "NVIDIA A100-SXM4-80GB", or the simulator's
/// own name) is for the simulator's `gpu`: every part of the simulator's name appears in it.
pub fn gpu_matches(name: &str, gpu: &GpuSpec) -> bool {
    let norm: String = name
        .to_ascii_lowercase()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    gpu.name.split('-').all(|part| norm.contains(part))
}

/// The engine profiles the repository ships (`calibrate/profiles/`), compiled in so that `--profile NAME`
/// works from any directory and a fresh checkout's default run needs no file: (name, JSON).
pub const SHIPPED_PROFILES: &[(&str, &str)] = &[
    (
        "a40-llama-7b",
        include_str!("../../../../calibrate/profiles/a40-llama-7b.json"),
    ),
    (
        "slora-a10g-llama-7b",
        include_str!("../../../../calibrate/profiles/slora-a10g-llama-7b.json"),
    ),
    (
        "slora-a100-40gb-llama-13b",
        include_str!("../../../../calibrate/profiles/slora-a100-40gb-llama-13b.json"),
    ),
    (
        "slora-a100-80gb-llama-7b",
        include_str!("../../../../calibrate/profiles/slora-a100-80gb-llama-7b.json"),
    ),
    (
        "slora-a100-80gb-llama-13b",
        include_str!("../../../../calibrate/profiles/slora-a100-80gb-llama-13b.json"),
    ),
    (
        "slora-h100-80gb-llama-7b",
        include_str!("../../../../calibrate/profiles/slora-h100-80gb-llama-7b.json"),
    ),
    (
        "a40-llama-13b",
        include_str!("../../../../calibrate/profiles/a40-llama-13b.json"),
    ),
];

/// The shipped profile fitted for `gpu` x `model`, if there is one.
pub fn shipped_profile_for(gpu: &str, model: &str) -> Option<&'static str> {
    SHIPPED_PROFILES
        .iter()
        .map(|(n, _)| *n)
        .find(|n| n.trim_start_matches("slora-") == format!("{gpu}-{model}"))
}

/// A profile's text and the name it is reported by: the file at `path` if there is one, else the shipped
/// profile `path` names (`a40-llama-7b`, or its path under `calibrate/profiles/` from another directory).
pub fn read_profile(path: &std::path::Path) -> Result<(String, String)> {
    match crate::json::read_text(path) {
        Ok(text) => Ok((text, path.display().to_string())),
        Err(e) => {
            let shipped = path
                .file_name()
                .and_then(|f| f.to_str())
                .map(|f| f.trim_end_matches(".json"))
                .and_then(|stem| SHIPPED_PROFILES.iter().find(|(n, _)| *n == stem))
                .filter(|_| {
                    let parent = path.parent().map(|p| p.to_string_lossy().into_owned());
                    match parent.as_deref() {
                        None | Some("") => true,
                        Some(p) => p.ends_with("calibrate/profiles"),
                    }
                });
            match shipped {
                Some((name, text)) => Ok((
                    text.to_string(),
                    format!("calibrate/profiles/{name}.json (shipped)"),
                )),
                None => Err(Error::msg(format!(
                    "{}: {e} (shipped profiles: {})",
                    path.display(),
                    SHIPPED_PROFILES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ))),
            }
        }
    }
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

/// An engine profile with `spec`'s selections applied (`member=K`, parameter overrides, `lora_kernels`,
/// `mem_pool`): the profile, the source line naming what changed, and whether adapters share the pool.
fn engine_profile(
    spec: &mut Spec,
    text: &str,
    source: String,
) -> Result<(fitted::EngineProfile, String, bool)> {
    let mut p = fitted::EngineProfile::parse(text, &source)?;
    // The re-judging runs one member of the plausible set (`profile[member=K]`, 0 = the best
    // fit); a sensitivity study may override parameters or the kernels:
    // `--cost profile[bgmv_eff=0.2,lora_kernels=exact]`.
    let mut changed = Vec::new();
    if let Some(k) = spec.take_str("member") {
        let n = p.members.len();
        let i: usize = k.parse().ok().filter(|&i| i < n.max(1)).ok_or_else(|| {
            Error::msg(format!(
                "--cost profile[member=..]: '{k}' is not a member of {source} (it has {n}: 0..{})",
                n.saturating_sub(1)
            ))
        })?;
        if n > 0 {
            p.params = p.members[i];
        }
        changed.push(format!("member {i} of {n}"));
    }
    let mut v = p.params.to_vec();
    for (i, name) in fitted::EngineParams::NAMES.iter().enumerate() {
        if let Some(x) = spec.take_str(name) {
            v[i] = x.parse().map_err(|_| {
                Error::msg(format!("--cost profile[{name}=..]: '{x}' is not a number"))
            })?;
            changed.push(format!("{name}={x}"));
        }
    }
    if let Some(k) = spec.take_str("lora_kernels") {
        LoraKernels::parse(&k).map_err(|e| e.context("--cost profile[lora_kernels=..]"))?;
        changed.push(format!("lora_kernels={k}"));
        p.lora_kernels = k;
    }
    let mem_pool = match spec.take_str("mem_pool").as_deref() {
        None | Some("true") => true,
        Some("false") => {
            changed.push("no unified pool".into());
            false
        }
        Some(x) => {
            return Err(Error::msg(format!(
                "--cost profile[mem_pool=..]: '{x}' is not true or false"
            )));
        }
    };
    let mut known = fitted::EngineParams::NAMES.to_vec();
    known.push("lora_kernels");
    known.push("member");
    known.push("mem_pool");
    spec.finish(&known)?;
    p.params = fitted::EngineParams::from_slice(&v);
    p.params
        .validate()
        .map_err(|e| e.context("--cost profile[..]"))?;
    let source = if changed.is_empty() {
        source
    } else {
        format!("{source} with {} overridden", changed.join(", "))
    };
    Ok((p, source, mem_pool))
}

/// Builds the cost model: `--profile FILE` reads a profile (an engine profile fitted by `calibrate fit`, or
/// tables measured by `calibrate`, whose spec may set `profile[load=METHOD]`), otherwise `cost` names a
/// model, e.g. `analytic[compute_eff=0.5]`. A profile for another model or GPU than the run's is an error
/// unless `allow_mismatch`.
pub fn build(
    cost: Option<&str>,
    profile: Option<&std::path::Path>,
    model: &ModelSpec,
    gpu: &GpuSpec,
    allow_mismatch: bool,
) -> Result<Arc<dyn CostModel>> {
    let mut spec = Spec::parse(cost.unwrap_or(if profile.is_some() {
        "profile"
    } else {
        "analytic"
    }))?;
    let mismatch = |what: &str, theirs: &str, ours: &str, path: &std::path::Path| {
        // The option that would match: a measured profile names its GPU as the device reports it.
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
    };
    match (spec.name.as_str(), profile) {
        ("profile", Some(path)) => {
            let (text, source) = read_profile(path)?;
            if is_engine_profile(&text) {
                let (p, source, mem_pool) = engine_profile(&mut spec, &text, source)?;
                if !allow_mismatch && p.model != model.name {
                    return Err(mismatch("model", &p.model, model.name, path));
                }
                if !allow_mismatch && p.gpu != gpu.name {
                    return Err(mismatch("gpu", &p.gpu, gpu.name, path));
                }
                let c = fitted::EngineCost::from_profile(&p, &source)?;
                return Ok(Arc::new(if mem_pool { c } else { c.without_mem_pool() }));
            }
            let load = spec
                .take_str("load")
                .unwrap_or_else(|| "per_layer_pinned".into());
            spec.finish(&["load"])?;
            let p = profile::CostProfile::parse(&text).map_err(|e| e.context(&source))?;
            if model.lora_targets != crate::model::LoraTargets::QKVO {
                return Err(Error::msg(format!(
                    "{source}: a measured profile's LoRA tables are for adapters on q,k,v,o, not --lora-targets {}",
                    model.lora_targets
                )));
            }
            if !allow_mismatch && p.model.name != model.name {
                return Err(mismatch("model", &p.model.name, model.name, path));
            }
            if !allow_mismatch && !gpu_matches(&p.gpu.name, gpu) {
                return Err(mismatch("gpu", &p.gpu.name, gpu.name, path));
            }
            Ok(Arc::new(profile::ProfileCost::new(
                p,
                &source,
                LoadMethod::parse(&load)?,
            )?))
        }
        ("profile", None) => Err(Error::msg("cost model 'profile' needs --profile FILE")),
        ("analytic", None) => Ok(Arc::new(analytic::Analytic::from_spec(spec, model, gpu)?)),
        ("analytic", Some(_)) => Err(Error::msg(
            "--profile and --cost analytic exclude each other",
        )),
        (other, _) => Err(Error::msg(format!(
            "unknown cost model '{other}'; valid: analytic[...], profile[load=...] (with --profile FILE)"
        ))),
    }
}

/// `build` for one GPU of a tensor-parallel replica (`tp.rs`): the same model built for the shard GPU
/// (`degree` times the peaks) and wrapped with the all-reduces and per-shard loads. Degree 1 is `build`.
/// An engine profile is re-targeted to the shard GPU (without a measured dense table, which is per GPU); a
/// measured table profile cannot be sharded.
pub fn build_tp(
    cost: Option<&str>,
    profile: Option<&std::path::Path>,
    model: &'static ModelSpec,
    gpu: &'static GpuSpec,
    allow_mismatch: bool,
    tp: &tp::Tp,
) -> Result<Arc<dyn CostModel>> {
    if tp.degree <= 1 {
        return build(cost, profile, model, gpu, allow_mismatch);
    }
    let shard = gpu.tp_shard(tp.degree);
    let inner: Arc<dyn CostModel> = match profile {
        None => build(cost, profile, model, shard, allow_mismatch)?,
        Some(path) => {
            let (text, source) = read_profile(path)?;
            if !is_engine_profile(&text) {
                return Err(Error::msg(format!(
                    "{source}: a measured table profile is per GPU and cannot be sharded for --tp {}; use an \
                     engine profile or the analytic model",
                    tp.degree
                )));
            }
            // Checks the profile as `build` does, then re-targets it: the same parameters (member,
            // overrides) on the shard GPU; a measured dense table is per GPU, so the shard runs the dense
            // roofline at the profile's efficiencies (which the table implies).
            build(cost, profile, model, gpu, allow_mismatch)?;
            let mut spec = Spec::parse(cost.unwrap_or("profile"))?;
            let (p, source, mem_pool) = engine_profile(&mut spec, &text, source)?;
            let source = if p.dense_table.is_some() {
                format!(
                    "{source}, dense table replaced by its efficiencies for --tp {}",
                    tp.degree
                )
            } else {
                source
            };
            let c = fitted::EngineCost::new(
                p.params,
                ModelSpec::by_name(&p.model)?,
                shard,
                LoraKernels::parse(&p.lora_kernels)?,
                None,
                &source,
            );
            Arc::new(if mem_pool { c } else { c.without_mem_pool() })
        }
    };
    Ok(Arc::new(tp::TensorParallel::new(inner, tp.clone(), model)))
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
