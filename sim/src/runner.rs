//! `sim run`'s options (`RunArgs`) and their resolution into the core's typed `RunConfig`. `sim run`, the
//! benchmark and the tests all go through `execute`.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
pub use sim_core::run::{self, Report, RunConfig};

use crate::options::{self, Range};
use sim_core::cost;
use sim_core::engine::{EngineConfig, LoadPath, Reserve};
use sim_core::error::{Error, Result};
use sim_core::length::LengthRule;
use sim_core::model::{GpuSpec, LoraTargets, ModelSpec};
use sim_core::slo::Slo;
use sim_core::spec::Spec;
use sim_core::trace::arrivals::Arrivals;
use sim_core::trace::{ReadSpec, Trace, TraceOptions};
use sim_core::workload::slora::SloraSource;
use sim_core::workload::{AdapterModel, AdapterOptions};

/// The valid values of `RunArgs`' numeric options, for the flags' value parsers and for `RunArgs::check`
/// (values from JSON). Upper bounds keep a run meaningful: a rate of 1e30 req/s puts every arrival at one
/// nanosecond, a length scale of 1e6 overflows token counts.
pub mod range {
    use crate::options::Range::{self, *};
    pub const MAX_REQUESTS: Range = AtLeast(1);
    pub const RATE: Range = Positive(1e6);
    pub const LENGTH_SCALE: Range = Positive(1000.0);
    pub const SEED: Range = AtLeast(0);
    pub const GPU_MEM_GIB: Range = Positive(4096.0);
    pub const MEM_UTIL: Range = Fraction;
    pub const POOL_TOKENS: Range = AtLeast(1);
    pub const ADAPTERS: Range = Between(0, 1_000_000);
    pub const RANK: Range = Between(1, 65_536);
    pub const POPULARITY: Range = NonNegative(100.0);
    pub const MAX_WAIT_TOKENS: Range = AtLeast(0);
    pub const MAX_BATCH: Range = AtLeast(1);
    pub const MAX_PREFILL_TOKENS: Range = AtLeast(1);
    /// 0 = no limit.
    pub const LENGTH_LIMIT: Range = AtLeast(0);
    pub const IDLE_POLL_MS: Range = NonNegative(1e6);
    pub const SLO_S: Range = Positive(1e6);
    /// Tensor-parallel degree (a power of two, checked when the run is built).
    pub const TP: Range = Between(1, 8);
    pub const FLEET_THREADS: Range = Between(1, 1024);
    pub const SAMPLE_S: Range = Positive(1e6);
    pub const MEMBER: Range = Between(0, 100_000);
}

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
    #[arg(long, value_name = "N", value_parser = options::whole::<usize>(range::MAX_REQUESTS), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub max_requests: Option<usize>,
    /// Re-time arrivals as a Poisson process at this rate, requests/s [default: keep trace timestamps]
    #[arg(long, value_name = "RPS", value_parser = options::real(range::RATE), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub rate: Option<f64>,
    /// Scale input and output lengths: a factor F, peak[rate=R] (the largest F <= 1 whose peak KV memory
    /// fits the pool) or knee[rate=R,p=P] (S-LoRA's P-th percentile TTFT at R RPS equals the TTFT SLO)
    #[arg(long, default_value = "1", value_name = "F|RULE", value_parser = length_rule, allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub length_scale: LengthRule,
    /// Seed of every random choice (arrivals, adapter assignment)
    #[arg(long, default_value_t = 0, value_parser = options::whole::<u64>(range::SEED), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub seed: u64,

    #[arg(long, default_value = "llama-7b", value_name = "NAME|FILE", help = sim_core::model::models_help())]
    #[serde(deserialize_with = "options::scalar")]
    pub model: String,
    /// The projections each adapter adapts: q,k,v,o (S-LoRA's), any of q,k,v,o,gate,up,down (or PEFT's
    /// q_proj, ... names), or all-linear; sizes the adapters and their LoRA work
    #[arg(long, default_value = "q,k,v,o", value_name = "LIST")]
    #[serde(deserialize_with = "options::scalar")]
    pub lora_targets: String,
    #[arg(long, default_value = "a40", help = sim_core::model::gpus_help())]
    #[serde(deserialize_with = "options::scalar")]
    pub gpu: String,
    /// Override the GPU's memory, GiB (the paper also runs 24 and 48)
    #[arg(long, value_name = "GIB", value_parser = options::real(range::GPU_MEM_GIB), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub gpu_mem_gib: Option<f64>,
    /// Fraction of GPU memory the server may use (weights + pool); the rest is activations and workspace
    #[arg(long, default_value_t = 0.9, value_name = "F", value_parser = options::real(range::MEM_UTIL), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub mem_util: f64,
    /// Size the KV + adapter pool directly, in token slots (overrides the memory arithmetic)
    #[arg(long, value_name = "SLOTS", value_parser = options::whole::<u64>(range::POOL_TOKENS), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub pool_tokens: Option<u64>,

    /// Number of LoRA adapters (0 = base model only)
    #[arg(long, default_value_t = 100, value_parser = options::whole::<u32>(range::ADAPTERS), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub adapters: u32,
    /// Adapter ranks, dealt round-robin over the adapters
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128", value_parser = options::whole::<u32>(range::RANK), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::list")]
    pub ranks: Vec<u32>,
    /// Popularity exponent within a rank: weight (j+1)^-alpha; 0 = uniform, 1 = Zipf
    #[arg(long, default_value_t = 1.0, value_name = "ALPHA", value_parser = options::real(range::POPULARITY), allow_negative_numbers = true)]
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
    /// Cost profile (JSON, docs/profile-schema.md): an engine profile fitted by `sim fit` (e.g.
    /// calibrate/profiles/slora-a100-80gb-llama-7b.json, or a shipped one by name: a40-llama-7b,
    /// slora-a10g-llama-7b, ...) or tables measured by `calibrate`
    #[arg(long, value_name = "FILE")]
    #[serde(deserialize_with = "options::optional")]
    pub profile: Option<PathBuf>,
    /// Use a profile made for another model or GPU than the run's (otherwise an error)
    #[arg(long)]
    #[serde(deserialize_with = "options::scalar")]
    pub allow_profile_mismatch: bool,
    /// Run member K of the cost profile's plausible parameter set (0 = the best fit; an analytic model has
    /// one member): `sim run --physics ensemble` runs them all
    #[arg(long, value_name = "K", value_parser = options::whole::<usize>(range::MEMBER), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub member: Option<usize>,

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
    #[arg(long, default_value_t = 10, value_parser = options::whole::<u32>(range::MAX_WAIT_TOKENS), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub max_wait_tokens: u32,
    /// Whose merge cadence: engine (every --max-wait-tokens decode steps, for every scheduler) | policy (a
    /// scheduler that declares its own runs at it: Chameleon's mlq every iteration, `mlq[merge=N]`; the
    /// others, S-LoRA's fifo included, at --max-wait-tokens)
    #[arg(long, default_value = "engine", value_name = "WHOSE", value_parser = ["engine", "policy"])]
    #[serde(deserialize_with = "options::scalar")]
    pub merge_cadence: String,
    /// Most requests in the running batch (S-LoRA's running_max_req_size)
    #[arg(long, default_value_t = 1000, value_parser = options::whole::<u32>(range::MAX_BATCH), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub max_batch: u32,
    /// Most prompt tokens in one prefill iteration (S-LoRA's batch_max_tokens); a longer prompt is rejected
    /// [default: max(pool / 6, 3072), S-LoRA's rule]
    #[arg(long, value_name = "N", value_parser = options::whole::<u64>(range::MAX_PREFILL_TOKENS), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub max_prefill_tokens: Option<u64>,
    /// Reject prompts longer than this (S-LoRA's max_req_input_len; 0 = no limit)
    #[arg(long, default_value_t = 2048, value_name = "N", value_parser = options::whole::<u64>(range::LENGTH_LIMIT), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub max_input_tokens: u64,
    /// Reject requests whose prompt + output exceeds this (S-LoRA's max_req_total_len; 0 = no limit)
    #[arg(long, default_value_t = 3072, value_name = "N", value_parser = options::whole::<u64>(range::LENGTH_LIMIT), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub max_total_tokens: u64,
    /// Lift S-LoRA's server limits at once: no input or input + output limit, and a prefill budget of the
    /// model's context (unbounded with --context-tokens 0) unless --max-prefill-tokens is given. The
    /// model's context stays
    #[arg(long)]
    #[serde(deserialize_with = "options::scalar")]
    pub no_server_limits: bool,
    /// Reject requests whose prompt + output exceeds the model's context window; 0 = no limit (a
    /// long-context variant) [default: the model's, 2048 for LLaMA-1 7B/13B/30B]
    #[arg(long, value_name = "N", value_parser = options::whole::<u64>(range::LENGTH_LIMIT), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::optional")]
    pub context_tokens: Option<u64>,
    /// How an adapter crosses PCIe: slora (each layer's A+B block copied twice, per layer, pinned: S-LoRA's
    /// load_lora_A/B) | once[per_layer=true,pinned=true] (one pass)
    #[arg(long, default_value = "slora", value_name = "SPEC")]
    #[serde(deserialize_with = "options::scalar")]
    pub adapter_load: String,
    /// An idle server polls its queue at this interval, ms (S-LoRA's router sleeps 10 ms; 0 = admit on
    /// arrival)
    #[arg(long, default_value_t = 10.0, value_name = "MS", value_parser = options::real(range::IDLE_POLL_MS), allow_negative_numbers = true)]
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
    /// S-LoRA's --no-lora-compute: adapters are loaded but no LoRA kernel runs (`model_rpc.py` forward)
    #[arg(long)]
    #[serde(deserialize_with = "options::scalar")]
    pub no_lora_compute: bool,
    /// S-LoRA's --bmm: LoRA by padded batched GEMMs over per-iteration copies of the batch's adapters
    /// (`models/bmm/lora_bmm_infer.py`); each adapter loaded in one pass, 8 copies per layer
    #[arg(long)]
    #[serde(deserialize_with = "options::scalar")]
    pub bmm: bool,
    /// S-LoRA's --no-mem-pool: adapters in their own buffers outside the unified pool, re-packed on the GPU
    /// whenever one is added or freed (`naive_infer_adapter.py`; admission still counts them, and S-LoRA
    /// refuses --prefetch with it)
    #[arg(long)]
    #[serde(deserialize_with = "options::scalar")]
    pub no_mem_pool: bool,

    /// TTFT objective, seconds
    #[arg(long, default_value_t = 5.0, value_parser = options::real(range::SLO_S), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub ttft_slo: f64,
    /// Time-between-tokens objective, seconds
    #[arg(long, default_value_t = 0.15, value_parser = options::real(range::SLO_S), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub tbt_slo: f64,

    /// Tensor parallelism: GPUs per replica (1, 2, 4, 8); compute, memory and adapter loads are sharded over
    /// them, with two all-reduces per layer
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = options::whole::<u32>(range::TP), allow_negative_numbers = true)]
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
    #[arg(long, default_value_t = 1, value_name = "N", value_parser = options::whole::<usize>(range::FLEET_THREADS), allow_negative_numbers = true)]
    #[serde(deserialize_with = "options::scalar")]
    pub fleet_threads: usize,
    /// A fleet's sample interval (load imbalance, adapter replication), simulated seconds
    #[arg(long, default_value_t = 1.0, value_name = "S", value_parser = options::real(range::SAMPLE_S), allow_negative_numbers = true)]
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

