//! One run from a typed, validated configuration: trace -> workload -> predictions -> policies -> engine ->
//! summary. The CLI, config files and sweeps resolve their options into a `RunConfig` once; this module never
//! sees an option string it has not validated.

pub mod length;

use std::path::PathBuf;
use std::sync::Arc;

use crate::cost::CostModel;
use crate::cost::tp::Tp;
use crate::engine::api::PolicyCtx;
use crate::engine::{Clock, Engine, EngineConfig, Observer, RunOutput, Simulated};
use crate::error::Result;
use crate::fleet::{self, FleetConfig, FleetInputs, FleetRun};
use crate::length::LengthRule;
use crate::metrics::{self, RunView, Summary, SummaryHook};
use crate::model::{GpuSpec, ModelSpec};
use crate::policy::{BuiltPolicies, PolicySpecs};
use crate::slo::Slo;
use crate::trace::{ReadSpec, Trace, TraceOptions};
use crate::workload::slora::SloraSource;
use crate::workload::{AdapterOptions, Workload};
use crate::{predict, sched};
use serde_json::{Map, Value};

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
    /// Tensor parallelism of the replica (`cost` is already the per-GPU cost of it, `engine.pool_slots` is
    /// sized over its GPUs).
    pub tp: Tp,
    /// Many replicas behind a router (`fleet`); `None`: one engine, `sim run`'s path.
    pub fleet: Option<FleetConfig>,
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
            .field("tp", &self.tp)
            .field("fleet", &self.fleet)
            .finish()
    }
}

impl RunConfig {
    pub fn validate(&self) -> Result<()> {
        if let Some(f) = &self.fleet {
            fleet::router::REGISTRY
                .check(&f.router)
                .map_err(|e| e.context("--router"))?;
        }
        self.policies().check()?;
        predict::REGISTRY
            .check(&self.predictor)
            .map_err(|e| e.context("--predictor"))
    }

    /// The scheduler, cache and prefetch specs.
    pub fn policies(&self) -> PolicySpecs<'_> {
        PolicySpecs {
            scheduler: &self.scheduler,
            cache: &self.cache,
            prefetch: &self.prefetch,
        }
    }

    /// Reads (or generates) the trace this configuration names (before `transform`).
    pub fn load_trace(&self) -> Result<Trace> {
        if let Some(w) = &self.workload {
            return w.trace();
        }
        let mut spec = self.trace_format.clone();
        // A length rule is solved on the whole trace, so `--max-requests N` replays the first N requests
        // of the same workload rather than re-solving the rule on them.
        if let LengthRule::Fixed(_) = self.length {
            spec.limit = self.transform.max_requests;
        }
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
    /// A fleet run's own outputs (`fleet.json`, `replicas.csv`, ...); `None` for one engine.
    pub fleet: Option<Box<FleetReport>>,
}

/// What a fleet run adds to a `Report`.
pub struct FleetReport {
    pub config: FleetConfig,
    /// `fleet_*` keys: layout, router, imbalance, replication, per-replica spread.
    pub summary: Map<String, Value>,
    /// The run (its `output` moved into the report's).
    pub run: FleetRun,
}

impl Report {
    /// The summary with a fleet's keys added: what a sweep's results row holds.
    pub fn row(&self) -> Map<String, Value> {
        let mut m = self.summary.to_map();
        if let Some(f) = &self.fleet {
            m.extend(f.summary.clone());
        }
        m
    }
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
    let scale = length::resolve(cfg, &trace)?;
    workload_at(cfg, trace, scale)
}

/// `workload` with the length rule already resolved to `length_scale`.
fn workload_at(cfg: &RunConfig, trace: Trace, length_scale: f64) -> Result<(Trace, Workload)> {
    let transform = TraceOptions {
        length_scale,
        ..cfg.transform.clone()
    };
    let trace = trace.transform(&transform, cfg.seed)?;
    let workload = Workload::build(&trace, cfg.model, &cfg.adapters, cfg.seed)?;
    Ok((trace, workload))
}

/// Runs the engine on a built workload: predictions, policies, engine. No summary: this is what a fit
/// evaluates many times.
pub fn execute(cfg: &RunConfig, workload: &Workload, clock: &mut dyn Clock) -> Result<Executed> {
    execute_observed(cfg, workload, clock, None)
}

