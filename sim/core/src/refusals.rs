//! Refusals in plain sight: when more than 1% of a run's requests were refused at arrival, one warning
//! gives the share refused per reason, and the flag that lifts each. A request is counted under the first
//! limit it breaks (`engine::Reject`), so the warning also says how many break each server limit on their
//! own: lifting one limit may otherwise only reveal the next.

use crate::engine::{EngineConfig, Reject};
use crate::summary::Summary;
use crate::workload::Workload;

/// A run with more refused requests than this share gets the warning.
pub const WARN_SHARE: f64 = 0.01;

/// The flag (or flags) that lift each reason, in `Reject::KEYS` order.
pub const LIFTED_BY: [&str; Reject::KEYS.len()] = [
    "--context-tokens N raises the model's context, 0 lifts it; or a longer-context --model",
    "more memory: --gpu-mem-gib, --mem-util, --pool-tokens, a larger --gpu, or shorter requests \
     (--length-scale)",
    "--max-input-tokens N (0 = no limit)",
    "--max-total-tokens N (0 = no limit)",
    "--max-prefill-tokens N",
    "--adapters N (the trace names adapters beyond the workload's)",
];

/// The warning for `summary`'s refusals, or `None` at or under `WARN_SHARE`.
pub fn warning(summary: &Summary, workload: &Workload, engine: &EngineConfig) -> Option<String> {
    if summary.requests_rejected_share <= WARN_SHARE {
        return None;
    }
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    let mut parts = Vec::new();
    for (i, (key, n, share)) in summary.rejections().into_iter().enumerate() {
        if n == 0 {
            continue;
        }
        let limit = match i {
            0 => engine
                .context_tokens
                .map(|c| format!("prompt + output > {c} tokens")),
            1 => Some(format!("larger than the {}-slot pool", engine.pool_slots)),
            2 => engine.max_input_tokens.map(|c| format!("prompt > {c}")),
            3 => engine
                .max_total_tokens
                .map(|c| format!("prompt + output > {c}")),
            4 => Some(format!("prompt > {}", engine.max_prefill_tokens)),
            _ => None,
        };
        parts.push(format!(
            "{} {} ({n}{}; lifted by {})",
            key.replace('_', " "),
            pct(share),
            limit.map_or(String::new(), |l| format!(": {l}")),
            LIFTED_BY[i]
        ));
    }
    // Each server limit on its own, over every request: what lifting the limits ahead of it would reveal.
    let total = workload.requests.len().max(1) as f64;
    let over = |f: &dyn Fn(u64, u64) -> bool| {
        workload
            .requests
            .iter()
            .filter(|r| f(r.input as u64, r.input as u64 + r.output as u64))
            .count() as f64
            / total
    };
    let mut alone = Vec::new();
    if let Some(c) = engine.max_input_tokens {
        alone.push(format!("{} have a prompt > {c}", pct(over(&|i, _| i > c))));
    }
    if let Some(c) = engine.max_total_tokens {
        alone.push(format!(
            "{} prompt + output > {c}",
            pct(over(&|_, t| t > c))
        ));
    }
    let p = engine.max_prefill_tokens;
    alone.push(format!(
        "{} a prompt > the prefill budget {p}",
        pct(over(&|i, _| i > p))
    ));
    Some(format!(
        "refused: {} of the requests ({} of {}) were refused at arrival and count as missed objectives; the \
         latencies describe only the {} served. By the first limit each broke: {}. S-LoRA's server limits, \
         each on its own: {}; --no-server-limits lifts all three at once (the model's context stays)",
        pct(summary.requests_rejected_share),
        summary.requests_rejected,
        summary.requests_total,
        pct(1.0 - summary.requests_rejected_share),
        parts.join("; "),
        alone.join(", ")
    ))
}
