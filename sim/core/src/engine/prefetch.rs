//! The paper's optional prefetch predictor: a histogram of each adapter's inter-arrival times, from which
//! the chance that its next request arrives within a horizon is read, given the time since its last one.
//! Bins are powers of two in milliseconds ([2^b - 1, 2^(b+1) - 1) ms), mass spread uniformly within a bin.

use crate::time::Nanos;

const BINS: usize = 26;
/// Fewer observed gaps than this: no prediction.
const MIN_SAMPLES: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HistogramPrefetch {
    pub horizon_ns: Nanos,
    /// Prefetch an adapter when P(next arrival within the horizon) is at least this.
    pub threshold: f64,
    /// Most adapters prefetched by the predictor per merge.
    pub max: u32,
}

pub(crate) struct Histograms {
    bins: Vec<[u32; BINS]>,
    total: Vec<u32>,
    last: Vec<Option<Nanos>>,
}

fn edge_ms(b: usize) -> f64 {
    (1u64 << b) as f64 - 1.0
}

impl Histograms {
    pub(crate) fn new(adapters: usize) -> Histograms {
        Histograms {
            bins: vec![[0; BINS]; adapters],
            total: vec![0; adapters],
            last: vec![None; adapters],
        }
    }

    pub(crate) fn arrival(&mut self, a: usize, now: Nanos) {
        if let Some(t) = self.last[a] {
            let ms = (now - t) as f64 / 1e6;
            let b = ((ms + 1.0).log2().floor() as usize).min(BINS - 1);
            self.bins[a][b] += 1;
            self.total[a] += 1;
        }
        self.last[a] = Some(now);
    }

    /// Fraction of adapter `a`'s gaps at most `ms` long.
    fn cdf(&self, a: usize, ms: f64) -> f64 {
        let mut below = 0.0;
        for (b, &n) in self.bins[a].iter().enumerate() {
            let (lo, hi) = (edge_ms(b), edge_ms(b + 1));
            if ms >= hi {
                below += n as f64;
            } else {
                if ms > lo {
                    below += n as f64 * (ms - lo) / (hi - lo);
                }
                break;
            }
        }
        below / self.total[a] as f64
    }

    /// P(the next request for `a` arrives within `horizon` of `now` | none since its last arrival).
    pub(crate) fn chance(&self, a: usize, now: Nanos, horizon: Nanos) -> f64 {
        let Some(t) = self.last[a] else { return 0.0 };
        if self.total[a] < MIN_SAMPLES {
            return 0.0;
        }
        let e = (now - t) as f64 / 1e6;
        let f0 = self.cdf(a, e);
        if f0 >= 1.0 {
            return 0.0;
        }
        (self.cdf(a, e + horizon as f64 / 1e6) - f0) / (1.0 - f0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_arrivals_predict_the_next_one() {
        let mut h = Histograms::new(1);
        for i in 0..10u64 {
            h.arrival(0, i * 100_000_000); // every 100 ms: all gaps in bin [63, 127) ms
        }
        let last = 900_000_000;
        // 50 ms after the last arrival, the next is certain within 100 ms and impossible within 5 ms.
        assert!((h.chance(0, last + 50_000_000, 100_000_000) - 1.0).abs() < 1e-9);
        assert_eq!(h.chance(0, last + 50_000_000, 5_000_000), 0.0);
        // Half the bin's mass lies below 95 ms.
        assert!((h.cdf(0, 95.0) - 0.5).abs() < 1e-9);
        // An adapter with too few gaps predicts nothing.
        let mut few = Histograms::new(1);
        few.arrival(0, 0);
        few.arrival(0, 1);
        assert_eq!(few.chance(0, 2, 1_000_000_000), 0.0);
    }
}
