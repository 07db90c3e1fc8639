//! One simulation run from CLI-shaped options: the glue between trace, workload, cost model, policies,
//! engine and metrics. `sim run`, the benchmark and the tests all go through `execute`.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{Map, Value, json};

use crate::cost::{self, CostModel};
use crate::engine::{Engine, EngineConfig, HistogramPrefetch, Reserve, RunOutput};
use crate::error::{Error, Result};
use crate::metrics::{self, Slo};
use crate::model::{GpuSpec, ModelSpec};
use crate::policy::PolicyCtx;
use crate::predict;
use crate::spec::Spec;
use crate::trace::{Trace, TraceOptions};
use crate::workload::{AdapterOptions, Workload};
use crate::{cache, sched};

#[derive(Args, Clone, Debug)]
pub struct RunArgs {
    /// Trace file: CSV or JSON lines, plain or .gz, columns per --trace-format [default: the embedded Azure
    /// 2023 conversation trace]
    #[arg(long, value_name = "FILE")]
    pub trace: Option<PathBuf>,
    /// Replay only the first N requests
    #[arg(long, value_name = "N")]
    pub max_requests: Option<usize>,
    /// Re-time arrivals as a Poisson process at this rate, requests/s [default: keep trace timestamps]
    #[arg(long, value_name = "RPS")]
    pub rate: Option<f64>,
    /// Multiply every input and output length by this factor
    #[arg(long, default_value_t = 1.0, value_name = "F")]
    pub length_scale: f64,
    /// Seed of every random choice (arrivals, adapter assignment)
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Base model: llama-7b, llama-13b, llama-30b
    #[arg(long, default_value = "llama-7b")]
    pub model: String,
    /// GPU: a40, a100-40gb, a100-80gb, h100-80gb
    #[arg(long, default_value = "a40")]
    pub gpu: String,
    /// Override the GPU's memory, GiB (the paper also runs 24 and 48)
    #[arg(long, value_name = "GIB")]
    pub gpu_mem_gib: Option<f64>,
    /// Fraction of GPU memory the server may use (weights + pool); the rest is activations and workspace
    #[arg(long, default_value_t = 0.9, value_name = "F")]
    pub mem_util: f64,
    /// Size the KV + adapter pool directly, in token slots (overrides the memory arithmetic)
    #[arg(long, value_name = "SLOTS")]
    pub pool_tokens: Option<u64>,

    /// Number of LoRA adapters (0 = base model only)
    #[arg(long, default_value_t = 100)]
    pub adapters: u32,
    /// Adapter ranks, dealt round-robin over the adapters
    #[arg(long, value_delimiter = ',', default_value = "8,16,32,64,128")]
    pub ranks: Vec<u32>,
    /// Popularity exponent within a rank: weight (j+1)^-alpha; 0 = uniform, 1 = Zipf
    #[arg(long, default_value_t = 1.0, value_name = "ALPHA")]
    pub popularity: f64,
    /// How requests pick adapters: paper (rank uniform, --popularity within a rank) | zipf[alpha=A] (over all
    /// adapters) | trace[by=adapter|tenant] (the trace's id column) | tenants[model=m-large,day=0,start=H,
    /// speedup=X|auto,lengths=true,arrivals=true,rates=FILE,length_data=FILE] (ServeGen tenants; see
    /// docs/workloads.md)
    #[arg(long, default_value = "paper", value_name = "SPEC")]
    pub adapter_model: String,
    /// How to read --trace: auto | azure | csv[time=COL,input=COL,output=COL,adapter=COL,tenant=COL,
    /// unit=s|ms|us|ns|datetime,spread=SECONDS,sort=true,zeros=error|skip|one,delim=..] | jsonl[...]
    #[arg(long, default_value = "auto", value_name = "SPEC")]
    pub trace_format: String,
    /// Arrival process used with --rate: poisson | gamma[cv=C] | scale (compress the trace's timestamps to
    /// the rate, keeping its burst shape)
    #[arg(long, default_value = "poisson", value_name = "SPEC")]
    pub arrivals: String,

    /// Cost model spec: analytic[compute_eff=..,mem_eff=..,lora_eff=..,overhead_us=..,h2d_eff=..,
    /// copy_latency_us=..,per_layer_copies=..] or, with --profile, profile[load=METHOD]
    #[arg(long, value_name = "SPEC")]
    pub cost: Option<String>,
    /// Measured cost profile (JSON, schema in docs/profile-schema.md)
    #[arg(long, value_name = "FILE")]
    pub profile: Option<PathBuf>,

