//! Per-request records and the run summary: latency percentiles, throughput, SLO attainment, rejections,
//! adapter traffic and memory use; and the one definition of the sample statistics (mean, percentile,
//! median) every crate uses. Percentiles interpolate linearly between order statistics (numpy's default).

use std::io::Write;

use serde_json::{Map, Value, json};

pub use crate::summary::{Dist, Latency, Summary, stat};

use crate::csv_out::{CsvOut, Num, Opt};
use crate::engine::{Abort, EngineStats, Outcome, Reject, RequestRecord, RunOutput};
use crate::model::{GpuSpec, ModelSpec};
use crate::slo::Slo;
use crate::time::{S9, secs};
use crate::workload::{Request, Workload};

/// The `p`-quantile (0..=1) of `n` ordered values, `at(k)` being the k-th smallest: linear interpolation
/// between order statistics (numpy's default). NaN when `n` is 0. Every percentile in the workspace, over a
/// sorted slice or a counting histogram, is this one.
pub fn percentile_by(n: usize, p: f64, at: impl Fn(usize) -> f64) -> f64 {
    if n == 0 {
        return f64::NAN;
    }
    let pos = p.clamp(0.0, 1.0) * (n - 1) as f64;
    let lo = pos.floor() as usize;
    let hi = (lo + 1).min(n - 1);
    let (a, b) = (at(lo), at(hi));
    if lo == hi {
        a
    } else {
        a + (b - a) * (pos - lo as f64)
    }
}

/// The `p`-quantile of a sorted slice.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    percentile_by(sorted.len(), p, |k| sorted[k])
}

/// Median (the mean of the middle two for an even count); `None` when empty. Sorts `v`.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    Some(percentile(v, 0.5))
}

