//! One run from a typed, validated configuration: trace -> workload -> predictions -> policies -> engine ->
//! summary. The CLI, config files and sweeps resolve their options into a `RunConfig` once; this module never
//! sees an option string it has not validated.

use std::path::PathBuf;
use std::sync::Arc;

use crate::cost::CostModel;
use crate::engine::api::PolicyCtx;
use crate::engine::{Clock, Engine, EngineConfig, Policies, RunOutput, Simulated};
use crate::error::Result;
use crate::length::{self, LengthRule};
use crate::metrics::{self, RunView, Slo, Summary, SummaryHook};
use crate::model::{GpuSpec, ModelSpec};
use crate::trace::{ReadSpec, Trace, TraceOptions};
use crate::workload::slora::SloraSource;
use crate::workload::{AdapterOptions, Workload};
use crate::{cache, predict, prefetch, sched};

/// Everything one run needs. Build it with `RunConfig::new` and set fields; `validate` checks the policy
/// specs against their registries without building them.
#[derive(Clone)]
pub struct RunConfig {
    /// `None`: the embedded Azure 2023 conversation trace (unless `workload` generates the requests).
    pub trace: Option<PathBuf>,
    /// S-LoRA's synthetic benchmark workload instead of a trace.
    pub workload: Option<SloraSource>,
    pub trace_format: ReadSpec,
    /// `transform.length_scale` is set from this rule when the run is prepared (`length::resolve`).
    pub length: LengthRule,
    pub transform: TraceOptions,
    pub seed: u64,
    pub model: &'static ModelSpec,
    pub gpu: &'static GpuSpec,
    pub adapters: AdapterOptions,
    pub cost: Arc<dyn CostModel>,
    pub engine: EngineConfig,
    /// Policy specs, `Name[k=v,...]`, resolved by the registries.
    pub scheduler: String,
    pub cache: String,
    pub prefetch: String,
    pub predictor: String,
    pub slo: Slo,
}

impl std::fmt::Debug for RunConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunConfig")
            .field("trace", &self.trace)
            .field("workload", &self.workload)
            .field("trace_format", &self.trace_format)
            .field("length", &self.length)
            .field("transform", &self.transform)
            .field("seed", &self.seed)
            .field("model", &self.model.name)
            .field("gpu", &self.gpu.name)
            .field("adapters", &self.adapters)
            .field("cost", &self.cost.describe())
            .field("engine", &self.engine)
            .field("scheduler", &self.scheduler)
            .field("cache", &self.cache)
            .field("prefetch", &self.prefetch)
            .field("predictor", &self.predictor)
            .field("slo", &self.slo)
            .finish()
    }
}

impl RunConfig {
    pub fn validate(&self) -> Result<()> {
        sched::REGISTRY
            .check(&self.scheduler)
            .map_err(|e| e.context("--scheduler"))?;
        cache::REGISTRY
            .check(&self.cache)
            .map_err(|e| e.context("--cache"))?;
        prefetch::REGISTRY
            .check(&self.prefetch)
            .map_err(|e| e.context("--prefetch"))?;
        predict::REGISTRY
            .check(&self.predictor)
            .map_err(|e| e.context("--predictor"))
    }

    /// Reads (or generates) the trace this configuration names (before `transform`).
    pub fn load_trace(&self) -> Result<Trace> {
        if let Some(w) = &self.workload {
            return w.trace();
        }
        let mut spec = self.trace_format.clone();
        spec.limit = self.transform.max_requests;
        Trace::load_with(self.trace.as_deref(), &spec)
    }
}

/// Summary keys every run gets beyond the engine's own: the policies' breakdowns.
pub const SUMMARY_HOOKS: &[SummaryHook] = &[sched::mlq::wrs_summary];

/// A finished run: the workload it replayed, what happened, and the summary (`summary.json`).
pub struct Report {
    pub workload: Workload,
    pub output: RunOutput,
    pub summary: Summary,
}

/// What one engine run produced, before the summary.
pub struct Executed {
    pub output: RunOutput,
    pub predicted: Vec<u32>,
    /// Full specs of the predictor, scheduler and cache policy used, and the clock's description.
    pub predictor: String,
    pub scheduler: String,
    pub cache: String,
    pub cost_model: String,
}

