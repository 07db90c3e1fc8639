//! Seeing inside a run: an engine `Observer` that keeps a timeline (one row per iteration or per interval)
//! and a Chrome / Perfetto trace (trace-event JSON), and the latency CDFs. Off unless asked for: the
//! engine then builds nothing (see `engine::observe`). Schemas: docs/timeline.md.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write;

use crate::engine::{Observed, Observer, Phase, QueueInfo, RunOutput, Snapshot};
use crate::metrics::percentile;
use crate::time::{Nanos, secs};
use crate::workload::Workload;

/// What to record.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordOptions {
    /// Keep timeline rows.
    pub timeline: bool,
    /// A row at the first iteration starting at or after each multiple of this; 0 = every iteration (and
    /// every moment the server goes idle).
    pub interval_ns: Nanos,
    /// Keep trace events.
    pub trace: bool,
    /// Trace only what starts in [start, end] (requests: what arrives in it).
    pub window: (Nanos, Nanos),
    /// Rolling TTFT percentiles over the requests whose first token came in the last this many ns.
    pub ttft_window_ns: Nanos,
    /// Bytes of one KV slot (GiB figures in the trace's counters).
    pub slot_bytes: u64,
}

impl RecordOptions {
    pub fn new(slot_bytes: u64) -> RecordOptions {
        RecordOptions {
            timeline: false,
            interval_ns: 0,
            trace: false,
            window: (0, Nanos::MAX),
            ttft_window_ns: 60_000_000_000,
            slot_bytes,
        }
    }
}

/// One timeline row: the engine's state when an iteration started (or the server went idle).
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub t: Nanos,
    /// `None`: the server went idle.
    pub phase: Option<Phase>,
    pub seqs: u64,
    pub tokens: u64,
    pub duration: Nanos,
    pub snap: Snapshot,
    pub hits: u64,
    pub misses: u64,
    pub ttft_p50_s: f64,
    pub ttft_p99_s: f64,
    /// Range of this row's queues in `Recorder::queues`.
    queues: (u32, u32),
}

#[derive(Clone, Copy, Default)]
struct Span {
    arrival: Nanos,
    admitted: Option<Nanos>,
    first: Option<Nanos>,
    finished: Option<Nanos>,
}

/// Collects a run's timeline and trace events (`Engine::observe` it through `&mut`).
pub struct Recorder {
    pub opts: RecordOptions,
    pub rows: Vec<Row>,
    queues: Vec<QueueInfo>,
    next_sample: Nanos,
    hits: u64,
    misses: u64,
    arrivals: HashMap<u32, Nanos>,
    /// (first token time, TTFT) in the rolling window, and its percentiles when last computed.
    recent: VecDeque<(Nanos, Nanos)>,
    dirty: bool,
    pct: (f64, f64),
    iterations: Vec<(Phase, Nanos, Nanos, u64, u64)>,
    loads: Vec<(u32, Nanos, Nanos)>,
    spans: HashMap<u32, Span>,
    /// Requests traced, in arrival order.
    order: Vec<u32>,
}

impl Recorder {
    pub fn new(opts: RecordOptions) -> Recorder {
        Recorder {
            opts,
            rows: Vec::new(),
            queues: Vec::new(),
            next_sample: 0,
            hits: 0,
            misses: 0,
            arrivals: HashMap::new(),
            recent: VecDeque::new(),
            dirty: false,
            pct: (f64::NAN, f64::NAN),
            iterations: Vec::new(),
            loads: Vec::new(),
            spans: HashMap::new(),
            order: Vec::new(),
        }
    }

    fn in_window(&self, t: Nanos) -> bool {
        self.opts.trace && t >= self.opts.window.0 && t <= self.opts.window.1
    }

    fn rolling(&mut self, now: Nanos) -> (f64, f64) {
        let w = self.opts.ttft_window_ns;
        while self.recent.front().is_some_and(|&(t, _)| t + w <= now) {
            self.recent.pop_front();
            self.dirty = true;
        }
        if self.dirty {
            let mut v: Vec<f64> = self.recent.iter().map(|&(_, x)| secs(x)).collect();
            v.sort_by(f64::total_cmp);
            self.pct = (percentile(&v, 0.5), percentile(&v, 0.99));
            self.dirty = false;
        }
        self.pct
    }

