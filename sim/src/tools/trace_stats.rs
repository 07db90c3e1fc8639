//! `sim trace stats`: one streaming pass over a trace. Memory is bounded by the number of distinct token
//! counts and ids, not rows: token counts are integers, so a counting histogram gives exact percentiles.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::tools::zipf as fit;
use sim_core::trace::reader::RawRow;

/// Exact distribution of an integer quantity.
#[derive(Default, Debug)]
pub struct Counter {
    counts: HashMap<u32, u64>,
    n: u64,
    sum: u128,
}

impl Counter {
    pub fn add(&mut self, v: u32) {
        *self.counts.entry(v).or_default() += 1;
        self.n += 1;
        self.sum += v as u128;
    }

    pub fn mean(&self) -> f64 {
        self.sum as f64 / self.n.max(1) as f64
    }

    fn sorted(&self) -> Vec<(u32, u64)> {
        let mut v: Vec<_> = self.counts.iter().map(|(&k, &c)| (k, c)).collect();
        v.sort_unstable();
        v
    }

    /// Percentiles with linear interpolation between order statistics (`metrics::percentile_by`), q in
    /// [0, 1].
    pub fn percentiles(&self, qs: &[f64]) -> Vec<f64> {
        let s = self.sorted();
        // The k-th smallest value (0-based) of the counted sample.
        let at = |k: usize| {
            let mut seen = 0;
            for &(v, c) in &s {
                seen += c;
                if seen > k as u64 {
                    return v as f64;
                }
            }
            f64::NAN
        };
        qs.iter()
            .map(|&q| sim_core::metrics::percentile_by(self.n as usize, q, at))
            .collect()
    }

    pub fn max(&self) -> u32 {
        self.counts.keys().copied().max().unwrap_or(0)
    }

    /// Counts in power-of-two bins: (low, high exclusive, count).
    pub fn log2_bins(&self) -> Vec<(u64, u64, u64)> {
        let mut bins: Vec<u64> = Vec::new();
        for (&v, &c) in &self.counts {
            let b = (64 - (v as u64).leading_zeros()) as usize; // 0 -> 0, 1 -> 1, 2..3 -> 2, ...
            if bins.len() <= b {
                bins.resize(b + 1, 0);
            }
            bins[b] += c;
        }
        bins.iter()
            .enumerate()
            .filter(|(_, c)| **c > 0)
            .map(|(b, &c)| {
                if b == 0 {
                    (0, 1, c)
                } else {
                    (1 << (b - 1), 1 << b, c)
                }
            })
            .collect()
    }
}

/// Arrivals per time bucket; the bucket width doubles whenever the span needs more than `MAX_BUCKETS`.
#[derive(Debug)]
struct TimeHist {
    width: i128,
    counts: Vec<u64>,
}

const MAX_BUCKETS: usize = 4096;

impl TimeHist {
    fn add(&mut self, dt: i128) {
        let mut b = (dt / self.width) as usize;
        while b >= MAX_BUCKETS {
            self.width *= 2;
            let merged: Vec<u64> = self.counts.chunks(2).map(|c| c.iter().sum()).collect();
            self.counts = merged;
            b = (dt / self.width) as usize;
        }
        if self.counts.len() <= b {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += 1;
    }
}

/// Everything `sim trace stats` reports, accumulated row by row.
#[derive(Debug)]
pub struct TraceStats {
    pub rows: u64,
    first: Option<i128>,
    last: i128,
    prev: Option<i128>,
    // Welford's running mean and variance of inter-arrival gaps, seconds.
    gaps: u64,
    gap_mean: f64,
    gap_m2: f64,
    pub input: Counter,
    pub output: Counter,
    pub adapters: HashMap<String, u64>,
    pub tenants: HashMap<String, u64>,
    pub without_adapter: u64,
    hist: TimeHist,
    /// Doubts about the file (its time unit), one line each.
    pub warnings: Vec<String>,
}

impl Default for TraceStats {
    fn default() -> Self {
        TraceStats {
            rows: 0,
            first: None,
            last: 0,
            prev: None,
            gaps: 0,
            gap_mean: 0.0,
            gap_m2: 0.0,
            input: Counter::default(),
            output: Counter::default(),
            adapters: HashMap::new(),
            tenants: HashMap::new(),
            without_adapter: 0,
            hist: TimeHist {
                width: 1_000_000_000,
                counts: Vec::new(),
            },
            warnings: Vec::new(),
        }
    }
}

fn share_of_top(counts: &HashMap<String, u64>, k: usize) -> f64 {
    let mut v: Vec<u64> = counts.values().copied().collect();
    v.sort_unstable_by(|a, b| b.cmp(a));
    let total: u64 = v.iter().sum();
    v.iter().take(k).sum::<u64>() as f64 / total.max(1) as f64
}

impl TraceStats {
    /// Adds a row whose time is not before the previous row's (the caller sorts otherwise).
    pub fn add(&mut self, r: &RawRow) {
        self.add_lengths(r);
        self.add_time(r.time);
    }

