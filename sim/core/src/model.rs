//! Base-model shapes and GPU specs: the facts the cost models and the memory pool are built from.

use std::sync::Mutex;

use serde_json::Value;

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
    ("llama-7b", include_str!("../models/llama-7b.json")),
    ("llama-13b", include_str!("../models/llama-13b.json")),
    ("llama-30b", include_str!("../models/llama-30b.json")),
    ("llama-70b", include_str!("../models/llama-70b.json")),
    ("llama-3.1-8b", include_str!("../models/llama-3.1-8b.json")),
    (
        "llama-3.1-70b",
        include_str!("../models/llama-3.1-70b.json"),
    ),
    ("mistral-7b", include_str!("../models/mistral-7b.json")),
    ("qwen2.5-7b", include_str!("../models/qwen2.5-7b.json")),
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

    /// `--model`: a shipped name, or the path of a Hugging Face `config.json` (or of a directory holding
    /// one). A path that exists is read as a config; anything else must be a shipped name.
    pub fn resolve(text: &str) -> Result<&'static ModelSpec> {
        let path = std::path::Path::new(text);
        if !path.exists() {
            return Self::by_name(text).map_err(|e| {
                if text.ends_with(".json") || text.contains('/') {
                    Error::msg(format!("{text}: no such file ({e})"))
                } else {
                    e
                }
            });
        }
        let file = if path.is_dir() {
            path.join("config.json")
        } else {
            path.to_path_buf()
        };
        let text_of = crate::json::read_text(&file)
            .map_err(|e| Error::msg(format!("{}: {e}", file.display())))?;
        let spec = Self::from_hf_config(&text_of, &name_from_path(&file))
            .map_err(|e| e.context(file.display()))?;
        Ok(Self::intern(spec))
    }

    /// A model from a Hugging Face `config.json` of a Llama-style dense decoder (model_type llama, mistral,
    /// qwen2, qwen3): layers, hidden size, heads, KV heads, intermediate size, vocabulary,
    /// `max_position_embeddings` and dtype. `fallback_name` names it unless the config's `_name_or_path`
    /// does (its last part, lower case). Adapters target q,k,v,o (`with_lora_targets` changes that).
    pub fn from_hf_config(text: &str, fallback_name: &str) -> Result<ModelSpec> {
        let v = crate::json::parse(text).map_err(|e| {
            Error::msg(format!(
                "not a JSON config: {}",
                crate::error::json_error(text, &e)
            ))
        })?;
        let Some(o) = v.as_object() else {
            return Err(Error::msg("a config.json is a JSON object"));
        };
        let kind = o.get("model_type").and_then(|t| t.as_str()).unwrap_or("");
        const KINDS: [&str; 4] = ["llama", "mistral", "qwen2", "qwen3"];
        if !KINDS.contains(&kind) {
            return Err(Error::msg(format!(
                "field model_type: '{kind}' is not a Llama-style dense decoder the simulator models; valid: {}",
                KINDS.join(", ")
            )));
        }
        for moe in ["num_local_experts", "num_experts", "n_routed_experts"] {
            if o.get(moe).is_some_and(|x| !x.is_null()) {
                return Err(Error::msg(format!(
                    "field {moe}: a mixture-of-experts model is not modelled (dense decoders only)"
                )));
            }
        }
        let whole = |key: &str| -> Result<Option<u64>> {
            match o.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(x) => match x.as_u64() {
                    Some(n) if n > 0 => Ok(Some(n)),
                    _ => Err(Error::msg(format!(
                        "field {key}: must be a positive whole number, got {x}"
                    ))),
                },
            }
        };
        let need = |key: &str| -> Result<u64> {
            whole(key)?.ok_or_else(|| Error::msg(format!("field {key} is missing")))
        };
        let layers = need("num_hidden_layers")?;
        let hidden = need("hidden_size")?;
        let heads = need("num_attention_heads")?;
        let kv_heads = whole("num_key_value_heads")?.unwrap_or(heads);
        let intermediate = need("intermediate_size")?;
        let vocab = need("vocab_size")?;
        let context_tokens = match whole("max_position_embeddings")? {
            Some(n) => n,
            None => whole("max_sequence_length")?
                .ok_or_else(|| Error::msg("field max_position_embeddings is missing"))?,
        };
        if hidden % heads != 0 || heads % kv_heads != 0 {
            return Err(Error::msg(format!(
                "fields hidden_size {hidden}, num_attention_heads {heads}, num_key_value_heads {kv_heads}: \
                 the heads must divide the hidden size and the KV heads the heads"
            )));
        }
        if let Some(d) = whole("head_dim")?
            && d != hidden / heads
        {
            return Err(Error::msg(format!(
                "field head_dim: {d} is not hidden_size / num_attention_heads = {}; attention wider or \
                 narrower than the hidden size is not modelled",
                hidden / heads
            )));
        }
        let windowed = o.get("use_sliding_window").and_then(Value::as_bool) != Some(false);
        if let Some(w) = whole("sliding_window")?
            && windowed
            && w < context_tokens
        {
            return Err(Error::msg(format!(
                "field sliding_window: {w} tokens < max_position_embeddings {context_tokens}: sliding-window \
                 attention is not modelled (the KV cache keeps every token, as S-LoRA's does); set it to null \
                 to accept that"
            )));
        }
        let dtype = o
            .get("torch_dtype")
            .or_else(|| o.get("dtype"))
            .and_then(Value::as_str)
            .ok_or_else(|| {
                Error::msg("field torch_dtype is missing (float16, bfloat16 or float32)")
            })?;
        let dtype_bytes = match dtype {
            "float16" | "bfloat16" => 2,
            "float32" => 4,
            other => {
                return Err(Error::msg(format!(
                    "field torch_dtype: '{other}'; valid: float16, bfloat16, float32 (quantised weights are \
                     not modelled)"
                )));
            }
        };
        let tied_embeddings = match o.get("tie_word_embeddings") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(x) => {
                return Err(Error::msg(format!(
                    "field tie_word_embeddings: must be true or false, got {x}"
                )));
            }
        };
        let name = o
            .get("_name_or_path")
            .and_then(Value::as_str)
            .and_then(|p| p.trim_end_matches('/').rsplit('/').next())
            .filter(|n| !n.is_empty())
            .unwrap_or(fallback_name)
            .to_ascii_lowercase();
        let name = ALIASES
            .iter()
            .find(|(a, _)| *a == name)
            .map_or(name.as_str(), |(_, n)| n);
        let shape = llama(
            intern_str(name),
            layers,
            hidden,
            intermediate,
            heads,
            kv_heads,
            vocab,
            context_tokens,
        );
        Ok(ModelSpec {
            dtype_bytes,
            tied_embeddings,
            ..shape
        })
    }

    /// One `&'static` per distinct model: a shipped one if equal, else a copy kept for the process (a run's
    /// configuration holds `&'static ModelSpec`; a sweep resolves the same few models many times).
    pub fn intern(spec: ModelSpec) -> &'static ModelSpec {
        if let Some(m) = MODELS.iter().find(|m| **m == spec) {
            return m;
        }
        static KEPT: Mutex<Vec<&'static ModelSpec>> = Mutex::new(Vec::new());
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(m) = kept.iter().find(|m| ***m == spec) {
            return m;
        }
        let m: &'static ModelSpec = Box::leak(Box::new(spec));
        kept.push(m);
        m
    }

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