    /// Scheduler spec (see `sim policies`)
    #[arg(long, default_value = "fifo", value_name = "SPEC")]
    pub scheduler: String,
    /// Cache policy spec (see `sim policies`)
    #[arg(long, default_value = "none", value_name = "SPEC")]
    pub cache: String,
    /// Output-length predictor the schedulers see: oracle, noisy[accuracy=A]
    #[arg(long, default_value = "oracle", value_name = "SPEC")]
    pub predictor: String,

    /// S-LoRA: decode steps between merges of new requests
    #[arg(long, default_value_t = 10)]
    pub max_wait_tokens: u32,
    /// Most requests in the running batch
    #[arg(long, default_value_t = 1000)]
    pub max_batch: u32,
    /// Most prompt tokens in one prefill iteration (longer prompts are rejected)
    #[arg(long, default_value_t = 16384)]
    pub max_prefill_tokens: u64,
    /// Output budget reserved at admission: `oracle` (true length) or `max:N` (N tokens, at least the true length)
    #[arg(long, default_value = "oracle")]
    pub reserve: String,
    /// Adapter prefetch after each merge: none; queued[window=N] (adapters of the next N waiting requests,
    /// S-LoRA's next batch); histogram[window=N,horizon_s=H,threshold=P,max=M] (also adapters whose next
    /// request arrives within H s with probability >= P, by a per-adapter inter-arrival histogram)
    #[arg(long, default_value = "queued", value_name = "SPEC")]
    pub prefetch: String,

    /// TTFT objective, seconds
    #[arg(long, default_value_t = 5.0)]
    pub ttft_slo: f64,
    /// Time-between-tokens objective, seconds
    #[arg(long, default_value_t = 0.15)]
    pub tbt_slo: f64,
}

impl RunArgs {
    /// The defaults of `sim run` (the paper's setup on the embedded trace).
    pub fn defaults() -> RunArgs {
        #[derive(clap::Parser)]
        struct P {
            #[command(flatten)]
            a: RunArgs,
        }
        <P as clap::Parser>::parse_from(["sim"]).a
    }
}

pub struct Report {
    pub workload: Workload,
    pub output: RunOutput,
    pub summary: Map<String, Value>,
}

fn parse_reserve(s: &str) -> Result<Reserve> {
    match s.split_once(':') {
        None if s == "oracle" => Ok(Reserve::Oracle),
        Some(("max", n)) => n
            .parse()
            .ok()
            .filter(|&n: &u32| n > 0)
            .map(Reserve::Max)
            .ok_or_else(|| Error::msg(format!("--reserve max:N needs a positive N, got '{n}'"))),
        _ => Err(Error::msg(format!(
            "--reserve must be 'oracle' or 'max:N', got '{s}'"
        ))),
    }
}