/// `execute`, reporting every engine event to `obs` (timelines, traces).
pub fn execute_observed(
    cfg: &RunConfig,
    workload: &Workload,
    clock: &mut dyn Clock,
    obs: Option<&mut dyn Observer>,
) -> Result<Executed> {
    let (predictor, predicted) = predict::predict(&cfg.predictor, workload, cfg.seed)
        .map_err(|e| e.context("--predictor"))?;
    let ctx = PolicyCtx::new(
        workload,
        &predicted,
        &cfg.engine,
        cfg.slo,
        clock.estimates(),
    )
    .with_seed(cfg.seed);
    let BuiltPolicies {
        policies,
        specs: [scheduler, cache, _],
    } = cfg.policies().build(&ctx)?;
    let cost_model = clock.describe();
    clock.prepare(&workload.adapters)?;
    let mut engine = Engine::new(workload, cfg.engine.clone(), clock, policies);
    if let Some(o) = obs {
        engine.observe(Box::new(o));
    }
    let output = engine.run()?;
    Ok(Executed {
        output,
        predicted,
        predictor,
        scheduler,
        cache,
        cost_model,
    })
}

/// Runs `cfg` on `trace` (not yet transformed), timed by `clock` or, if `None`, by `cfg.cost`.
pub fn run(cfg: &RunConfig, trace: Trace, clock: Option<&mut dyn Clock>) -> Result<Report> {
    run_observed(cfg, trace, clock, None)
}

/// `run`, reporting every engine event to `obs` (one engine only: a fleet is refused).
pub fn run_observed(
    cfg: &RunConfig,
    trace: Trace,
    clock: Option<&mut dyn Clock>,
    obs: Option<&mut dyn Observer>,
) -> Result<Report> {
    let length_scale = length::resolve(cfg, &trace)?;
    if let Some(fc) = &cfg.fleet {
        if obs.is_some() {
            return Err(crate::error::Error::msg(
                "--timeline and --chrome-trace record one engine, not a fleet (--replicas)",
            ));
        }
        return run_fleet(cfg, fc, trace, length_scale);
    }
    let (trace, workload) = workload_at(cfg, trace, length_scale)?;
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
    } = execute_observed(cfg, &workload, clock, obs)?;
    let mut summary = summarize(cfg, &workload, &predicted, &output);
    summary
        .warnings
        .extend(crate::refusals::warning(&summary, &workload, &cfg.engine));
    let summary = settings(
        cfg,
        summary,
        (trace.source, trace.warnings),
        length_scale,
        [cost_model, scheduler, cache, predictor],
        output.aborted.clone(),
    );
    Ok(Report {
        workload,
        output,
        summary,
        fleet: None,
    })
}

/// Many replicas behind a router: the standard summary over all requests (exact, or from sketches when
/// streaming) and the fleet's own keys beside it.
fn run_fleet(cfg: &RunConfig, fc: &FleetConfig, trace: Trace, length_scale: f64) -> Result<Report> {
    let (trace, workload) = workload_at(cfg, trace, length_scale)?;
    // Tens of millions of rows: keep only the name and the reader's warnings.
    let source = (trace.source, trace.warnings);
    let (predictor, predicted) = predict::predict(&cfg.predictor, &workload, cfg.seed)
        .map_err(|e| e.context("--predictor"))?;
    let mut fr = fleet::run(
        fc,
        &FleetInputs {
            workload: &workload,
            predicted: &predicted,
            slo: cfg.slo,
            seed: cfg.seed,
            policies: cfg.policies(),
        },
    )?;
    // Before the output moves out: both read its stats.
    let fsum = fr.summary(fc);
    let streamed = fc
        .stream
        .is_some()
        .then(|| fr.streamed_summary(&workload, &cfg.slo));
    let output = std::mem::replace(
        &mut fr.output,
        RunOutput {
            aborted: None,
            records: Vec::new(),
            stats: Default::default(),
        },
    );
    let mut summary = match streamed {
        Some(mut s) => {
            // No records to summarise: the utilisation from the merged counters.
            let gpu = cfg.gpu.tp_shard(cfg.tp.degree);
            metrics::gpu_utilisation(&mut s, &output.stats, cfg.model, gpu);
            s
        }
        None => summarize(cfg, &workload, &predicted, &output),
    };
    per_gpu_means(&mut summary, cfg, fc, &fsum);
    summary
        .warnings
        .extend(crate::refusals::warning(&summary, &workload, &cfg.engine));
    let (cost_model, scheduler, cache) = (
        fr.cost_model.clone(),
        fr.scheduler.clone(),
        fr.cache.clone(),
    );
    let summary = settings(
        cfg,
        summary,
        source,
        length_scale,
        [cost_model, scheduler, cache, predictor],
        None,
    );
    Ok(Report {
        workload,
        output,
        summary,
        fleet: Some(Box::new(FleetReport {
            config: fc.clone(),
            summary: fsum,
            run: fr,
        })),
    })
}