/// The last part of a model's directory (`.../Llama-3.1-8B/config.json`, or a Hugging Face cache's
/// `models--meta-llama--Llama-3.1-8B/snapshots/HASH/config.json`), else the file's stem; lower case.
fn name_from_path(file: &std::path::Path) -> String {
    let parts: Vec<String> = file
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let stem = file
        .file_stem()
        .map_or("model".into(), |s| s.to_string_lossy().into_owned());
    let name = if stem == "config" {
        match parts.iter().rposition(|p| p.starts_with("models--")) {
            Some(i) => parts[i].rsplit("--").next().unwrap_or("model").to_string(),
            None => parts
                .len()
                .checked_sub(2)
                .and_then(|i| parts.get(i))
                .filter(|p| !p.is_empty() && *p != "." && *p != "/")
                .cloned()
                .unwrap_or(stem),
        }
    } else {
        stem
    };
    name.to_ascii_lowercase()
}

/// A name kept for the process (model names are `&'static str`), once per distinct text.
fn intern_str(s: &str) -> &'static str {
    if let Some(m) = MODELS.iter().find(|m| m.name == s) {
        return m.name;
    }
    static NAMES: Mutex<Vec<&'static str>> = Mutex::new(Vec::new());
    let mut names = NAMES.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(n) = names.iter().find(|n| **n == s) {
        return n;
    }
    let n: &'static str = Box::leak(s.to_string().into_boxed_str());
    names.push(n);
    n
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