    fn row(&mut self, now: Nanos, it: Option<(Phase, Nanos, Nanos, u64, u64)>, snap: &Snapshot) {
        let (phase, seqs, tokens, duration) = match it {
            Some((p, s, e, q, k)) => (Some(p), q, k, e - s),
            None => (None, 0, 0, 0),
        };
        let (p50, p99) = self.rolling(now);
        let at = self.queues.len() as u32;
        self.rows.push(Row {
            t: now,
            phase,
            seqs,
            tokens,
            duration,
            snap: *snap,
            hits: self.hits,
            misses: self.misses,
            ttft_p50_s: p50,
            ttft_p99_s: p99,
            queues: (at, at),
        });
    }

    /// The queues of `row`.
    pub fn row_queues(&self, row: &Row) -> &[QueueInfo] {
        &self.queues[row.queues.0 as usize..row.queues.1 as usize]
    }
}

impl Observer for Recorder {
    fn observe(&mut self, now: Nanos, ev: Observed<'_>) {
        match ev {
            Observed::Arrival { id } => {
                self.arrivals.insert(id, now);
                if self.in_window(now) {
                    self.spans.insert(
                        id,
                        Span {
                            arrival: now,
                            ..Default::default()
                        },
                    );
                    self.order.push(id);
                }
            }
            Observed::Rejected { .. } => {}
            Observed::Admitted { id, hit } => {
                if hit {
                    self.hits += 1;
                } else {
                    self.misses += 1;
                }
                if let Some(s) = self.spans.get_mut(&id) {
                    s.admitted = Some(now);
                }
            }
            Observed::FirstToken { id } => {
                if let Some(a) = self.arrivals.get(&id) {
                    self.recent.push_back((now, now - a));
                    self.dirty = true;
                }
                if let Some(s) = self.spans.get_mut(&id) {
                    s.first = Some(now);
                }
            }
            Observed::Finished { id } => {
                self.arrivals.remove(&id);
                if let Some(s) = self.spans.get_mut(&id) {
                    s.finished = Some(now);
                }
            }
            Observed::Load {
                adapter,
                start,
                end,
            } => {
                if self.in_window(start) {
                    self.loads.push((adapter, start, end));
                }
            }
            Observed::Iteration {
                phase,
                start,
                end,
                seqs,
                tokens,
                snap,
                queues,
            } => {
                let it = (phase, start, end, seqs, tokens);
                if self.in_window(start) {
                    self.iterations.push(it);
                }
                let sample = self.opts.interval_ns == 0 || now >= self.next_sample;
                if sample && (self.opts.timeline || self.in_window(now)) {
                    if let Some(k) = now.checked_div(self.opts.interval_ns) {
                        self.next_sample = (k + 1) * self.opts.interval_ns;
                    }
                    self.row(now, Some(it), snap);
                    self.queues.extend_from_slice(queues);
                    self.rows.last_mut().expect("pushed").queues.1 = self.queues.len() as u32;
                }
            }
            Observed::Idle { snap } => {
                if self.opts.interval_ns == 0 && (self.opts.timeline || self.in_window(now)) {
                    self.row(now, None, snap);
                }
            }
        }
    }
}

impl<T: Observer + ?Sized> Observer for &mut T {
    fn observe(&mut self, now: Nanos, ev: Observed<'_>) {
        (**self).observe(now, ev)
    }
}

/// The timeline's columns before the per-queue ones (docs/timeline.md).
pub const TIMELINE_COLUMNS: &[&str] = &[
    "t_s",
    "kind",
    "seqs",
    "tokens",
    "duration_s",
    "pool_slots",
    "kv_held_slots",
    "kv_reserved_slots",
    "adapters_active_slots",
    "adapters_idle_slots",
    "free_slots",
    "kv_claim_slots",
    "adapters_resident",
    "adapter_loads",
    "adapter_evictions",
    "adapter_hits",
    "adapter_misses",
    "link_backlog_s",
    "waiting",
    "running",
    "ttft_p50_s",
    "ttft_p99_s",
];

fn fmt_f(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.6}")
    } else {
        String::new()
    }
}

impl Recorder {
    /// Most queues any row reports.
    pub fn max_queues(&self) -> usize {
        self.rows
            .iter()
            .map(|r| (r.queues.1 - r.queues.0) as usize)
            .max()
            .unwrap_or(0)
    }