/// Arithmetic mean; NaN when empty.
pub fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
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
            mean: mean(values),
            p50: percentile(values, 0.50),
            p90: percentile(values, 0.90),
            p99: percentile(values, 0.99),
            max: values[values.len() - 1],
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
/// passes them to `summarize`, so this module imports no policy. They land in `Summary::extra`.
pub type SummaryHook = fn(&RunView<'_>, &mut Map<String, Value>);

/// The indices of `out`'s finished requests.
pub fn finished(out: &RunOutput) -> Vec<usize> {
    (0..out.records.len())
        .filter(|&i| out.records[i].outcome == Outcome::Finished)
        .collect()
}

/// When the run did not keep up with its arrivals: queueing grew with the trace (the last tenth of requests
/// queued longer than the first by more than the TTFT objective) and either the run lagged its arrivals (it
/// outlasted them by more than 1/19, i.e. finished under 95% of the admitted arrival rate) or the growth is
/// over 2.5% of the arrival span (the backlog of an offered load 2.5% over capacity: a run at capacity whose
/// queue wanders up, or a starving tail). A burst the server recovers from, a short trace of long requests, or
/// heavy rejections alone do not trip it.
pub fn overloaded(arrival_span_s: f64, run_span_s: f64, growth_s: f64, slo_ttft_s: f64) -> bool {
    arrival_span_s > 0.0
        && growth_s > slo_ttft_s
        && (run_span_s * 0.95 > arrival_span_s || growth_s > 0.025 * arrival_span_s)
}

/// The run's metrics; `run` adds the settings. Latencies are over finished requests; SLO attainment,
/// goodput and throughput count every request (rejected and unfinished ones missed their objectives).
pub fn summarize(v: &RunView<'_>, hooks: &[SummaryHook]) -> Summary {
    let (w, slo, out) = (v.workload, &v.slo, v.out);
    let recs = &out.records;
    let fin = v.finished;
    let total = recs.len() as u64;
    let mut by_reason = [0u64; Reject::KEYS.len()];
    let mut aborts = [0u64; Abort::KEYS.len()];
    for r in recs {
        match r.outcome {
            Outcome::Rejected(why) => by_reason[why.index()] += 1,
            Outcome::Aborted(why) => aborts[why.index()] += 1,
            _ => {}
        }
    }
    let rejected: u64 = by_reason.iter().sum();
    let aborted: u64 = aborts.iter().sum();
    let share = |n: u64| n as f64 / total.max(1) as f64;
    let mut m = Summary {
        requests_total: total,
        requests_finished: fin.len() as u64,
        requests_rejected: rejected,
        requests_aborted: aborted,
        requests_unfinished: total - rejected - aborted - fin.len() as u64,
        requests_rejected_share: share(rejected),
        requests_aborted_share: share(aborted),
        aborted_deadline: aborts[0],
        aborted_deadline_share: share(aborts[0]),
        ..Default::default()
    };
    m.set_rejections(by_reason);

    let req = |i: usize| &w.requests[i];
    let col = |f: &dyn Fn(usize) -> Option<f64>| -> Vec<f64> {
        fin.iter().filter_map(|&i| f(i)).collect()
    };
    let mut ttft = col(&|i| Some(secs(recs[i].first_token - req(i).arrival)));
    let mut e2e = col(&|i| Some(secs(recs[i].finished - req(i).arrival)));
    let queue = col(&|i| Some(secs(recs[i].admitted - req(i).arrival)));
    let mut tbt = col(&|i| {
        (req(i).output > 1)
            .then(|| secs(recs[i].finished - recs[i].first_token) / (req(i).output - 1) as f64)
    });
    let mut tbt_max = col(&|i| (req(i).output > 1).then(|| secs(recs[i].max_gap)));
    let mut load_wait = col(&|i| Some(secs(recs[i].load_wait)));
    // Objectives per finished request (one output token has no gap: it meets the TBT objective).
    let ttft_ok = |i: usize| recs[i].first_token - req(i).arrival <= slo.ttft_ns;
    let tbt_ok = |i: usize| {
        let r = &recs[i];
        req(i).output <= 1
            || (r.finished - r.first_token) as f64 / (req(i).output - 1) as f64 <= slo.tbt_ns as f64
    };
    let count = |ok: &dyn Fn(usize) -> bool| fin.iter().filter(|&&i| ok(i)).count() as f64;
    let n_all = total.max(1) as f64;
    let good = count(&|i| ttft_ok(i) && tbt_ok(i));
    m.slo_ttft_attainment = count(&ttft_ok) / n_all;
    m.slo_tbt_attainment = count(&tbt_ok) / n_all;
    m.slo_attainment = good / n_all;
    m.slo_ttft_s = secs(slo.ttft_ns);
    m.slo_tbt_s = secs(slo.tbt_ns);

    // Queueing growth: late arrivals against early ones (finished requests are in arrival order).
    let tenth = queue.len() / 10;
    let (early, late) = match tenth {
        0 => (f64::NAN, f64::NAN),
        _ => (mean(&queue[..tenth]), mean(&queue[queue.len() - tenth..])),
    };
    m.queue_growth_s = stat(late - early);
    let mut queue = queue;
    m.set_dist(Latency::Ttft, &Dist::of(&mut ttft));
    m.set_dist(Latency::Tbt, &Dist::of(&mut tbt));
    m.set_dist(Latency::TbtWorst, &Dist::of(&mut tbt_max));
    m.set_dist(Latency::E2e, &Dist::of(&mut e2e));
    m.set_dist(Latency::Queue, &Dist::of(&mut queue));
    m.set_dist(Latency::LoadWait, &Dist::of(&mut load_wait));

    // Rates over the run: from the first arrival to the end of the run (the last finish, or a later
    // arrival that was rejected), so requests refused at the end do not shorten the window.
    let s = &out.stats;
    let first_arrival = w.requests.first().map_or(0, |r| r.arrival);
    let last_arrival = w.requests.last().map_or(0, |r| r.arrival);
    let run_span = secs(s.end_ns.max(last_arrival).saturating_sub(first_arrival));
    let arrival_span = secs(last_arrival - first_arrival);
    let per_s = |x: f64| stat(x / run_span);
    let out_tokens: u64 = fin.iter().map(|&i| req(i).output as u64).sum();
    m.throughput_rps = per_s(fin.len() as f64);
    m.throughput_output_tps = per_s(out_tokens as f64);
    m.goodput_rps = per_s(good);
    m.offered_rps = stat(total.saturating_sub(1) as f64 / arrival_span);
    m.overloaded = overloaded(
        arrival_span,
        run_span,
        m.queue_growth_s.unwrap_or(0.0),
        m.slo_ttft_s,
    );
    if m.overloaded {
        let served = fin.len() as f64 / run_span;
        m.warnings.push(format!(
            "overloaded: requests arrived at {:.3} req/s but finished at {served:.3} req/s, and queueing grew from \
             {:.1} s (first tenth of requests) to {:.1} s (last tenth) without levelling off, so the latencies \
             grow with the trace's length and describe no steady state. Lower --rate or shorten requests (--length-scale)",
            (total - rejected).saturating_sub(1) as f64 / arrival_span,
            early,
            late,
        ));
    }

    if fin.is_empty() {
        let why = Reject::KEYS
            .iter()
            .zip(by_reason)
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {}", k.replace('_', " ")))
            .collect::<Vec<_>>()
            .join(", ");
        m.warnings.push(format!(
            "no request finished ({} rejected: {}): every latency is undefined",
            rejected,
            if why.is_empty() { "none" } else { &why }
        ));
    }
    let with_adapter: Vec<usize> = fin
        .iter()
        .copied()
        .filter(|&i| w.adapter(req(i).adapter).is_some())
        .collect();
    let hits = with_adapter
        .iter()
        .filter(|&&i| recs[i].adapter_hit)
        .count();
    counters(&mut m, s);
    m.adapter_hit_rate = stat(hits as f64 / with_adapter.len() as f64);
    m.gpu_busy_fraction = s.busy_ns as f64 / s.end_ns.max(1) as f64;
    utilisation(&mut m, v);
    let end = s.end_ns.max(1) as f64;
    let slot_bytes = v.model.kv_slot_bytes();
    let gib = |slots: f64| slots * slot_bytes as f64 / (1u64 << 30) as f64;
    m.pool_gib = gib(s.pool_slots as f64);
    m.mem_kv_peak_gib = gib(s.peak_kv_slots as f64);
    m.mem_kv_mean_gib = gib(s.kv_slot_ns as f64 / end);
    m.mem_adapters_peak_gib = gib(s.peak_adapter_slots as f64);
    m.mem_adapters_mean_gib = gib(s.adapter_slot_ns as f64 / end);
    m.mem_kv_reserved_peak_gib = gib(s.peak_kv_claim_slots as f64);
    m.mem_kv_reserved_mean_gib = gib(s.kv_claim_slot_ns as f64 / end);
    m.mem_total_peak_slots = s.peak_total_slots;
    breakdowns(&mut m, v);
    for hook in hooks {
        hook(v, &mut m.extra);
    }
    m
}

/// The engine's counters as summary keys: what every summary has, a streamed fleet's too (its latencies come
/// from sketches, `fleet::acc`).
pub fn counters(m: &mut Summary, s: &EngineStats) {
    m.adapter_loads = s.adapter_loads;
    m.adapter_evictions = s.evictions;
    m.pcie_bytes = s.pcie_bytes;
    m.load_stall_s = secs(s.load_stall_ns);
    m.pcie_busy_fraction = (s.end_ns > 0 && s.links > 0)
        .then(|| s.link_busy_ns as f64 / (s.end_ns as f64 * s.links as f64));
    m.iterations_prefill = s.prefill_iterations;
    m.iterations_decode = s.decode_iterations;
    m.simulated_s = secs(s.end_ns);
    m.pool_slots = s.pool_slots;
    m.squashes = s.squashes;
    m.merges = s.merges;
    m.merges_empty = s.merges_empty;
}

/// What the GPU did over the run, against its datasheet peaks (`gpu_busy_fraction` only says an iteration was
/// running): `gpu_flops_utilisation` = the model's dense + attention FLOPs per second / peak FLOP/s;
/// `gpu_bandwidth_utilisation` = weights read once per iteration + KV read in decode, per second / peak
/// bandwidth. And what held requests back: of the merges that left requests waiting, how many because the
/// first waiting request's memory did not fit (`blocked_memory`), its adapter's (`blocked_adapter_memory`),
/// the batch was full (`blocked_batch`), its prompt exceeded the prefill budget (`blocked_prefill_tokens`),
/// or it fit but the scheduler held it (`blocked_policy`); `binding_resource` names the most frequent.
fn utilisation(m: &mut Summary, v: &RunView<'_>) {
    let s = &v.out.stats;
    gpu_utilisation(m, s, v.model, v.gpu);
    let b = &s.blocked;
    m.blocked_memory = b.memory;
    m.blocked_adapter_memory = b.adapter_memory;
    m.blocked_batch = b.batch;
    m.blocked_prefill_tokens = b.prefill_tokens;
    m.blocked_policy = b.policy;
    let reasons = [
        ("memory", b.memory),
        ("adapter_memory", b.adapter_memory),
        ("batch", b.batch),
        ("prefill_tokens", b.prefill_tokens),
        ("policy", b.policy),
    ];
    m.binding_resource = reasons
        .iter()
        .filter(|r| r.1 > 0)
        .max_by_key(|r| r.1)
        .map_or("none", |r| r.0)
        .to_string();
}

/// `gpu_flops_utilisation` and `gpu_bandwidth_utilisation` of `s` against `gpu`'s peaks (also for a streamed
/// fleet, whose summary has no records).
pub fn gpu_utilisation(m: &mut Summary, s: &EngineStats, model: &ModelSpec, gpu: &GpuSpec) {
    let (l, h) = (model.layers as f64, model.hidden as f64);
    let span = secs(s.end_ns.max(1));
    let flops = 2.0 * l * model.layer_params() as f64 * s.tokens as f64
        + 2.0 * l * h * s.prefill_sq_tokens as f64
        + 4.0 * l * h * s.decode_context as f64;
    let iterations = (s.prefill_iterations + s.decode_iterations) as f64;
    let bytes = model.weight_bytes() as f64 * iterations
        + model.kv_slot_bytes() as f64 * s.decode_context as f64;
    m.gpu_flops_utilisation = flops / span / gpu.fp16_flops;
    m.gpu_bandwidth_utilisation = bytes / span / gpu.mem_bw;
}

/// Queueing delay per adapter rank, and fairness across adapters: each adapter's P99 TTFT, the worst and
/// median of those, and Jain's index over them (1 = every adapter sees the same tail).
fn breakdowns(m: &mut Summary, v: &RunView<'_>) {
    let (w, out, fin) = (v.workload, v.out, v.finished);
    let queue = |i: usize| v.queue_s(i);
    let mut ranks: Vec<u32> = w.adapters.iter().map(|a| a.rank).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let tail = ttft_tail(v);
    let rank_of = |i: usize| w.adapter(w.requests[i].adapter).map(|a| a.rank);
    // Per rank (index in `ranks`): queueing and E2E sums, requests in the tail.
    let mut per = vec![(0u64, 0u64, 0usize); ranks.len()];
    let slot = |i: usize| rank_of(i).and_then(|r| ranks.binary_search(&r).ok());
    for &i in fin {
        if let Some(k) = slot(i) {
            let (q, e) = queue_e2e(v, i);
            per[k].0 += q;
            per[k].1 += e;
        }
    }
    for &i in &tail {
        if let Some(k) = slot(i) {
            per[k].2 += 1;
        }
    }
    for (&r, &(q, e, n)) in ranks.iter().zip(&per) {
        m.extra
            .insert(format!("queue_share_rank{r}"), num(q as f64 / e as f64));
        m.extra.insert(
            format!("ttft_tail_rank{r}_share"),
            num(n as f64 / tail.len() as f64),
        );
    }
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
        m.extra.insert(format!("queue_mean_rank{r}_s"), num(d.mean));
        m.extra.insert(format!("queue_p99_rank{r}_s"), num(d.p99));
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
    m.ttft_p99_adapter_worst_s = stat(d.max);
    m.ttft_p99_adapter_median_s = stat(d.p50);
    m.jain_ttft_p99_adapters = stat(jain);
}

/// The slowest 1% of finished requests by TTFT (at least one; ties by id), for the tail's make-up.
pub fn ttft_tail(v: &RunView<'_>) -> Vec<usize> {
    let key = |i: usize| {
        let t = v.out.records[i].first_token - v.workload.requests[i].arrival;
        (std::cmp::Reverse(t), i)
    };
    let mut by: Vec<usize> = v.finished.to_vec();
    let k = v.finished.len().div_ceil(100);
    if k < by.len() {
        by.select_nth_unstable_by_key(k, |&i| key(i));
        by.truncate(k);
    }
    by.sort_unstable_by_key(|&i| key(i));
    by
}

/// (queueing, E2E) of finished request `i`, ns: a class's share of E2E spent queueing is the sum of the
/// first over the sum of the second (Chameleon's Fig. 16).
pub fn queue_e2e(v: &RunView<'_>, i: usize) -> (u64, u64) {
    let (r, a) = (&v.out.records[i], v.workload.requests[i].arrival);
    (r.admitted - a, r.finished - a)
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

/// One row per adapter: its requests in the trace, how many finished and were rejected, and over the
/// finished ones the hit rate, TTFT mean and P99.
pub fn write_adapters_csv(f: impl Write, w: &Workload, out: &RunOutput) -> std::io::Result<()> {
    let fin = finished(out);
    let per = per_adapter_ttft(w, out, &fin);
    let n = w.adapters.len();
    let (mut hits, mut requests, mut rejected) =
        (vec![0usize; n], vec![0usize; n], vec![0usize; n]);
    for &i in &fin {
        if let Some(h) = hits.get_mut(w.requests[i].adapter as usize) {
            *h += out.records[i].adapter_hit as usize;
        }
    }
    for (r, rec) in w.requests.iter().zip(&out.records) {
        if let Some(k) = requests.get_mut(r.adapter as usize) {
            *k += 1;
            rejected[r.adapter as usize] += matches!(rec.outcome, Outcome::Rejected(_)) as usize;
        }
    }
    let mut t = CsvOut::new(f, &ADAPTER_COLUMNS)?;
    for (a, mut ttft) in w.adapters.iter().zip(per) {
        let done = ttft.len();
        let d = Dist::of(&mut ttft);
        let k = a.id as usize;
        let hr = (done > 0).then(|| Num(hits[k] as f64 / done as f64, 6));
        t.record(&[
            &a.id,
            &a.rank,
            &requests[k],
            &done,
            &rejected[k],
            &Opt(hr),
            &Num(d.mean, 9),
            &Num(d.p99, 9),
        ])?;
    }
    t.finish()?;
    Ok(())
}

/// `adapters.csv`'s columns.
pub const ADAPTER_COLUMNS: [&str; 8] = [
    "adapter",
    "rank",
    "requests",
    "finished",
    "rejected",
    "hit_rate",
    "ttft_mean_s",
    "ttft_p99_s",
];

/// `requests.csv`'s columns (a streamed fleet's rows add `replica`).
pub const REQUEST_COLUMNS: [&str; 15] = [
    "id",
    "arrival_s",
    "adapter",
    "rank",
    "input_tokens",
    "output_tokens",
    "state",
    "reason",
    "queue_s",
    "ttft_s",
    "e2e_s",
    "tbt_mean_s",
    "tbt_max_s",
    "load_wait_s",
    "adapter_hit",
];

/// One row per trace request: its final state and timings (seconds; empty where not applicable).
pub fn write_requests_csv(mut f: impl Write, w: &Workload, out: &RunOutput) -> std::io::Result<()> {
    writeln!(f, "{}", REQUEST_COLUMNS.join(","))?;
    for (r, rec) in w.requests.iter().zip(&out.records) {
        write_request_row(&mut f, w, r, rec, None)?;
    }
    Ok(())
}

/// One `requests.csv` row; a fleet's streamed rows add the `replica` column. Written by hand, not through
/// `csv_out`: its fields are numbers and fixed words, it is the hot one (a streamed fleet writes tens of
/// millions of rows) and its `reason` is always quoted, which the `csv` crate (quoting only where needed)
/// would change.
pub fn write_request_row(
    f: &mut impl Write,
    w: &Workload,
    r: &Request,
    rec: &RequestRecord,
    replica: Option<u32>,
) -> std::io::Result<()> {
    let (adapter, rank) = match w.adapter(r.adapter) {
        Some(a) => (a.id.to_string(), a.rank.to_string()),
        None => (String::new(), String::new()),
    };
    write!(
        f,
        "{},{},{adapter},{rank},{},{},",
        r.id,
        S9(r.arrival),
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
            write!(
                f,
                "finished,,{},{},{},{tbt},{},{},{}",
                S9(rec.admitted - r.arrival),
                S9(rec.first_token - r.arrival),
                S9(rec.finished - r.arrival),
                S9(rec.max_gap),
                S9(rec.load_wait),
                if w.adapter(r.adapter).is_some() {
                    if rec.adapter_hit { "1" } else { "0" }
                } else {
                    ""
                }
            )?;
        }
        // The reasons' texts hold no quote or comma to escape.
        Outcome::Rejected(why) => write!(f, "rejected,\"{why}\",,,,,,,")?,
        // The queue time of an aborted request: how long it waited before it was dropped.
        Outcome::Aborted(why) => write!(
            f,
            "aborted,\"{why}\",{},,,,,,",
            S9(rec.finished - r.arrival)
        )?,
        Outcome::Waiting => write!(f, "waiting,,,,,,,,")?,
    }
    match replica {
        Some(x) => writeln!(f, ",{x}"),
        None => writeln!(f),
    }
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
