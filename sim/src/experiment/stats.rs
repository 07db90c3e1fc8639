//! Statistics over seeds: a claim is the median of per-seed values with a percentile-bootstrap interval,
//! so one outlying seed cannot decide it (a mean of P99s can be moved by one seed's tail).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

/// The resamples behind every interval; fixed, with a fixed seed, so tables are reproducible.
const RESAMPLES: usize = 4000;
const SEED: u64 = 0x5eed_c1a1;

/// A median over seeds with its 95% bootstrap interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Interval {
    pub median: f64,
    pub lo: f64,
    pub hi: f64,
    /// How many per-seed values it rests on.
    pub n: usize,
}

impl Interval {
    /// Whether the interval holds `x` (a change of 0 or a ratio of 1: no effect).
    pub fn contains(&self, x: f64) -> bool {
        self.lo <= x && x <= self.hi
    }
}

fn median_of(v: &mut [f64]) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// The median of `values` (NaNs dropped) and the 2.5th..97.5th percentiles of the medians of 4,000
/// resamples with replacement; `None` when no value is finite.
pub fn median_ci(values: &[f64]) -> Option<Interval> {
    let v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let median = median_of(&mut v.clone());
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut sample = vec![0.0; v.len()];
    let mut medians = Vec::with_capacity(RESAMPLES);
    for _ in 0..RESAMPLES {
        for s in sample.iter_mut() {
            *s = v[rng.random_range(0..v.len())];
        }
        medians.push(median_of(&mut sample));
    }
    medians.sort_unstable_by(f64::total_cmp);
    let at = |q: f64| medians[((RESAMPLES - 1) as f64 * q).round() as usize];
    Some(Interval {
        median,
        lo: at(0.025),
        hi: at(0.975),
        n: v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_has_a_point_interval() {
        let i = median_ci(&[3.0]).unwrap();
        assert_eq!((i.median, i.lo, i.hi, i.n), (3.0, 3.0, 3.0, 1));
        assert!(median_ci(&[f64::NAN]).is_none());
    }

    #[test]
    fn an_outlier_moves_the_mean_not_the_median() {
        // The audit's case: four seeds at -1%..-4%, one at +99%.
        let v = [-0.01, -0.02, -0.04, -0.03, 0.99];
        let i = median_ci(&v).unwrap();
        assert_eq!(i.median, -0.02);
        assert!(i.lo >= -0.04 && i.hi <= 0.99, "{i:?}");
        assert!(i.lo < i.median && i.median < i.hi);
        // Deterministic.
        assert_eq!(median_ci(&v), Some(i));
    }

    #[test]
    fn the_interval_narrows_with_more_seeds() {
        let few: Vec<f64> = (0..5).map(|i| i as f64).collect();
        let many: Vec<f64> = (0..50).map(|i| (i % 5) as f64).collect();
        let (a, b) = (median_ci(&few).unwrap(), median_ci(&many).unwrap());
        assert!(b.hi - b.lo < a.hi - a.lo, "{a:?} {b:?}");
    }
}
