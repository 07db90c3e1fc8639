//! A run's outputs: `summary.json`, `requests.csv`, `adapters.csv`, and the table `sim run` prints.

use std::path::Path;

use crate::error::{Error, Result};
use crate::metrics::{self, Latency};
use crate::run::Report;

/// The files `Report::write` puts in its directory.
pub const OUT_FILES: [&str; 4] = ["summary.json", "requests.csv", "adapters.csv", "cdf.csv"];

/// Checks before a run that `dir` can become its output directory, without creating it: a directory, or
/// a path whose nearest existing ancestor is a writable directory. A bad `--out` then fails in a second,
/// not after the run, and leaves nothing behind.
pub fn check_out_dir(dir: &Path, option: &str) -> Result<()> {
    let bad = |why: String| Error::msg(format!("{option} {}: {why}", dir.display()));
    let mut probe = dir;
    while !probe.exists() {
        match probe.parent() {
            Some(p) if !p.as_os_str().is_empty() => probe = p,
            _ => {
                probe = Path::new(".");
                break;
            }
        }
    }
    if !probe.is_dir() {
        return Err(bad(format!("{} is not a directory", probe.display())));
    }
    // Permission bits do not tell (root, read-only mounts): create and remove a probe file.
    let test = probe.join(format!(".sim-write-test-{}", std::process::id()));
    match std::fs::File::create(&test) {
        Ok(_) => {
            let _ = std::fs::remove_file(&test);
            Ok(())
        }
        Err(e) => Err(bad(format!("cannot write in {}: {e}", probe.display()))),
    }
}

/// Three significant digits (a rate of 0.0035 req/s must not print as 0.00).
fn sig3(x: f64) -> String {
    if !x.is_finite() || x == 0.0 {
        return format!("{x}");
    }
    let decimals = (2 - x.abs().log10().floor() as i32).max(0) as usize;
    format!("{x:.decimals$}")
}

/// A latency (seconds) as a table cell in ms: ten characters starting with a space, so columns never run
/// together; past 10^6 ms in three significant digits (1.120e7).
fn ms_cell(v: f64) -> String {
    let x = v * 1e3;
    let t = if !x.is_finite() {
        // Undefined (no request finished): a dash, not NaN.
        "-".to_string()
    } else if x.abs() < 1e6 {
        format!("{x:.1}")
    } else {
        format!("{x:.3e}")
    };
    format!(" {t:>9}")
}

impl Report {
    /// Writes `summary.json`, `requests.csv` and `adapters.csv` into `dir` (created if missing). Each file
    /// is written to a temporary name and renamed, so a failure leaves no half-written file.
    pub fn write(&self, dir: &Path) -> Result<()> {
        self.write_with(dir, &[])
    }

