//! Arrival processes that re-time a trace at a target mean rate: Poisson, Gamma renewal with a given
//! coefficient of variation (bursty when CV > 1), or time-compression of the trace's own timestamps, which
//! keeps its burst shape (every gap scaled by one factor).

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp, Gamma};

use super::TraceRow;
use crate::error::{Error, Result};
use crate::registry::{Entry, Kind, Param, Params, Props, Registry};
use crate::time::Nanos;

#[derive(Clone, Debug, PartialEq)]
pub enum Arrivals {
    /// Exponential gaps at the rate.
    Poisson,
    /// Gamma gaps with mean 1/rate and this coefficient of variation (1 = Poisson in distribution).
    Gamma { cv: f64 },
    /// The trace's timestamps multiplied by one factor so that the mean rate (n-1)/span is the target.
    Scale,
}

/// The arrival processes, for `Registry`.
pub struct ArrivalKinds;

impl Kind for ArrivalKinds {
    type Made = Arrivals;
    type Ctx<'a> = ();
    const NAME: &'static str = "arrival process";
}

/// `--arrivals`: how `--rate` re-times a trace.
pub const REGISTRY: Registry<ArrivalKinds> = Registry {
    entries: &[
        Entry {
            name: "poisson",
            about: "exponential gaps at --rate (the default)",
            params: &[],
            props: Props::DEFAULT,
            build: |_, _| Ok(Box::new(Arrivals::Poisson)),
        },
        Entry {
            name: "gamma",
            about: "Gamma renewal gaps at --rate; bursty when cv > 1",
            params: &[Param::new(
                "cv",
                "2",
                "coefficient of variation of the gaps (1: Poisson in distribution)",
            )],
            props: Props::DEFAULT,
            build: gamma,
        },
        Entry {
            name: "scale",
            about: "the trace's own timestamps, every gap scaled by one factor to --rate (keeps its bursts)",
            params: &[],
            props: Props::DEFAULT,
            build: |_, _| Ok(Box::new(Arrivals::Scale)),
        },
        Entry {
            name: "compress",
            about: "the same as scale",
            params: &[],
            props: Props::DEFAULT,
            build: |_, _| Ok(Box::new(Arrivals::Scale)),
        },
    ],
};

fn gamma(p: &mut Params, _: &()) -> Result<Box<Arrivals>> {
    let cv: f64 = p.get("cv")?;
    if !(cv > 0.0 && cv.is_finite()) {
        return Err(p.bad(format!("cv must be positive, got {cv}")));
    }
    Ok(Box::new(Arrivals::Gamma { cv }))
}

impl Arrivals {
    /// `--arrivals poisson | gamma[cv=C] | scale` (`REGISTRY`).
    pub fn parse(text: &str) -> Result<Arrivals> {
        REGISTRY
            .build(text, &())
            .map(|b| *b.made)
            .map_err(|e| e.context("--arrivals"))
    }

    pub fn describe(&self) -> String {
        match self {
            Arrivals::Poisson => "poisson".into(),
            Arrivals::Gamma { cv } => format!("gamma[cv={cv}]"),
            Arrivals::Scale => "scale".into(),
        }
    }

