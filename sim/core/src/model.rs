//! Base-model shapes and GPU specs: the facts the cost models and the memory pool are built from.

use crate::error::{Error, Result};

/// A Llama-style decoder (fp16/bf16 weights and KV cache).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelSpec {
    pub name: &'static str,
    pub layers: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub heads: u64,
    /// Key/value heads: `heads` for multi-head attention, fewer with grouped-query attention (Llama-2-70B: 8).
    pub kv_heads: u64,
    pub vocab: u64,
    /// Bytes per weight / KV element (2 for fp16 and bf16).
    pub dtype_bytes: u64,
    /// Context window, tokens (prompt + output): `max_position_embeddings` (LLaMA-1: 2048; Llama-2: 4096).
    pub context_tokens: u64,
}

pub const MODELS: &[ModelSpec] = &[
    ModelSpec {
        name: "llama-7b",
        layers: 32,
        hidden: 4096,
        intermediate: 11008,
        heads: 32,
        kv_heads: 32,
        vocab: 32000,
        dtype_bytes: 2,
        context_tokens: 2048,
    },
    ModelSpec {
        name: "llama-13b",
        layers: 40,
        hidden: 5120,
        intermediate: 13824,
        heads: 40,
        kv_heads: 40,
        vocab: 32000,
        dtype_bytes: 2,
        context_tokens: 2048,
    },
    ModelSpec {
        name: "llama-30b",
        layers: 60,
        hidden: 6656,
        intermediate: 17920,
        heads: 52,
        kv_heads: 52,
        vocab: 32000,
        dtype_bytes: 2,
        context_tokens: 2048,
    },
    // Llama-2-70B (the Chameleon paper's tensor-parallel model): grouped-query attention, 8 KV heads.
    ModelSpec {
        name: "llama-70b",
        layers: 80,
        hidden: 8192,
        intermediate: 28672,
        heads: 64,
        kv_heads: 8,
        vocab: 32000,
        dtype_bytes: 2,
        context_tokens: 4096,
    },
];

impl ModelSpec {
    pub fn by_name(name: &str) -> Result<&'static ModelSpec> {
        let key = name.to_ascii_lowercase();
        MODELS.iter().find(|m| m.name == key).ok_or_else(|| {
            let names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
            Error::msg(format!(
                "unknown model '{name}'; valid: {}",
                names.join(", ")
            ))
        })
    }

    /// Width of the K and V projections (`hidden` without grouped-query attention).
    pub fn kv_dim(&self) -> u64 {
        self.hidden * self.kv_heads / self.heads
    }

    /// Weights of the decoder layers (attention q,k,v,o + gated MLP + 2 RMSNorms).
    pub fn layer_params(&self) -> u64 {
        let h = self.hidden;
        2 * h * h + 2 * h * self.kv_dim() + 3 * h * self.intermediate + 2 * h
    }

    /// All parameters: layers, token embedding, LM head, final norm.
    pub fn params(&self) -> u64 {
        self.layers * self.layer_params() + 2 * self.vocab * self.hidden + self.hidden
    }

    pub fn weight_bytes(&self) -> u64 {
        self.params() * self.dtype_bytes
    }

    /// One KV-cache token slot: K and V of one token over all layers (S-LoRA's page).
    pub fn kv_slot_bytes(&self) -> u64 {
        2 * self.layers * self.kv_dim() * self.dtype_bytes
    }

    /// A LoRA adapter on q,k,v,o of rank r: A (h x r) and B (r x out) per projection per layer, where out is
    /// h for q and o and the KV width for k and v.
    pub fn adapter_bytes(&self, rank: u32) -> u64 {
        let (h, kv) = (self.hidden, self.kv_dim());
        self.layers * rank as u64 * self.dtype_bytes * (2 * (h + h) + 2 * (h + kv))
    }

    /// The adapter's footprint in KV slots (S-LoRA stores adapters in the same pages): 4 x rank.
    pub fn adapter_slots(&self, rank: u32) -> u64 {
        self.adapter_bytes(rank).div_ceil(self.kv_slot_bytes())
    }
}

/// Datasheet figures of a GPU. `pcie_gbps` is the nominal host-to-device bandwidth of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    pub memory_bytes: u64,
    /// Dense fp16 tensor-core FLOP/s (no sparsity).
    pub fp16_flops: f64,
    /// Device memory bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Host-to-device link bandwidth, bytes/s.
    pub pcie_bw: f64,
}

const GIB: u64 = 1 << 30;

pub const GPUS: &[GpuSpec] = &[
    // AWS g5: 24 GB GDDR6, 125 TFLOP/s dense FP16 tensor, 600 GB/s, PCIe 4.0.
    GpuSpec {
        name: "a10g",
        memory_bytes: 24 * GIB,
        fp16_flops: 125e12,
        mem_bw: 600e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "a40",
        memory_bytes: 48 * GIB,
        fp16_flops: 149.7e12,
        mem_bw: 696e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "a100-40gb",
        memory_bytes: 40 * GIB,
        fp16_flops: 312e12,
        mem_bw: 1555e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "a100-80gb",
        memory_bytes: 80 * GIB,
        fp16_flops: 312e12,
        mem_bw: 2039e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "h100-80gb",
        memory_bytes: 80 * GIB,
        fp16_flops: 989e12,
        mem_bw: 3350e9,
        pcie_bw: 64e9,
    },
];

impl GpuSpec {
    pub fn by_name(name: &str) -> Result<&'static GpuSpec> {
        let key = name.to_ascii_lowercase();
        GPUS.iter().find(|g| g.name == key).ok_or_else(|| {
            let names: Vec<_> = GPUS.iter().map(|g| g.name).collect();
            Error::msg(format!("unknown GPU '{name}'; valid: {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama7b_facts_from_the_design() {
        let m = ModelSpec::by_name("Llama-7B").unwrap();
        assert_eq!(m.kv_slot_bytes(), 512 * 1024);
        assert_eq!(m.adapter_bytes(1), 2 * 1024 * 1024);
        for r in [8, 16, 32, 64, 128] {
            assert_eq!(m.adapter_slots(r), 4 * r as u64);
        }
        let p = m.params() as f64;
        assert!((p / 6.74e9 - 1.0).abs() < 0.01, "{p}");
    }

    #[test]
    fn llama70b_has_grouped_query_attention() {
        let m = ModelSpec::by_name("llama-70b").unwrap();
        // K and V of 8 heads x 128 over 80 layers, fp16.
        assert_eq!(m.kv_slot_bytes(), 2 * 80 * 1024 * 2);
        let p = m.params() as f64;
        assert!((p / 68.98e9 - 1.0).abs() < 0.01, "{p}");
        // Rank 1: q, o: 2 x (8192 + 8192); k, v: 2 x (8192 + 1024); x 80 layers x 2 bytes.
        assert_eq!(m.adapter_bytes(1), 80 * 2 * (4 * 8192 + 2 * 9216));
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = GpuSpec::by_name("v100").unwrap_err().to_string();
        assert!(e.contains("a40") && e.contains("h100-80gb"), "{e}");
    }
}
