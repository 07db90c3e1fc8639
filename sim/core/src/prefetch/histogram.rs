//! The paper's optional prefetch predictor (`histogram`): the next batch's adapters as `queued` does, then
//! adapters whose next request is likely to arrive soon. A histogram of each adapter's inter-arrival times
//! gives the chance that its next request arrives within `horizon_s`, given the time since its last one;
//! adapters at or above `threshold` are wanted, most likely first, at most `max` per merge.
//! Bins are powers of two in milliseconds ([2^b - 1, 2^(b+1) - 1) ms), mass spread uniformly within a bin.

use std::cmp::Reverse;

use crate::engine::api::{PolicyCtx, PrefetchView, Prefetcher, Prefetchers, Residency};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;

const BINS: usize = 26;
/// Fewer observed gaps than this: no prediction.
const MIN_SAMPLES: u32 = 3;

pub const ENTRY: Entry<Prefetchers> = Entry {
    name: "histogram",
    about: "queued, plus adapters a per-adapter inter-arrival histogram expects within horizon_s",
    params: &[
        Param::new("window", "16", "waiting requests looked at (as queued)"),
        Param::new("horizon_s", "5", "look-ahead, seconds"),
        Param::new(
            "threshold",
            "0.5",
            "least chance of an arrival within the horizon",
        ),
        Param::new("max", "4", "most adapters predicted per merge"),
    ],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Prefetcher>> {
    let window: u32 = p.get("window")?;
    let horizon_s: f64 = p.get("horizon_s")?;
    let threshold: f64 = p.get("threshold")?;
    let max: u32 = p.get("max")?;
    if !(horizon_s.is_finite() && horizon_s > 0.0 && (0.0..=1.0).contains(&threshold)) {
        return Err(p.bad("need horizon_s > 0 and 0 <= threshold <= 1"));
    }
    Ok(Box::new(HistogramPrefetch {
        window,
        horizon_ns: (horizon_s * 1e9) as u64,
        threshold,
        max,
        hist: Histograms::new(ctx.workload.adapters.len()),
        ranked: Vec::new(),
    }))
}

pub struct HistogramPrefetch {
    window: u32,
    horizon_ns: Nanos,
    threshold: f64,
    max: u32,
    hist: Histograms,
    /// Reused buffer: (chance, adapter), most likely first.
    ranked: Vec<(Reverse<u64>, u32)>,
}

impl Prefetcher for HistogramPrefetch {
    fn on_arrival(&mut self, adapter: u32, now: Nanos) {
        self.hist.arrival(adapter as usize, now);
    }

    fn wanted(&mut self, view: &PrefetchView<'_>, want: &mut Vec<u32>) {
        super::next_batch(view, self.window, want);
        // Most likely first (ties: lower id); each adapter's chance computed once.
        self.ranked.clear();
        for (a, s) in view.adapters.iter().enumerate() {
            let a = a as u32;
            if s.refs == 0 && s.residency == Residency::Host && !want.contains(&a) {
                let p = self.hist.chance(a as usize, view.now, self.horizon_ns);
                if p >= self.threshold {
                    self.ranked.push((Reverse((p * 1e12) as u64), a));
                }
            }
        }
        self.ranked.sort_unstable();
        want.extend(self.ranked.iter().take(self.max as usize).map(|&(_, a)| a));
    }
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
