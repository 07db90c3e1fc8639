//! How a trace's request lengths are scaled to the simulated GPU (`--length-scale`).
//!
//! The paper scales the Azure conversation trace down "so that the trace's peak memory equals the testbed's
//! capacity" without giving the factor; earlier versions of this tool fitted it so that S-LoRA saturates at the
//! paper's 8.6 RPS instead. Both are rules here, resolved per setup (trace, model, GPU, cost model, engine,
//! adapters) and never per seed or per policy, so every run of a comparison replays the same lengths:
//!
//! - `F` (a number): multiply every input and output length by F.
//! - `peak[rate=R]`: the largest F <= 1 at which the trace's peak KV memory fits the pool. "Peak memory" is
//!   the most KV slots (prompt + generated tokens of every running request) held at any instant when S-LoRA
//!   (FIFO, no adapter cache) replays the trace on an engine with unlimited memory (all its other limits
//!   kept). `R` re-times arrivals as Poisson at R RPS (seed 0); without it the trace's own timestamps are
//!   used, which is the literal "trace's peak". Adapters are not counted: they compete for what is left.
//! - `knee[rate=R,p=99]`: the F at which S-LoRA's P`p` TTFT at R RPS (Poisson, seed 0) equals the run's TTFT
//!   SLO: the knee of the baseline is put at R (default 8.6, the paper's S-LoRA throughput).
//!
//! Both searches bisect F in log space between 0.001 and 1 (peak memory and tail TTFT grow with F) to a
//! relative width of 0.1%; results are memoised per setup for the life of the process.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, OnceLock};

use crate::engine::Simulated;
use crate::error::{Error, Result};
use crate::metrics::percentile;
use crate::run::{self, RunConfig};
use crate::spec::Spec;
use crate::time::Nanos;
use crate::trace::Trace;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LengthRule {
    Fixed(f64),
    Peak { rate: Option<f64> },
    Knee { rate: f64, p: f64 },
}

impl Default for LengthRule {
    fn default() -> Self {
        LengthRule::Fixed(1.0)
    }
}

impl fmt::Display for LengthRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthRule::Fixed(x) => write!(f, "{x}"),
            LengthRule::Peak { rate: None } => write!(f, "peak"),
            LengthRule::Peak { rate: Some(r) } => write!(f, "peak[rate={r}]"),
            LengthRule::Knee { rate, p } => write!(f, "knee[rate={rate},p={p}]"),
        }
    }
}

impl FromStr for LengthRule {
    type Err = Error;

    fn from_str(s: &str) -> Result<LengthRule> {
        let expected = "expected a positive number, peak[rate=R] or knee[rate=R,p=P]";
        if let Ok(x) = s.trim().parse::<f64>() {
            if x > 0.0 && x.is_finite() {
                return Ok(LengthRule::Fixed(x));
            }
            return Err(Error::msg(format!("'{s}': {expected}")));
        }
        let mut spec = Spec::parse(s).map_err(|e| Error::msg(format!("{e}; {expected}")))?;
        let positive = |name: &str, x: f64| {
            if x > 0.0 && x.is_finite() {
                Ok(x)
            } else {
                Err(Error::msg(format!(
                    "'{s}': {name} must be a positive number"
                )))
            }
        };
        let rule = match spec.name.as_str() {
            "peak" => {
                let rate = match spec.take_str("rate") {
                    None => None,
                    Some(v) => Some(positive(
                        "rate",
                        v.parse().map_err(|_| {
                            Error::msg(format!("'{s}': rate '{v}' is not a number"))
                        })?,
                    )?),
                };
                spec.finish(&["rate"])?;
                LengthRule::Peak { rate }
            }
            "knee" => {
                let rate = positive("rate", spec.get("rate", 8.6)?)?;
                let p = spec.get("p", 99.0)?;
                if !(p > 0.0 && p <= 100.0) {
                    return Err(Error::msg(format!("'{s}': p must be in (0, 100]")));
                }
                spec.finish(&["rate", "p"])?;
                LengthRule::Knee { rate, p }
            }
            other => {
                return Err(Error::msg(format!(
                    "'{s}': unknown rule '{other}'; {expected}"
                )));
            }
        };
        Ok(rule)
    }
}