    /// `write`, with `cdf.csv` also at `quantiles` (`--percentiles`).
    pub fn write_with(&self, dir: &Path, quantiles: &[f64]) -> Result<()> {
        let io = |e: std::io::Error| Error::msg(format!("--out {}: {e}", dir.display()));
        std::fs::create_dir_all(dir).map_err(io)?;
        let put = |name: &str, fill: &dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()>| {
            let tmp = dir.join(format!(".{name}.tmp"));
            let res = std::fs::File::create(&tmp).and_then(|f| {
                let mut f = std::io::BufWriter::new(f);
                fill(&mut f)?;
                std::io::Write::flush(&mut f)
            });
            match res.and_then(|_| std::fs::rename(&tmp, dir.join(name))) {
                Ok(()) => Ok(()),
                Err(e) => {
                    let _ = std::fs::remove_file(&tmp);
                    Err(io(e))
                }
            }
        };
        // A fleet's `fleet_*` keys too (also in fleet.json): summary.json is what `--json` prints.
        put(OUT_FILES[0], &|f| {
            let json = serde_json::to_string_pretty(&self.row()).expect("summary serialises");
            f.write_all((json + "\n").as_bytes())
        })?;
        if let Some(f) = &self.fleet {
            self.write_fleet(dir, f).map_err(io)?;
            if f.config.stream.is_some() {
                // The rows were streamed during the run; no per-request records are held.
                return Ok(());
            }
        }
        put(OUT_FILES[1], &|f| {
            metrics::write_requests_csv(f, &self.workload, &self.output)
        })?;
        put(OUT_FILES[2], &|f| {
            metrics::write_adapters_csv(f, &self.workload, &self.output)
        })?;
        let grid = crate::record::cdf_grid(quantiles);
        put(OUT_FILES[3], &|f| {
            crate::record::write_cdf_csv(f, &self.workload, &self.output, &grid)
        })
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
            f.run.write_routes(&mut w)?;
            w.flush()?;
        }
        Ok(())
    }

    /// What `sim run` and `sim real` do with a report: write `out` (also when a backend stopped the run, so
    /// each request's state at the failure is kept), then fail with exit code 1 if the run stopped early,
    /// else print the warnings (stderr) and the summary (a table, or JSON).
    pub fn finish(&self, out: Option<&Path>, json: bool) -> Result<()> {
        self.finish_with(out, json, &[])
    }

    /// `finish`, with `cdf.csv` also at `quantiles`.
    pub fn finish_with(&self, out: Option<&Path>, json: bool, quantiles: &[f64]) -> Result<()> {
        if let Some(dir) = out {
            self.write_with(dir, quantiles)?;
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
        // After the table, where a reader's eye ends up.
        for w in &self.summary.warnings {
            eprintln!("warning: {w}");
        }
        Ok(())
    }

    /// The human-readable summary `sim run` prints.
    pub fn table(&self) -> String {
        let s = &self.summary;
        let opt = |v: Option<f64>| v.unwrap_or(f64::NAN);
        let pct = |v: f64| 100.0 * v;
        let ms = |v: f64| ms_cell(v);
        let row = |name: &str, which: Latency| {
            let d = s.dist(which);
            format!(
                "  {name:<14}{}{}{}{}{}\n",
                ms(d.mean),
                ms(d.p50),
                ms(d.p90),
                ms(d.p99),
                ms(d.max)
            )
        };
        let limit = |v: Option<u64>| v.map_or("none".to_string(), |n| n.to_string());
        let mut o = String::new();
        // The physics first: every number below rests on it.
        o += &format!("cost model  {}\n", s.cost_model);
        o += &format!(
            "setup       {} on {}, {} adapters (LoRA on {}), pool {} slots ({:.1} GiB)\n",
            s.model, s.gpu, s.adapters, s.lora_targets, s.pool_slots, s.pool_gib
        );
        o += &format!("trace       {}\n", s.trace);
        o += &format!(
            "limits      context {}, input {}, input + output {}, prefill {} tokens\n",
            limit(s.context_tokens),
            limit(s.max_input_tokens),
            limit(s.max_total_tokens),
            s.max_prefill_tokens
        );
        o += &format!(
            "policies    scheduler {}, cache {}\n",
            s.scheduler, s.cache_policy
        );
        o += &format!(
            "arrivals    {}{}; offered {}; lengths x {}\n",
            s.arrivals,
            s.rate_rps
                .map_or(String::new(), |r| format!(" at {r} req/s")),
            s.offered_rps
                .map_or("n/a (one arrival instant)".into(), |r| format!(
                    "{} req/s",
                    sig3(r)
                )),
            s.length_scale
        );
        let total = s.requests_total.max(1) as f64;
        o += &format!(
            "requests    {} total, {} finished ({:.1}%), {} rejected ({:.1}%)",
            s.requests_total,
            s.requests_finished,
            pct(s.requests_finished as f64 / total),
            s.requests_rejected,
            pct(s.requests_rejected_share)
        );
        if s.requests_aborted > 0 {
            o += &format!(
                ", {} aborted by the scheduler ({:.1}%)",
                s.requests_aborted,
                pct(s.requests_aborted_share)
            );
        }
        if s.requests_unfinished > 0 {
            o += &format!(", {} unfinished", s.requests_unfinished);
        }
        o += "\n";
        for (key, n, share) in s.rejections() {
            if n > 0 {
                o += &format!(
                    "  rejected  {:<16}{n:>8} ({:.1}%)\n",
                    key.replace('_', " "),
                    pct(share)
                );
            }
        }
        o += &format!(
            "\n  {:<14}{:>10}{:>10}{:>10}{:>10}{:>10}   (finished requests)\n",
            "latency (ms)", "mean", "p50", "p90", "p99", "max"
        );
        o += &row("TTFT", Latency::Ttft);
        o += &row("TBT (mean/req)", Latency::Tbt);
        o += &row("E2E", Latency::E2e);
        o += &row("queueing", Latency::Queue);
        o += &row("load wait", Latency::LoadWait);
        o += &format!(
            "\nthroughput  {:.3} req/s finished, {:.1} output tokens/s; goodput {:.3} req/s (within both SLOs); over {:.1} s\n",
            opt(s.throughput_rps),
            opt(s.throughput_output_tps),
            opt(s.goodput_rps),
            s.simulated_s
        );
        o += &format!(
            "SLO         of all {} requests (a rejected one misses): TTFT <= {} s: {:.1}%   TBT <= {} s: {:.1}%   both: {:.1}%\n",
            s.requests_total,
            s.slo_ttft_s,
            pct(s.slo_ttft_attainment),
            s.slo_tbt_s,
            pct(s.slo_tbt_attainment),
            pct(s.slo_attainment)
        );
        o += &format!(
            "adapters    {} loads ({:.2} GiB over PCIe), hit rate {}, {} evictions, GPU stalled {:.2} s on loads\n",
            s.adapter_loads,
            s.pcie_bytes as f64 / (1u64 << 30) as f64,
            s.adapter_hit_rate
                .map_or("n/a".to_string(), |h| format!("{:.1}%", pct(h))),
            s.adapter_evictions,
            s.load_stall_s
        );
        o += &format!(
            "memory      KV peak {:.2} GiB / mean {:.2} GiB; adapters peak {:.2} GiB / mean {:.2} GiB\n",
            s.mem_kv_peak_gib, s.mem_kv_mean_gib, s.mem_adapters_peak_gib, s.mem_adapters_mean_gib
        );
        o += &format!(
            "engine      {} prefill + {} decode iterations, GPU busy {:.1}% of {:.1} simulated s; of peak FLOP/s \
             {:.1}%, of peak bandwidth {:.1}%\n",
            s.iterations_prefill,
            s.iterations_decode,
            pct(s.gpu_busy_fraction),
            s.simulated_s,
            pct(s.gpu_flops_utilisation),
            pct(s.gpu_bandwidth_utilisation)
        );
        let blocked = s.blocked_memory
            + s.blocked_adapter_memory
            + s.blocked_batch
            + s.blocked_prefill_tokens
            + s.blocked_policy;
        o += &format!(
            "waiting     {blocked} of {} merges left requests waiting; binding: {}\n",
            s.merges, s.binding_resource
        );
        if s.requests_rejected_share > crate::refusals::WARN_SHARE {
            o += &format!(
                "\nREFUSED     {:.1}% of the requests were refused (see the warning): the latencies describe \
                 only the {:.1}% served\n",
                pct(s.requests_rejected_share),
                pct(s.requests_finished as f64 / total)
            );
        }
        if s.overloaded {
            o += "\nOVERLOADED  see the warning: these latencies grow with the trace's length\n";
        }
        o
    }
}

/// The fleet's lines under `sim run`'s table.
fn fleet_table(s: &serde_json::Map<String, serde_json::Value>) -> String {
    use serde_json::Value;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_cells_never_run_together() {
        // The row a new user met: `TTFT  11203922.011278676.9...`.
        let row: String = [11203.922011, 11278.6769, 0.0123, f64::NAN, 999.99999]
            .map(ms_cell)
            .concat();
        assert_eq!(row, "   1.120e7   1.128e7      12.3         - 1000000.0");
        for v in [0.0, 1e-3, 1.0, 999.0, 1e4, 1e9] {
            let c = ms_cell(v);
            assert!(c.len() == 10 && c.starts_with(' '), "{v}: '{c}'");
        }
    }
}
