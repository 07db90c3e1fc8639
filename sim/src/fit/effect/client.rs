//! S-LoRA's benchmark client's metrics (`benchmarks/run_exp.py: get_res_stats`) of a simulated run.

use sim_core::engine::{Outcome, RunOutput};
use sim_core::time::{Nanos, secs};
use sim_core::workload::Workload;

/// S-LoRA's objective on TTFT for attainment (`slora/utils/metric.py: attainment_func`, response_ub).
const ATTAIN_NS: Nanos = 6_000_000_000;
/// The HTTP handler's wait between looks at an aborted request (`asyncio.wait_for(..., timeout=5)`).
const ABORT_TICK_NS: Nanos = 5_000_000_000;

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Client {
    /// Finished requests per second of wall time to the last response.
    pub throughput: f64,
    /// Means over finished requests, s.
    pub latency: f64,
    pub ttft: f64,
    /// Aborted requests.
    pub aborted: f64,
    /// Share of all requests with TTFT < 6 s (aborted: 0).
    pub attainment: f64,
    pub requests: f64,
}

impl Client {
    /// The metrics an effect is taken on: (name, ratio (else a difference of shares), value).
    pub const METRICS: [(&'static str, bool); 5] = [
        ("throughput", true),
        ("mean latency", true),
        ("mean TTFT", true),
        ("aborted share", false),
        ("attainment", false),
    ];

    pub fn get(&self, i: usize) -> f64 {
        match i {
            0 => self.throughput,
            1 => self.latency,
            2 => self.ttft,
            3 => self.aborted / self.requests.max(1.0),
            _ => self.attainment,
        }
    }
}

/// S-LoRA's client metrics of a simulated run (time 0 = the benchmark's start).
pub fn client(w: &Workload, out: &RunOutput) -> Client {
    let (mut done, mut end, mut lat, mut ttft, mut aborted, mut ok) = (0.0, 0, 0.0, 0.0, 0.0, 0.0);
    for (r, rec) in w.requests.iter().zip(&out.records) {
        match rec.outcome {
            Outcome::Finished => {
                done += 1.0;
                end = end.max(rec.finished);
                lat += secs(rec.finished - r.arrival);
                let t = rec.first_token - r.arrival;
                ttft += secs(t);
                ok += f64::from(u8::from(t < ATTAIN_NS));
            }
            Outcome::Aborted(_) => {
                aborted += 1.0;
                let waited = rec.finished - r.arrival;
                end = end.max(r.arrival + waited.div_ceil(ABORT_TICK_NS).max(1) * ABORT_TICK_NS);
            }
            Outcome::Rejected(_) | Outcome::Waiting => {}
        }
    }
    let n = w.requests.len() as f64;
    let d = if done > 0.0 { done } else { 1.0 };
    Client {
        throughput: done / secs(end.max(1)),
        latency: lat / d,
        ttft: ttft / d,
        aborted,
        attainment: ok / n.max(1.0),
        requests: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::engine::{Abort, RequestRecord};
    use sim_core::workload::Request;

    fn rec(outcome: Outcome, first: Nanos, end: Nanos) -> RequestRecord {
        RequestRecord {
            outcome,
            admitted: 0,
            first_token: first,
            finished: end,
            load_wait: 0,
            max_gap: 0,
            squashes: 0,
            adapter_hit: true,
        }
    }

    #[test]
    fn client_metrics_count_an_aborted_request_as_slora_s_benchmark_does() {
        const S: Nanos = 1_000_000_000;
        let req = |id: u32, at: Nanos| Request {
            id,
            arrival: at,
            input: 10,
            output: 10,
            adapter: 0,
        };
        let w = Workload {
            adapters: vec![],
            requests: vec![req(0, 0), req(1, S), req(2, 2 * S)],
        };
        // Request 0: TTFT 1 s, done at 10 s. Request 1: TTFT 7 s (misses 6 s), done at 20 s. Request 2:
        // aborted by the router at 8 s (waited 6 s): the client hears of it at the 5 s tick after, 12 s.
        let out = RunOutput {
            aborted: None,
            records: vec![
                rec(Outcome::Finished, S, 10 * S),
                rec(Outcome::Finished, 8 * S, 20 * S),
                rec(
                    Outcome::Aborted(Abort::Deadline {
                        waited: 6 * S,
                        limit: 5_500_000_000,
                    }),
                    0,
                    8 * S,
                ),
            ],
            stats: Default::default(),
        };
        let c = client(&w, &out);
        assert_eq!(c.throughput, 2.0 / 20.0);
        assert_eq!(c.latency, (10.0 + 19.0) / 2.0);
        assert_eq!(c.ttft, (1.0 + 7.0) / 2.0);
        assert_eq!((c.aborted, c.attainment), (1.0, 1.0 / 3.0));
        // Had the abort been the last response, it would end the benchmark at its tick: 2 + 10 s.
        let mut late = out;
        late.records[2].finished = 25 * S;
        assert_eq!(client(&w, &late).throughput, 2.0 / 27.0);
    }
}
