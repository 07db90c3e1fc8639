//! Seeing inside a run: an engine `Observer` that keeps a timeline (one row per iteration or per interval)
//! and a Chrome / Perfetto trace (trace-event JSON), and the latency CDFs. Off unless asked for: the
//! engine then builds nothing (see `engine::observe`). Schemas: docs/timeline.md.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::io::Write;

use crate::engine::{Observed, Observer, Phase, QueueInfo, Snapshot};
use crate::metrics::percentile_by;
use crate::time::{Nanos, secs};

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
    /// (first token time, TTFT) in the rolling window, in time order, and the same TTFTs sorted (kept
    /// sorted on insert and expiry, so a row's percentiles cost no sort).
    recent: VecDeque<(Nanos, Nanos)>,
    sorted: Vec<Nanos>,
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
            sorted: Vec::new(),
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
        while let Some(&(t, x)) = self.recent.front() {
            if t + w > now {
                break;
            }
            self.recent.pop_front();
            let at = self.sorted.partition_point(|&y| y < x);
            self.sorted.remove(at);
        }
        let v = &self.sorted;
        let p = |q: f64| percentile_by(v.len(), q, |k| secs(v[k]));
        (p(0.5), p(0.99))
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
            Observed::Aborted { id } => {
                self.arrivals.remove(&id);
                if let Some(s) = self.spans.get_mut(&id) {
                    s.finished = Some(now);
                }
            }
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
                    let x = now - a;
                    self.recent.push_back((now, x));
                    let at = self.sorted.partition_point(|&y| y < x);
                    self.sorted.insert(at, x);
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

/// How a row gives one timeline column: its type and the value (times in ns, shown as seconds).
#[derive(Clone, Copy)]
pub enum Get {
    Secs(fn(&Row) -> Nanos),
    Count(fn(&Row) -> u64),
    Word(fn(&Row) -> &'static str),
    /// Seconds with six decimals; empty when not finite (no data yet).
    Real(fn(&Row) -> f64),
}

/// The timeline's columns before the per-queue ones (docs/timeline.md), named and read here once: the CSV
/// writer and the Parquet table (`sim`'s `inside.rs`) both go through this list.
pub const TIMELINE: [(&str, Get); 22] = [
    ("t_s", Get::Secs(|r| r.t)),
    ("kind", Get::Word(Row::kind)),
    ("seqs", Get::Count(|r| r.seqs)),
    ("tokens", Get::Count(|r| r.tokens)),
    ("duration_s", Get::Secs(|r| r.duration)),
    ("pool_slots", Get::Count(|r| r.snap.pool)),
    ("kv_held_slots", Get::Count(|r| r.snap.kv_held)),
    ("kv_reserved_slots", Get::Count(|r| r.snap.kv_reserved)),
    (
        "adapters_active_slots",
        Get::Count(|r| r.snap.adapters_active),
    ),
    ("adapters_idle_slots", Get::Count(|r| r.snap.adapters_idle)),
    ("free_slots", Get::Count(|r| r.snap.free)),
    ("kv_claim_slots", Get::Count(|r| r.snap.kv_claim)),
    (
        "adapters_resident",
        Get::Count(|r| r.snap.adapters_resident),
    ),
    ("adapter_loads", Get::Count(|r| r.snap.adapter_loads)),
    (
        "adapter_evictions",
        Get::Count(|r| r.snap.adapter_evictions),
    ),
    ("adapter_hits", Get::Count(|r| r.hits)),
    ("adapter_misses", Get::Count(|r| r.misses)),
    (
        "link_backlog_s",
        Get::Secs(|r| r.snap.link_free_at.saturating_sub(r.t)),
    ),
    ("waiting", Get::Count(|r| r.snap.waiting)),
    ("running", Get::Count(|r| r.snap.running)),
    ("ttft_p50_s", Get::Real(|r| r.ttft_p50_s)),
    ("ttft_p99_s", Get::Real(|r| r.ttft_p99_s)),
];

impl Row {
    /// The `kind` column: what started (or that the server went idle).
    pub fn kind(&self) -> &'static str {
        match self.phase {
            Some(Phase::Prefill) => "prefill",
            Some(Phase::Decode) => "decode",
            None => "idle",
        }
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

