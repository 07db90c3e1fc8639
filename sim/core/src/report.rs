//! A run's outputs: `summary.json`, `requests.csv`, `adapters.csv`, and the table `sim run` prints.

use std::path::Path;

use serde_json::Value;

use crate::error::{Error, Result};
use crate::metrics;
use crate::run::Report;

impl Report {
    /// Writes `summary.json` and `requests.csv` into `dir` (created if missing).
    pub fn write(&self, dir: &Path) -> Result<()> {
        let io = |e: std::io::Error| Error::internal(format!("{}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let json = serde_json::to_string_pretty(&self.summary).expect("summary serialises") + "\n";
        std::fs::write(dir.join("summary.json"), json).map_err(io)?;
        if let Some(f) = &self.fleet {
            self.write_fleet(dir, f).map_err(io)?;
            if f.config.stream.is_some() {
                // The rows were streamed during the run; no per-request records are held.
                return Ok(());
            }
        }
        let f = std::fs::File::create(dir.join("requests.csv")).map_err(io)?;
        let mut f = std::io::BufWriter::new(f);
        metrics::write_requests_csv(&mut f, &self.workload, &self.output).map_err(io)?;
        std::io::Write::flush(&mut f).map_err(io)?;
        let f = std::fs::File::create(dir.join("adapters.csv")).map_err(io)?;
        let mut f = std::io::BufWriter::new(f);
        metrics::write_adapters_csv(&mut f, &self.workload, &self.output).map_err(io)?;
        std::io::Write::flush(&mut f).map_err(io)?;
        Ok(())
    }

    /// A fleet's files: `fleet.json` (its keys), `replicas.csv`, `fleet_samples.csv` (load and replication
    /// over time), `replication.csv` (per adapter) and, unless streamed, `routes.csv` (each request's replica).
    fn write_fleet(&self, dir: &Path, f: &crate::run::FleetReport) -> std::io::Result<()> {
        use std::io::{BufWriter, Write};
        let json = serde_json::to_string_pretty(&f.summary).expect("summary serialises") + "\n";
        std::fs::write(dir.join("fleet.json"), json)?;
        let mut w = BufWriter::new(std::fs::File::create(dir.join("replicas.csv"))?);
        f.run.write_replicas(&f.config, &mut w)?;
        w.flush()?;
        let mut w = BufWriter::new(std::fs::File::create(dir.join("fleet_samples.csv"))?);
        f.run.write_samples(&mut w)?;
        w.flush()?;
        let mut w = BufWriter::new(std::fs::File::create(dir.join("replication.csv"))?);
        f.run.write_replication(&self.workload, &mut w)?;
        w.flush()?;
        if !f.run.routes.is_empty() {
            let mut w = BufWriter::new(std::fs::File::create(dir.join("routes.csv"))?);
            writeln!(w, "id,replica")?;
            for (i, r) in f.run.routes.iter().enumerate() {
                writeln!(w, "{i},{r}")?;
            }
            w.flush()?;
        }
        Ok(())
    }

    /// What `sim run` and `sim real` do with a report: write `out` (also when a backend stopped the run, so
    /// each request's state at the failure is kept), then fail with exit code 1 if the run stopped early,
    /// else print the summary (a table, or JSON).
    pub fn finish(&self, out: Option<&Path>, json: bool) -> Result<()> {
        if let Some(dir) = out {
            self.write(dir)?;
        }
        if let Some(why) = &self.output.aborted {
            return Err(Error::internal(format!("the run stopped early: {why}")));
        }
        if json {
            println!(
                "{}",
                serde_json::to_string_pretty(&self.row()).expect("summary serialises")
            );
        } else {
            print!("{}", self.table());
            if let Some(f) = &self.fleet {
                print!("{}", fleet_table(&f.summary));
            }
        }
        Ok(())
    }

    /// The human-readable summary `sim run` prints.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
        let t = |k: &str| {
            s.get(k)
                .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
                .unwrap_or_default()
        };
        let ms = |k: &str| format!("{:>10.1}", f(k) * 1e3);
        let row = |name: &str, p: &str| {
            format!(
                "  {name:<14}{}{}{}{}{}\n",
                ms(&format!("{p}_mean_s")),
                ms(&format!("{p}_p50_s")),
                ms(&format!("{p}_p90_s")),
                ms(&format!("{p}_p99_s")),
                ms(&format!("{p}_max_s"))
            )
        };
        let mut o = String::new();
        o += &format!("trace       {}\n", t("trace"));
        o += &format!(
            "setup       {} on {}, {} adapters, pool {} slots ({:.1} GiB)\n",
            t("model"),
            t("gpu"),
            t("adapters"),
            t("pool_slots"),
            f("pool_gib")
        );
        o += &format!(
            "policies    scheduler {}, cache {}\n",
            t("scheduler"),
            t("cache_policy")
        );
        o += &format!("cost model  {}\n", t("cost_model"));
        o += &format!(
            "requests    {} total, {} finished, {} rejected; offered {:.2} req/s\n\n",
            t("requests_total"),
            t("requests_finished"),
            t("requests_rejected"),
            f("offered_rps")
        );
        o += &format!(
            "  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}\n",
            "latency (ms)", "mean", "p50", "p90", "p99", "max"
        );
        o += &row("TTFT", "ttft");
        o += &row("TBT (mean/req)", "tbt");
        o += &row("E2E", "e2e");
        o += &row("queueing", "queue");
        o += &row("load wait", "load_wait");
        o += &format!(
            "\nthroughput  {:.3} req/s, {:.1} output tokens/s over {:.1} s\n",
            f("throughput_rps"),
            f("throughput_output_tps"),
            f("duration_s")
        );
        o += &format!(
            "SLO         TTFT <= {} s: {:.1}%   TBT <= {} s: {:.1}%   both: {:.1}%\n",
            f("slo_ttft_s"),
            100.0 * f("slo_ttft_attainment"),
            f("slo_tbt_s"),
            100.0 * f("slo_tbt_attainment"),
            100.0 * f("slo_attainment")
        );
        o += &format!(
            "adapters    {} loads ({:.2} GB over PCIe), hit rate {:.1}%, {} evictions, GPU stalled {:.2} s on loads\n",
            t("adapter_loads"),
            f("pcie_bytes") / 1e9,
            100.0 * f("adapter_hit_rate"),
            t("adapter_evictions"),
            f("load_stall_s")
        );
        o += &format!(
            "memory      KV peak {:.2} GiB / mean {:.2} GiB; adapters peak {:.2} GiB / mean {:.2} GiB\n",
            f("mem_kv_peak_gib"),
            f("mem_kv_mean_gib"),
            f("mem_adapters_peak_gib"),
            f("mem_adapters_mean_gib")
        );
        o += &format!(
            "engine      {} prefill + {} decode iterations, GPU busy {:.1}% of {:.1} simulated s; of peak FLOP/s \
             {:.1}%, of peak bandwidth {:.1}%\n",
            t("iterations_prefill"),
            t("iterations_decode"),
            100.0 * f("gpu_busy_fraction"),
            f("simulated_s"),
            100.0 * f("gpu_flops_utilisation"),
            100.0 * f("gpu_bandwidth_utilisation")
        );
        let blocked: f64 = [
            "memory",
            "adapter_memory",
            "batch",
            "prefill_tokens",
            "policy",
        ]
        .iter()
        .map(|k| f(&format!("blocked_{k}")))
        .sum();
        o += &format!(
            "waiting     {blocked} of {} merges left requests waiting; binding: {}\n",
            t("merges"),
            t("binding_resource")
        );
        o
    }
}

/// The fleet's lines under `sim run`'s table.
fn fleet_table(s: &serde_json::Map<String, Value>) -> String {
    let f = |k: &str| s.get(k).and_then(Value::as_f64).unwrap_or(f64::NAN);
    let t = |k: &str| {
        s.get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
            .unwrap_or_default()
    };
    let mut o = String::new();
    o += &format!(
        "fleet       {} replicas ({}, {} GPUs), router {}; quantiles {}\n",
        t("fleet_replicas"),
        t("fleet_layout"),
        t("fleet_gpus"),
        t("fleet_router"),
        t("fleet_quantiles")
    );
    o += &format!(
        "balance     max/mean outstanding requests {:.2} (mean over samples, worst {:.2}); tokens {:.2}\n",
        f("fleet_imbalance_requests_mean"),
        f("fleet_imbalance_requests_max"),
        f("fleet_imbalance_tokens_mean")
    );
    o += &format!(
        "replication {:.2} replicas per held adapter (most {}), {:.1} adapters held\n",
        f("fleet_replication_mean"),
        t("fleet_replication_max"),
        f("fleet_adapters_held_mean")
    );
    o += &format!(
        "replicas    P99 TTFT {:.1} .. {:.1} ms, hit rate {:.1} .. {:.1}%, requests {} .. {}\n",
        f("fleet_replica_ttft_p99_min") * 1e3,
        f("fleet_replica_ttft_p99_max") * 1e3,
        100.0 * f("fleet_replica_hit_rate_min"),
        100.0 * f("fleet_replica_hit_rate_max"),
        f("fleet_replica_requests_min"),
        f("fleet_replica_requests_max")
    );
    o
}