/// The `--gpu` help: every GPU the simulator knows.
pub fn gpus_help() -> String {
    let names: Vec<_> = GPUS.iter().map(|g| g.name).collect();
    format!("GPU: {}", names.join(", "))
}

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
    fn shipped_models_are_their_publishers_configs() {
        assert_eq!(MODELS.len(), SHIPPED_CONFIGS.len());
        for (m, (name, text)) in MODELS.iter().zip(SHIPPED_CONFIGS) {
            assert_eq!(m.name, *name);
            let parsed = ModelSpec::from_hf_config(text, "x").unwrap();
            assert_eq!(&parsed, m, "{name}");
            assert!(
                text.contains("\"_source\": \"https://huggingface.co/"),
                "{name} cites its source"
            );
            assert_eq!(ModelSpec::intern(parsed), m);
        }
        // Published sizes (billions of parameters), within 1%.
        for (name, billions) in [
            ("llama-3.1-8b", 8.03),
            ("llama-3.1-70b", 70.55),
            ("mistral-7b", 7.25),
            ("qwen2.5-7b", 7.61),
            ("llama-13b", 13.0),
        ] {
            let p = ModelSpec::by_name(name).unwrap().params() as f64 / 1e9;
            assert!((p / billions - 1.0).abs() < 0.01, "{name}: {p}");
        }
        assert_eq!(ModelSpec::by_name("Llama-2-70B").unwrap().name, "llama-70b");
        assert_eq!(
            ModelSpec::by_name("llama-3.1-8b").unwrap().context_tokens,
            131072
        );
    }

    #[test]
    fn configs_are_read_strictly() {
        let base = SHIPPED_CONFIGS[4].1;
        let edit = |from: &str, to: &str| {
            assert!(base.contains(from), "{from}");
            ModelSpec::from_hf_config(&base.replace(from, to), "x")
                .unwrap_err()
                .to_string()
        };
        let e = edit("\"hidden_size\": 4096,", "");
        assert_eq!(e, "field hidden_size is missing");
        let e = edit("\"hidden_size\": 4096", "\"hidden_size\": -4096");
        assert!(
            e.starts_with("field hidden_size: must be a positive whole number"),
            "{e}"
        );
        let e = edit("\"torch_dtype\": \"bfloat16\"", "\"torch_dtype\": \"int4\"");
        assert!(e.starts_with("field torch_dtype: 'int4'"), "{e}");
        let e = edit("\"model_type\": \"llama\"", "\"model_type\": \"mixtral\"");
        assert!(e.starts_with("field model_type: 'mixtral'"), "{e}");
        // Keys the simulator cannot model, each refused naming its field.
        for (key, says) in [
            ("\"num_local_experts\": 8", "mixture-of-experts"),
            ("\"head_dim\": 256", "field head_dim: 256"),
            ("\"sliding_window\": 4096", "field sliding_window: 4096"),
            ("\"vocab_size\": 32000", "duplicate key 'vocab_size'"),
        ] {
            let e = edit(
                "\"vocab_size\": 128256,",
                &format!("\"vocab_size\": 128256, {key},"),
            );
            assert!(e.contains(says), "{key}: {e}");
        }
        // A config without `_name_or_path` is named by the caller; dtype may be spelt `dtype` (newer files).
        let m = ModelSpec::from_hf_config(
            r#"{"model_type": "qwen3", "hidden_size": 1024, "intermediate_size": 3072,
                "num_attention_heads": 16, "num_key_value_heads": 8, "num_hidden_layers": 28,
                "head_dim": 64, "max_position_embeddings": 40960, "vocab_size": 151936,
                "tie_word_embeddings": true, "dtype": "bfloat16"}"#,
            "qwen3-0.6b-like",
        )
        .unwrap();
        assert_eq!(
            (m.name, m.kv_dim(), m.tied_embeddings),
            ("qwen3-0.6b-like", 512, true)
        );
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

    #[test]
    fn a_model_is_named_by_its_directory() {
        use std::path::Path;
        let n = |p: &str| name_from_path(Path::new(p));
        assert_eq!(n("models/Llama-3.1-8B/config.json"), "llama-3.1-8b");
        assert_eq!(
            n("/hf/hub/models--meta-llama--Llama-3.1-70B/snapshots/abc123/config.json"),
            "llama-3.1-70b"
        );
        assert_eq!(n("my-model.json"), "my-model");
        assert_eq!(n("config.json"), "config");
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = GpuSpec::by_name("v100").unwrap_err().to_string();
        assert!(e.contains("a40") && e.contains("h100-80gb"), "{e}");
    }
}
