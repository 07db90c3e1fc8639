//! Models from Hugging Face `config.json` files: `--model FILE|DIR`, read strictly, interned for the process.

use std::sync::Mutex;

use serde_json::Value;

use super::{ALIASES, MODELS, ModelSpec, llama};
use crate::error::{Error, Result};

impl ModelSpec {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::SHIPPED_CONFIGS;

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
}
