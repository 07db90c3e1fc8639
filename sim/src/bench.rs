//! `sim bench`: simulator speed (simulated requests and iterations per wall-second, single thread) and peak
//! memory, on the full conversation trace and on a synthetic trace of N requests.

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::Result;
use crate::runner::{self, RunArgs};
use crate::trace::{Trace, TraceRow};

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
        length_scale: crate::length::LengthRule::Fixed(0.31),
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