    pub fn add_lengths(&mut self, r: &RawRow) {
        self.rows += 1;
        self.input.add(r.input);
        self.output.add(r.output);
        match &r.adapter {
            Some(a) => *self.adapters.entry(a.clone()).or_default() += 1,
            None => self.without_adapter += 1,
        }
        if let Some(t) = &r.tenant {
            *self.tenants.entry(t.clone()).or_default() += 1;
        }
    }

    pub fn add_time(&mut self, t: i128) {
        let first = *self.first.get_or_insert(t);
        self.last = t;
        if let Some(p) = self.prev {
            let g = (t - p) as f64 / 1e9;
            self.gaps += 1;
            let d = g - self.gap_mean;
            self.gap_mean += d / self.gaps as f64;
            self.gap_m2 += d * (g - self.gap_mean);
        }
        self.prev = Some(t);
        self.hist.add(t - first);
    }

    /// The first row's time as read, ns.
    pub fn first_time(&self) -> i128 {
        self.first.unwrap_or(0)
    }

    pub fn span_ns(&self) -> i128 {
        self.first.map_or(0, |f| self.last - f)
    }

    pub fn span_s(&self) -> f64 {
        self.first.map_or(0.0, |f| (self.last - f) as f64 / 1e9)
    }

    /// Population CV of the gaps (standard deviation over mean).
    pub fn gap_cv(&self) -> f64 {
        (self.gap_m2 / self.gaps.max(1) as f64).sqrt() / self.gap_mean
    }

    pub fn json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        let span = self.span_s();
        m.insert("rows".into(), json!(self.rows));
        m.insert("span_s".into(), json!(span));
        m.insert(
            "rate_rps".into(),
            json!(if span > 0.0 {
                (self.rows - 1) as f64 / span
            } else {
                f64::NAN
            }),
        );
        m.insert("interarrival_mean_s".into(), json!(self.gap_mean));
        m.insert("interarrival_cv".into(), json!(self.gap_cv()));
        for (name, c) in [("input", &self.input), ("output", &self.output)] {
            let p = c.percentiles(&[0.5, 0.99]);
            m.insert(format!("{name}_mean"), json!(c.mean()));
            m.insert(format!("{name}_p50"), json!(p[0]));
            m.insert(format!("{name}_p99"), json!(p[1]));
            m.insert(format!("{name}_max"), json!(c.max()));
        }
        for (name, ids) in [("adapter", &self.adapters), ("tenant", &self.tenants)] {
            if ids.is_empty() {
                continue;
            }
            m.insert(format!("{name}s_distinct"), json!(ids.len()));
            for k in [1, 10, 100] {
                m.insert(format!("{name}_top{k}_share"), json!(share_of_top(ids, k)));
            }
            let counts: Vec<u64> = ids.values().copied().collect();
            if let Some(f) = fit::fit_zipf(&counts) {
                m.insert(format!("{name}_zipf"), f.json());
            }
        }
        if !self.adapters.is_empty() {
            m.insert("rows_without_adapter".into(), json!(self.without_adapter));
        }
        m.insert("warnings".into(), json!(self.warnings));
        m
    }

