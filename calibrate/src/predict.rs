//! Single-request TTFT the simulator predicts from a profile (the paper's Fig. 2): the adapter is loaded, then
//! one prefill iteration with LoRA runs. Nothing else is queued, so TTFT = load + iteration.

use sim_core::cost::profile::ModelInfo;
use sim_core::cost::{BatchShape, CostModel};
use sim_core::engine::LoadPath;
use sim_core::model::ModelSpec;

/// Chameleon, Fig. 2: one request on an A40 with Llama-7B (input length not stated in the paper).
pub const PAPER_A40_TTFT_MS: [(u32, f64); 5] =
    [(8, 74.0), (16, 78.0), (32, 88.0), (64, 107.0), (128, 144.0)];

/// Adapter size for the profile's model: the simulator's own formula when the model is one it knows, the
/// same formula (q,k,v,o; A and B; 2-byte elements) from the profile's shape otherwise.
pub fn adapter_bytes(model: &ModelInfo, rank: u32) -> u64 {
    match ModelSpec::by_name(&model.name) {
        Ok(m) if m.layers == model.layers && m.hidden == model.hidden => m.adapter_bytes(rank),
        _ => 8 * model.layers * model.hidden * rank as u64 * 2,
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TtftRow {
    pub rank: u32,
    pub adapter_bytes: u64,
    pub load_ns: u64,
    pub prefill_ns: u64,
    pub paper_ms: Option<f64>,
}

impl TtftRow {
    pub fn ttft_ns(&self) -> u64 {
        self.load_ns + self.prefill_ns
    }
    pub fn load_share(&self) -> f64 {
        self.load_ns as f64 / self.ttft_ns().max(1) as f64
    }
}

/// The iteration a lone request's prefill is: one sequence of `tokens`, all of them on one adapter of `rank`.
pub fn single_prefill(tokens: u64, rank: u32) -> BatchShape {
    BatchShape {
        prefill_seqs: 1,
        prefill_tokens: tokens,
        prefill_sq_tokens: tokens * tokens,
        prefill_max_len: tokens,
        lora_tokens: tokens,
        lora_token_rank: tokens * rank as u64,
        lora_distinct_rank: rank as u64,
        lora_distinct: 1,
        lora_seqs: 1,
        lora_max_rank: rank as u64,
        ..Default::default()
    }
}

pub fn predict(
    cost: &dyn CostModel,
    model: &ModelInfo,
    input_tokens: u64,
    ranks: &[u32],
) -> Vec<TtftRow> {
    predict_with(
        cost,
        model.layers,
        |r| adapter_bytes(model, r),
        input_tokens,
        ranks,
    )
}

/// `predict` for a model of `layers` layers whose rank-r adapter is `bytes(r)` long.
pub fn predict_with(
    cost: &dyn CostModel,
    layers: u64,
    bytes: impl Fn(u32) -> u64,
    input_tokens: u64,
    ranks: &[u32],
) -> Vec<TtftRow> {
    ranks
        .iter()
        .map(|&rank| {
            let bytes = bytes(rank);
            TtftRow {
                rank,
                adapter_bytes: bytes,
                // S-LoRA's path: every layer's A+B block copied twice.
                load_ns: cost.adapter_load(&LoadPath::slora(layers).shape(bytes)),
                prefill_ns: cost.iteration(&single_prefill(input_tokens, rank)),
                paper_ms: PAPER_A40_TTFT_MS.iter().find(|p| p.0 == rank).map(|p| p.1),
            }
        })
        .collect()
}

pub fn format_table(rows: &[TtftRow], input_tokens: u64, describe: &str) -> String {
    let ms = |ns: u64| ns as f64 / 1e6;
    let mut s =
        format!("single-request TTFT, {input_tokens} input tokens; cost model: {describe}\n");
    s.push_str(&format!(
        "{:>5} {:>12} {:>10} {:>16} {:>10} {:>11} {:>15}\n",
        "rank",
        "adapter MiB",
        "load ms",
        "prefill+LoRA ms",
        "TTFT ms",
        "load share",
        "paper A40 ms"
    ));
    for r in rows {
        let paper = r.paper_ms.map_or("-".to_string(), |p| format!("{p:.0}"));
        s.push_str(&format!(
            "{:>5} {:>12.1} {:>10.2} {:>16.2} {:>10.2} {:>10.1}% {:>15}\n",
            r.rank,
            r.adapter_bytes as f64 / (1 << 20) as f64,
            ms(r.load_ns),
            ms(r.prefill_ns),
            ms(r.ttft_ns()),
            100.0 * r.load_share(),
            paper
        ));
    }
    s.push_str(
        "paper A40 ms: Chameleon (MICRO 2025) Fig. 2, Llama-7B on an A40, input length not stated; at rank 128 \
         loading is 17.5% of TTFT there.\n",
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::cost::LoadMethod;
    use sim_core::cost::profile::{CostProfile, ProfileCost};

    const EXAMPLE: &str = include_str!("../../docs/example-profile.json");

    fn example() -> ProfileCost {
        ProfileCost::new(
            CostProfile::parse(EXAMPLE).unwrap(),
            "example",
            LoadMethod::PerLayerPinned,
        )
        .unwrap()
    }

    #[test]
    fn adapter_bytes_agree_with_the_simulator() {
        let c = example();
        let m = ModelSpec::by_name("llama-7b").unwrap();
        assert_eq!(adapter_bytes(&c.profile.model, 16), m.adapter_bytes(16));
        let mut custom = c.profile.model.clone();
        custom.name = "my-model".into();
        custom.layers = 2;
        custom.hidden = 8;
        assert_eq!(adapter_bytes(&custom, 4), 8 * 2 * 8 * 4 * 2);
    }

    #[test]
    fn ttft_is_load_plus_one_prefill_with_lora() {
        let c = example();
        let rows = predict(&c, &c.profile.model, 512, &[8, 16, 32, 64, 128]);
        assert_eq!(rows.len(), 5);
        for r in &rows {
            let path = LoadPath::slora(c.profile.model.layers);
            assert_eq!(r.load_ns, c.adapter_load(&path.shape(r.adapter_bytes)));
            assert_eq!(r.prefill_ns, c.iteration(&single_prefill(512, r.rank)));
            assert_eq!(r.ttft_ns(), r.load_ns + r.prefill_ns);
        }
        // Larger ranks load more bytes and do more LoRA work, so TTFT and the load share both grow.
        for w in rows.windows(2) {
            assert!(
                w[1].ttft_ns() > w[0].ttft_ns() && w[1].load_share() > w[0].load_share(),
                "{w:?}"
            );
        }
        // Without LoRA the same iteration is cheaper: the LoRA term is really in the prefill column.
        let plain = BatchShape {
            lora_token_rank: 0,
            lora_distinct_rank: 0,
            lora_distinct: 0,
            ..single_prefill(512, 8)
        };
        assert!(c.iteration(&plain) < rows[0].prefill_ns);
        assert_eq!(rows[4].paper_ms, Some(144.0));
        let t = format_table(&rows, 512, &c.describe());
        assert!(
            t.contains("512 input tokens") && t.contains("144") && t.lines().count() == 8,
            "{t}"
        );
    }
}
