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
//! - Both take `seeds=N`: the rule is solved on each of seeds 0..N-1 (their Poisson arrivals and adapter
//!   draws) and F is the median of the N solutions, so that one seed's tail does not set every run's lengths
//!   (S-LoRA's knee moves by +-6% between seeds). N = 1 (the default) is seed 0 alone.
//!
//! The searches are run by `run::length` (they replay the trace).

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};
use crate::registry::{Entry, Kind, Param, Params, Props, Registry};

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LengthRule {
    Fixed(f64),
    Peak { rate: Option<f64>, seeds: u32 },
    Knee { rate: f64, p: f64, seeds: u32 },
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
            LengthRule::Peak { rate: None, seeds } if *seeds > 1 => {
                write!(f, "peak[seeds={seeds}]")
            }
            LengthRule::Peak { rate: None, .. } => write!(f, "peak"),
            LengthRule::Peak {
                rate: Some(r),
                seeds,
            } => {
                write!(f, "peak[rate={r}")?;
                if *seeds > 1 {
                    write!(f, ",seeds={seeds}")?;
                }
                write!(f, "]")
            }
            LengthRule::Knee { rate, p, seeds } => {
                write!(f, "knee[rate={rate},p={p}")?;
                if *seeds > 1 {
                    write!(f, ",seeds={seeds}")?;
                }
                write!(f, "]")
            }
        }
    }
}

/// The length rules named by a spec, for `Registry` (a plain number is `Fixed`).
pub struct LengthRules;

impl Kind for LengthRules {
    type Made = LengthRule;
    type Ctx<'a> = ();
    const NAME: &'static str = "length rule";
}

/// `--length-scale RULE` (beside a plain number F).
pub const RULES: Registry<LengthRules> = Registry {
    entries: &[
        Entry {
            name: "peak",
            about: "the largest F <= 1 whose peak KV need (S-LoRA, unlimited memory) fits the pool",
            params: &[
                Param::optional(
                    "rate",
                    "re-time arrivals as Poisson at R req/s (seed 0); absent: the trace's timestamps",
                ),
                SEEDS,
            ],
            props: Props::DEFAULT,
            build: peak,
        },
        Entry {
            name: "knee",
            about: "the F at which S-LoRA's P-th percentile TTFT at R req/s (Poisson, seed 0) equals the TTFT SLO",
            params: &[
                Param::new("rate", "8.6", "request rate R, req/s"),
                Param::new("p", "99", "percentile P, in (0, 100]"),
                SEEDS,
            ],
            props: Props::DEFAULT,
            build: knee,
        },
    ],
};

const SEEDS: Param = Param::new(
    "seeds",
    "1",
    "solve on seeds 0..N-1 and take the median (1: seed 0 alone)",
);

fn seeds(p: &mut Params) -> Result<u32> {
    let n: u32 = p.get("seeds")?;
    if !(1..=1000).contains(&n) {
        return Err(p.bad("seeds must be a whole number from 1 to 1000"));
    }
    Ok(n)
}

fn positive(p: &Params, name: &str, x: f64) -> Result<f64> {
    if x > 0.0 && x.is_finite() {
        Ok(x)
    } else {
        Err(p.bad(format!("{name} must be a positive number")))
    }
}

fn peak(p: &mut Params, _: &()) -> Result<Box<LengthRule>> {
    let rate = match p.given("rate") {
        None => None,
        Some(v) => {
            let x = v
                .parse()
                .map_err(|_| p.bad(format!("rate '{v}' is not a number")))?;
            Some(positive(p, "rate", x)?)
        }
    };
    let seeds = seeds(p)?;
    Ok(Box::new(LengthRule::Peak { rate, seeds }))
}

fn knee(p: &mut Params, _: &()) -> Result<Box<LengthRule>> {
    let rate = p.get("rate")?;
    let rate = positive(p, "rate", rate)?;
    let pct: f64 = p.get("p")?;
    if !(pct > 0.0 && pct <= 100.0) {
        return Err(p.bad("p must be in (0, 100]"));
    }
    let seeds = seeds(p)?;
    Ok(Box::new(LengthRule::Knee {
        rate,
        p: pct,
        seeds,
    }))
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
        RULES
            .build(s, &())
            .map(|b| *b.made)
            .map_err(|e| Error::msg(format!("'{s}': {e}; {expected}")))
    }
}

impl serde::Serialize for LengthRule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
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
            LengthRule::Peak {
                rate: None,
                seeds: 1
            }
        );
        assert_eq!(
            "peak[rate=8]".parse::<LengthRule>().unwrap(),
            LengthRule::Peak {
                rate: Some(8.0),
                seeds: 1
            }
        );
        assert_eq!(
            "knee".parse::<LengthRule>().unwrap(),
            LengthRule::Knee {
                rate: 8.6,
                p: 99.0,
                seeds: 1
            }
        );
        assert_eq!(
            "knee[seeds=10]".parse::<LengthRule>().unwrap(),
            LengthRule::Knee {
                rate: 8.6,
                p: 99.0,
                seeds: 10
            }
        );
        for rule in ["knee[seeds=10]", "peak[rate=8,seeds=3]", "peak[seeds=2]"] {
            let r: LengthRule = rule.parse().unwrap();
            assert_eq!(r.to_string().parse::<LengthRule>().unwrap(), r, "{rule}");
        }
        for bad in [
            "0",
            "-1",
            "nan",
            "peek",
            "knee[rate=0]",
            "knee[p=101]",
            "peak[rat=8]",
            "knee[seeds=0]",
            "peak[seeds=1.5]",
        ] {
            assert!(bad.parse::<LengthRule>().is_err(), "{bad}");
        }
        let r: LengthRule = "knee[rate=9,p=90]".parse().unwrap();
        assert_eq!(r.to_string().parse::<LengthRule>().unwrap(), r);
    }
}