    /// Re-times `rows` (in order) at mean `rate` requests/s; the first request stays at 0.
    pub fn retime(&self, rows: &mut [TraceRow], rate: f64, seed: u64) -> Result<()> {
        if !(rate > 0.0 && rate.is_finite()) {
            return Err(Error::msg(format!(
                "--rate must be a positive number, got {rate}"
            )));
        }
        // The Poisson stream keeps the seed constant the simulator has always used, so old runs reproduce.
        let mut rng = StdRng::seed_from_u64(seed ^ 0xA11C_E5ED_0000_0001);
        match self {
            Arrivals::Poisson => {
                let gap = Exp::new(rate).expect("positive rate");
                accumulate(rows, || gap.sample(&mut rng));
            }
            Arrivals::Gamma { cv } => {
                let shape = 1.0 / (cv * cv);
                let gap = Gamma::new(shape, 1.0 / (rate * shape)).map_err(|e| {
                    Error::msg(format!("--arrivals gamma[cv={cv}] at {rate}/s: {e}"))
                })?;
                accumulate(rows, || gap.sample(&mut rng));
            }
            Arrivals::Scale => {
                let span = rows.last().map_or(0, |r| r.arrival);
                if rows.len() < 2 || span == 0 {
                    return Err(Error::msg(
                        "--arrivals scale needs a trace with at least two distinct timestamps",
                    ));
                }
                let target_span_s = (rows.len() - 1) as f64 / rate;
                let f = target_span_s * 1e9 / span as f64;
                for r in rows.iter_mut() {
                    r.arrival = (r.arrival as f64 * f).round() as Nanos;
                }
            }
        }
        Ok(())
    }
}

/// Accumulates in f64 seconds and rounds each arrival once: no drift from per-gap rounding.
fn accumulate(rows: &mut [TraceRow], mut gap: impl FnMut() -> f64) {
    let mut t = 0.0f64;
    for (i, r) in rows.iter_mut().enumerate() {
        if i > 0 {
            t += gap();
        }
        r.arrival = (t * 1e9).round() as Nanos;
    }
}

/// Mean and coefficient of variation of the gaps between consecutive arrivals, in seconds.
pub fn gap_stats(rows: &[TraceRow]) -> (f64, f64) {
    let gaps: Vec<f64> = rows
        .windows(2)
        .map(|w| (w[1].arrival - w[0].arrival) as f64 / 1e9)
        .collect();
    let n = gaps.len().max(1) as f64;
    let mean = gaps.iter().sum::<f64>() / n;
    let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt() / mean)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<TraceRow> {
        (0..n)
            .map(|i| TraceRow::new((i as u64 % 7) * 1_000_000 * i as u64, 1, 1))
            .collect()
    }

    #[test]
    fn gamma_hits_rate_and_cv() {
        for cv in [0.5, 1.0, 3.0] {
            let mut r = rows(200_000);
            Arrivals::Gamma { cv }.retime(&mut r, 8.0, 1).unwrap();
            let (mean, got) = gap_stats(&r);
            assert!(
                (1.0 / mean - 8.0).abs() < 0.2,
                "cv {cv}: rate {}",
                1.0 / mean
            );
            assert!((got - cv).abs() < 0.05 * cv, "cv {cv}: got {got}");
        }
    }

    #[test]
    fn scale_keeps_the_burst_shape() {
        let mut r: Vec<TraceRow> = [0u64, 1, 1, 10, 11]
            .iter()
            .map(|&s| TraceRow::new(s * 1_000_000_000, 1, 1))
            .collect();
        // 5 requests over 11 s; at 2/s the span must become 2 s: every gap x 2/11.
        Arrivals::Scale.retime(&mut r, 2.0, 0).unwrap();
        let got: Vec<u64> = r.iter().map(|r| r.arrival).collect();
        assert_eq!(
            got,
            [0, 181_818_182, 181_818_182, 1_818_181_818, 2_000_000_000]
        );
        let mut one = vec![TraceRow::new(0, 1, 1)];
        assert!(Arrivals::Scale.retime(&mut one, 2.0, 0).is_err());
    }

    #[test]
    fn specs_parse_and_reject() {
        assert_eq!(Arrivals::parse("poisson").unwrap(), Arrivals::Poisson);
        assert_eq!(
            Arrivals::parse("gamma[cv=4]").unwrap(),
            Arrivals::Gamma { cv: 4.0 }
        );
        assert_eq!(Arrivals::parse("scale").unwrap(), Arrivals::Scale);
        for bad in ["weibull", "gamma[cv=-1]", "gamma[k=2]", "poisson[cv=2]"] {
            assert!(Arrivals::parse(bad).is_err(), "{bad}");
        }
    }
}
