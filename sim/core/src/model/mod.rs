//! Base-model shapes and GPU specs: the facts the cost models and the memory pool are built from.

use crate::error::{Error, Result};

/// A Llama-style decoder (fp16/bf16 weights and KV cache), with the projections its LoRA adapters target.
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
    /// The LM head shares the token embedding's weights (`tie_word_embeddings`).
    pub tied_embeddings: bool,
    /// The projections each adapter adapts (`--lora-targets`; S-LoRA's q,k,v,o by default).
    pub lora_targets: LoraTargets,
}

/// A LLaMA-family model with multi-head or grouped-query attention, untied embeddings and LoRA on q,k,v,o.
#[allow(clippy::too_many_arguments)]
pub const fn llama(
    name: &'static str,
    layers: u64,
    hidden: u64,
    intermediate: u64,
    heads: u64,
    kv_heads: u64,
    vocab: u64,
    context_tokens: u64,
) -> ModelSpec {
    ModelSpec {
        name,
        layers,
        hidden,
        intermediate,
        heads,
        kv_heads,
        vocab,
        dtype_bytes: 2,
        context_tokens,
        tied_embeddings: false,
        lora_targets: LoraTargets::QKVO,
    }
}

/// The shipped models: each entry is its publisher's `config.json` (the architecture keys, with the source
/// in `_source`), in `sim/core/models/NAME.json`; a test checks that the two agree.
pub const MODELS: &[ModelSpec] = &[
    llama("llama-7b", 32, 4096, 11008, 32, 32, 32000, 2048),
    llama("llama-13b", 40, 5120, 13824, 40, 40, 32000, 2048),
    llama("llama-30b", 60, 6656, 17920, 52, 52, 32000, 2048),
    // Llama-2-70B (the Chameleon paper's tensor-parallel model): grouped-query attention, 8 KV heads.
    llama("llama-70b", 80, 8192, 28672, 64, 8, 32000, 4096),
    llama("llama-3.1-8b", 32, 4096, 14336, 32, 8, 128256, 131072),
    llama("llama-3.1-70b", 80, 8192, 28672, 64, 8, 128256, 131072),
    llama("mistral-7b", 32, 4096, 14336, 32, 8, 32768, 32768),
    llama("qwen2.5-7b", 28, 3584, 18944, 28, 4, 152064, 131072),
];

/// The shipped configs, compiled in: (model name, `config.json` text).
pub const SHIPPED_CONFIGS: &[(&str, &str)] = &[
    ("llama-7b", include_str!("../../models/llama-7b.json")),
    ("llama-13b", include_str!("../../models/llama-13b.json")),
    ("llama-30b", include_str!("../../models/llama-30b.json")),
    ("llama-70b", include_str!("../../models/llama-70b.json")),
    (
        "llama-3.1-8b",
        include_str!("../../models/llama-3.1-8b.json"),
    ),
    (
        "llama-3.1-70b",
        include_str!("../../models/llama-3.1-70b.json"),
    ),
    ("mistral-7b", include_str!("../../models/mistral-7b.json")),
    ("qwen2.5-7b", include_str!("../../models/qwen2.5-7b.json")),
];

/// Other names of shipped models (the publishers' spellings): (alias, name).
const ALIASES: &[(&str, &str)] = &[
    ("llama-2-70b", "llama-70b"),
    ("llama-2-70b-hf", "llama-70b"),
    ("meta-llama-3.1-8b", "llama-3.1-8b"),
    ("meta-llama-3.1-70b", "llama-3.1-70b"),
    ("mistral-7b-v0.3", "mistral-7b"),
];

/// The `--model` help: every shipped name, and the file form.
pub fn models_help() -> String {
    let names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
    format!(
        "Base model: a shipped name ({}; LLaMA-1 has a 2048-token context, llama-70b is Llama-2-70B) or a \
         Hugging Face config.json (a file, or a directory holding one)",
        names.join(", ")
    )
}

