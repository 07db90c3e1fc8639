//! Cost models: how long one iteration and one adapter load take.
//!
//! The engine describes an iteration by a handful of sums (no per-request data, no allocation), and asks a
//! `CostModel` for its duration (through its `Clock`, see `engine::clock`). The models are registered kinds
//! (`kinds.rs`, `--cost NAME[k=v,...]`, listed by `sim policies`): `analytic` (a roofline from GPU datasheet
//! figures) and `profile` (an engine profile's physical terms, `fitted.rs`, or tables measured by
//! `calibrate`, `profile.rs`; docs/profile-schema.md).

pub mod analytic;
pub mod fitted;
mod kinds;
pub mod profile;
pub mod tp;
pub mod transfer;

pub use kinds::{CostCtx, CostModels, REGISTRY, build, build_tp};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::GpuSpec;
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
    /// Host time spent issuing a load's copy calls (part of `adapter_load`, which overlaps it with the
    /// link). It matters where the host issues them in the loop that launches iterations: S-LoRA's
    /// `--prefetch` (`RouterManager._step` awaits `load_adapters(prefetch=True)` before `_decode_batch`).
    /// 0 where the model has no host term.
    fn adapter_load_host(&self, _load: &LoadShape) -> Nanos {
        0
    }
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
    fn adapter_load_host(&self, load: &LoadShape) -> Nanos {
        self.inner.adapter_load_host(load)
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
