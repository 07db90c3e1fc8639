//! The run summary (`summary.json`, one row of a sweep's table) as one typed struct: the table `sim run`
//! prints, the sweeps, the claims and the plots read these fields, so a key cannot drift from what is
//! computed. Every key is documented in README.md ("Outputs"). Statistics that a run may leave undefined
//! (no finished request, no adapter) are `Option`s and are written as `null`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::engine::Reject;

/// Mean and percentiles of a sample, in seconds (linear interpolation between order statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Dist {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

/// One run's metrics and the settings that shaped it. Latencies are over finished requests; SLO
/// attainment, goodput and throughput count every request of the trace (a rejected request missed its SLO).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    // What happened to the requests.
    pub requests_total: u64,
    pub requests_finished: u64,
    pub requests_rejected: u64,
    /// Dropped from the queue by the scheduler before running (`slora-abort`).
    pub requests_aborted: u64,
    /// Neither finished, rejected nor aborted: only when the run stopped early (`aborted`).
    pub requests_unfinished: u64,
    pub requests_rejected_share: f64,
    pub requests_aborted_share: f64,
    // Aborts by reason (`Abort::KEYS`), count and share of all requests.
    pub aborted_deadline: u64,
    pub aborted_deadline_share: f64,
    // Rejections by reason (`Reject::KEYS`, the order the checks run), count and share of all requests.
    pub rejected_context_length: u64,
    pub rejected_context_length_share: f64,
    pub rejected_pool: u64,
    pub rejected_pool_share: f64,
    pub rejected_input_limit: u64,
    pub rejected_input_limit_share: f64,
    pub rejected_total_limit: u64,
    pub rejected_total_limit_share: f64,
    pub rejected_prefill_limit: u64,
    pub rejected_prefill_limit_share: f64,
    pub rejected_unknown_adapter: u64,
    pub rejected_unknown_adapter_share: f64,

    // Latencies of finished requests, seconds.
    pub ttft_mean_s: Option<f64>,
    pub ttft_p50_s: Option<f64>,
    pub ttft_p90_s: Option<f64>,
    pub ttft_p99_s: Option<f64>,
    pub ttft_max_s: Option<f64>,
    pub tbt_mean_s: Option<f64>,
    pub tbt_p50_s: Option<f64>,
    pub tbt_p90_s: Option<f64>,
    pub tbt_p99_s: Option<f64>,
    pub tbt_max_s: Option<f64>,
    pub tbt_worst_mean_s: Option<f64>,
    pub tbt_worst_p50_s: Option<f64>,
    pub tbt_worst_p90_s: Option<f64>,
    pub tbt_worst_p99_s: Option<f64>,
    pub tbt_worst_max_s: Option<f64>,
    pub e2e_mean_s: Option<f64>,
    pub e2e_p50_s: Option<f64>,
    pub e2e_p90_s: Option<f64>,
    pub e2e_p99_s: Option<f64>,
    pub e2e_max_s: Option<f64>,
    pub queue_mean_s: Option<f64>,
    pub queue_p50_s: Option<f64>,
    pub queue_p90_s: Option<f64>,
    pub queue_p99_s: Option<f64>,
    pub queue_max_s: Option<f64>,
    pub load_wait_mean_s: Option<f64>,
    pub load_wait_p50_s: Option<f64>,
    pub load_wait_p90_s: Option<f64>,
    pub load_wait_p99_s: Option<f64>,
    pub load_wait_max_s: Option<f64>,
    /// Median adapter-load wait over median TTFT (Chameleon's Fig. 5).
    pub load_wait_share_p50: Option<f64>,

    // Rates, over the run (first arrival to `simulated_s`), and the objectives.
    pub offered_rps: Option<f64>,
    pub throughput_rps: Option<f64>,
    pub throughput_output_tps: Option<f64>,
    pub goodput_rps: Option<f64>,
    pub slo_ttft_s: f64,
    pub slo_tbt_s: f64,
    pub slo_ttft_attainment: f64,
    pub slo_tbt_attainment: f64,
    pub slo_attainment: f64,
    /// Offered load beyond what the run served: queueing grew with the trace (see `warnings`).
    pub overloaded: bool,
    /// Mean queueing of the last tenth of finished requests (by arrival) minus that of the first tenth.
    pub queue_growth_s: Option<f64>,

    // Adapters.
    pub adapter_loads: u64,
    pub adapter_evictions: u64,
    pub adapter_hit_rate: Option<f64>,
    pub pcie_bytes: u64,
    pub load_stall_s: f64,
    /// Share of the run the copy link was busy loading adapters (Chameleon's Fig. 4: saturation is 1).
    pub pcie_busy_fraction: Option<f64>,

    // The engine and the GPU.
    pub iterations_prefill: u64,
    pub iterations_decode: u64,
    pub gpu_busy_fraction: f64,
    pub simulated_s: f64,
    pub gpu_flops_utilisation: f64,
    pub gpu_bandwidth_utilisation: f64,
    pub merges: u64,
    /// Merges that admitted nothing (the requests waited on; the `blocked_*` keys say why).
    pub merges_empty: u64,
    pub blocked_memory: u64,
    pub blocked_adapter_memory: u64,
    pub blocked_batch: u64,
    pub blocked_prefill_tokens: u64,
    pub blocked_policy: u64,
    pub binding_resource: String,
    pub squashes: u64,

    // Memory.
    pub pool_slots: u64,
    pub pool_gib: f64,
    pub mem_kv_peak_gib: f64,
    pub mem_kv_mean_gib: f64,
    pub mem_adapters_peak_gib: f64,
    pub mem_adapters_mean_gib: f64,
    /// KV held plus reserved for admitted requests' future tokens (the admission's claim), peak and
    /// time-weighted mean: against `mem_kv_*`, what the reservation rule costs.
    pub mem_kv_reserved_peak_gib: f64,
    pub mem_kv_reserved_mean_gib: f64,
    pub mem_total_peak_slots: u64,

    // Fairness across adapters.
    pub ttft_p99_adapter_worst_s: Option<f64>,
    pub ttft_p99_adapter_median_s: Option<f64>,
    pub jain_ttft_p99_adapters: Option<f64>,

    // The settings that shaped the run.
    pub trace: String,
    pub model: String,
    /// The projections the adapters adapt (`--lora-targets`).
    pub lora_targets: String,
    pub gpu: String,
    pub cost_model: String,
    pub seed: u64,
    pub scheduler: String,
    pub cache_policy: String,
    pub predictor: String,
    pub prefetch: String,
    pub adapters: u64,
    pub popularity_alpha: f64,
    pub adapter_model: String,
    pub arrivals: String,
    pub length_scale: f64,
    /// How `length_scale` was chosen: a fixed factor, `peak[rate=R]` or `knee[rate=R,p=P]`.
    pub length_rule: String,
    pub rate_rps: Option<f64>,
    pub reserve: String,
    pub max_wait_tokens: u64,
    /// Whose merge cadence: `engine` (every `max_wait_tokens` steps) or `policy` (the scheduler's own).
    pub merge_cadence: String,
    pub max_batch: u64,
    pub max_prefill_tokens: u64,
    pub max_input_tokens: Option<u64>,
    pub max_total_tokens: Option<u64>,
    pub context_tokens: Option<u64>,
    /// Tensor-parallel degree and interconnect, when the model is sharded (`--tp` > 1).
    pub tp: Option<u64>,
    pub interconnect: Option<String>,
    /// Why the run stopped early (a real backend failed), else null.
    pub aborted: Option<String>,
    /// What a reader should know before trusting the numbers (time units, overload), one line each.
    pub warnings: Vec<String>,

    /// Families of keys whose names carry a parameter: `queue_mean_rank{r}_s`, `queue_p99_rank{r}_s` per
    /// adapter rank, and the policies' own (`SummaryHook`s: `wrs_class{c}_requests`, `queue_mean_wrs{c}_s`,
    /// `queue_p99_wrs{c}_s`); per rank and WRS class, the share of E2E spent queueing (`queue_share_*`) and
    /// of the slowest 1% by TTFT (`ttft_tail_*_share`).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Name patterns of the `extra` keys: (prefix, suffix) around a number.