    /// `timeline.csv`: `TIMELINE_COLUMNS`, then `q{i}_waiting,q{i}_quota,q{i}_used` per queue (empty where a
    /// row has fewer queues or a queue no quota).
    pub fn write_timeline_csv(&self, mut f: impl Write) -> std::io::Result<()> {
        let k = self.max_queues();
        let mut head = TIMELINE_COLUMNS.join(",");
        for i in 1..=k {
            write!(head, ",q{i}_waiting,q{i}_quota,q{i}_used").expect("string");
        }
        writeln!(f, "{head}")?;
        let mut line = String::new();
        for r in self
            .rows
            .iter()
            .filter(|r| self.opts.timeline || r.t >= self.opts.window.0)
        {
            let s = &r.snap;
            line.clear();
            let kind = match r.phase {
                Some(Phase::Prefill) => "prefill",
                Some(Phase::Decode) => "decode",
                None => "idle",
            };
            write!(
                line,
                "{:.9},{kind},{},{},{:.9},{},{},{},{},{},{},{},{},{},{},{},{},{:.9},{},{},{},{}",
                secs(r.t),
                r.seqs,
                r.tokens,
                secs(r.duration),
                s.pool,
                s.kv_held,
                s.kv_reserved,
                s.adapters_active,
                s.adapters_idle,
                s.free,
                s.kv_claim,
                s.adapters_resident,
                s.adapter_loads,
                s.adapter_evictions,
                r.hits,
                r.misses,
                secs(s.link_free_at.saturating_sub(r.t)),
                s.waiting,
                s.running,
                fmt_f(r.ttft_p50_s),
                fmt_f(r.ttft_p99_s),
            )
            .expect("string");
            let qs = self.row_queues(r);
            for i in 0..k {
                match qs.get(i) {
                    Some(q) => {
                        let o = |x: Option<u64>| x.map_or(String::new(), |v| v.to_string());
                        write!(line, ",{},{},{}", q.waiting, o(q.quota), o(q.used))
                    }
                    None => write!(line, ",,,"),
                }
                .expect("string");
            }
            writeln!(f, "{line}")?;
        }
        Ok(())
    }

