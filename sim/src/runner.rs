//! `sim run`'s options (`RunArgs`) and their resolution into the core's typed `RunConfig`. `sim run`, the
//! benchmark and the tests all go through `execute`.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
pub use sim_core::run::{self, Report, RunConfig};

use crate::cost;
use crate::engine::{EngineConfig, LoadPath, Reserve};
use crate::error::{Error, Result};
use crate::metrics::Slo;
use crate::model::{GpuSpec, ModelSpec};
use crate::options;
use crate::spec::Spec;
use crate::trace::arrivals::Arrivals;
use crate::trace::{ReadSpec, Trace, TraceOptions};
use crate::workload::slora::SloraSource;
use crate::workload::{AdapterModel, AdapterOptions};

/// Every option of a run, with the flag names of `sim run`. The same struct is read from JSON (sweep configs,
/// `--config` files) by those names, each value parsed as its flag would be (`options`).
#[derive(Args, Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields, default)]
pub struct RunArgs {
    /// Trace file: CSV or JSON lines, plain or .gz, columns per --trace-format [default: the embedded Azure
    /// 2023 conversation trace]
    #[arg(long, value_name = "FILE")]
    #[serde(deserialize_with = "options::optional")]
    pub trace: Option<PathBuf>,
    /// S-LoRA's benchmark workload instead of a trace: slora[adapters=N,alpha=A,rate=R,cv=C,duration=S,
    /// input=LO:HI,output=LO:HI,seed=42,prompt_extra=2] (benchmarks/trace.py, numpy's stream reproduced
    /// exactly; adapter k has rank ranks[k % len]); sets --adapters, excludes --trace and --rate
    #[arg(long, value_name = "SPEC")]
    #[serde(deserialize_with = "options::optional")]
    pub workload: Option<String>,
    /// Replay only the first N requests
    #[arg(long, value_name = "N")]
    #[serde(deserialize_with = "options::optional")]
    pub max_requests: Option<usize>,
    /// Re-time arrivals as a Poisson process at this rate, requests/s [default: keep trace timestamps]
    #[arg(long, value_name = "RPS")]
    #[serde(deserialize_with = "options::optional")]
    pub rate: Option<f64>,
    /// Multiply every input and output length by this factor
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    #[serde(deserialize_with = "options::scalar")]
    pub length_scale: f64,
    /// Seed of every random choice (arrivals, adapter assignment)
    #[arg(long, default_value_t = 0)]
    #[serde(deserialize_with = "options::scalar")]
    pub seed: u64,

    /// Base model: llama-7b, llama-13b, llama-30b, llama-70b
    #[arg(long, default_value = "llama-7b")]
    #[serde(deserialize_with = "options::scalar")]
    pub model: String,
    /// GPU: a10g, a40, a100-40gb, a100-80gb, h100-80gb
    #[arg(long, default_value = "a40")]
    #[serde(deserialize_with = "options::scalar")]
    pub gpu: String,
    /// Override the GPU's memory, GiB (the paper also runs 24 and 48)
    #[arg(long, value_name = "GIB")]
    #[serde(deserialize_with = "options::optional")]
    pub gpu_mem_gib: Option<f64>,
    /// Fraction of GPU memory the server may use (weights + pool); the rest is activations and workspace
    #[arg(long, default_value_t = 0.9, value_name = "F")]
    #[serde(deserialize_with = "options::scalar")]
    pub mem_util: f64,
    /// Size the KV + adapter pool directly, in token slots (overrides the memory arithmetic)
    #[arg(long, value_name = "SLOTS")]
    #[serde(deserialize_with = "options::optional")]
    pub pool_tokens: Option<u64>,

    /// Number of LoRA adapters (0 = base model only)
    #[arg(long, default_value_t = 100)]
    #[serde(deserialize_with = "options::scalar")]
    pub adapters: u32,
    /// Adapter ranks, dealt round-robin over the adapters
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128")]
    #[serde(deserialize_with = "options::list")]
    pub ranks: Vec<u32>,
    /// Popularity exponent within a rank: weight (j+1)^-alpha; 0 = uniform, 1 = Zipf
    #[arg(long, default_value_t = 1.0, value_name = "ALPHA")]
    #[serde(deserialize_with = "options::scalar")]
    pub popularity: f64,
    /// How requests pick adapters: paper (rank uniform, --popularity within a rank) | zipf[alpha=A] (over all
    /// adapters) | trace[by=adapter|tenant] (the trace's id column) | tenants[model=m-large,day=0,start=H,
    /// speedup=X|auto,lengths=true,arrivals=true,rates=FILE,length_data=FILE] (ServeGen tenants; see
    /// docs/workloads.md)
    #[arg(long, default_value = "paper", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub adapter_model: String,
    /// How to read --trace: auto | azure | csv[time=COL,input=COL,output=COL,adapter=COL,tenant=COL,
    /// unit=s|ms|us|ns|datetime,spread=SECONDS,sort=true,zeros=error|skip|one,delim=..] | jsonl[...]
    #[arg(long, default_value = "auto", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub trace_format: String,
    /// Arrival process used with --rate: poisson | gamma[cv=C] | scale (compress the trace's timestamps to
    /// the rate, keeping its burst shape)
    #[arg(long, default_value = "poisson", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub arrivals: String,