fn parse_prefetch(text: &str) -> Result<(u32, Option<HistogramPrefetch>)> {
    let mut spec = Spec::parse(text)?;
    let window = spec.get("window", 16u32)?;
    let out = match spec.name.as_str() {
        "none" => (0, None),
        "queued" => (window, None),
        "histogram" => {
            let horizon_s: f64 = spec.get("horizon_s", 5.0)?;
            let threshold: f64 = spec.get("threshold", 0.5)?;
            let max = spec.get("max", 4u32)?;
            let horizon_ok = horizon_s.is_finite() && horizon_s > 0.0;
            if !horizon_ok || !(0.0..=1.0).contains(&threshold) {
                return Err(Error::msg(
                    "--prefetch histogram: need horizon_s > 0 and 0 <= threshold <= 1",
                ));
            }
            let h = HistogramPrefetch {
                horizon_ns: (horizon_s * 1e9) as u64,
                threshold,
                max,
            };
            (window, Some(h))
        }
        other => {
            return Err(Error::msg(format!(
                "unknown prefetch '{other}'; valid: none, queued[window=N], histogram[...]"
            )));
        }
    };
    spec.finish(&["window", "horizon_s", "threshold", "max"])?;
    Ok(out)
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

/// Loads the trace and runs the simulation.
pub fn execute(args: &RunArgs) -> Result<Report> {
    let mut spec = crate::trace::ReadSpec::parse(&args.trace_format)?;
    spec.limit = args.max_requests;
    let trace = Trace::load_with(args.trace.as_deref(), &spec)?;
    execute_on(args, trace)
}

/// Runs the simulation on an already loaded trace (before `args`' trace options are applied).
pub fn execute_on(args: &RunArgs, trace: Trace) -> Result<Report> {
    execute_with(args, trace, None)
}

/// Like `execute_on`, with `backend` (e.g. a real-execution backend) instead of the cost model that
/// `args` name; everything else (trace, workload, policies, engine, metrics) is the same code.
pub fn execute_with(
    args: &RunArgs,
    trace: Trace,
    backend: Option<Box<dyn CostModel>>,
) -> Result<Report> {
    let model = ModelSpec::by_name(&args.model)?;
    let gpu = GpuSpec::by_name(&args.gpu)?;
    let topts = TraceOptions {
        max_requests: args.max_requests,
        length_scale: args.length_scale,
        poisson_rate: args.rate,
        arrivals: crate::arrivals::Arrivals::parse(&args.arrivals)?,
    };
    let trace = trace.transform(&topts, args.seed)?;
    let aopts = AdapterOptions {
        count: args.adapters,
        ranks: args.ranks.clone(),
        popularity_alpha: args.popularity,
        model: crate::workload::AdapterModel::parse(&args.adapter_model)?,
    };
    let workload = Workload::build(&trace, model, &aopts, args.seed)?;
    let cost = match backend {
        Some(b) => b,
        None => cost::build(args.cost.as_deref(), args.profile.as_deref(), model, gpu)?,
    };
    let mut cfg = EngineConfig::new(pool_slots(args, model, gpu)?);
    cfg.max_wait_tokens = args.max_wait_tokens;
    cfg.max_batch = args.max_batch.max(1);
    cfg.max_prefill_tokens = args.max_prefill_tokens;
    cfg.reserve = parse_reserve(&args.reserve)?;
    let (window, histogram) = parse_prefetch(&args.prefetch)?;
    cfg.prefetch_window = window;
    cfg.prefetch_histogram = histogram;
    for (name, v) in [("--ttft-slo", args.ttft_slo), ("--tbt-slo", args.tbt_slo)] {
        if !(v > 0.0 && v.is_finite()) {
            return Err(Error::msg(format!(
                "{name} must be a positive number of seconds, got {v}"
            )));
        }
    }
    let slo = Slo {
        ttft_ns: (args.ttft_slo * 1e9).round() as u64,
        tbt_ns: (args.tbt_slo * 1e9).round() as u64,
    };
    let (predictor, predicted) = predict::predict(&args.predictor, &workload, args.seed)?;
    let ctx = PolicyCtx::new(&workload, &predicted, cfg.pool_slots, slo, cost.as_ref());
    let scheduler = sched::build(&args.scheduler, &ctx)?;
    let cache = cache::build(&args.cache, &ctx)?;
    let output = Engine::new(&workload, cfg.clone(), cost.as_ref(), scheduler, cache).run()?;
    let mut summary = metrics::summarize(&ctx, &output, model.kv_slot_bytes());
    for (k, v) in [
        ("trace", json!(trace.source)),
        ("model", json!(model.name)),
        ("gpu", json!(gpu.name)),
        ("cost_model", json!(cost.describe())),
        ("seed", json!(args.seed)),
        ("predictor", json!(predictor)),
        ("adapters", json!(args.adapters)),
        ("popularity_alpha", json!(args.popularity)),
        (
            "adapter_model",
            json!(aopts.model.describe(args.popularity)),
        ),
        ("arrivals", json!(topts.arrivals.describe())),
        ("length_scale", json!(args.length_scale)),
        ("rate_rps", args.rate.map_or(Value::Null, |r| json!(r))),
        ("reserve", json!(args.reserve)),
        ("max_wait_tokens", json!(cfg.max_wait_tokens)),
        ("prefetch", json!(args.prefetch)),
        (
            "aborted",
            output.aborted.as_ref().map_or(Value::Null, |e| json!(e)),
        ),
    ] {
        summary.insert(k.into(), v);
    }
    Ok(Report {
        workload,
        output,
        summary,
    })
}

impl Report {
    /// Writes `summary.json` and `requests.csv` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::internal(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_string_pretty(&self.summary).expect("summary serialises") + "\n";
        std::fs::write(dir.join("summary.json"), json).map_err(io)?;
        let f = std::fs::File::create(dir.join("requests.csv")).map_err(io)?;
        let mut f = std::io::BufWriter::new(f);
        metrics::write_requests_csv(&mut f, &self.workload, &self.output).map_err(io)?;
        std::io::Write::flush(&mut f).map_err(io)?;
        let f = std::fs::File::create(dir.join("adapters.csv")).map_err(io)?;
        let mut f = std::io::BufWriter::new(f);
        metrics::write_adapters_csv(&mut f, &self.workload, &self.output).map_err(io)?;
        std::io::Write::flush(&mut f).map_err(io)?;
        Ok(())
    }

    /// What `sim run` and `sim real` do with a report: write `out` (also when a backend stopped the run, so
    /// each request's state at the failure is kept), then fail with exit code 1 if the run stopped early,
    /// else print the summary (a table, or JSON).
    pub fn finish(&self, out: Option<&Path>, json: bool) -> Result<()> {
        if let Some(dir) = out {
            self.write(dir)?;
        }
        if let Some(why) = &self.output.aborted {
            return Err(Error::internal(format!("the run stopped early: {why}")));
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.summary).expect("summary serialises")
            );
        } else {
            print!("{}", self.table());
        }
        Ok(())
    }

    /// The human-readable summary `sim run` prints.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let t = |k: &str| {
            s.get(k)
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .unwrap_or_default()
        };
        let ms = |k: &str| format!("{:>10.1}", f(k) * 1e3);
        let row = |name: &str, p: &str| {
            format!(
                "  {name:<14}{}{}{}{}{}\n",
                ms(&format!("{p}_mean_s")),
                ms(&format!("{p}_p50_s")),
                ms(&format!("{p}_p90_s")),
                ms(&format!("{p}_p99_s")),
                ms(&format!("{p}_max_s"))
            )
        };
        let mut o = String::new();
        o += &format!("trace       {}\n", t("trace"));
        o += &format!(
            "setup       {} on {}, {} adapters, pool {} slots ({:.1} GiB)\n",
            t("model"),
            t("gpu"),
            t("adapters"),
            t("pool_slots"),
            f("pool_gib")
        );
        o += &format!(
            "policies    scheduler {}, cache {}\n",
            t("scheduler"),
            t("cache_policy")
        );
        o += &format!("cost model  {}\n", t("cost_model"));
        o += &format!(
            "requests    {} total, {} finished, {} rejected; offered {:.2} req/s\n\n",
            t("requests_total"),
            t("requests_finished"),
            t("requests_rejected"),
            f("offered_rps")
        );
        o += &format!(
            "  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "latency (ms)", "mean", "p50", "p90", "p99", "max"
        );
        o += &row("TTFT", "ttft");
        o += &row("TBT (mean/req)", "tbt");
        o += &row("E2E", "e2e");
        o += &row("queueing", "queue");
        o += &row("load wait", "load_wait");
        o += &format!(
            "\nthroughput  {:.3} req/s, {:.1} output tokens/s over {:.1} s\n",
            f("throughput_rps"),
            f("throughput_output_tps"),
            f("duration_s")
        );
        o += &format!(
            "SLO         TTFT <= {} s: {:.1}%   TBT <= {} s: {:.1}%   both: {:.1}%\n",
            f("slo_ttft_s"),
            100.0 * f("slo_ttft_attainment"),
            f("slo_tbt_s"),
            100.0 * f("slo_tbt_attainment"),
            100.0 * f("slo_attainment")
        );
        o += &format!(
            "adapters    {} loads ({:.2} GB over PCIe), hit rate {:.1}%, {} evictions, GPU stalled {:.2} s on loads\n",
            t("adapter_loads"),
            f("pcie_bytes") / 1e9,
            100.0 * f("adapter_hit_rate"),
            t("adapter_evictions"),
            f("load_stall_s")
        );
        o += &format!(
            "memory      KV peak {:.2} GiB / mean {:.2} GiB; adapters peak {:.2} GiB / mean {:.2} GiB\n",
            f("mem_kv_peak_gib"),
            f("mem_kv_mean_gib"),
            f("mem_adapters_peak_gib"),
            f("mem_adapters_mean_gib")
        );
        o += &format!(
            "engine      {} prefill + {} decode iterations, GPU busy {:.1}% of {:.1} simulated s\n",
            t("iterations_prefill"),
            t("iterations_decode"),
            100.0 * f("gpu_busy_fraction"),
            f("simulated_s")
        );
        o
    }
}