impl serde::Serialize for LengthRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

type Memo = Mutex<HashMap<String, Arc<OnceLock<std::result::Result<f64, String>>>>>;

fn memo() -> &'static Memo {
    static MEMO: OnceLock<Memo> = OnceLock::new();
    MEMO.get_or_init(Memo::default)
}

/// The length scale `cfg.length` gives on `trace` (not yet transformed).
pub fn resolve(cfg: &RunConfig, trace: &Trace) -> Result<f64> {
    let rule = cfg.length;
    if let LengthRule::Fixed(x) = rule {
        return Ok(x);
    }
    // Everything the search's runs depend on, and nothing that differs between the runs of a comparison.
    let key = format!(
        "{rule} | {} {} {:?} | {} {} {} | {:?} | {:?} | {:?}",
        trace.source,
        trace.rows.len(),
        cfg.transform.arrivals,
        cfg.model.name,
        cfg.gpu.name,
        cfg.cost.describe(),
        cfg.engine,
        cfg.adapters,
        cfg.slo,
    );
    let cell = memo()
        .lock()
        .map_err(|_| Error::msg("length-scale memo poisoned"))?
        .entry(key)
        .or_default()
        .clone();
    cell.get_or_init(|| search(cfg, trace, rule).map_err(|e| e.to_string()))
        .clone()
        .map_err(|e| Error::msg(format!("--length-scale {rule}: {e}")))
}

/// The baseline's configuration for a probe at scale `f`.
fn probe_config(cfg: &RunConfig, f: f64, rate: Option<f64>) -> RunConfig {
    let mut c = cfg.clone();
    c.length = LengthRule::Fixed(f);
    c.transform.length_scale = f;
    c.transform.poisson_rate = rate;
    c.seed = 0;
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
    match rule {
        LengthRule::Fixed(x) => Ok(x),
        LengthRule::Peak { rate } => {
            let pool = cfg.engine.pool_slots;
            let peak = |f: f64| -> Result<u64> {
                let mut c = probe_config(cfg, f, rate);
                // Unlimited memory: the pool never binds, every other limit of the engine stays.
                c.engine.pool_slots = u64::MAX / 4;
                Ok(probe(&c, trace)?.output.stats.peak_kv_slots)
            };
            bisect_log(|f| Ok(peak(f)? <= pool))
        }
        LengthRule::Knee { rate, p } => {
            let slo = cfg.slo.ttft_ns;
            let tail = |f: f64| -> Result<Nanos> {
                let c = probe_config(cfg, f, Some(rate));
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
    // Four significant digits: a printable, reproducible number.
    let digits = 3 - lo.log10().floor() as i32;
    let k = 10f64.powi(digits);
    Ok((lo * k).floor() / k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_and_rules() {
        assert_eq!(
            "0.31".parse::<LengthRule>().unwrap(),
            LengthRule::Fixed(0.31)
        );
        assert_eq!(
            "peak".parse::<LengthRule>().unwrap(),
            LengthRule::Peak { rate: None }
        );
        assert_eq!(
            "peak[rate=8]".parse::<LengthRule>().unwrap(),
            LengthRule::Peak { rate: Some(8.0) }
        );
        assert_eq!(
            "knee".parse::<LengthRule>().unwrap(),
            LengthRule::Knee { rate: 8.6, p: 99.0 }
        );
        for bad in [
            "0",
            "-1",
            "nan",
            "peek",
            "knee[rate=0]",
            "knee[p=101]",
            "peak[rat=8]",
        ] {
            assert!(bad.parse::<LengthRule>().is_err(), "{bad}");
        }
        let r: LengthRule = "knee[rate=9,p=90]".parse().unwrap();
        assert_eq!(r.to_string().parse::<LengthRule>().unwrap(), r);
    }

    #[test]
    fn bisection_finds_the_threshold_to_a_tenth_of_a_percent() {
        let f = bisect_log(|f| Ok(f <= 0.3141)).unwrap();
        assert!(f <= 0.3141 && f > 0.3141 / 1.001, "{f}");
        assert_eq!(bisect_log(|_| Ok(true)).unwrap(), 1.0);
        assert!(bisect_log(|_| Ok(false)).is_err());
    }
}