    /// Cost model spec: analytic[compute_eff=..,mem_eff=..,lora_eff=..,overhead_us=..,h2d_eff=..,
    /// copy_latency_us=..,per_layer_copies=..] or, with --profile, profile[load=METHOD]
    #[arg(long, value_name = "SPEC")]
    #[serde(deserialize_with = "options::optional")]
    pub cost: Option<String>,
    /// Cost profile (JSON, docs/profile-schema.md): an engine profile fitted by `calibrate fit` (e.g.
    /// calibrate/profiles/slora-a100-80gb-llama-7b.json) or tables measured by `calibrate`
    #[arg(long, value_name = "FILE")]
    #[serde(deserialize_with = "options::optional")]
    pub profile: Option<PathBuf>,
    /// Use a profile made for another model or GPU than the run's (otherwise an error)
    #[arg(long)]
    #[serde(deserialize_with = "options::scalar")]
    pub allow_profile_mismatch: bool,

    /// Scheduler spec (see `sim policies`)
    #[arg(long, default_value = "fifo", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub scheduler: String,
    /// Cache policy spec (see `sim policies`)
    #[arg(long, default_value = "none", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub cache: String,
    /// Output-length predictor the schedulers see: oracle, noisy[accuracy=A]
    #[arg(long, default_value = "oracle", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub predictor: String,

    /// S-LoRA: decode steps between merges of new requests
    #[arg(long, default_value_t = 10)]
    #[serde(deserialize_with = "options::scalar")]
    pub max_wait_tokens: u32,
    /// Most requests in the running batch (S-LoRA's running_max_req_size)
    #[arg(long, default_value_t = 1000)]
    #[serde(deserialize_with = "options::scalar")]
    pub max_batch: u32,
    /// Most prompt tokens in one prefill iteration (S-LoRA's batch_max_tokens); a longer prompt is rejected
    /// [default: max(pool / 6, 3072), S-LoRA's rule]
    #[arg(long, value_name = "N")]
    #[serde(deserialize_with = "options::optional")]
    pub max_prefill_tokens: Option<u64>,
    /// Reject prompts longer than this (S-LoRA's max_req_input_len; 0 = no limit)
    #[arg(long, default_value_t = 2048, value_name = "N")]
    #[serde(deserialize_with = "options::scalar")]
    pub max_input_tokens: u64,
    /// Reject requests whose prompt + output exceeds this (S-LoRA's max_req_total_len; 0 = no limit)
    #[arg(long, default_value_t = 3072, value_name = "N")]
    #[serde(deserialize_with = "options::scalar")]
    pub max_total_tokens: u64,
    /// How an adapter crosses PCIe: slora (each layer's A+B block copied twice, per layer, pinned: S-LoRA's
    /// load_lora_A/B) | once[per_layer=true,pinned=true] (one pass)
    #[arg(long, default_value = "slora", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub adapter_load: String,
    /// An idle server polls its queue at this interval, ms (S-LoRA's router sleeps 10 ms; 0 = admit on
    /// arrival)
    #[arg(long, default_value_t = 10.0, value_name = "MS")]
    #[serde(deserialize_with = "options::scalar")]
    pub idle_poll_ms: f64,
    /// Output budget reserved at admission: `oracle` (true length) or `max:N` (N tokens, at least the true length)
    #[arg(long, default_value = "oracle")]
    #[serde(deserialize_with = "options::scalar")]
    pub reserve: String,
    /// Adapter prefetch: none (S-LoRA's paper runs); slora[steps=5+7] (S-LoRA's --prefetch: at decode steps 5
    /// and 7 after a merge, the next FIFO batch's adapters); queued[window=N] (after each merge, adapters of
    /// the next N waiting requests); histogram[window=N,horizon_s=H,threshold=P,max=M] (also adapters whose
    /// next request arrives within H s with probability >= P); see `sim policies`
    #[arg(long, default_value = "none", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub prefetch: String,

