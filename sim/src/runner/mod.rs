//! `sim run`'s options (`RunArgs`) and their resolution into the core's typed `RunConfig`. `sim run`, the
//! benchmark and the tests all go through `execute`. The options and their ranges are here; `resolve` turns
//! them into the core's configuration; `physics` chooses the cost model and sizes the memory pool.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
pub use sim_core::run::{self, Report, RunConfig};

use crate::options::{self, Range};
use sim_core::error::{Error, Result};
use sim_core::length::LengthRule;
use sim_core::trace::Trace;

mod physics;
mod resolve;

pub use physics::{cost_model, default_profile, pool_slots};

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
