//! What a fleet run reports: its own summary keys (`fleet.json`), the streamed summary, and the per-replica,
//! per-sample and per-adapter tables.

use std::io::Write;

use serde_json::{Map, Value, json};

use super::acc::{self, Sketch};
use super::{FleetConfig, FleetRun, ReplicaReport};
use crate::csv_out::{CsvOut, Num};
use crate::engine::Outcome;
use crate::metrics::{self, num};
use crate::slo::Slo;
use crate::summary::Summary;
use crate::time::secs;
use crate::workload::Workload;

/// The keys `FleetRun::summary` writes (`fleet.json`, beside the summary's in a sweep's row).
pub const SUMMARY_KEYS: &[&str] = &[
    "fleet_replicas",
    "fleet_gpus",
    "fleet_layout",
    "fleet_router",
    "fleet_quantiles",
    "fleet_sample_s",
    "fleet_imbalance_requests_mean",
    "fleet_imbalance_requests_max",
    "fleet_imbalance_tokens_mean",
    "fleet_imbalance_tokens_max",
    "fleet_samples_busy",
    "fleet_replication_mean",
    "fleet_replication_max",
    "fleet_adapters_held_mean",
    "fleet_replica_ttft_p99_min",
    "fleet_replica_ttft_p99_max",
    "fleet_replica_hit_rate_min",
    "fleet_replica_hit_rate_max",
    "fleet_replica_slo_attainment_min",
    "fleet_replica_slo_attainment_max",
    "fleet_replica_requests_min",
    "fleet_replica_requests_max",
    "fleet_gpu_busy_fraction",
];