    /// TTFT objective, seconds
    #[arg(long, default_value_t = 5.0)]
    #[serde(deserialize_with = "options::scalar")]
    pub ttft_slo: f64,
    /// Time-between-tokens objective, seconds
    #[arg(long, default_value_t = 0.15)]
    #[serde(deserialize_with = "options::scalar")]
    pub tbt_slo: f64,

    /// Tensor parallelism: GPUs per replica (1, 2, 4, 8); compute, memory and adapter loads are sharded over
    /// them, with two all-reduces per layer
    #[arg(long, default_value_t = 1, value_name = "N")]
    #[serde(deserialize_with = "options::scalar")]
    pub tp: u32,
    /// GPU-to-GPU link of a TP replica: auto (NVLink on A100/H100, on A40 for pairs; else PCIe) |
    /// nvlink[bw_gbps=..,latency_us=..,eff=..] | pcie[...] | FILE.json (measured figures)
    #[arg(long, default_value = "auto", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub interconnect: String,
    /// Many replicas behind a router: N replicas of --gpu, or GPU:COUNT[:TP],... (heterogeneous); see
    /// docs/fleet.md
    #[arg(long, value_name = "SPEC")]
    #[serde(deserialize_with = "options::optional")]
    pub replicas: Option<String>,
    /// Router in front of the replicas (see `sim policies`)
    #[arg(long, default_value = "least-outstanding", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub router: String,
    /// Threads of a fleet run (results do not depend on it)
    #[arg(long, default_value_t = 1, value_name = "N")]
    #[serde(deserialize_with = "options::scalar")]
    pub fleet_threads: usize,
    /// A fleet's sample interval (load imbalance, adapter replication), simulated seconds
    #[arg(long, default_value_t = 1.0, value_name = "S")]
    #[serde(deserialize_with = "options::scalar")]
    pub sample_s: f64,
    /// Fleet streaming: keep no per-request records; percentiles from quantile sketches (1% relative
    /// error) and one row per request written to FILE as it finishes
    #[arg(long, value_name = "FILE")]
    #[serde(deserialize_with = "options::optional")]
    pub stream: Option<PathBuf>,
}

impl Default for RunArgs {
    /// The defaults of `sim run` (the paper's setup on the embedded trace), as clap declares them.
    fn default() -> RunArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: RunArgs,
        }
        <P as clap::Parser>::parse_from(["sim"]).a
    }
}

impl RunArgs {
    pub fn defaults() -> RunArgs {
        RunArgs::default()
    }

    /// The defaults with `options` (flag names without dashes, values as JSON or flag text) applied in order.
    /// An unknown name or a bad value is one line naming the option.
    pub fn with_options<'a>(
        options: impl IntoIterator<Item = (&'a str, Value)>,
    ) -> std::result::Result<RunArgs, String> {
        let mut v = serde_json::to_value(RunArgs::default()).expect("options serialise");
        let map = v.as_object_mut().expect("an object");
        for (k, val) in options {
            if !map.contains_key(k) {
                return Err(format!("unknown option '--{k}'"));
            }
            // Check each option alone so the message names it.
            let mut one = Map::new();
            one.insert(k.to_string(), val.clone());
            serde_json::from_value::<RunArgs>(Value::Object(one))
                .map_err(|e| format!("--{k}: {e}"))?;
            map.insert(k.to_string(), val);
        }
        serde_json::from_value(v).map_err(|e| e.to_string())
    }
}

/// `--adapter-load`: `slora` | `once[per_layer=true,pinned=true]`.
fn parse_load_path(text: &str, model: &ModelSpec) -> Result<LoadPath> {
    let mut s = Spec::parse(text).map_err(|e| e.context("--adapter-load"))?;
    let path = match s.name.as_str() {
        "slora" => LoadPath::slora(model.layers),
        "once" => {
            let per_layer: bool = s.get("per_layer", true)?;
            LoadPath {
                passes: 1,
                copies_per_pass: if per_layer { 8 * model.layers } else { 1 },
                pinned: s.get("pinned", true)?,
            }
        }
        other => {
            return Err(Error::msg(format!(
                "--adapter-load: unknown load path '{other}'; valid: slora, once[per_layer=..,pinned=..]"
            )));
        }
    };
    s.finish(&["per_layer", "pinned"])
        .map_err(|e| e.context("--adapter-load"))?;
    Ok(path)
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
        return Err(Error::msg(format!(
            "{} ({:.1} GiB of weights) does not fit in {:.1} GiB x {} of GPU memory",
            model.name,
            model.weight_bytes() as f64 / (1u64 << 30) as f64,
            mem / (1u64 << 30) as f64,
            args.mem_util
        )));
    }
    Ok((pool / model.kv_slot_bytes() as f64) as u64)
}

