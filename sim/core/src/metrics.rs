//! Per-request records and the run summary: latency percentiles, throughput, SLO attainment, adapter
//! traffic and memory use. Percentiles interpolate linearly between order statistics (numpy's default).

use std::io::Write;

use serde_json::{Map, Value, json};

use crate::engine::{Outcome, RunOutput};
use crate::model::{GpuSpec, ModelSpec};
use crate::time::{Nanos, secs};
use crate::workload::Workload;

/// Latency objectives: the paper's P99 TTFT <= 5 s and TBT <= 150 ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slo {
    pub ttft_ns: Nanos,
    pub tbt_ns: Nanos,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            ttft_ns: 5_000_000_000,
            tbt_ns: 150_000_000,
        }
    }
}

/// Mean and percentiles of a sample, in seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dist {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = p * (sorted.len() - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// Median (the mean of the middle two for an even count); `None` when empty. Sorts `v`.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(percentile(v, 0.5))
}

impl Dist {
    pub fn of(values: &mut [f64]) -> Dist {
        if values.is_empty() {
            return Dist {
                mean: f64::NAN,
                p50: f64::NAN,
                p90: f64::NAN,
                p99: f64::NAN,
                max: f64::NAN,
            };
        }
        // Unstable is exact here: values equal under total_cmp are the same bits.
        values.sort_unstable_by(f64::total_cmp);
        Dist {
            mean: values.iter().sum::<f64>() / values.len() as f64,
            p50: percentile(values, 0.50),
            p90: percentile(values, 0.90),
            p99: percentile(values, 0.99),
            max: values[values.len() - 1],
        }
    }

    fn put(&self, m: &mut Map<String, Value>, prefix: &str) {
        for (k, v) in [
            ("mean", self.mean),
            ("p50", self.p50),
            ("p90", self.p90),
            ("p99", self.p99),
            ("max", self.max),
        ] {
            m.insert(format!("{prefix}_{k}_s"), num(v));
        }
    }
}

/// JSON has no NaN: an undefined statistic (no finished request) is null.
pub fn num(v: f64) -> Value {
    if v.is_finite() { json!(v) } else { Value::Null }
}

/// What a run's summary is computed from.
pub struct RunView<'a> {
    pub workload: &'a Workload,
    /// Per request, the output length the schedulers were told.
    pub predicted: &'a [u32],
    pub out: &'a RunOutput,
    pub slo: Slo,
    /// The model and GPU the run served (GiB figures, utilisation against datasheet peaks).
    pub model: &'a ModelSpec,
    pub gpu: &'a GpuSpec,
    /// Indices of the finished requests.
    pub finished: &'a [usize],
}

impl RunView<'_> {
    /// Queueing delay of request `i`, seconds.
    pub fn queue_s(&self, i: usize) -> f64 {
        secs(self.out.records[i].admitted - self.workload.requests[i].arrival)
    }
}

