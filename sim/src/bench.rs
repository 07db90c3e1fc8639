//! `sim bench`: simulator speed (simulated requests and iterations per wall-second, single thread) and peak
//! memory, on the full conversation trace and on a synthetic trace of N requests.
//!
//! The physics is pinned (`--cost analytic` unless `--cost` / `--profile` say otherwise), not the run's
//! default: the default follows the shipped profiles, and a new profile would change the work measured (a
//! slower engine model queues more requests, and a scheduler's work grows with its queue). Each line prints
//! its simulated iterations and seconds: two benches measured the same work only where those agree.

use std::path::PathBuf;
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::runner::{self, RunArgs};
use sim_core::error::Result;
use sim_core::trace::{Trace, TraceRow};

/// Peak resident memory of this process so far (Linux), MiB.
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: f64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// `n` requests whose lengths are drawn (with replacement) from the conversation trace, arrivals re-timed
/// by `runner` as Poisson.
pub fn synthetic(n: usize, seed: u64) -> Result<Trace> {
    let base = Trace::default_trace()?;
    let mut rng = StdRng::seed_from_u64(seed);
    let rows = (0..n)
        .map(|_| {
            let r = base.rows[rng.random_range(0..base.rows.len())];
            TraceRow { arrival: 0, ..r }
        })
        .collect();
    Ok(Trace {
        source: format!("synthetic {n} requests (conversation lengths)"),
        rows,
        ..Default::default()
    })
}

/// `sim bench`'s options.
#[derive(clap::Args, Clone, Debug)]
pub struct BenchArgs {
    /// Requests in the synthetic trace
    #[arg(long, default_value_t = 1_000_000, allow_negative_numbers = true,
          value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub requests: usize,
    /// Poisson arrival rate of the synthetic cases and of each fleet replica, requests/s (8: below the
    /// saturation of the pinned analytic physics at lengths x 0.31)
    #[arg(long, default_value_t = 8.0, allow_negative_numbers = true,
          value_parser = crate::options::real(crate::runner::range::RATE))]
    pub rate: f64,
    /// Cost model of every case (default: `analytic`, pinned so that benches compare the same work)
    #[arg(long)]
    pub cost: Option<String>,
    /// Engine or measured profile of every case (a shipped name or a file), instead of the analytic model
    #[arg(long)]
    pub profile: Option<PathBuf>,
    /// Replicas of the fleet case (0: skip it)
    #[arg(long, default_value_t = 1000)]
    pub fleet_replicas: usize,
    /// Simulated seconds of the fleet case's traffic
    #[arg(long, default_value_t = 3600.0)]
    pub fleet_seconds: f64,
    /// Router of the fleet case
    #[arg(long, default_value = "power-of-two")]
    pub fleet_router: String,
    /// Threads of the fleet case
    #[arg(long, default_value_t = 2)]
    pub fleet_threads: usize,
    /// Adapters of the fleet case
    #[arg(long, default_value_t = 100)]
    pub fleet_adapters: u32,
    /// Only the fleet case
    #[arg(long)]
    pub fleet_only: bool,
}

impl BenchArgs {
    /// The run options every case starts from: the default setup with the bench's physics.
    fn base(&self) -> RunArgs {
        let cost = match (&self.cost, &self.profile) {
            (None, None) => Some("analytic".to_string()),
            (c, _) => c.clone(),
        };
        RunArgs {
            cost,
            profile: self.profile.clone(),
            ..RunArgs::defaults()
        }
    }

    /// The physics as the options give it, for the header.
    fn physics(&self) -> String {
        match (&self.cost, &self.profile) {
            (None, None) => "--cost analytic (pinned; --cost / --profile choose another)".into(),
            (c, p) => [
                c.as_ref().map(|c| format!("--cost {c}")),
                p.as_ref().map(|p| format!("--profile {}", p.display())),
            ]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(" "),
        }
    }
}

/// `sim bench`: the single-thread cases (unless `--fleet-only`), then the fleet case (unless
/// `--fleet-replicas 0`).
pub fn main(b: &BenchArgs) -> Result<()> {
    if !b.fleet_only {
        run(b)?;
    }
    if b.fleet_replicas > 0 {
        fleet(b)?;
    }
    Ok(())
}

