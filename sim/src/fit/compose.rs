//! `sim fit compose`: an engine profile for a GPU without measured end-to-end runs (`cli::composed`: the
//! joint fit's host terms, the fitted GPUs' mean efficiencies on the target's datasheet), with the dense
//! layers' times measured on that GPU where Vidur's operator profiles have it (per-layer median times of the
//! linear layers, norms, RoPE, activation and residual adds at each token count, summed over the layers).

use std::path::{Path, PathBuf};

use clap::Args;

use super::joint::{DenseTables, Joint};
use sim_core::cost::fitted::{DensePoint, EngineParams, EngineProfile};
use sim_core::error::{Error, Result};
use sim_core::model::{GpuSpec, ModelSpec};

#[derive(Args, Clone, Debug)]
pub struct ComposeArgs {
    /// The joint fit's profiles (slora-<gpu>-<model>.json): host terms and every fitted GPU's efficiencies
    #[arg(long, default_value = "calibrate/profiles", value_name = "DIR")]
    pub profiles: PathBuf,
    /// Vidur's operator profiles (mlp_llama-2-7b_<gpu>.csv)
    #[arg(long, default_value = "calibrate/data/vidur", value_name = "DIR")]
    pub vidur: PathBuf,
    /// The target GPU
    #[arg(long)]
    pub gpu: String,
    #[arg(long, default_value = "llama-7b")]
    pub model: String,
    /// The machine terms (host factor, PCIe efficiency, per-copy cost): fig2 anchors them on the paper's
    /// Fig. 2 (its A40 server; the default for --gpu a40), none keeps the transfer's (the reference
    /// machine's; the default elsewhere, and the sensitivity check on the A40)
    #[arg(long, value_name = "none|fig2", value_parser = ["none", "fig2"])]
    pub anchor: Option<String>,
    /// Keep this profile's joint-fit record (validation, parameter ranges, provenance: what `sim fit
    /// --validate` wrote for this GPU x model; it may be --out) and recompute its terms: regenerates a
    /// shipped composed profile without refitting
    #[arg(long, value_name = "FILE")]
    pub from: Option<PathBuf>,
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

/// The joint fit as its profiles store it: (best, members), one GPU per fitted profile.
#[allow(clippy::type_complexity)]
pub fn joint_from_profiles(dir: &Path) -> Result<(Joint, Vec<Joint>, Vec<usize>)> {
    let mut by_gpu: std::collections::BTreeMap<&'static str, EngineProfile> = Default::default();
    let entries =
        std::fs::read_dir(dir).map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?;
    let mut names: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|f| f.to_str())
                .is_some_and(|f| f.starts_with("slora-") && f.ends_with(".json"))
        })
        .collect();
    names.sort();
    for path in names {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let p = EngineProfile::parse(&text, &path.display().to_string())?;
        let g = GpuSpec::by_name(&p.gpu)?.name;
        by_gpu.entry(g).or_insert(p);
    }
    if by_gpu.is_empty() {
        return Err(Error::msg(format!(
            "{}: no fitted profiles (slora-*.json); run sim fit first",
            dir.display()
        )));
    }
    let gpus: Vec<&'static str> = by_gpu.keys().copied().collect();
    let build = |pick: &dyn Fn(&EngineProfile) -> EngineParams| {
        let mut j = Joint::start(&gpus, &vec![0; gpus.len()]);
        for (i, p) in by_gpu.values().enumerate() {
            let e = pick(p);
            j.set_gpu(i, &e);
            if e.host_factor == 1.0 {
                j.reference = i;
                j.values[..super::joint::HOST].copy_from_slice(&e.to_vec()[..super::joint::HOST]);
            }
        }
        j
    };
    let best = build(&|p| p.params);
    let n = by_gpu.values().map(|p| p.members.len()).min().unwrap_or(0);
    let members = (0..n).map(|k| build(&|p| p.members[k])).collect();
    // Exercised: what the profiles' ranges call pinned or loose (all, for profiles without ranges).
    let mut seen = Vec::new();
    for (g, p) in by_gpu.values().enumerate() {
        for (i, name) in EngineParams::NAMES.iter().enumerate() {
            let status = p
                .ranges
                .as_ref()
                .and_then(|r| r.get(*name))
                .and_then(|r| r.get("status"))
                .and_then(|s| s.as_str());
            if matches!(
                status,
                None | Some("pinned") | Some("loose") | Some("measured (Vidur)")
            ) {
                seen.push(best.index(i, g));
            }
        }
    }
    seen.sort();
    seen.dedup();
    Ok((best, members, seen))
}

pub fn compose(a: &ComposeArgs) -> Result<()> {
    let gpu = GpuSpec::by_name(&a.gpu).map_err(|e| e.context("--gpu"))?;
    let model = ModelSpec::by_name(&a.model).map_err(|e| e.context("--model"))?;
    let (best, members, seen) = joint_from_profiles(&a.profiles)?;
    let dense = DenseTables::load(&a.vidur, &[gpu.name])?;
    let make = |model: &str| {
        super::cli::composed(
            &best, &members, &seen, None, &dense, gpu.name, model, &a.vidur,
        )
    };
    let mut profile = make(model.name)?;
    if let Some(from) = &a.from {
        let text = std::fs::read_to_string(from)
            .map_err(|e| Error::msg(format!("--from {}: {e}", from.display())))?;
        let old = EngineProfile::parse(&text, &from.display().to_string())?;
        if GpuSpec::by_name(&old.gpu)?.name != gpu.name
            || ModelSpec::by_name(&old.model)?.name != model.name
        {
            return Err(Error::msg(format!(
                "--from {}: a profile of {} x {}, not {} x {}",
                from.display(),
                old.gpu,
                old.model,
                gpu.name,
                model.name
            )));
        }
        profile.validation = old.validation;
        profile.ranges = old.ranges;
        // An anchored entry keeps the transfer's under "transfer": restore it (re-anchored below if asked).
        if let Some(serde_json::Value::Object(r)) = profile.ranges.as_mut() {
            for v in r.values_mut() {
                if let Some(t) = v.get("transfer").cloned() {
                    *v = t;
                }
            }
            r.retain(|_, v| !v.is_null());
        }
        // An anchored profile keeps the transfer's record under "transfer".
        profile.provenance = match old.provenance.get("transfer") {
            Some(t) if old.provenance.get("anchored").is_some() => t.clone(),
            _ => old.provenance,
        };
    }
    let anchor = a
        .anchor
        .clone()
        .unwrap_or_else(|| if gpu.name == "a40" { "fig2" } else { "none" }.into());
    if anchor == "fig2" {
        if gpu.name != "a40" {
            return Err(Error::msg(format!(
                "--anchor fig2: the paper's Fig. 2 was measured on an A40, not on {}",
                gpu.name
            )));
        }
        // Fig. 2 is Llama-7B's; any model on the same machine takes the terms anchored there.
        let a7 = make("llama-7b")?;
        let machines: Vec<f64> = (0..best.gpus.len())
            .map(|g| best.params(g).host_factor)
            .collect();
        super::anchor::anchor_profile(&a7, &super::anchor::Fig2::paper(), &machines)?
            .apply(&mut profile);
    }
    std::fs::write(&a.out, profile.to_json())
        .map_err(|e| Error::internal(format!("{}: {e}", a.out.display())))?;
    eprintln!("wrote {}", a.out.display());
    Ok(())
}