/// A fleet's GPU figures as means over its replicas: the merged statistics sum every replica's busy time
/// and work, which over one replica's peak would read as 560% busy. Utilisation is the fleet's work over
/// the sum of its replicas' peaks (groups may differ in GPU and TP degree).
fn per_gpu_means(
    summary: &mut Summary,
    cfg: &RunConfig,
    fc: &FleetConfig,
    fsum: &Map<String, Value>,
) {
    if let Some(busy) = fsum.get("fleet_gpu_busy_fraction").and_then(Value::as_f64) {
        summary.gpu_busy_fraction = busy;
    }
    let one = cfg.gpu.tp_shard(cfg.tp.degree);
    let (flops, bw) = fc.groups.iter().fold((0.0, 0.0), |(f, b), g| {
        let shard = g.gpu.tp_shard(g.tp.degree);
        (
            f + g.count as f64 * shard.fp16_flops,
            b + g.count as f64 * shard.mem_bw,
        )
    });
    if flops > 0.0 && bw > 0.0 {
        summary.gpu_flops_utilisation *= one.fp16_flops / flops;
        summary.gpu_bandwidth_utilisation *= one.mem_bw / bw;
    }
}

/// The metrics of a run's records (per GPU of a tensor-parallel replica).
fn summarize(
    cfg: &RunConfig,
    workload: &Workload,
    predicted: &[u32],
    output: &RunOutput,
) -> Summary {
    let finished = metrics::finished(output);
    let view = RunView {
        workload,
        predicted,
        out: output,
        slo: cfg.slo,
        model: cfg.model,
        gpu: cfg.gpu.tp_shard(cfg.tp.degree),
        finished: &finished,
    };
    metrics::summarize(&view, SUMMARY_HOOKS)
}

/// The settings that shaped a run, as summary keys.
fn settings(
    cfg: &RunConfig,
    mut summary: Summary,
    (trace, trace_warnings): (String, Vec<String>),
    length_scale: f64,
    [cost_model, scheduler, cache, predictor]: [String; 4],
    aborted: Option<String>,
) -> Summary {
    let a = &cfg.adapters;
    let t = &cfg.transform;
    let e = &cfg.engine;
    // What the trace reader noticed (e.g. a doubtful time unit) matters only if its timestamps are kept.
    let mut warnings = match t.poisson_rate {
        None => trace_warnings,
        Some(_) => Vec::new(),
    };
    // The cost models' own (e.g. an analytic fallback), once each over a fleet's groups.
    let groups = cfg
        .fleet
        .iter()
        .flat_map(|f| f.groups.iter().map(|g| &g.cost));
    for w in std::iter::once(&cfg.cost)
        .chain(groups)
        .flat_map(|c| c.warnings())
    {
        if !warnings.contains(&w) {
            warnings.push(w);
        }
    }
    warnings.append(&mut summary.warnings);
    let tp = cfg.tp.degree > 1;
    Summary {
        trace,
        model: cfg.model.name.into(),
        lora_targets: cfg.model.lora_targets.to_string(),
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
        merge_cadence: if e.policy_cadence { "policy" } else { "engine" }.into(),
        max_batch: e.max_batch as u64,
        max_prefill_tokens: e.max_prefill_tokens,
        max_input_tokens: e.max_input_tokens,
        max_total_tokens: e.max_total_tokens,
        context_tokens: e.context_tokens,
        tp: tp.then_some(cfg.tp.degree as u64),
        interconnect: tp.then(|| cfg.tp.link.describe()),
        load_wait_share_p50: match (summary.load_wait_p50_s, summary.ttft_p50_s) {
            (Some(l), Some(t)) if t > 0.0 => Some(l / t),
            _ => None,
        },
        aborted,
        warnings,
        ..summary
    }
}