/// Extra summary keys from outside the core summary (e.g. a policy's own breakdowns): the composition root
/// passes them to `summarize`, so this module imports no policy.
pub type SummaryHook = fn(&RunView<'_>, &mut Map<String, Value>);

/// The indices of `out`'s finished requests.
pub fn finished(out: &RunOutput) -> Vec<usize> {
    (0..out.records.len())
        .filter(|&i| out.records[i].outcome == Outcome::Finished)
        .collect()
}

/// The run's metrics as flat keys (summary.json), keyed so that a table of runs needs no nesting.
pub fn summarize(v: &RunView<'_>, hooks: &[SummaryHook]) -> Map<String, Value> {
    let (w, slo, out) = (v.workload, &v.slo, v.out);
    let slot_bytes = v.model.kv_slot_bytes();
    let mut m = Map::new();
    let recs = &out.records;
    let fin = v.finished;
    let rejected = recs
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Rejected(_)))
        .count();
    m.insert("requests_total".into(), json!(recs.len()));
    m.insert("requests_finished".into(), json!(fin.len()));
    m.insert("requests_rejected".into(), json!(rejected));

    let req = |i: usize| &w.requests[i];
    let col = |f: &dyn Fn(usize) -> Option<f64>| -> Vec<f64> {
        fin.iter().filter_map(|&i| f(i)).collect()
    };
    let mut ttft = col(&|i| Some(secs(recs[i].first_token - req(i).arrival)));
    let mut e2e = col(&|i| Some(secs(recs[i].finished - req(i).arrival)));
    let mut queue = col(&|i| Some(secs(recs[i].admitted - req(i).arrival)));
    let mut tbt = col(&|i| {
        (req(i).output > 1)
            .then(|| secs(recs[i].finished - recs[i].first_token) / (req(i).output - 1) as f64)
    });
    let mut tbt_max = col(&|i| (req(i).output > 1).then(|| secs(recs[i].max_gap)));
    let mut load_wait = col(&|i| Some(secs(recs[i].load_wait)));
    let n_fin = fin.len().max(1) as f64;
    let ttft_ok = ttft.iter().filter(|&&t| t <= secs(slo.ttft_ns)).count() as f64 / n_fin;
    let both_ok = fin
        .iter()
        .filter(|&&i| {
            let r = &recs[i];
            let tbt_ok = req(i).output <= 1
                || (r.finished - r.first_token) as f64 / (req(i).output - 1) as f64
                    <= slo.tbt_ns as f64;
            r.first_token - req(i).arrival <= slo.ttft_ns && tbt_ok
        })
        .count() as f64
        / n_fin;
    let tbt_ok =
        tbt.iter().filter(|&&t| t <= secs(slo.tbt_ns)).count() as f64 / tbt.len().max(1) as f64;
    Dist::of(&mut ttft).put(&mut m, "ttft");
    Dist::of(&mut tbt).put(&mut m, "tbt");
    Dist::of(&mut tbt_max).put(&mut m, "tbt_worst");
    Dist::of(&mut e2e).put(&mut m, "e2e");
    Dist::of(&mut queue).put(&mut m, "queue");
    Dist::of(&mut load_wait).put(&mut m, "load_wait");

    let first_arrival = w.requests.first().map_or(0, |r| r.arrival);
    let last_finish = fin
        .iter()
        .map(|&i| recs[i].finished)
        .max()
        .unwrap_or(first_arrival);
    let span = secs(last_finish.saturating_sub(first_arrival));
    let out_tokens: u64 = fin.iter().map(|&i| req(i).output as u64).sum();
    m.insert("duration_s".into(), num(span));
    m.insert("throughput_rps".into(), num(fin.len() as f64 / span));
    m.insert(
        "throughput_output_tps".into(),
        num(out_tokens as f64 / span),
    );
    m.insert(
        "offered_rps".into(),
        num({
            let last = w.requests.last().map_or(0, |r| r.arrival);
            (w.requests.len().saturating_sub(1)) as f64 / secs(last - first_arrival)
        }),
    );
    m.insert("slo_ttft_s".into(), num(secs(slo.ttft_ns)));
    m.insert("slo_tbt_s".into(), num(secs(slo.tbt_ns)));
    m.insert("slo_ttft_attainment".into(), num(ttft_ok));
    m.insert("slo_tbt_attainment".into(), num(tbt_ok));
    m.insert("slo_attainment".into(), num(both_ok));

    let with_adapter: Vec<usize> = fin
        .iter()
        .copied()
        .filter(|&i| w.adapter(req(i).adapter).is_some())
        .collect();
    let hits = with_adapter
        .iter()
        .filter(|&&i| recs[i].adapter_hit)
        .count();
    let s = &out.stats;
    m.insert("adapter_loads".into(), json!(s.adapter_loads));
    m.insert("adapter_evictions".into(), json!(s.evictions));
    m.insert(
        "adapter_hit_rate".into(),
        num(hits as f64 / with_adapter.len() as f64),
    );
    m.insert("pcie_bytes".into(), json!(s.pcie_bytes));
    m.insert("load_stall_s".into(), num(secs(s.load_stall_ns)));
    m.insert("iterations_prefill".into(), json!(s.prefill_iterations));
    m.insert("iterations_decode".into(), json!(s.decode_iterations));
    m.insert(
        "gpu_busy_fraction".into(),
        num(s.busy_ns as f64 / s.end_ns.max(1) as f64),
    );
    m.insert("simulated_s".into(), num(secs(s.end_ns)));
    utilisation(&mut m, v);
    let end = s.end_ns.max(1) as f64;
    let gib = |slots: f64| slots * slot_bytes as f64 / (1u64 << 30) as f64;
    m.insert("pool_slots".into(), json!(s.pool_slots));
    m.insert("pool_gib".into(), num(gib(s.pool_slots as f64)));
    m.insert("mem_kv_peak_gib".into(), num(gib(s.peak_kv_slots as f64)));
    m.insert(
        "mem_kv_mean_gib".into(),
        num(gib(s.kv_slot_ns as f64 / end)),
    );
    m.insert(
        "mem_adapters_peak_gib".into(),
        num(gib(s.peak_adapter_slots as f64)),
    );
    m.insert(
        "mem_adapters_mean_gib".into(),
        num(gib(s.adapter_slot_ns as f64 / end)),
    );
    m.insert("mem_total_peak_slots".into(), json!(s.peak_total_slots));
    m.insert("squashes".into(), json!(s.squashes));
    breakdowns(&mut m, v);
    for hook in hooks {
        hook(v, &mut m);
    }
    m
}

