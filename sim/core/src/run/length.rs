//! Resolving a length rule (`crate::length`) on a trace: the searches behind `peak` and `knee` replay the
//! trace with the baseline (FIFO, no adapter cache). Both bisect F in log space between 0.001 and 1 (peak
//! memory and tail TTFT grow with F) to a relative width of 0.1%, once per seed of the rule (`seeds=N`: seeds
//! 0..N-1, F the median of their solutions); results are memoised per setup for the life of the process
//! (`same_search` says what a setup is).

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, OnceLock};

use super::{self as run, RunConfig};
use crate::engine::Simulated;
use crate::error::{Error, Result};
use crate::length::LengthRule;
use crate::metrics::percentile;
use crate::time::Nanos;
use crate::trace::Trace;

/// A resolved search: the configuration and the trace it was run on, and its result.
struct Solved {
    cfg: RunConfig,
    trace: Fingerprint,
    scale: Arc<OnceLock<std::result::Result<f64, String>>>,
}

type Memo = Mutex<Vec<Solved>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Memo::default)
}

/// A trace's identity for the memo: its name, length and a hash of every row.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    rows: usize,
    hash: u64,
}

impl Fingerprint {
    fn of(trace: &Trace) -> Fingerprint {
        let mut h = DefaultHasher::new();
        trace.source.hash(&mut h);
        for r in &trace.rows {
            (r.arrival, r.input, r.output, r.adapter, r.tenant).hash(&mut h);
        }
        Fingerprint {
            rows: trace.rows.len(),
            hash: h.finish(),
        }
    }
}

/// Whether a search for `a` gives the search for `b`: the same rule and every setting the baseline's probe
/// runs keep (`probe_config`). Every field of `RunConfig` is named, so a field added to it does not compile
/// until it is decided here; the cost model is compared by its description.
fn same_search(a: &RunConfig, b: &RunConfig) -> bool {
    let RunConfig {
        // How the trace was read or made: the trace's fingerprint stands for it.
        trace: _,
        workload: _,
        trace_format: _,
        length,
        transform,
        // Set by `probe_config`, or not used by a single-engine probe.
        seed: _,
        scheduler: _,
        cache: _,
        prefetch: _,
        predictor: _,
        fleet: _,
        model,
        gpu,
        adapters,
        cost,
        engine,
        slo,
        tp,
    } = a;
    let (ta, tb) = (transform, &b.transform);
    *length == b.length
        && ta.arrivals == tb.arrivals
        && **model == *b.model
        && **gpu == *b.gpu
        && *adapters == b.adapters
        && cost.describe() == b.cost.describe()
        && *engine == b.engine
        && *slo == b.slo
        && *tp == b.tp
}

/// The length scale `cfg.length` gives on `trace` (not yet transformed), searched once per setup for the
/// life of the process: the runs of a comparison (other seeds, policies, predictors) reuse it.
pub fn resolve(cfg: &RunConfig, trace: &Trace) -> Result<f64> {
    let rule = cfg.length;
    if let LengthRule::Fixed(x) = rule {
        return Ok(x);
    }
    let fp = Fingerprint::of(trace);
    let cell = {
        let mut memo = memo()
            .lock()
            .map_err(|_| Error::msg("length-scale memo poisoned"))?;
        match memo
            .iter()
            .find(|s| s.trace == fp && same_search(&s.cfg, cfg))
        {
            Some(s) => s.scale.clone(),
            None => {
                let scale = Arc::new(OnceLock::new());
                memo.push(Solved {
                    cfg: cfg.clone(),
                    trace: fp,
                    scale: scale.clone(),
                });
                scale
            }
        }
    };
    cell.get_or_init(|| search(cfg, trace, rule).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::msg(format!("--length-scale {rule}: {e}")))
}

/// The baseline's configuration for a probe at scale `f`.
fn probe_config(cfg: &RunConfig, f: f64, rate: Option<f64>, seed: u64) -> RunConfig {
    let mut c = cfg.clone();
    c.length = LengthRule::Fixed(f);
    c.transform.length_scale = f;
    c.transform.poisson_rate = rate;
    // The rule describes the trace, not the first N requests a run may replay of it.
    c.transform.max_requests = None;
    c.seed = seed;
    c.scheduler = "fifo".into();
    c.cache = "none".into();
    c.prefetch = "none".into();
    c.predictor = "oracle".into();
    c
}