    /// The Chrome / Perfetto trace (trace-event JSON, timestamps in microseconds): GPU iterations as complete
    /// events on one track, adapter loads on the copy stream's, one async span per traced request with its
    /// queued / prefill / decode phases nested, and counters of memory (GiB) and queue lengths.
    pub fn write_chrome_trace(&self, mut f: impl Write, w: &Workload) -> std::io::Result<()> {
        let us = |t: Nanos| t as f64 / 1e3;
        let gib = |slots: u64| slots as f64 * self.opts.slot_bytes as f64 / (1u64 << 30) as f64;
        // (ts, order, json): sorted by time, stable, so a span's events at one instant keep their order.
        let mut ev: Vec<(Nanos, String)> = Vec::new();
        for &(p, s, e, seqs, tokens) in &self.iterations {
            let name = match p {
                Phase::Prefill => "prefill",
                Phase::Decode => "decode",
            };
            ev.push((
                s,
                format!(
                    r#"{{"name":"{name}","cat":"gpu","ph":"X","pid":1,"tid":1,"ts":{:.3},"dur":{:.3},"args":{{"seqs":{seqs},"tokens":{tokens}}}}}"#,
                    us(s),
                    us(e - s)
                ),
            ));
        }
        for &(a, s, e) in &self.loads {
            let rank = w.adapters.get(a as usize).map_or(0, |x| x.rank);
            ev.push((
                s,
                format!(
                    r#"{{"name":"load adapter {a}","cat":"copy","ph":"X","pid":1,"tid":2,"ts":{:.3},"dur":{:.3},"args":{{"adapter":{a},"rank":{rank}}}}}"#,
                    us(s),
                    us(e - s)
                ),
            ));
        }
        for &id in &self.order {
            let sp = &self.spans[&id];
            let (Some(adm), Some(first), Some(fin)) = (sp.admitted, sp.first, sp.finished) else {
                continue;
            };
            let r = &w.requests[id as usize];
            let (adapter, rank) = match w.adapter(r.adapter) {
                Some(a) => (a.id.to_string(), a.rank),
                None => ("null".into(), 0),
            };
            let e = |name: &str, ph: &str, t: Nanos, args: &str| {
                format!(
                    r#"{{"name":"{name}","cat":"request","ph":"{ph}","pid":2,"tid":1,"id":{id},"ts":{:.3}{args}}}"#,
                    us(t)
                )
            };
            let args = format!(
                r#","args":{{"adapter":{adapter},"rank":{rank},"input":{},"output":{}}}"#,
                r.input, r.output
            );
            ev.push((sp.arrival, e("request", "b", sp.arrival, &args)));
            ev.push((sp.arrival, e("queued", "b", sp.arrival, "")));
            ev.push((adm, e("queued", "e", adm, "")));
            ev.push((adm, e("prefill", "b", adm, "")));
            ev.push((first, e("prefill", "e", first, "")));
            ev.push((first, e("decode", "b", first, "")));
            ev.push((fin, e("decode", "e", fin, "")));
            ev.push((fin, e("request", "e", fin, "")));
        }
        for r in self.rows.iter().filter(|r| self.in_window(r.t)) {
            let s = &r.snap;
            ev.push((
                r.t,
                format!(
                    r#"{{"name":"memory (GiB)","ph":"C","pid":1,"ts":{:.3},"args":{{"kv held":{:.4},"kv reserved":{:.4},"adapters active":{:.4},"adapters idle":{:.4},"free":{:.4}}}}}"#,
                    us(r.t),
                    gib(s.kv_held),
                    gib(s.kv_reserved),
                    gib(s.adapters_active),
                    gib(s.adapters_idle),
                    gib(s.free)
                ),
            ));
            let mut q = format!(r#""waiting":{},"running":{}"#, s.waiting, s.running);
            for (i, x) in self.row_queues(r).iter().enumerate() {
                write!(q, r#","queue {}":{}"#, i + 1, x.waiting).expect("string");
            }
            ev.push((
                r.t,
                format!(
                    r#"{{"name":"requests","ph":"C","pid":1,"ts":{:.3},"args":{{{q}}}}}"#,
                    us(r.t)
                ),
            ));
        }
        ev.sort_by_key(|e| e.0);
        writeln!(f, r#"{{"displayTimeUnit":"ms","traceEvents":["#)?;
        let meta = [
            r#"{"name":"process_name","ph":"M","pid":1,"args":{"name":"GPU"}}"#,
            r#"{"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{"name":"iterations"}}"#,
            r#"{"name":"thread_name","ph":"M","pid":1,"tid":2,"args":{"name":"copy stream (adapter loads)"}}"#,
            r#"{"name":"process_name","ph":"M","pid":2,"args":{"name":"requests"}}"#,
        ];
        let all = meta
            .iter()
            .map(|s| s.to_string())
            .chain(ev.into_iter().map(|e| e.1));
        for (i, e) in all.enumerate() {
            if i > 0 {
                writeln!(f, ",")?;
            }
            write!(f, "{e}")?;
        }
        writeln!(f, "\n]}}")
    }
}

/// The quantiles `cdf.csv` always has: 0 to 1 by 0.01, and 0.999.
pub fn cdf_grid(extra: &[f64]) -> Vec<f64> {
    let mut q: Vec<f64> = (0..=100).map(|i| i as f64 / 100.0).collect();
    q.push(0.999);
    q.extend_from_slice(extra);
    q.sort_by(f64::total_cmp);
    q.dedup();
    q
}

/// `cdf.csv`: `metric,quantile,value_s` for TTFT, TBT (mean per request), E2E and queueing of the finished
/// requests at `quantiles` (linear interpolation, like every percentile of the summary).
pub fn write_cdf_csv(
    mut f: impl Write,
    w: &Workload,
    out: &RunOutput,
    quantiles: &[f64],
) -> std::io::Result<()> {
    let finished = crate::metrics::finished(out);
    let rec = |i: usize| (&out.records[i], &w.requests[i]);
    let col = |g: &dyn Fn(usize) -> Option<f64>| {
        let mut x: Vec<f64> = finished.iter().filter_map(|&i| g(i)).collect();
        x.sort_by(f64::total_cmp);
        x
    };
    let metrics: [(&str, Vec<f64>); 4] = [
        (
            "ttft",
            col(&|i| Some(secs(rec(i).0.first_token - rec(i).1.arrival))),
        ),
        (
            "tbt",
            col(&|i| {
                let (r, q) = rec(i);
                (q.output > 1).then(|| secs(r.finished - r.first_token) / (q.output - 1) as f64)
            }),
        ),
        (
            "e2e",
            col(&|i| Some(secs(rec(i).0.finished - rec(i).1.arrival))),
        ),
        (
            "queue",
            col(&|i| Some(secs(rec(i).0.admitted - rec(i).1.arrival))),
        ),
    ];
    writeln!(f, "metric,quantile,value_s")?;
    for (name, x) in &metrics {
        for &q in quantiles {
            let v = percentile(x, q);
            let v = if v.is_finite() {
                format!("{v:.9}")
            } else {
                String::new()
            };
            writeln!(f, "{name},{q},{v}")?;
        }
    }
    Ok(())
}
