//! Fleet metrics that need no per-request memory: latency distributions as DDSketch quantile sketches
//! (`sketches-ddsketch`, relative accuracy 1%: a reported quantile is within 1% of the value at rank
//! floor(q (n - 1)) of the sorted sample), means and counts kept exactly in integers, and the streamed
//! per-request rows.

use std::io::Write;

use sketches_ddsketch::{Config, DDSketch};

use crate::engine::{Outcome, RequestRecord};
use crate::slo::Slo;
use crate::summary::{Dist, Latency, Summary, stat};
use crate::time::{Nanos, secs};
use crate::workload::{Request, Workload};

/// DDSketch's relative accuracy.
pub const SKETCH_ALPHA: f64 = 0.01;

/// One latency's distribution: a sketch (seconds), the exact sum (ns) and maximum.
#[derive(Clone)]
pub struct Sketch {
    sketch: DDSketch,
    n: u64,
    sum_ns: u128,
    max_ns: Nanos,
}

impl Default for Sketch {
    fn default() -> Self {
        Sketch {
            // 2048 bins cover 1 us .. 1e9 s at 1% without collapsing.
            sketch: DDSketch::new(Config::new(SKETCH_ALPHA, 2048, 1e-9)),
            n: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl Sketch {
    pub fn add(&mut self, ns: Nanos) {
        self.sketch.add(secs(ns));
        self.n += 1;
        self.sum_ns += ns as u128;
        self.max_ns = self.max_ns.max(ns);
    }

    /// Adds a value that is not a whole number of ns (a mean TBT), in ns.
    pub fn add_f(&mut self, ns: f64) {
        self.sketch.add(ns / 1e9);
        self.n += 1;
        self.sum_ns += ns.round() as u128;
        self.max_ns = self.max_ns.max(ns.round() as Nanos);
    }

    pub fn count(&self) -> u64 {
        self.n
    }

    /// The q-quantile, seconds (NaN when empty).
    pub fn quantile(&self, q: f64) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        self.sketch.quantile(q).ok().flatten().unwrap_or(f64::NAN)
    }

    pub fn mean(&self) -> f64 {
        if self.n == 0 {
            return f64::NAN;
        }
        self.sum_ns as f64 / self.n as f64 / 1e9
    }

    pub fn max(&self) -> f64 {
        if self.n == 0 {
            f64::NAN
        } else {
            secs(self.max_ns)
        }
    }

    /// Mean and percentiles, as `metrics::summarize` gives them.
    pub fn dist(&self) -> Dist {
        Dist {
            mean: self.mean(),
            p50: self.quantile(0.5),
            p90: self.quantile(0.9),
            p99: self.quantile(0.99),
            max: self.max(),
        }
    }
}

/// What one replica (or the whole fleet, with `full`) served, counted request by request.
#[derive(Clone, Default)]
pub struct Acc {
    pub requests: u64,
    pub finished: u64,
    pub rejected: u64,
    pub aborted: u64,
    pub ttft: Sketch,
    /// Only with `full`: the other latencies.
    pub full: Option<Box<Others>>,
    pub slo_ttft_ok: u64,
    pub tbt_n: u64,
    pub slo_tbt_ok: u64,
    pub slo_both_ok: u64,
    pub with_adapter: u64,
    pub hits: u64,
    pub out_tokens: u64,
    pub first_arrival: Option<Nanos>,
    pub last_finish: Nanos,
}

#[derive(Clone, Default)]
pub struct Others {
    pub e2e: Sketch,
    pub queue: Sketch,
    pub tbt: Sketch,
    pub tbt_worst: Sketch,
    pub load_wait: Sketch,
}

impl Acc {
    pub fn full() -> Acc {
        Acc {
            full: Some(Box::default()),
            ..Acc::default()
        }
    }

    pub fn add(&mut self, w: &Workload, r: &Request, rec: &RequestRecord, slo: &Slo) {
        self.requests += 1;
        self.first_arrival = Some(self.first_arrival.map_or(r.arrival, |a| a.min(r.arrival)));
        match rec.outcome {
            Outcome::Finished => {}
            Outcome::Rejected(_) => {
                self.rejected += 1;
                return;
            }
            Outcome::Aborted(_) => {
                self.aborted += 1;
                return;
            }
            Outcome::Waiting => return,
        }
        self.finished += 1;
        self.last_finish = self.last_finish.max(rec.finished);
        self.out_tokens += r.output as u64;
        let ttft = rec.first_token - r.arrival;
        self.ttft.add(ttft);
        let ttft_ok = ttft <= slo.ttft_ns;
        self.slo_ttft_ok += ttft_ok as u64;
        let mut tbt_ok = true;
        let tbt =
            (r.output > 1).then(|| (rec.finished - rec.first_token) as f64 / (r.output - 1) as f64);
        if let Some(t) = tbt {
            self.tbt_n += 1;
            tbt_ok = t <= slo.tbt_ns as f64;
        }
        // As `metrics::summarize`: one output token has no gap and meets the TBT objective.
        self.slo_tbt_ok += tbt_ok as u64;
        self.slo_both_ok += (ttft_ok && tbt_ok) as u64;
        if w.adapter(r.adapter).is_some() {
            self.with_adapter += 1;
            self.hits += rec.adapter_hit as u64;
        }
        if let Some(o) = &mut self.full {
            o.e2e.add(rec.finished - r.arrival);
            o.queue.add(rec.admitted - r.arrival);
            o.load_wait.add(rec.load_wait);
            if let Some(t) = tbt {
                o.tbt.add_f(t);
                o.tbt_worst.add(rec.max_gap);
            }
        }
    }

    /// Finished requests per second from the first arrival to the last finish.
    pub fn throughput_rps(&self) -> f64 {
        let span = secs(
            self.last_finish
                .saturating_sub(self.first_arrival.unwrap_or(0)),
        );
        self.finished as f64 / span
    }

    /// Over every request routed here (a rejected one missed), as `metrics::summarize`.
    pub fn slo_attainment(&self) -> f64 {
        self.slo_both_ok as f64 / self.requests.max(1) as f64
    }

    pub fn hit_rate(&self) -> f64 {
        self.hits as f64 / self.with_adapter as f64
    }

    /// The request keys of `metrics::summarize` that a stream can give (quantiles from the sketches), with
    /// its definitions: attainment over every request, rates from the first arrival to the run's end.
    pub fn summary(&self, w: &Workload, slo: &Slo, end_ns: Nanos, m: &mut Summary) {
        let total = w.requests.len() as u64;
        m.requests_total = total;
        m.requests_finished = self.finished;
        m.requests_rejected = self.rejected;
        m.requests_aborted = self.aborted;
        m.requests_unfinished = total - self.rejected - self.aborted - self.finished;
        m.requests_rejected_share = self.rejected as f64 / total.max(1) as f64;
        m.requests_aborted_share = self.aborted as f64 / total.max(1) as f64;
        // Every abort reason so far is a deadline (`Abort::KEYS`).
        m.aborted_deadline = self.aborted;
        m.aborted_deadline_share = m.requests_aborted_share;
        m.set_dist(Latency::Ttft, &self.ttft.dist());
        if let Some(o) = &self.full {
            m.set_dist(Latency::Tbt, &o.tbt.dist());
            m.set_dist(Latency::TbtWorst, &o.tbt_worst.dist());
            m.set_dist(Latency::E2e, &o.e2e.dist());
            m.set_dist(Latency::Queue, &o.queue.dist());
            m.set_dist(Latency::LoadWait, &o.load_wait.dist());
        }
        let first = w.requests.first().map_or(0, |r| r.arrival);
        let last = w.requests.last().map_or(0, |r| r.arrival);
        let span = secs(end_ns.max(last).saturating_sub(first));
        m.throughput_rps = stat(self.finished as f64 / span);
        m.throughput_output_tps = stat(self.out_tokens as f64 / span);
        m.goodput_rps = stat(self.slo_both_ok as f64 / span);
        m.offered_rps = stat(total.saturating_sub(1) as f64 / secs(last - first));
        m.slo_ttft_s = secs(slo.ttft_ns);
        m.slo_tbt_s = secs(slo.tbt_ns);
        let n = total.max(1) as f64;
        m.slo_ttft_attainment = self.slo_ttft_ok as f64 / n;
        m.slo_tbt_attainment = self.slo_tbt_ok as f64 / n;
        m.slo_attainment = self.slo_both_ok as f64 / n;
        m.adapter_hit_rate = stat(self.hit_rate());
    }
}

/// `requests.csv`'s columns (`metrics::write_requests_csv`) plus the replica, one row per request as it
/// becomes final (rows in completion order: by final time, then id).
pub fn write_row(
    f: &mut impl Write,
    w: &Workload,
    id: u32,
    replica: u32,
    rec: &RequestRecord,
) -> std::io::Result<()> {
    crate::metrics::write_request_row(f, w, &w.requests[id as usize], rec, Some(replica))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_seconds_print_as_float_formatting_does() {
        for ns in [
            0,
            1,
            999_999_999,
            1_000_000_000,
            123_456_789_012,
            3_600_000_000_123,
            86_400_999_999_999,
        ] {
            assert_eq!(
                crate::time::S9(ns).to_string(),
                format!("{:.9}", secs(ns)),
                "{ns}"
            );
        }
    }

    #[test]
    fn sketch_quantiles_are_within_one_percent_of_the_exact_ones() {
        let mut s = Sketch::default();
        let mut v: Vec<f64> = Vec::new();
        let mut x: u64 = 12345;
        for _ in 0..100_000 {
            x = crate::fleet::router::mix(x);
            // Log-uniform between 1 ms and 100 s, in ns.
            let ns = (1e6 * 10f64.powf((x % 1_000_000) as f64 / 1e6 * 5.0)) as Nanos;
            s.add(ns);
            v.push(secs(ns));
        }
        v.sort_by(f64::total_cmp);
        for q in [0.5, 0.9, 0.99] {
            let exact = v[(q * (v.len() - 1) as f64) as usize];
            let got = s.quantile(q);
            assert!(
                (got / exact - 1.0).abs() <= SKETCH_ALPHA,
                "q{q}: {got} vs {exact}"
            );
        }
        assert_eq!(s.max(), v[v.len() - 1]);
    }
}
