//! `sim bench`: simulator speed (simulated requests and iterations per wall-second, single thread) and peak
//! memory, on the full conversation trace and on a synthetic trace of N requests.

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

fn one(label: &str, args: &RunArgs, trace: Trace) -> Result<()> {
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
    Ok(())
}

/// The fleet case: `replicas` replicas of the default setup (Llama-7B, A40, 100 adapters, S-LoRA's fifo +
/// none), each offered 8 req/s (its knee at lengths x 0.31 is about 8.6), for `seconds` of
/// simulated traffic: rate x seconds requests, streamed (sketches, rows to a temporary file).
pub fn fleet(
    replicas: usize,
    seconds: f64,
    router: &str,
    threads: usize,
    adapters: u32,
) -> Result<()> {
    let rate = 8.0 * replicas as f64;
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
        ..RunArgs::defaults()
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
        "fleet: {replicas} replicas x {seconds:.0} simulated s at 8 req/s each, {adapters} adapters, router {router}, {threads} thread(s): \
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

pub fn run(requests: usize) -> Result<()> {
    println!(
        "sim bench (single thread; default setup: Llama-7B, A40, 100 adapters, fifo + none, analytic costs)"
    );
    let args = RunArgs::defaults();
    one(
        "conversation trace, trace timestamps",
        &args,
        Trace::default_trace()?,
    )?;
    // The paper's medium load on the fitted length scale: below saturation, so requests in flight stay
    // bounded and the synthetic run measures the engine, not an ever-growing queue.
    let synth = RunArgs {
        rate: Some(8.0),
        length_scale: sim_core::length::LengthRule::Fixed(0.31),
        ..RunArgs::defaults()
    };
    one(
        "synthetic, Poisson 8 req/s, lengths x 0.31",
        &synth,
        synthetic(requests, 1)?,
    )?;
    let mlq = RunArgs {
        scheduler: "mlq".into(),
        cache: "chameleon".into(),
        ..synth
    };
    one(
        "synthetic, same, chameleon + mlq",
        &mlq,
        synthetic(requests, 1)?,
    )
}