impl FleetRun {
    /// The fleet's own summary keys (all `fleet_*`): layout, load imbalance, adapter replication, the spread
    /// of per-replica metrics.
    pub fn summary(&self, fc: &FleetConfig) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("fleet_replicas".into(), json!(fc.replicas()));
        m.insert("fleet_gpus".into(), json!(fc.gpus()));
        m.insert("fleet_layout".into(), json!(fc.describe()));
        m.insert("fleet_router".into(), json!(self.router));
        m.insert(
            "fleet_quantiles".into(),
            json!(if fc.stream.is_some() {
                format!(
                    "DDSketch, relative accuracy {} (rank floor(q (n-1)))",
                    acc::SKETCH_ALPHA
                )
            } else {
                "exact (per replica: DDSketch 1%)".to_string()
            }),
        );
        m.insert("fleet_sample_s".into(), num(secs(fc.sample_ns)));
        // Imbalance: max / mean outstanding work over replicas, at samples with work in flight.
        let (mut ir, mut it, mut nr) = (Vec::new(), Vec::new(), 0usize);
        for s in &self.samples {
            if s.outstanding_mean > 0.0 {
                ir.push(s.outstanding_max as f64 / s.outstanding_mean);
                nr += 1;
            }
            if s.tokens_mean > 0.0 {
                it.push(s.tokens_max as f64 / s.tokens_mean);
            }
        }
        let mean = |v: &[f64]| {
            if v.is_empty() {
                f64::NAN
            } else {
                v.iter().sum::<f64>() / v.len() as f64
            }
        };
        let max = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::max);
        m.insert("fleet_imbalance_requests_mean".into(), num(mean(&ir)));
        m.insert("fleet_imbalance_requests_max".into(), num(max(&ir)));
        m.insert("fleet_imbalance_tokens_mean".into(), num(mean(&it)));
        m.insert("fleet_imbalance_tokens_max".into(), num(max(&it)));
        m.insert("fleet_samples_busy".into(), json!(nr));
        // Replication: replicas holding each held adapter, averaged over samples.
        let rep: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| s.adapters_held > 0)
            .map(|s| s.holders as f64 / s.adapters_held as f64)
            .collect();
        m.insert("fleet_replication_mean".into(), num(mean(&rep)));
        m.insert(
            "fleet_replication_max".into(),
            json!(
                self.samples
                    .iter()
                    .map(|s| s.holders_max)
                    .max()
                    .unwrap_or(0)
            ),
        );
        m.insert(
            "fleet_adapters_held_mean".into(),
            num(mean(
                &self
                    .samples
                    .iter()
                    .map(|s| s.adapters_held as f64)
                    .collect::<Vec<_>>(),
            )),
        );
        // Per-replica spread.
        let per = |f: &dyn Fn(&ReplicaReport) -> f64| -> Vec<f64> {
            self.replicas
                .iter()
                .map(f)
                .filter(|x| x.is_finite())
                .collect()
        };
        let lo = |v: &[f64]| v.iter().copied().fold(f64::NAN, f64::min);
        for (k, v) in [
            ("ttft_p99", per(&|r| r.acc.ttft.quantile(0.99))),
            ("hit_rate", per(&|r| r.acc.hit_rate())),
            ("slo_attainment", per(&|r| r.acc.slo_attainment())),
            ("requests", per(&|r| r.acc.requests as f64)),
        ] {
            m.insert(format!("fleet_replica_{k}_min"), num(lo(&v)));
            m.insert(format!("fleet_replica_{k}_max"), num(max(&v)));
        }
        let busy: f64 = self
            .replicas
            .iter()
            .map(|r| r.stats.busy_ns as f64)
            .sum::<f64>()
            / (self.output.stats.end_ns.max(1) as f64 * self.replicas.len() as f64);
        m.insert("fleet_gpu_busy_fraction".into(), num(busy));
        m
    }

    /// The summary of a streamed run: the keys of `metrics::summarize` a stream can give.
    pub fn streamed_summary(&self, w: &Workload, slo: &Slo) -> Summary {
        let s = &self.output.stats;
        let mut m = Summary::default();
        self.total.summary(w, slo, s.end_ns, &mut m);
        metrics::counters(&mut m, s);
        m
    }

    /// `replicas.csv`: one row per replica.
    pub fn write_replicas(&self, fc: &FleetConfig, f: impl Write) -> std::io::Result<()> {
        let mut t = CsvOut::new(
            f,
            &[
                "replica",
                "gpu",
                "tp",
                "requests",
                "finished",
                "rejected",
                "ttft_mean_s",
                "ttft_p50_s",
                "ttft_p99_s",
                "slo_attainment",
                "throughput_rps",
                "adapter_hit_rate",
                "adapter_loads",
                "pcie_bytes",
                "evictions",
                "gpu_busy_fraction",
                "simulated_s",
            ],
        )?;
        let n = |x: f64| Num(x, 6);
        for (i, r) in self.replicas.iter().enumerate() {
            let g = &fc.groups[r.group];
            let a = &r.acc;
            let s = &r.stats;
            t.record(&[
                &i,
                &g.gpu.name,
                &g.tp.degree,
                &a.requests,
                &a.finished,
                &a.rejected,
                &n(a.ttft.mean()),
                &n(a.ttft.quantile(0.5)),
                &n(a.ttft.quantile(0.99)),
                &n(a.slo_attainment()),
                &n(a.throughput_rps()),
                &n(a.hit_rate()),
                &s.adapter_loads,
                &s.pcie_bytes,
                &s.evictions,
                &n(s.busy_ns as f64 / s.end_ns.max(1) as f64),
                &n(secs(s.end_ns)),
            ])?;
        }
        t.finish()?;
        Ok(())
    }

    /// `fleet_samples.csv`: the fleet over time.
    pub fn write_samples(&self, f: impl Write) -> std::io::Result<()> {
        let mut t = CsvOut::new(
            f,
            &[
                "time_s",
                "outstanding_mean",
                "outstanding_max",
                "tokens_mean",
                "tokens_max",
                "adapters_held",
                "replicas_per_held_adapter",
                "replicas_per_adapter_max",
            ],
        )?;
        for s in &self.samples {
            let per_held = if s.adapters_held > 0 {
                s.holders as f64 / s.adapters_held as f64
            } else {
                0.0
            };
            t.record(&[
                &format_args!("{:.3}", secs(s.t)),
                &format_args!("{:.3}", s.outstanding_mean),
                &s.outstanding_max,
                &format_args!("{:.1}", s.tokens_mean),
                &s.tokens_max,
                &s.adapters_held,
                &format_args!("{per_held:.4}"),
                &s.holders_max,
            ])?;
        }
        t.finish()?;
        Ok(())
    }

    /// `replication.csv`: per adapter, the replicas holding it (mean over samples, most at a sample).
    pub fn write_replication(&self, w: &Workload, f: impl Write) -> std::io::Result<()> {
        let mut t = CsvOut::new(f, &["adapter", "rank", "replicas_mean", "replicas_max"])?;
        for (a, &(mean, max)) in w.adapters.iter().zip(&self.replication) {
            t.record(&[&a.id, &a.rank, &format_args!("{mean:.4}"), &max])?;
        }
        t.finish()?;
        Ok(())
    }

    /// `routes.csv`: each request's replica.
    pub fn write_routes(&self, f: impl Write) -> std::io::Result<()> {
        let mut t = CsvOut::new(f, &["id", "replica"])?;
        for (i, r) in self.routes.iter().enumerate() {
            t.record(&[&i, r])?;
        }
        t.finish()?;
        Ok(())
    }
}

/// Latencies of one replica's finished requests, exactly (tests and small fleets).
pub fn replica_ttft(run: &FleetRun, w: &Workload, r: u32) -> Sketch {
    let mut s = Sketch::default();
    for (i, rec) in run.output.records.iter().enumerate() {
        if run.routes.get(i) == Some(&r) && rec.outcome == Outcome::Finished {
            s.add(rec.first_token - w.requests[i].arrival);
        }
    }
    s
}