/// `e` naming `flag` first (unless it already does): every bad value is reported against its option.
fn flagged(flag: &'static str) -> impl Fn(Error) -> Error {
    move |e| {
        if e.to_string().starts_with(flag) {
            e
        } else {
            e.context(flag)
        }
    }
}

impl RunArgs {
    /// The numeric options against their ranges (`range`): what the flags' parsers check, for values that
    /// came from JSON. One line naming the option.
    pub fn check(&self) -> Result<()> {
        let named = |name: &str, r: Range, v: f64| {
            r.check(v).map_err(|e| Error::msg(format!("--{name}: {e}")))
        };
        let some = |name: &str, r: Range, v: Option<f64>| v.map_or(Ok(()), |v| named(name, r, v));
        some(
            "max-requests",
            range::MAX_REQUESTS,
            self.max_requests.map(|n| n as f64),
        )?;
        some("rate", range::RATE, self.rate)?;
        some("member", range::MEMBER, self.member.map(|n| n as f64))?;
        if let LengthRule::Fixed(f) = self.length_scale {
            named("length-scale", range::LENGTH_SCALE, f)?;
        }
        some("gpu-mem-gib", range::GPU_MEM_GIB, self.gpu_mem_gib)?;
        named("mem-util", range::MEM_UTIL, self.mem_util)?;
        some(
            "pool-tokens",
            range::POOL_TOKENS,
            self.pool_tokens.map(|n| n as f64),
        )?;
        named("adapters", range::ADAPTERS, self.adapters as f64)?;
        if self.ranks.is_empty() {
            return Err(Error::msg("--ranks: give at least one rank"));
        }
        for &r in &self.ranks {
            named("ranks", range::RANK, r as f64)?;
        }
        named("popularity", range::POPULARITY, self.popularity)?;
        named("max-batch", range::MAX_BATCH, self.max_batch as f64)?;
        some(
            "max-prefill-tokens",
            range::MAX_PREFILL_TOKENS,
            self.max_prefill_tokens.map(|n| n as f64),
        )?;
        named("idle-poll-ms", range::IDLE_POLL_MS, self.idle_poll_ms)?;
        named("ttft-slo", range::SLO_S, self.ttft_slo)?;
        named("tbt-slo", range::SLO_S, self.tbt_slo)?;
        named("tp", range::TP, self.tp as f64)?;
        named(
            "fleet-threads",
            range::FLEET_THREADS,
            self.fleet_threads as f64,
        )?;
        named("sample-s", range::SAMPLE_S, self.sample_s)
    }

