//! Cost models: how long one iteration and one adapter load take.
//!
//! The engine describes an iteration by a handful of sums (no per-request data, no allocation), and asks a
//! `CostModel` for its duration (through its `Clock`, see `engine::clock`). Two implementations: `analytic` (a roofline from GPU datasheet figures) and
//! `profile` (tables measured by `calibrate`, see docs/profile-schema.md).

pub mod analytic;
pub mod profile;
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
    /// Prefill: number of sequences, their total tokens, and the sum of squared lengths (causal attention).
    pub prefill_seqs: u64,
    pub prefill_tokens: u64,
    pub prefill_sq_tokens: u64,
    /// Decode: sequences decoding one token each and their total context (KV tokens read).
    pub decode_seqs: u64,
    pub decode_context: u64,
    /// LoRA: tokens that carry an adapter, the sum over them of their adapter's rank, and the sum over
    /// distinct adapters of their ranks.
    pub lora_tokens: u64,
    pub lora_token_rank: u64,
    pub lora_distinct_rank: u64,
    pub lora_distinct: u64,
}

impl BatchShape {
    pub fn tokens(&self) -> u64 {
        self.prefill_tokens + self.decode_seqs
    }
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
    /// Duration of one adapter load of `bytes` over the host-device link, when the link is free.
    fn adapter_load(&self, bytes: u64) -> Nanos;
}

/// Builds the cost model: `--profile FILE` reads a measured profile (its spec may set `profile[load=METHOD]`),
/// otherwise `cost` names a model, e.g. `analytic[compute_eff=0.5]`.
pub fn build(
    cost: Option<&str>,
    profile: Option<&std::path::Path>,
    model: &ModelSpec,
    gpu: &GpuSpec,
) -> Result<Arc<dyn CostModel>> {
    let mut spec = Spec::parse(cost.unwrap_or(if profile.is_some() {
        "profile"
    } else {
        "analytic"
    }))?;
    match (spec.name.as_str(), profile) {
        ("profile", Some(path)) => {
            let load = spec
                .take_str("load")
                .unwrap_or_else(|| "per_layer_pinned".into());
            spec.finish(&["load"])?;
            let p = profile::CostProfile::read(path)?;
            Ok(Arc::new(profile::ProfileCost::new(
                p,
                &path.display().to_string(),
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