/// What the GPU did over the run, against its datasheet peaks (`gpu_busy_fraction` only says an iteration was
/// running): `gpu_flops_utilisation` = the model's dense + attention FLOPs per second / peak FLOP/s;
/// `gpu_bandwidth_utilisation` = weights read once per iteration + KV read in decode, per second / peak
/// bandwidth. And what held requests back: of the merges that left requests waiting, how many because the
/// first waiting request's memory did not fit (`blocked_memory`), its adapter's (`blocked_adapter_memory`),
/// the batch was full (`blocked_batch`), its prompt exceeded the prefill budget (`blocked_prefill_tokens`),
/// or it fit but the scheduler held it (`blocked_policy`); `binding_resource` names the most frequent.
fn utilisation(m: &mut Map<String, Value>, v: &RunView<'_>) {
    let (s, model, gpu) = (&v.out.stats, v.model, v.gpu);
    let (l, h) = (model.layers as f64, model.hidden as f64);
    let span = secs(s.end_ns.max(1));
    let flops = 2.0 * l * model.layer_params() as f64 * s.tokens as f64
        + 2.0 * l * h * s.prefill_sq_tokens as f64
        + 4.0 * l * h * s.decode_context as f64;
    let iterations = (s.prefill_iterations + s.decode_iterations) as f64;
    let bytes = model.weight_bytes() as f64 * iterations
        + model.kv_slot_bytes() as f64 * s.decode_context as f64;
    m.insert(
        "gpu_flops_utilisation".into(),
        num(flops / span / gpu.fp16_flops),
    );
    m.insert(
        "gpu_bandwidth_utilisation".into(),
        num(bytes / span / gpu.mem_bw),
    );
    let b = &s.blocked;
    m.insert("merges".into(), json!(s.merges));
    let reasons = [
        ("memory", b.memory),
        ("adapter_memory", b.adapter_memory),
        ("batch", b.batch),
        ("prefill_tokens", b.prefill_tokens),
        ("policy", b.policy),
    ];
    for (k, n) in reasons {
        m.insert(format!("blocked_{k}"), json!(n));
    }
    let top = reasons
        .iter()
        .filter(|r| r.1 > 0)
        .max_by_key(|r| r.1)
        .map_or("none", |r| r.0);
    m.insert("binding_resource".into(), json!(top));
}

