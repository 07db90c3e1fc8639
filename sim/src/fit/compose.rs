//! `sim fit compose`: an engine profile for a GPU without measured end-to-end runs, from what is measured
//! elsewhere: the dense layers' times on that GPU (Vidur's operator profiles: per-layer median times of the
//! linear layers, norms, RoPE, activation and residual adds at each token count, summed over the layers)
//! and the serving engine's own terms (overheads, attention, LoRA and load efficiencies) from a profile
//! fitted to the engine's runs on a GPU of the same family.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::json;

use sim_core::cost::fitted::{self, DensePoint, EngineProfile};
use sim_core::error::{Error, Result};
use sim_core::model::{GpuSpec, ModelSpec};

#[derive(Args, Clone, Debug)]
pub struct ComposeArgs {
    /// The fitted engine profile whose overheads and LoRA / attention / load terms are kept
    #[arg(long, value_name = "FILE")]
    pub from: PathBuf,
    /// Vidur's operator profile of the target GPU (data/profiling/compute/<gpu>/<model>/mlp.csv)
    #[arg(long, value_name = "FILE")]
    pub vidur: PathBuf,
    /// The target GPU
    #[arg(long)]
    pub gpu: String,
    /// The model (the operator profile's shape must be this model's)
    #[arg(long, default_value = "llama-7b")]
    pub model: String,
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// The per-layer operators of a Llama decoder layer in Vidur's mlp.csv (attention itself is not there).
const LAYER_OPS: [&str; 8] = [
    "input_layernorm",
    "attn_pre_proj",
    "attn_rope",
    "attn_post_proj",
    "post_attention_layernorm",
    "mlp_up_proj",
    "mlp_act",
    "mlp_down_proj",
];

/// Dense-layer time of `layers` layers at each token count with one tensor-parallel worker: the median of
/// every operator of a layer (plus two residual adds), times the layers, plus the embedding.
pub fn vidur_dense(path: &Path, model: &ModelSpec) -> Result<Vec<DensePoint>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .ok_or_else(|| Error::msg(format!("{}: empty", path.display())))?
        .split(',')
        .collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .ok_or_else(|| Error::msg(format!("{}: no column {name}", path.display())))
    };
    let ops: Vec<usize> = LAYER_OPS
        .iter()
        .map(|o| col(&format!("time_stats.{o}.median")))
        .collect::<Result<_>>()?;
    let (add, emb) = (col("time_stats.add.median")?, col("time_stats.emb.median")?);
    let (tokens, tp, embd, expanded) = (
        col("num_tokens")?,
        col("num_tensor_parallel_workers")?,
        col("n_embd")?,
        col("n_expanded_embd")?,
    );
    let mut out = Vec::new();
    for (i, line) in lines.enumerate() {
        let f: Vec<&str> = line.split(',').collect();
        let num = |c: usize| -> Result<f64> {
            f.get(c).and_then(|v| v.parse::<f64>().ok()).ok_or_else(|| {
                Error::msg(format!(
                    "{}: line {}: column {} is not a number",
                    path.display(),
                    i + 2,
                    header[c]
                ))
            })
        };
        if num(tp)? != 1.0 {
            continue;
        }
        if num(embd)? as u64 != model.hidden || num(expanded)? as u64 != model.intermediate {
            return Err(Error::msg(format!(
                "{}: line {}: the operator profile is for hidden {} / intermediate {}, not {}'s {} / {}",
                path.display(),
                i + 2,
                num(embd)?,
                num(expanded)?,
                model.name,
                model.hidden,
                model.intermediate
            )));
        }
        let layer: f64 = ops.iter().map(|&c| num(c)).sum::<Result<f64>>()? + 2.0 * num(add)?;
        out.push(DensePoint {
            tokens: num(tokens)? as u64,
            ms: layer * model.layers as f64 + num(emb)?,
        });
    }
    out.sort_by_key(|p| p.tokens);
    out.dedup_by_key(|p| p.tokens);
    if out.len() < 2 {
        return Err(Error::msg(format!(
            "{}: fewer than two token counts with one tensor-parallel worker",
            path.display()
        )));
    }
    Ok(out)
}

pub fn compose(a: &ComposeArgs) -> Result<()> {
    let text = std::fs::read_to_string(&a.from)
        .map_err(|e| Error::msg(format!("{}: {e}", a.from.display())))?;
    let base = EngineProfile::parse(&text, &a.from.display().to_string())?;
    let gpu = GpuSpec::by_name(&a.gpu).map_err(|e| e.context("--gpu"))?;
    let model = ModelSpec::by_name(&a.model).map_err(|e| e.context("--model"))?;
    if base.model != model.name {
        return Err(Error::msg(format!(
            "--from is fitted for {}, not {}",
            base.model, model.name
        )));
    }
    let dense = vidur_dense(&a.vidur, model)?;
    let profile = EngineProfile {
        schema: fitted::SCHEMA.into(),
        version: fitted::VERSION,
        gpu: gpu.name.into(),
        model: model.name.into(),
        params: base.params,
        lora_kernels: base.lora_kernels.clone(),
        dense_table: Some(dense),
        provenance: json!({
            "tool": format!("sim fit compose {}", env!("CARGO_PKG_VERSION")),
            "composed_from": {
                "engine": format!(
                    "{} (S-LoRA's overheads, attention, LoRA and load terms fitted on {}; efficiencies are \
                     fractions of the datasheet figures, applied to {}'s: {:.0} TFLOP/s fp16, {:.0} GB/s, PCIe {:.0} GB/s)",
                    a.from.display(), base.gpu, gpu.name, gpu.fp16_flops / 1e12, gpu.mem_bw / 1e9, gpu.pcie_bw / 1e9
                ),
                "dense_layers": format!(
                    "{}: Vidur's measured operator times (github.com/microsoft/vidur commit 7d47513, MIT): per layer \
                     the medians of {} plus two residual adds, x {} layers, plus the embedding; linear between \
                     token counts",
                    a.vidur.display(), LAYER_OPS.join(", "), model.layers
                ),
            },
            "assumptions": [
                "the engine's Python overheads and kernel efficiencies carry over between GPUs of one family \
                 (the A10G and the A40 are both GA102)",
                "Vidur's operators (Llama-2-7B, the same layer shapes as Llama-7B) time the dense layers as S-LoRA's \
                 engine runs them; attention and the LM head come from the engine profile's efficiencies",
                "nothing here was measured end to end on this GPU",
            ],
            "base_provenance": base.provenance,
        }),
        fit: None,
    };
    std::fs::write(&a.out, profile.to_json())
        .map_err(|e| Error::internal(format!("{}: {e}", a.out.display())))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