pub const EXTRA_FAMILIES: &[(&str, &str)] = &[
    ("queue_mean_rank", "_s"),
    ("queue_p99_rank", "_s"),
    ("wrs_class", "_requests"),
    ("queue_mean_wrs", "_s"),
    ("queue_p99_wrs", "_s"),
    ("queue_share_rank", ""),
    ("queue_share_wrs", ""),
    ("ttft_tail_rank", "_share"),
    ("ttft_tail_wrs", "_share"),
];

/// `x` if it is a number, else `None` (JSON has no NaN).
pub fn stat(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

impl Summary {
    /// The flat JSON object with sorted keys (`summary.json`, a sweep row).
    pub fn to_map(&self) -> Map<String, Value> {
        match serde_json::to_value(self).expect("the summary serialises") {
            Value::Object(m) => m,
            _ => unreachable!("a struct serialises to an object"),
        }
    }

    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&Value::Object(self.to_map())).expect("serialises")
    }

    /// Every fixed key (not the `extra` families).
    pub fn keys() -> Vec<String> {
        Summary::default().to_map().keys().cloned().collect()
    }

    /// Whether `name` is a key a summary can have: a fixed key or one of the `extra` families.
    pub fn is_key(name: &str) -> bool {
        Summary::keys().iter().any(|k| k == name)
            || EXTRA_FAMILIES.iter().any(|(p, s)| {
                name.strip_prefix(p)
                    .and_then(|r| r.strip_suffix(s))
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()))
            })
    }

    /// Sets the rejection counts (in `Reject::KEYS` order) and their shares of `requests_total`.
    pub fn set_rejections(&mut self, counts: [u64; Reject::KEYS.len()]) {
        let total = self.requests_total.max(1) as f64;
        for (i, (n, share)) in self.rejection_fields().into_iter().enumerate() {
            *n = counts[i];
            *share = counts[i] as f64 / total;
        }
    }

    /// (reason key, count, share) per reason, in `Reject::KEYS` order.
    pub fn rejections(&self) -> [(&'static str, u64, f64); Reject::KEYS.len()] {
        let c = [
            (
                self.rejected_context_length,
                self.rejected_context_length_share,
            ),
            (self.rejected_pool, self.rejected_pool_share),
            (self.rejected_input_limit, self.rejected_input_limit_share),
            (self.rejected_total_limit, self.rejected_total_limit_share),
            (
                self.rejected_prefill_limit,
                self.rejected_prefill_limit_share,
            ),
            (
                self.rejected_unknown_adapter,
                self.rejected_unknown_adapter_share,
            ),
        ];
        std::array::from_fn(|i| (Reject::KEYS[i], c[i].0, c[i].1))
    }

    fn rejection_fields(&mut self) -> [(&mut u64, &mut f64); Reject::KEYS.len()] {
        [
            (
                &mut self.rejected_context_length,
                &mut self.rejected_context_length_share,
            ),
            (&mut self.rejected_pool, &mut self.rejected_pool_share),
            (
                &mut self.rejected_input_limit,
                &mut self.rejected_input_limit_share,
            ),
            (
                &mut self.rejected_total_limit,
                &mut self.rejected_total_limit_share,
            ),
            (
                &mut self.rejected_prefill_limit,
                &mut self.rejected_prefill_limit_share,
            ),
            (
                &mut self.rejected_unknown_adapter,
                &mut self.rejected_unknown_adapter_share,
            ),
        ]
    }

    pub fn set_dist(&mut self, which: Latency, d: &Dist) {
        let [mean, p50, p90, p99, max] = self.dist_fields(which);
        *mean = stat(d.mean);
        *p50 = stat(d.p50);
        *p90 = stat(d.p90);
        *p99 = stat(d.p99);
        *max = stat(d.max);
    }

    /// A latency's (mean, p50, p90, p99, max); NaN where undefined.
    pub fn dist(&self, which: Latency) -> Dist {
        let v = |x: Option<f64>| x.unwrap_or(f64::NAN);
        let [mean, p50, p90, p99, max] = match which {
            Latency::Ttft => [
                self.ttft_mean_s,
                self.ttft_p50_s,
                self.ttft_p90_s,
                self.ttft_p99_s,
                self.ttft_max_s,
            ],
            Latency::Tbt => [
                self.tbt_mean_s,
                self.tbt_p50_s,
                self.tbt_p90_s,
                self.tbt_p99_s,
                self.tbt_max_s,
            ],
            Latency::TbtWorst => [
                self.tbt_worst_mean_s,
                self.tbt_worst_p50_s,
                self.tbt_worst_p90_s,
                self.tbt_worst_p99_s,
                self.tbt_worst_max_s,
            ],
            Latency::E2e => [
                self.e2e_mean_s,
                self.e2e_p50_s,
                self.e2e_p90_s,
                self.e2e_p99_s,
                self.e2e_max_s,
            ],
            Latency::Queue => [
                self.queue_mean_s,
                self.queue_p50_s,
                self.queue_p90_s,
                self.queue_p99_s,
                self.queue_max_s,
            ],
            Latency::LoadWait => [
                self.load_wait_mean_s,
                self.load_wait_p50_s,
                self.load_wait_p90_s,
                self.load_wait_p99_s,
                self.load_wait_max_s,
            ],
        }
        .map(v);
        Dist {
            mean,
            p50,
            p90,
            p99,
            max,
        }
    }

    fn dist_fields(&mut self, which: Latency) -> [&mut Option<f64>; 5] {
        match which {
            Latency::Ttft => [
                &mut self.ttft_mean_s,
                &mut self.ttft_p50_s,
                &mut self.ttft_p90_s,
                &mut self.ttft_p99_s,
                &mut self.ttft_max_s,
            ],
            Latency::Tbt => [
                &mut self.tbt_mean_s,
                &mut self.tbt_p50_s,
                &mut self.tbt_p90_s,
                &mut self.tbt_p99_s,
                &mut self.tbt_max_s,
            ],
            Latency::TbtWorst => [
                &mut self.tbt_worst_mean_s,
                &mut self.tbt_worst_p50_s,
                &mut self.tbt_worst_p90_s,
                &mut self.tbt_worst_p99_s,
                &mut self.tbt_worst_max_s,
            ],
            Latency::E2e => [
                &mut self.e2e_mean_s,
                &mut self.e2e_p50_s,
                &mut self.e2e_p90_s,
                &mut self.e2e_p99_s,
                &mut self.e2e_max_s,
            ],
            Latency::Queue => [
                &mut self.queue_mean_s,
                &mut self.queue_p50_s,
                &mut self.queue_p90_s,
                &mut self.queue_p99_s,
                &mut self.queue_max_s,
            ],
            Latency::LoadWait => [
                &mut self.load_wait_mean_s,
                &mut self.load_wait_p50_s,
                &mut self.load_wait_p90_s,
                &mut self.load_wait_p99_s,
                &mut self.load_wait_max_s,
            ],
        }
    }
}