impl ModelSpec {
    /// A shipped model by name (any case; the publishers' spellings too).
    pub fn by_name(name: &str) -> Result<&'static ModelSpec> {
        let key = name.to_ascii_lowercase();
        let key = ALIASES
            .iter()
            .find(|(a, _)| *a == key)
            .map_or(key.as_str(), |(_, n)| n);
        MODELS.iter().find(|m| m.name == key).ok_or_else(|| {
            let names: Vec<_> = MODELS.iter().map(|m| m.name).collect();
            Error::msg(format!(
                "unknown model '{name}'; valid: {}, or a Hugging Face config.json",
                names.join(", ")
            ))
        })
    }
}

impl ModelSpec {
    /// This model with adapters on `targets`.
    pub fn with_lora_targets(&'static self, targets: LoraTargets) -> &'static ModelSpec {
        if targets == self.lora_targets {
            return self;
        }
        Self::intern(ModelSpec {
            lora_targets: targets,
            ..self.clone()
        })
    }

    /// One line for outputs: the shape the run used.
    pub fn describe(&self) -> String {
        format!(
            "{}: {} layers, hidden {}, {} heads ({} KV), FFN {}, vocabulary {}, context {} tokens, {:.2}B \
             parameters ({} bytes each); LoRA on {}",
            self.name,
            self.layers,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
            self.context_tokens,
            self.params() as f64 / 1e9,
            self.dtype_bytes,
            self.lora_targets
        )
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

    /// Layers, hidden, heads, KV heads, intermediate and vocabulary sizes: the order a decoder's shape takes
    /// them (`kernels::decoder::Shape::from_dims`).
    pub fn dims(&self) -> [u64; 6] {
        [
            self.layers,
            self.hidden,
            self.heads,
            self.kv_heads,
            self.intermediate,
            self.vocab,
        ]
    }

    /// All parameters: layers, token embedding, LM head (unless tied to the embedding), final norm.
    pub fn params(&self) -> u64 {
        let embeddings = if self.tied_embeddings { 1 } else { 2 };
        self.layers * self.layer_params() + embeddings * self.vocab * self.hidden + self.hidden
    }

    pub fn weight_bytes(&self) -> u64 {
        self.params() * self.dtype_bytes
    }

    /// One KV-cache token slot: K and V of one token over all layers (S-LoRA's page).
    pub fn kv_slot_bytes(&self) -> u64 {
        2 * self.layers * self.kv_dim() * self.dtype_bytes
    }

    /// Elements of one layer's adapter per unit of rank: A (in x r) and B (r x out) of every targeted
    /// projection, so in + out each (q, o: hidden + hidden; k, v: hidden + KV width; gate, up: hidden +
    /// intermediate; down: intermediate + hidden).
    pub fn lora_width(&self) -> u64 {
        self.lora_targets.width(self)
    }

    /// The adapters' LoRA work relative to adapters on q,k,v,o (1 for S-LoRA's targets): the cost models'
    /// LoRA terms are written for q,k,v,o and scale by it.
    pub fn lora_factor(&self) -> f64 {
        self.lora_width() as f64 / LoraTargets::QKVO.width(self) as f64
    }

    /// An adapter of rank r: A and B of every targeted projection of every layer.
    pub fn adapter_bytes(&self, rank: u32) -> u64 {
        self.layers * rank as u64 * self.dtype_bytes * self.lora_width()
    }

    /// The adapter's footprint in KV slots (S-LoRA stores adapters in the same pages): 4 x rank for LLaMA-7B.
    pub fn adapter_slots(&self, rank: u32) -> u64 {
        self.adapter_bytes(rank).div_ceil(self.kv_slot_bytes())
    }
}

/// The projections of each decoder layer an adapter adapts (PEFT's `target_modules`), as a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LoraTargets(u8);

impl LoraTargets {
    /// (short name, PEFT module name) by bit.
    const NAMES: [(&'static str, &'static str); 7] = [
        ("q", "q_proj"),
        ("k", "k_proj"),
        ("v", "v_proj"),
        ("o", "o_proj"),
        ("gate", "gate_proj"),
        ("up", "up_proj"),
        ("down", "down_proj"),
    ];
    /// S-LoRA's (and the Chameleon paper's) adapters: the attention projections.
    pub const QKVO: LoraTargets = LoraTargets(0b000_1111);
    /// PEFT's `all-linear`: attention and MLP projections.
    pub const ALL_LINEAR: LoraTargets = LoraTargets(0b111_1111);

    /// `q,k,v,o`, PEFT's module names (`q_proj,v_proj`), or `all-linear`.
    pub fn parse(text: &str) -> Result<LoraTargets> {
        let t = text.trim();
        if t == "all-linear" {
            return Ok(Self::ALL_LINEAR);
        }
        let mut bits = 0u8;
        for part in t.split(',').map(str::trim) {
            let i = Self::NAMES
                .iter()
                .position(|(s, p)| part == *s || part == *p)
                .ok_or_else(|| {
                    let short: Vec<_> = Self::NAMES.iter().map(|n| n.0).collect();
                    Error::msg(format!(
                        "--lora-targets: unknown projection '{part}'; valid: {} (or their *_proj names), \
                         all-linear",
                        short.join(", ")
                    ))
                })?;
            if bits & (1 << i) != 0 {
                return Err(Error::msg(format!(
                    "--lora-targets: '{part}' is given twice"
                )));
            }
            bits |= 1 << i;
        }
        Ok(LoraTargets(bits))
    }

    fn width(self, m: &ModelSpec) -> u64 {
        let (h, kv, i) = (m.hidden, m.kv_dim(), m.intermediate);
        let widths = [h + h, h + kv, h + kv, h + h, h + i, h + i, i + h];
        (0..7)
            .filter(|b| self.0 & (1 << b) != 0)
            .map(|b| widths[b])
            .sum()
    }
}

impl Default for LoraTargets {
    fn default() -> Self {
        Self::QKVO
    }
}

impl std::fmt::Display for LoraTargets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if *self == Self::ALL_LINEAR {
            return f.write_str("all-linear");
        }
        let names: Vec<_> = (0..7)
            .filter(|b| self.0 & (1 << b) != 0)
            .map(|b| Self::NAMES[b].0)
            .collect();
        f.write_str(&names.join(","))
    }
}