/// The trace transformed and the workload built, as `run` would replay them.
pub fn workload(cfg: &RunConfig, trace: Trace) -> Result<(Trace, Workload)> {
    let transform = TraceOptions {
        length_scale: length::resolve(cfg, &trace)?,
        ..cfg.transform.clone()
    };
    let trace = trace.transform(&transform, cfg.seed)?;
    let workload = Workload::build(&trace, cfg.model, &cfg.adapters, cfg.seed)?;
    Ok((trace, workload))
}

/// Runs the engine on a built workload: predictions, policies, engine. No summary: this is what a fit
/// evaluates many times.
pub fn execute(cfg: &RunConfig, workload: &Workload, clock: &mut dyn Clock) -> Result<Executed> {
    let (predictor, predicted) = predict::predict(&cfg.predictor, workload, cfg.seed)
        .map_err(|e| e.context("--predictor"))?;
    let ctx = PolicyCtx::new(
        workload,
        &predicted,
        &cfg.engine,
        cfg.slo,
        clock.estimates(),
    );
    let scheduler = sched::REGISTRY
        .build(&cfg.scheduler, &ctx)
        .map_err(|e| e.context("--scheduler"))?;
    let cache = cache::REGISTRY
        .build(&cfg.cache, &ctx)
        .map_err(|e| e.context("--cache"))?;
    let prefetch = prefetch::REGISTRY
        .build(&cfg.prefetch, &ctx)
        .map_err(|e| e.context("--prefetch"))?;
    let cost_model = clock.describe();
    clock.prepare(&workload.adapters)?;
    let policies = Policies {
        scheduler: scheduler.made,
        cache: cache.made,
        prefetch: prefetch.made,
    };
    let output = Engine::new(workload, cfg.engine.clone(), clock, policies).run()?;
    Ok(Executed {
        output,
        predicted,
        predictor,
        scheduler: scheduler.spec,
        cache: cache.spec,
        cost_model,
    })
}

/// Runs `cfg` on `trace` (not yet transformed), timed by `clock` or, if `None`, by `cfg.cost`.
pub fn run(cfg: &RunConfig, trace: Trace, clock: Option<&mut dyn Clock>) -> Result<Report> {
    let length_scale = length::resolve(cfg, &trace)?;
    let (trace, workload) = workload(cfg, trace)?;
    let mut simulated = Simulated(cfg.cost.as_ref());
    let clock: &mut dyn Clock = match clock {
        Some(c) => c,
        None => &mut simulated,
    };
    let Executed {
        output,
        predicted,
        predictor,
        scheduler,
        cache,
        cost_model,
    } = execute(cfg, &workload, clock)?;
    let finished = metrics::finished(&output);
    let view = RunView {
        workload: &workload,
        predicted: &predicted,
        out: &output,
        slo: cfg.slo,
        model: cfg.model,
        gpu: cfg.gpu,
        finished: &finished,
    };
    let mut summary = metrics::summarize(&view, SUMMARY_HOOKS);
    let a = &cfg.adapters;
    let t = &cfg.transform;
    let e = &cfg.engine;
    // What the trace reader noticed (e.g. a doubtful time unit) matters only if its timestamps are kept.
    let mut warnings = match t.poisson_rate {
        None => trace.warnings.clone(),
        Some(_) => Vec::new(),
    };
    warnings.append(&mut summary.warnings);
    summary = Summary {
        trace: trace.source.clone(),
        model: cfg.model.name.into(),
        gpu: cfg.gpu.name.into(),
        cost_model,
        seed: cfg.seed,
        scheduler,
        cache_policy: cache,
        predictor,
        prefetch: cfg.prefetch.clone(),
        adapters: a.count as u64,
        popularity_alpha: a.popularity_alpha,
        adapter_model: a.model.describe(a.popularity_alpha),
        arrivals: match (&cfg.workload, t.poisson_rate) {
            (_, Some(_)) => t.arrivals.describe(),
            (Some(_), None) => "the workload generator's".into(),
            (None, None) => "trace timestamps".into(),
        },
        length_scale,
        length_rule: cfg.length.to_string(),
        rate_rps: t.poisson_rate,
        reserve: e.reserve.describe(),
        max_wait_tokens: e.max_wait_tokens as u64,
        max_batch: e.max_batch as u64,
        max_prefill_tokens: e.max_prefill_tokens,
        max_input_tokens: e.max_input_tokens,
        max_total_tokens: e.max_total_tokens,
        context_tokens: e.context_tokens,
        aborted: output.aborted.clone(),
        warnings,
        ..summary
    };
    Ok(Report {
        workload,
        output,
        summary,
    })
}