/// The latency distributions of a summary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Latency {
    Ttft,
    Tbt,
    TbtWorst,
    E2e,
    Queue,
    LoadWait,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_flat_sorted_and_round_trip() {
        let mut s = Summary {
            requests_total: 10,
            requests_rejected: 3,
            ttft_p99_s: Some(1.5),
            warnings: vec!["w".into()],
            ..Default::default()
        };
        s.set_rejections([0, 0, 3, 0, 0, 0]);
        s.extra
            .insert("queue_mean_rank8_s".into(), Value::from(0.25));
        let m = s.to_map();
        assert!(m.values().all(|v| !v.is_object()), "flat");
        assert_eq!(m["rejected_input_limit"], 3);
        assert_eq!(m["rejected_input_limit_share"], 0.3);
        // Every reason has its pair of keys, named after `Reject::KEYS`.
        for k in Reject::KEYS {
            assert!(
                m.contains_key(&format!("rejected_{k}"))
                    && m.contains_key(&format!("rejected_{k}_share"))
            );
        }
        assert_eq!(m["ttft_p50_s"], Value::Null);
        assert_eq!(m["queue_mean_rank8_s"], 0.25);
        let back: Summary = serde_json::from_value(Value::Object(m)).unwrap();
        assert_eq!(back, s);
        assert!(Summary::is_key("ttft_p99_s") && Summary::is_key("queue_p99_wrs3_s"));
        assert!(!Summary::is_key("ttft_p99") && !Summary::is_key("queue_p99_rank_s"));
    }
}