/// Runs one case and prints its line; returns the cost model's description.
fn one(label: &str, args: &RunArgs, trace: Trace) -> Result<String> {
    let t = Instant::now();
    let rep = runner::execute_on(args, trace)?;
    let wall = t.elapsed().as_secs_f64();
    let s = &rep.output.stats;
    let iters = s.prefill_iterations + s.decode_iterations;
    let n = rep.output.records.len();
    println!(
        "{label}: {n} requests, {iters} iterations in {wall:.3} s wall: {:.0} requests/s, {:.0} iterations/s; \
         simulated {:.0} s ({:.0}x real time); peak RSS so far {:.1} MiB",
        n as f64 / wall,
        iters as f64 / wall,
        s.end_ns as f64 / 1e9,
        s.end_ns as f64 / 1e9 / wall,
        peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(rep.summary.cost_model.clone())
}

/// The fleet case: `replicas` replicas of the default setup (Llama-7B, A40, 100 adapters, S-LoRA's fifo +
/// none) on the bench's physics, each offered `--rate` (8 req/s: the analytic physics' knee at lengths x
/// 0.31 is about 8.6), for `seconds` of simulated traffic: rate x seconds requests, streamed (sketches,
/// rows to a temporary file).
fn fleet(b: &BenchArgs) -> Result<()> {
    let (replicas, seconds, router, threads, adapters) = (
        b.fleet_replicas,
        b.fleet_seconds,
        b.fleet_router.as_str(),
        b.fleet_threads,
        b.fleet_adapters,
    );
    let per = b.rate;
    let rate = per * replicas as f64;
    let n = (rate * seconds).round() as usize;
    let rows = std::env::temp_dir().join(format!("sim-bench-fleet-{}.csv", std::process::id()));
    let args = RunArgs {
        rate: Some(rate),
        length_scale: sim_core::length::LengthRule::Fixed(0.31),
        adapters,
        replicas: Some(replicas.to_string()),
        router: router.into(),
        fleet_threads: threads,
        sample_s: 10.0,
        stream: Some(rows.clone()),
        ..b.base()
    };
    let t = Instant::now();
    let trace = synthetic(n, 1)?;
    let gen_s = t.elapsed().as_secs_f64();
    let rep = runner::execute_on(&args, trace);
    let wall = t.elapsed().as_secs_f64();
    let bytes = std::fs::metadata(&rows).map_or(0, |m| m.len());
    let _ = std::fs::remove_file(&rows);
    let rep = rep?;
    let s = &rep.output.stats;
    let iters = s.prefill_iterations + s.decode_iterations;
    let sum = rep.summary.to_map();
    let f = |k: &str| {
        sum.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    let fl = rep
        .fleet
        .as_ref()
        .map(|f| f.summary.clone())
        .unwrap_or_default();
    let g = |k: &str| {
        fl.get(k)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(f64::NAN)
    };
    println!(
        "fleet: {replicas} replicas x {seconds:.0} simulated s at {per} req/s each, {adapters} adapters, router {router}, {threads} thread(s): \
         {n} requests, {iters} iterations in {wall:.1} s wall ({gen_s:.1} s making the trace): {:.0} requests/s, \
         {:.0} iterations/s; peak RSS {:.0} MiB; rows streamed {:.2} GB; P99 TTFT {:.2} s, SLO {:.1}%, \
         imbalance {:.2}, replication {:.2}",
        n as f64 / wall,
        iters as f64 / wall,
        peak_rss_mib().unwrap_or(f64::NAN),
        bytes as f64 / 1e9,
        f("ttft_p99_s"),
        100.0 * f("slo_attainment"),
        g("fleet_imbalance_requests_mean"),
        g("fleet_replication_mean"),
    );
    Ok(())
}

fn run(b: &BenchArgs) -> Result<()> {
    println!(
        "sim bench (single thread; default setup: Llama-7B, A40, 100 adapters, fifo + none; physics: {})",
        b.physics()
    );
    let args = b.base();
    let physics = one(
        "conversation trace, trace timestamps",
        &args,
        Trace::default_trace()?,
    )?;
    println!("  cost model: {physics}");
    // The paper's medium load on the fitted length scale: below saturation (on the pinned physics), so
    // requests in flight stay bounded and the synthetic run measures the engine, not an ever-growing queue.
    let synth = RunArgs {
        rate: Some(b.rate),
        length_scale: sim_core::length::LengthRule::Fixed(0.31),
        ..args
    };
    one(
        &format!("synthetic, Poisson {} req/s, lengths x 0.31", b.rate),
        &synth,
        synthetic(b.requests, 1)?,
    )?;
    let mlq = RunArgs {
        scheduler: "mlq".into(),
        cache: "chameleon".into(),
        ..synth
    };
    one(
        "synthetic, same, chameleon + mlq",
        &mlq,
        synthetic(b.requests, 1)?,
    )?;
    Ok(())
}