    /// Resolves the options into the typed configuration the core runs (every value checked once, here).
    pub fn resolve(&self) -> Result<RunConfig> {
        self.check()?;
        let model = ModelSpec::resolve(&self.model)
            .map_err(flagged("--model"))?
            .with_lora_targets(LoraTargets::parse(&self.lora_targets)?);
        let gpu = GpuSpec::by_name(&self.gpu).map_err(flagged("--gpu"))?;
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
                Some(SloraSource::parse(text).map_err(flagged("--workload"))?)
            }
        };
        let transform = TraceOptions {
            max_requests: self.max_requests,
            length_scale: 1.0,
            poisson_rate: self.rate,
            arrivals: Arrivals::parse(&self.arrivals).map_err(flagged("--arrivals"))?,
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
                model: AdapterModel::parse(&self.adapter_model)
                    .map_err(flagged("--adapter-model"))?,
            },
        };
        let tp = crate::fleet_args::tp(self, gpu, self.tp)?;
        let cost = cost_model(self, model, gpu, &tp)?;
        let mut engine = EngineConfig::slora(pool_slots(self, model, gpu)?, model.layers);
        // An adapter larger than the pool could never load: say so here, not as a length rule that fails.
        if adapters.count > 0
            && let Some(&r) = adapters
                .ranks
                .iter()
                .find(|&&r| model.adapter_slots(r) > engine.pool_slots)
        {
            return Err(Error::msg(format!(
                "--ranks: an adapter of rank {r} takes {} pool slots ({:.2} GiB on {}), more than the whole \
                 pool of {} slots; no request using it could run",
                model.adapter_slots(r),
                model.adapter_bytes(r) as f64 / (1u64 << 30) as f64,
                model.name,
                engine.pool_slots
            )));
        }
        engine.max_wait_tokens = self.max_wait_tokens;
        engine.policy_cadence = self.merge_cadence == "policy";
        engine.max_batch = self.max_batch;
        if let Some(n) = self.max_prefill_tokens {
            engine.max_prefill_tokens = n;
        }
        let limit = |n: u64| (n > 0).then_some(n);
        engine.max_input_tokens = limit(self.max_input_tokens);
        engine.max_total_tokens = limit(self.max_total_tokens);
        engine.context_tokens = limit(self.context_tokens.unwrap_or(model.context_tokens));
        if self.no_server_limits {
            let d = RunArgs::default();
            for (flag, v, default) in [
                (
                    "--max-input-tokens",
                    self.max_input_tokens,
                    d.max_input_tokens,
                ),
                (
                    "--max-total-tokens",
                    self.max_total_tokens,
                    d.max_total_tokens,
                ),
            ] {
                if v != default && v != 0 {
                    return Err(Error::msg(format!(
                        "--no-server-limits and {flag} {v} exclude each other"
                    )));
                }
            }
            engine.max_input_tokens = None;
            engine.max_total_tokens = None;
            if self.max_prefill_tokens.is_none() {
                engine.max_prefill_tokens = engine
                    .max_prefill_tokens
                    .max(engine.context_tokens.unwrap_or(u64::MAX));
            }
        }
        engine.load_path =
            parse_load_path(&self.adapter_load, model).map_err(flagged("--adapter-load"))?;
        // --bmm loads each adapter's eight tensors per layer once (`load_to_gpu(bmm=True)`).
        if self.bmm && self.adapter_load == "slora" {
            engine.load_path = parse_load_path("once[per_layer=true]", model)?;
        }
        if self.no_mem_pool && self.prefetch != "none" {
            return Err(Error::msg(format!(
                "--no-mem-pool and --prefetch {} exclude each other (S-LoRA's NaiveInferAdapter asserts no \
                 prefetch)",
                self.prefetch
            )));
        }
        if self.no_lora_compute && self.bmm {
            return Err(Error::msg(
                "--no-lora-compute and --bmm exclude each other (no LoRA kernel runs at all)",
            ));
        }
        if !(self.idle_poll_ms >= 0.0 && self.idle_poll_ms.is_finite()) {
            return Err(Error::msg(format!(
                "--idle-poll-ms must be >= 0, got {}",
                self.idle_poll_ms
            )));
        }
        engine.idle_poll_ns = (self.idle_poll_ms * 1e6).round() as u64;
        engine.reserve = Reserve::parse(&self.reserve).map_err(flagged("--reserve"))?;
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
            trace_format: ReadSpec::parse(&self.trace_format).map_err(flagged("--trace-format"))?,
            length: self.length_scale,
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