    /// `timeline.csv`: `TIMELINE`'s columns, then `q{i}_waiting,q{i}_quota,q{i}_used` per queue (empty where a
    /// row has fewer queues or a queue no quota).
    pub fn write_timeline_csv(&self, mut f: impl Write) -> std::io::Result<()> {
        let k = self.max_queues();
        let mut head = TIMELINE.map(|c| c.0).join(",");
        for i in 1..=k {
            write!(head, ",q{i}_waiting,q{i}_quota,q{i}_used").expect("string");
        }
        writeln!(f, "{head}")?;
        // Bytes straight into one buffer, not through the `csv` crate: the fields are numbers and fixed
        // words (nothing to quote), one row per iteration, and no formatting machinery per integer.
        let mut b = Buf(Vec::with_capacity(1 << 20));
        for r in self
            .rows
            .iter()
            .filter(|r| self.opts.timeline || r.t >= self.opts.window.0)
        {
            for (i, (_, get)) in TIMELINE.iter().enumerate() {
                if i > 0 {
                    b.s(",");
                }
                match get {
                    Get::Secs(g) => b.secs(g(r)),
                    Get::Count(g) => b.u(g(r)),
                    Get::Word(g) => b.s(g(r)),
                    Get::Real(g) => {
                        let x = g(r);
                        if x.is_finite() {
                            write!(b.0, "{x:.6}")?;
                        }
                    }
                }
            }
            let qs = self.row_queues(r);
            for i in 0..k {
                match qs.get(i) {
                    Some(q) => {
                        b.s(",");
                        b.u(q.waiting);
                        for x in [q.quota, q.used] {
                            b.s(",");
                            if let Some(v) = x {
                                b.u(v);
                            }
                        }
                    }
                    None => b.s(",,,"),
                }
            }
            b.s("\n");
            if b.0.len() >= 1 << 20 {
                f.write_all(&b.0)?;
                b.0.clear();
            }
        }
        f.write_all(&b.0)?;
        Ok(())
    }
}

/// Bytes of the timeline and the Chrome trace: text and integers appended without the formatting machinery.
struct Buf(Vec<u8>);

impl Buf {
    fn s(&mut self, text: &str) {
        self.0.extend_from_slice(text.as_bytes());
    }

    fn u(&mut self, mut x: u64) {
        let mut d = [0u8; 20];
        let mut i = d.len();
        loop {
            i -= 1;
            d[i] = b'0' + (x % 10) as u8;
            x /= 10;
            if x == 0 {
                break;
            }
        }
        self.0.extend_from_slice(&d[i..]);
    }

    /// Nanoseconds as seconds with nine decimals, exactly (what `{:.9}` prints for `secs(ns)`).
    fn secs(&mut self, ns: Nanos) {
        self.u(ns / 1_000_000_000);
        let mut r = ns % 1_000_000_000;
        let mut d = [b'0'; 10];
        d[0] = b'.';
        for i in (1..10).rev() {
            d[i] = b'0' + (r % 10) as u8;
            r /= 10;
        }
        self.0.extend_from_slice(&d);
    }

    /// Nanoseconds as microseconds with three decimals, exactly.
    fn us(&mut self, ns: Nanos) {
        self.u(ns / 1000);
        let r = ns % 1000;
        self.0.extend_from_slice(&[
            b'.',
            b'0' + (r / 100) as u8,
            b'0' + (r / 10 % 10) as u8,
            b'0' + (r % 10) as u8,
        ]);
    }
}

mod cdf;
mod chrome;

pub use cdf::{cdf_grid, write_cdf_csv};