fn probe(c: &RunConfig, trace: &Trace) -> Result<run::Executed> {
    let (_, w) = run::workload(c, trace.clone())?;
    run::execute(c, &w, &mut Simulated(c.cost.as_ref()))
}

fn search(cfg: &RunConfig, trace: &Trace, rule: LengthRule) -> Result<f64> {
    let seeds = match rule {
        LengthRule::Fixed(x) => return Ok(x),
        LengthRule::Peak { seeds, .. } | LengthRule::Knee { seeds, .. } => seeds,
    };
    let solved = (0..seeds as u64)
        .map(|seed| {
            search_seed(cfg, trace, rule, seed).map_err(|e| {
                if seeds > 1 {
                    e.context(format!("seed {seed}"))
                } else {
                    e
                }
            })
        })
        .collect::<Result<Vec<f64>>>()?;
    Ok(median(solved))
}

/// The median of per-seed solutions (the mean of the middle two for an even count), to the four
/// significant digits every solution has.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    let m = if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    };
    four_digits(m)
}

fn search_seed(cfg: &RunConfig, trace: &Trace, rule: LengthRule, seed: u64) -> Result<f64> {
    match rule {
        LengthRule::Fixed(x) => Ok(x),
        LengthRule::Peak { rate, .. } => {
            let pool = cfg.engine.pool_slots;
            let peak = |f: f64| -> Result<u64> {
                let mut c = probe_config(cfg, f, rate, seed);
                // Unlimited memory: the pool never binds, every other limit of the engine stays.
                c.engine.pool_slots = u64::MAX / 4;
                Ok(probe(&c, trace)?.output.stats.peak_kv_slots)
            };
            bisect_log(|f| Ok(peak(f)? <= pool))
        }
        LengthRule::Knee { rate, p, .. } => {
            let slo = cfg.slo.ttft_ns;
            let tail = |f: f64| -> Result<Nanos> {
                let c = probe_config(cfg, f, Some(rate), seed);
                let (_, w) = run::workload(&c, trace.clone())?;
                let out = run::execute(&c, &w, &mut Simulated(c.cost.as_ref()))?.output;
                let mut ttft: Vec<f64> = out
                    .records
                    .iter()
                    .zip(&w.requests)
                    .filter(|(r, _)| r.outcome == crate::engine::Outcome::Finished)
                    .map(|(r, q)| r.first_token.saturating_sub(q.arrival) as f64)
                    .collect();
                if ttft.is_empty() {
                    return Ok(Nanos::MAX);
                }
                ttft.sort_unstable_by(f64::total_cmp);
                Ok(percentile(&ttft, p / 100.0) as Nanos)
            };
            bisect_log(|f| Ok(tail(f)? <= slo))
        }
    }
}

/// The largest F in [0.001, 1] with `fits(F)` (assumed true below a threshold, false above), to 0.1%.
fn bisect_log(mut fits: impl FnMut(f64) -> Result<bool>) -> Result<f64> {
    let (mut lo, mut hi) = (1e-3f64, 1.0f64);
    if fits(hi)? {
        return Ok(hi);
    }
    if !fits(lo)? {
        return Err(Error::msg(
            "even a scale of 0.001 does not meet the rule (is the pool or the rate too small?)",
        ));
    }
    while hi / lo > 1.001 {
        let mid = (lo * hi).sqrt();
        if fits(mid)? {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(four_digits(lo))
}

/// Four significant digits, rounded down: a printable, reproducible number.
fn four_digits(x: f64) -> f64 {
    let digits = 3 - x.log10().floor() as i32;
    let k = 10f64.powi(digits);
    (x * k).floor() / k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisection_finds_the_threshold_to_a_tenth_of_a_percent() {
        let f = bisect_log(|f| Ok(f <= 0.3141)).unwrap();
        assert!(f <= 0.3141 && f > 0.3141 / 1.001, "{f}");
        assert_eq!(bisect_log(|_| Ok(true)).unwrap(), 1.0);
        assert!(bisect_log(|_| Ok(false)).is_err());
    }
}