/// `sim run`'s default job (README, "The default run"): the paper's medium load on the embedded
/// conversation trace. (The physics is not part of it: every run gets the shipped profile, `cost_model`.)
/// `given(id)` says whether the user set option `id` (a field name); only what was not given changes.
/// Returns the line `sim run` prints about it, or `None` when the user chose a trace or a workload.
pub fn default_setup(args: &mut RunArgs, given: &dyn Fn(&str) -> bool) -> Option<String> {
    if given("trace") || given("workload") {
        return None;
    }
    let mut set = Vec::new();
    if !given("rate") {
        args.rate = Some(DEFAULT_RATE);
        set.push(format!("--rate {DEFAULT_RATE}"));
    }
    if !given("length_scale") {
        args.length_scale = DEFAULT_LENGTH;
        set.push(format!("--length-scale {DEFAULT_LENGTH}"));
    }
    (!set.is_empty()).then(|| {
        format!(
            "default setup (the paper's medium load on the embedded trace): {}; give --trace, --workload or \
             these options to change it",
            set.join(" ")
        )
    })
}

/// The paper's medium load (Chameleon's Figs. 11-13 use 6, 8 and 9 req/s).
pub const DEFAULT_RATE: f64 = 8.0;
/// Lengths scaled so that S-LoRA's P99 TTFT reaches the SLO at 8.6 req/s, between the paper's medium and
/// high loads (docs/experiments.md, "Length scale").
pub const DEFAULT_LENGTH: LengthRule = LengthRule::Knee {
    rate: 8.6,
    p: 99.0,
    seeds: 1,
};