/// Queueing delay per adapter rank, and fairness across adapters: each adapter's P99 TTFT, the worst and
/// median of those, and Jain's index over them (1 = every adapter sees the same tail).
fn breakdowns(m: &mut Map<String, Value>, v: &RunView<'_>) {
    let (w, out, fin) = (v.workload, v.out, v.finished);
    let queue = |i: usize| v.queue_s(i);
    let mut ranks: Vec<u32> = w.adapters.iter().map(|a| a.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    for r in ranks {
        let mut q: Vec<f64> = fin
            .iter()
            .filter(|&&i| {
                w.adapter(w.requests[i].adapter)
                    .is_some_and(|a| a.rank == r)
            })
            .map(|&i| queue(i))
            .collect();
        let d = Dist::of(&mut q);
        m.insert(format!("queue_mean_rank{r}_s"), num(d.mean));
        m.insert(format!("queue_p99_rank{r}_s"), num(d.p99));
    }
    let mut p99: Vec<f64> = per_adapter_ttft(w, out, fin)
        .into_iter()
        .filter_map(|v| (!v.is_empty()).then(|| Dist::of(&mut v.clone()).p99))
        .collect();
    let jain = if p99.is_empty() {
        f64::NAN
    } else {
        p99.iter().sum::<f64>().powi(2)
            / (p99.len() as f64 * p99.iter().map(|x| x * x).sum::<f64>())
    };
    let d = Dist::of(&mut p99);
    m.insert("ttft_p99_adapter_worst_s".into(), num(d.max));
    m.insert("ttft_p99_adapter_median_s".into(), num(d.p50));
    m.insert("jain_ttft_p99_adapters".into(), num(jain));
}

/// TTFTs (s) of each adapter's finished requests.
fn per_adapter_ttft(w: &Workload, out: &RunOutput, fin: &[usize]) -> Vec<Vec<f64>> {
    let mut per = vec![Vec::new(); w.adapters.len()];
    for &i in fin {
        let r = &w.requests[i];
        if let Some(v) = per.get_mut(r.adapter as usize) {
            v.push(secs(out.records[i].first_token - r.arrival));
        }
    }
    per
}

/// One row per adapter: requests served, hit rate, TTFT mean and P99.
pub fn write_adapters_csv(mut f: impl Write, w: &Workload, out: &RunOutput) -> std::io::Result<()> {
    let fin: Vec<usize> = (0..out.records.len())
        .filter(|&i| out.records[i].outcome == Outcome::Finished)
        .collect();
    let per = per_adapter_ttft(w, out, &fin);
    let mut hits = vec![0usize; w.adapters.len()];
    for &i in &fin {
        if let Some(h) = hits.get_mut(w.requests[i].adapter as usize) {
            *h += out.records[i].adapter_hit as usize;
        }
    }
    writeln!(f, "adapter,rank,requests,hit_rate,ttft_mean_s,ttft_p99_s")?;
    for (a, mut t) in w.adapters.iter().zip(per) {
        let n = t.len();
        let d = Dist::of(&mut t);
        let fmt = |x: f64| {
            if x.is_finite() {
                format!("{x:.9}")
            } else {
                String::new()
            }
        };
        let hr = if n > 0 {
            format!("{:.6}", hits[a.id as usize] as f64 / n as f64)
        } else {
            String::new()
        };
        writeln!(
            f,
            "{},{},{n},{hr},{},{}",
            a.id,
            a.rank,
            fmt(d.mean),
            fmt(d.p99)
        )?;
    }
    Ok(())
}

/// One row per trace request: its final state and timings (seconds; empty where not applicable).
pub fn write_requests_csv(mut f: impl Write, w: &Workload, out: &RunOutput) -> std::io::Result<()> {
    writeln!(
        f,
        "id,arrival_s,adapter,rank,input_tokens,output_tokens,state,reason,queue_s,ttft_s,e2e_s,tbt_mean_s,tbt_max_s,load_wait_s,adapter_hit"
    )?;
    for (r, rec) in w.requests.iter().zip(&out.records) {
        let (adapter, rank) = match w.adapter(r.adapter) {
            Some(a) => (a.id.to_string(), a.rank.to_string()),
            None => (String::new(), String::new()),
        };
        write!(
            f,
            "{},{:.9},{adapter},{rank},{},{},",
            r.id,
            secs(r.arrival),
            r.input,
            r.output
        )?;
        match &rec.outcome {
            Outcome::Finished => {
                let tbt = if r.output > 1 {
                    format!(
                        "{:.9}",
                        secs(rec.finished - rec.first_token) / (r.output - 1) as f64
                    )
                } else {
                    String::new()
                };
                writeln!(
                    f,
                    "finished,,{:.9},{:.9},{:.9},{tbt},{:.9},{:.9},{}",
                    secs(rec.admitted - r.arrival),
                    secs(rec.first_token - r.arrival),
                    secs(rec.finished - r.arrival),
                    secs(rec.max_gap),
                    secs(rec.load_wait),
                    if w.adapter(r.adapter).is_some() {
                        if rec.adapter_hit { "1" } else { "0" }
                    } else {
                        ""
                    }
                )?;
            }
            Outcome::Rejected(why) => {
                // The reasons' texts hold no quote or comma to escape.
                writeln!(f, "rejected,\"{why}\",,,,,,,")?
            }
            Outcome::Waiting => writeln!(f, "waiting,,,,,,,,")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(&mut []), None);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 3.0, 2.0]), Some(2.5));
    }

    #[test]
    fn percentiles_interpolate_between_order_statistics() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&v, 0.5), 3.0);
        assert_eq!(percentile(&v, 0.9), 4.6);
        assert!((percentile(&v, 0.99) - 4.96).abs() < 1e-12);
        assert_eq!(percentile(&[7.0], 0.99), 7.0);
        let d = Dist::of(&mut [3.0, 1.0, 2.0]);
        assert_eq!((d.mean, d.p50, d.max), (2.0, 2.0, 3.0));
    }
}