    pub fn text(&self, source: &str, mapping: &str) -> String {
        let span = self.span_s();
        let mut o = format!("file          {source}\nread as       {mapping}\n");
        for w in &self.warnings {
            o += &format!("WARNING       {w}\n");
        }
        o += &format!("rows          {}\n", self.rows);
        o += &format!(
            "span          {span:.1} s ({:.2} h)\nrate          {:.4} req/s (rows-1 over span)\n",
            span / 3600.0,
            if span > 0.0 {
                (self.rows - 1) as f64 / span
            } else {
                f64::NAN
            }
        );
        o += &format!(
            "inter-arrival mean {:.4} s, CV {:.3}\n\n",
            self.gap_mean,
            self.gap_cv()
        );
        o += &format!(
            "{:<14}{:>12}{:>10}{:>10}{:>10}\n",
            "tokens", "mean", "p50", "p99", "max"
        );
        for (name, c) in [("input", &self.input), ("output", &self.output)] {
            let p = c.percentiles(&[0.5, 0.99]);
            o += &format!(
                "{name:<14}{:>12.1}{:>10.1}{:>10.1}{:>10}\n",
                c.mean(),
                p[0],
                p[1],
                c.max()
            );
        }
        for (name, ids) in [("adapter", &self.adapters), ("tenant", &self.tenants)] {
            if ids.is_empty() {
                continue;
            }
            o += &format!(
                "\n{name}s      {} distinct; top-1 / 10 / 100 share of requests with one: {:.3} / {:.3} / {:.3}\n",
                ids.len(),
                share_of_top(ids, 1),
                share_of_top(ids, 10),
                share_of_top(ids, 100)
            );
            if name == "adapter" {
                o += &format!("rows without an adapter: {}\n", self.without_adapter);
            }
            let counts: Vec<u64> = ids.values().copied().collect();
            if let Some(f) = fit::fit_zipf(&counts) {
                o += &f.text();
            }
        }
        o += "\ninput tokens (power-of-two bins)\n";
        let bins = self.input.log2_bins();
        let top = bins.iter().map(|b| b.2).max().unwrap_or(1);
        for (lo, hi, c) in bins {
            o += &format!(
                "  [{lo:>6}, {hi:>6}) {c:>10} {}\n",
                "#".repeat((40 * c).div_ceil(top) as usize)
            );
        }
        // Arrivals over the span in at most 20 rows.
        let h = &self.hist;
        if !h.counts.is_empty() {
            let per = h.counts.len().div_ceil(20);
            let rows: Vec<u64> = h.counts.chunks(per).map(|c| c.iter().sum()).collect();
            let top = rows.iter().copied().max().unwrap_or(1).max(1);
            let w = h.width as f64 * per as f64 / 1e9;
            o += &format!("\narrivals per {w:.0} s\n");
            for (i, c) in rows.iter().enumerate() {
                o += &format!(
                    "  {:>10.0} s {c:>10} {}\n",
                    i as f64 * w,
                    "#".repeat((40 * c).div_ceil(top) as usize)
                );
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_like_numpy() {
        let mut c = Counter::default();
        for v in [1, 2, 3, 4, 10] {
            c.add(v);
        }
        // numpy.percentile([1,2,3,4,10], [50, 99, 90]) = 3, 9.76, 7.6
        let p = c.percentiles(&[0.5, 0.99, 0.9]);
        assert_eq!(p[0], 3.0);
        assert!(
            (p[1] - 9.76).abs() < 1e-9 && (p[2] - 7.6).abs() < 1e-9,
            "{p:?}"
        );
        assert_eq!(c.log2_bins(), [(1, 2, 1), (2, 4, 2), (4, 8, 1), (8, 16, 1)]);
    }

    #[test]
    fn gaps_and_buckets() {
        let mut s = TraceStats::default();
        for t in [0i128, 1, 3, 6] {
            s.add_time(t * 1_000_000_000);
        }
        // gaps 1, 2, 3: mean 2, population sd sqrt(2/3)
        assert!((s.gap_mean - 2.0).abs() < 1e-12);
        assert!((s.gap_cv() - (2.0f64 / 3.0).sqrt() / 2.0).abs() < 1e-12);
        assert_eq!(s.span_s(), 6.0);
        let mut h = TimeHist {
            width: 1,
            counts: vec![],
        };
        h.add(0);
        h.add(MAX_BUCKETS as i128 + 1); // forces one doubling
        assert_eq!(h.width, 2);
        assert_eq!(h.counts[0], 1);
        assert_eq!(h.counts.iter().sum::<u64>(), 2);
    }
}
