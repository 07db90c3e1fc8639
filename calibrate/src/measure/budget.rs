//! How GPU memory is split between weights, activations, the LoRA adapters, the adapter-load buffers and
//! the KV cache. Plain arithmetic, tested without a GPU.

use sim_core::model::ModelSpec;

use sim_core::calibrate::MAX_TOKENS;

use crate::{Error, Result};

/// Memory left unallocated for cuBLAS workspaces, the CUDA context and fragmentation.
pub const MARGIN_BYTES: u64 = 2 << 30;
const GIB: f64 = (1u64 << 30) as f64;

/// Bytes of the decoder's activation buffers (`kernels::decoder::Work`: seven `[tokens, hidden]`, the MLP's
/// three `[tokens, intermediate]`, the LM head's rows and logits) for up to `tokens` tokens and `seqs`
/// sequences, plus LoRA's fp32 intermediate and the index data.
pub fn activation_bytes(m: &ModelSpec, tokens: u64, seqs: u64, max_rank: u64) -> u64 {
    let (h, i) = (m.hidden, m.intermediate);
    let elems = 7 * tokens * h + 3 * tokens * i + seqs * (h + m.vocab);
    elems * m.dtype_bytes + tokens * max_rank * 4 + tokens * 8
}

/// The LoRA adapters' region: every layer's q, k, v, o adapters (A and B) of ranks summing to `rank_sum`.
pub fn lora_pool_elems(m: &ModelSpec, rank_sum: u64) -> u64 {
    m.layers * 4 * 2 * m.hidden * rank_sum
}

/// How memory is split: weights and activations first, then the KV cache gets what is left.
#[derive(Clone, Debug, PartialEq)]
pub struct Budget {
    pub usable: u64,
    pub weights: u64,
    pub activations: u64,
    pub kv_tokens: u64,
}

/// The split for a plan whose LoRA adapters sum to `plan_rank_sum` and whose largest batch has
/// `plan_seqs` sequences; an error when even the largest prefill's KV cache next to the adapters does
/// not fit.
pub fn budget(
    m: &ModelSpec,
    free: u64,
    limit: Option<u64>,
    plan_rank_sum: u64,
    plan_seqs: u64,
) -> Result<Budget> {
    let usable = limit
        .map_or(free, |l| l.min(free))
        .saturating_sub(MARGIN_BYTES);
    let weights = m.weight_bytes();
    let activations = activation_bytes(m, MAX_TOKENS, plan_seqs, 128);
    // The adapters and the KV cache are allocated side by side.
    let working =
        lora_pool_elems(m, plan_rank_sum) * m.dtype_bytes + m.kv_slot_bytes() * MAX_TOKENS;
    let fixed = weights + activations;
    if fixed + working > usable {
        return Err(Error::msg(format!(
            "--model {}: weights ({:.1} GiB) + activations ({:.1} GiB) + working space ({:.1} GiB) exceed the \
             {:.1} GiB usable (free memory or --mem-limit-gib, less {:.0} GiB margin)",
            m.name,
            weights as f64 / GIB,
            activations as f64 / GIB,
            working as f64 / GIB,
            usable as f64 / GIB,
            MARGIN_BYTES as f64 / GIB
        )));
    }
    Ok(Budget {
        usable,
        weights,
        activations,
        kv_tokens: (usable - fixed) / m.kv_slot_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_layout_matches_the_model_parameter_count() {
        for m in sim_core::model::MODELS {
            let s = kernels::decoder::Shape::from_dims(m.dims());
            assert_eq!(s.layer_len() as u64, m.layer_params(), "{}", m.name);
        }
    }

    #[test]
    fn memory_budget_on_known_gpus() {
        let m7 = ModelSpec::by_name("llama-7b").unwrap();
        let gib = 1u64 << 30;
        let b = budget(m7, 79 * gib, None, 248, 256).unwrap();
        assert_eq!(b.weights, m7.weight_bytes());
        // 77 GiB usable - 12.6 GiB weights - 0.9 GiB activations: about 63.5 GiB of KV at 512 KiB per token.
        assert_eq!(b.usable, 77 * gib);
        assert_eq!(
            b.kv_tokens,
            (b.usable - b.weights - b.activations) / (512 * 1024)
        );
        assert!(b.kv_tokens > 125_000 && b.kv_tokens < 135_000, "{b:?}");
        let limited = budget(m7, 79 * gib, Some(24 * gib), 248, 256).unwrap();
        assert!(limited.kv_tokens < b.kv_tokens);
        let m30 = ModelSpec::by_name("llama-30b").unwrap();
        let e = budget(m30, 47 * gib, None, 248, 256).unwrap_err();
        assert_eq!(e.code, 2);
        assert!(e.to_string().contains("--model llama-30b"), "{e}");
    }
}