impl RunArgs {
    /// Resolves the options into the typed configuration the core runs (every value checked once, here).
    pub fn resolve(&self) -> Result<RunConfig> {
        let model = ModelSpec::by_name(&self.model)?;
        let gpu = GpuSpec::by_name(&self.gpu)?;
        let workload = match &self.workload {
            None => None,
            Some(text) => {
                if self.trace.is_some() {
                    return Err(Error::msg("--workload and --trace exclude each other"));
                }
                if self.rate.is_some() {
                    return Err(Error::msg(
                        "--workload sets its own arrivals: give its rate as slora[rate=R], not --rate",
                    ));
                }
                Some(SloraSource::parse(text)?)
            }
        };
        let transform = TraceOptions {
            max_requests: self.max_requests,
            length_scale: self.length_scale,
            poisson_rate: self.rate,
            arrivals: Arrivals::parse(&self.arrivals)?,
        };
        let adapters = match &workload {
            // S-LoRA's generator numbers its adapters; adapter k has rank ranks[k % len].
            Some(w) => AdapterOptions {
                count: w.spec.num_adapters,
                ranks: self.ranks.clone(),
                popularity_alpha: self.popularity,
                model: AdapterModel::Trace {
                    tenant: false,
                    index: true,
                },
            },
            None => AdapterOptions {
                count: self.adapters,
                ranks: self.ranks.clone(),
                popularity_alpha: self.popularity,
                model: AdapterModel::parse(&self.adapter_model)?,
            },
        };
        let tp = crate::fleet_args::tp(self, gpu, self.tp)?;
        let cost = cost::build_tp(
            self.cost.as_deref(),
            self.profile.as_deref(),
            model,
            gpu,
            self.allow_profile_mismatch,
            &tp,
        )?;
        let mut engine = EngineConfig::slora(pool_slots(self, model, gpu)?, model.layers);
        engine.max_wait_tokens = self.max_wait_tokens;
        engine.max_batch = self.max_batch.max(1);
        if let Some(n) = self.max_prefill_tokens {
            engine.max_prefill_tokens = n;
        }
        let limit = |n: u64| (n > 0).then_some(n);
        engine.max_input_tokens = limit(self.max_input_tokens);
        engine.max_total_tokens = limit(self.max_total_tokens);
        engine.load_path = parse_load_path(&self.adapter_load, model)?;
        if !(self.idle_poll_ms >= 0.0 && self.idle_poll_ms.is_finite()) {
            return Err(Error::msg(format!(
                "--idle-poll-ms must be >= 0, got {}",
                self.idle_poll_ms
            )));
        }
        engine.idle_poll_ns = (self.idle_poll_ms * 1e6).round() as u64;
        engine.reserve = Reserve::parse(&self.reserve)?;
        for (name, v) in [("--ttft-slo", self.ttft_slo), ("--tbt-slo", self.tbt_slo)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::msg(format!(
                    "{name} must be a positive number of seconds, got {v}"
                )));
            }
        }
        let fleet = crate::fleet_args::fleet(self, model, gpu, &engine, &cost, &tp)?;
        let cfg = RunConfig {
            trace: self.trace.clone(),
            workload,
            trace_format: ReadSpec::parse(&self.trace_format)?,
            transform,
            seed: self.seed,
            model,
            gpu,
            adapters,
            cost,
            engine,
            scheduler: self.scheduler.clone(),
            cache: self.cache.clone(),
            prefetch: self.prefetch.clone(),
            predictor: self.predictor.clone(),
            slo: Slo {
                ttft_ns: (self.ttft_slo * 1e9).round() as u64,
                tbt_ns: (self.tbt_slo * 1e9).round() as u64,
            },
            tp,
            fleet,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}

/// Loads the trace and runs the simulation.
pub fn execute(args: &RunArgs) -> Result<Report> {
    let cfg = args.resolve()?;
    let trace = cfg.load_trace()?;
    run::run(&cfg, trace, None)
}

/// Runs the simulation on an already loaded trace (before `args`' trace options are applied).
pub fn execute_on(args: &RunArgs, trace: Trace) -> Result<Report> {
    run::run(&args.resolve()?, trace, None)
}