mod gpu;
mod hf;

pub use gpu::{GPUS, GpuSpec, gpus_help};

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
    fn lora_targets_size_the_adapters() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        assert_eq!(LoraTargets::parse("q,k,v,o").unwrap(), LoraTargets::QKVO);
        assert_eq!(
            LoraTargets::parse("q_proj, k_proj,v_proj,o_proj").unwrap(),
            LoraTargets::QKVO
        );
        let all = m.with_lora_targets(LoraTargets::parse("all-linear").unwrap());
        // q,k,v,o: 4 x (h + h); gate, up, down: 3 x (h + I), per layer per rank, 2 bytes.
        assert_eq!(
            all.adapter_bytes(1),
            32 * 2 * (8 * 4096 + 3 * (4096 + 11008))
        );
        assert_eq!(all.lora_targets.to_string(), "all-linear");
        assert!(
            (all.lora_factor() - (8.0 * 4096.0 + 3.0 * 15104.0) / (8.0 * 4096.0)).abs() < 1e-12
        );
        assert_eq!(m.lora_factor(), 1.0);
        // Interned: the same model with the same targets is one value.
        assert!(std::ptr::eq(
            all,
            m.with_lora_targets(LoraTargets::ALL_LINEAR)
        ));
        assert_eq!(m, all.with_lora_targets(LoraTargets::QKVO));
        let qv = m.with_lora_targets(LoraTargets::parse("q,v").unwrap());
        assert_eq!(qv.adapter_bytes(1), 32 * 2 * 2 * 8192);
        assert_eq!(qv.lora_targets.to_string(), "q,v");
        for bad in ["", "q,q", "qkv", "all"] {
            assert!(
                LoraTargets::parse(bad)
                    .unwrap_err()
                    .to_string()
                    .starts_with("--lora-targets")
            );
        }
    }
}
