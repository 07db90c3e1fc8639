//! The Chrome / Perfetto trace of a recorded run (`sim run --chrome-trace`; docs/timeline.md).

use std::io::Write;

use super::{Buf, Recorder};
use crate::engine::Phase;
use crate::time::Nanos;
use crate::workload::Workload;

impl Recorder {
    /// The Chrome / Perfetto trace (trace-event JSON, timestamps in microseconds): GPU iterations as complete
    /// events on one track, adapter loads on the copy stream's, one async span per traced request with its
    /// queued / prefill / decode phases nested, and counters of memory (MiB) and queue lengths. Events are
    /// sorted by time (ties keep their order) and written straight out: no string per event.
    pub fn write_chrome_trace(&self, mut f: impl Write, w: &Workload) -> std::io::Result<()> {
        #[derive(Clone, Copy)]
        enum Ev {
            Iteration(usize),
            Load(usize),
            /// A request's k-th span event (0..8: request, queued, prefill, decode begins and ends).
            Request(usize, u8),
            Counters(usize),
        }
        let mut ev: Vec<(Nanos, u32, Ev)> = Vec::new();
        let mut push = |t: Nanos, e: Ev| {
            let n = ev.len() as u32;
            ev.push((t, n, e));
        };
        for (i, it) in self.iterations.iter().enumerate() {
            push(it.1, Ev::Iteration(i));
        }
        for (i, l) in self.loads.iter().enumerate() {
            push(l.1, Ev::Load(i));
        }
        let mut spans = Vec::new();
        for &id in &self.order {
            let sp = self.spans[&id];
            let (Some(adm), Some(first), Some(fin)) = (sp.admitted, sp.first, sp.finished) else {
                continue;
            };
            let times = [sp.arrival, sp.arrival, adm, adm, first, first, fin, fin];
            for (k, &t) in times.iter().enumerate() {
                push(t, Ev::Request(spans.len(), k as u8));
            }
            spans.push((id, times));
        }
        for (i, r) in self.rows.iter().enumerate() {
            if self.in_window(r.t) {
                push(r.t, Ev::Counters(i));
            }
        }
        ev.sort_unstable_by_key(|e| (e.0, e.1));
        let mib = |slots: u64| (slots * self.opts.slot_bytes) >> 20;
        writeln!(f, r#"{{"displayTimeUnit":"ms","traceEvents":["#)?;
        write!(
            f,
            r#"{{"name":"process_name","ph":"M","pid":1,"args":{{"name":"GPU"}}}},
{{"name":"thread_name","ph":"M","pid":1,"tid":1,"args":{{"name":"iterations"}}}},
{{"name":"thread_name","ph":"M","pid":1,"tid":2,"args":{{"name":"copy stream (adapter loads)"}}}},
{{"name":"process_name","ph":"M","pid":2,"args":{{"name":"requests"}}}}"#
        )?;
        const PHASES: [(&str, &str); 8] = [
            ("request", "b"),
            ("queued", "b"),
            ("queued", "e"),
            ("prefill", "b"),
            ("prefill", "e"),
            ("decode", "b"),
            ("decode", "e"),
            ("request", "e"),
        ];
        // The hot loop writes bytes into one buffer (no formatting machinery per number), flushed in chunks.
        let mut b = Buf(Vec::with_capacity(1 << 20));
        for &(t, _, e) in &ev {
            b.s(",\n");
            match e {
                Ev::Iteration(i) => {
                    let (p, s, end, seqs, tokens) = self.iterations[i];
                    b.s(match p {
                        Phase::Prefill => r#"{"name":"prefill""#,
                        Phase::Decode => r#"{"name":"decode""#,
                    });
                    b.s(r#","cat":"gpu","ph":"X","pid":1,"tid":1,"ts":"#);
                    b.us(s);
                    b.s(r#","dur":"#);
                    b.us(end - s);
                    b.s(r#","args":{"seqs":"#);
                    b.u(seqs);
                    b.s(r#","tokens":"#);
                    b.u(tokens);
                    b.s("}}");
                }
                Ev::Load(i) => {
                    let (a, s, end) = self.loads[i];
                    let rank = w.adapters.get(a as usize).map_or(0, |x| x.rank);
                    b.s(r#"{"name":"load adapter "#);
                    b.u(a as u64);
                    b.s(r#"","cat":"copy","ph":"X","pid":1,"tid":2,"ts":"#);
                    b.us(s);
                    b.s(r#","dur":"#);
                    b.us(end - s);
                    b.s(r#","args":{"adapter":"#);
                    b.u(a as u64);
                    b.s(r#","rank":"#);
                    b.u(rank as u64);
                    b.s("}}");
                }
                Ev::Request(j, k) => {
                    let id = spans[j].0;
                    let (name, ph) = PHASES[k as usize];
                    b.s(r#"{"name":""#);
                    b.s(name);
                    b.s(r#"","cat":"request","ph":""#);
                    b.s(ph);
                    b.s(r#"","pid":2,"tid":1,"id":"#);
                    b.u(id as u64);
                    b.s(r#","ts":"#);
                    b.us(t);
                    if k == 0 {
                        let r = &w.requests[id as usize];
                        match w.adapter(r.adapter) {
                            Some(a) => {
                                b.s(r#","args":{"adapter":"#);
                                b.u(a.id as u64);
                                b.s(r#","rank":"#);
                                b.u(a.rank as u64);
                            }
                            None => b.s(r#","args":{"adapter":null"#),
                        }
                        b.s(r#","input":"#);
                        b.u(r.input as u64);
                        b.s(r#","output":"#);
                        b.u(r.output as u64);
                        b.s("}");
                    }
                    b.s("}");
                }
                Ev::Counters(i) => {
                    let r = &self.rows[i];
                    let s = &r.snap;
                    b.s(r#"{"name":"memory (MiB)","ph":"C","pid":1,"ts":"#);
                    b.us(t);
                    for (key, v) in [
                        (r#","args":{"kv held":"#, s.kv_held),
                        (r#","kv reserved":"#, s.kv_reserved),
                        (r#","adapters active":"#, s.adapters_active),
                        (r#","adapters idle":"#, s.adapters_idle),
                        (r#","free":"#, s.free),
                    ] {
                        b.s(key);
                        b.u(mib(v));
                    }
                    b.s("}},\n");
                    b.s(r#"{"name":"requests","ph":"C","pid":1,"ts":"#);
                    b.us(t);
                    b.s(r#","args":{"waiting":"#);
                    b.u(s.waiting);
                    b.s(r#","running":"#);
                    b.u(s.running);
                    for (q, x) in self.row_queues(r).iter().enumerate() {
                        b.s(r#","queue "#);
                        b.u(q as u64 + 1);
                        b.s(r#"":"#);
                        b.u(x.waiting);
                    }
                    b.s("}}");
                }
            }
            if b.0.len() >= 1 << 20 {
                f.write_all(&b.0)?;
                b.0.clear();
            }
        }
        f.write_all(&b.0)?;
        writeln!(f, "\n]}}")
    }
}