/// `--length-scale`: a rule, or a factor within `range::LENGTH_SCALE`.
fn length_rule(s: &str) -> Result<LengthRule, String> {
    let rule: LengthRule = s.parse().map_err(|e: Error| e.to_string())?;
    if let LengthRule::Fixed(f) = rule {
        range::LENGTH_SCALE.check(f)?;
    }
    Ok(rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every numeric option's out-of-range values, refused alike as a flag and as a JSON value.
    const BAD: &[(&str, &[&str])] = &[
        ("max-requests", &["0", "-1", "1.5"]),
        ("rate", &["0", "-1", "1e30", "inf", "NaN"]),
        ("length-scale", &["0", "-1", "1e6"]),
        ("seed", &["-1", "0.5"]),
        ("gpu-mem-gib", &["0", "-24"]),
        ("mem-util", &["0", "1.5", "-0.1"]),
        ("pool-tokens", &["0", "-5"]),
        ("adapters", &["-1", "2000000"]),
        ("ranks", &["0", "-8", "100000"]),
        ("popularity", &["-1", "1000"]),
        ("max-wait-tokens", &["-1"]),
        ("max-batch", &["0", "-1"]),
        ("max-prefill-tokens", &["0"]),
        ("max-input-tokens", &["-1"]),
        ("max-total-tokens", &["-1"]),
        ("context-tokens", &["-2048"]),
        ("idle-poll-ms", &["-1", "1e9"]),
        ("ttft-slo", &["0", "-1", "inf"]),
        ("tbt-slo", &["0", "-0.15"]),
        ("tp", &["0", "-1", "16"]),
        ("fleet-threads", &["0", "-1"]),
        ("sample-s", &["0", "-1"]),
        ("member", &["-1", "0.5", "1e9"]),
    ];

    #[derive(clap::Parser)]
    struct P {
        #[command(flatten)]
        a: RunArgs,
    }

    #[test]
    fn flags_and_json_values_share_each_options_range() {
        use clap::Parser;
        for (name, values) in BAD {
            for v in *values {
                let flag = format!("--{name}");
                let e = match P::try_parse_from(["sim", flag.as_str(), v]) {
                    Ok(p) => p.a.resolve().map(|_| ()).unwrap_err().to_string(),
                    Err(e) => e.to_string(),
                };
                assert!(e.contains(&flag), "flag {flag} {v}: {e}");
                let json = serde_json::Value::String(v.to_string());
                let e = match RunArgs::with_options([(*name, json)]) {
                    Ok(a) => a.resolve().map(|_| ()).unwrap_err().to_string(),
                    Err(e) => e,
                };
                assert!(e.contains(&flag), "JSON {name}: {v}: {e}");
            }
        }
        // Native JSON numbers take the same path.
        let e = RunArgs::with_options([("rate", serde_json::json!(-1))])
            .unwrap()
            .resolve()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "--rate: must be a number in (0, 1000000], got -1"
        );
        // Every numeric option of RunArgs is in the table.
        let numeric = serde_json::to_value(RunArgs::default()).unwrap();
        for (k, v) in numeric.as_object().unwrap() {
            let is_number = v.is_number()
                || v.as_array()
                    .is_some_and(|a| a.iter().all(|x| x.is_number()));
            let nullable_number = matches!(
                k.as_str(),
                "max-requests"
                    | "rate"
                    | "gpu-mem-gib"
                    | "pool-tokens"
                    | "max-prefill-tokens"
                    | "context-tokens"
            );
            if is_number || nullable_number {
                assert!(
                    BAD.iter().any(|(n, _)| n == k),
                    "{k} has no out-of-range case"
                );
            }
        }
    }
}
