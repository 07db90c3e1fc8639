//! A serving engine's costs as a few physical terms, fitted to its measured end-to-end runs (`calibrate fit`)
//! and stored as an engine profile (schema `lora-serving-engine-profile`, docs/profile-schema.md). The same
//! form on every GPU; the GPU enters through its datasheet peaks, the engine through the fitted values:
//!
//! iteration = `iteration_us` + `per_seq_us` x sequences (the serving loop, sampling, per-request work)
//!           + dense layers: max(FLOPs / (peak x `compute_eff`), weight bytes / (bandwidth x `mem_eff`))
//!             (or a measured dense-layer table, when the profile has one)
//!           + attention: prefill FLOPs / (peak x `compute_eff`) + decode KV bytes / (bandwidth x `attn_eff`)
//!           + LoRA: `lora_us` if any sequence carries an adapter + LoRA FLOPs / (peak x `lora_eff`)
//!             + adapter weight bytes read / (bandwidth x `mem_eff`), with the LoRA work of `lora_kernels`;
//! adapter load = `copy_us` x copy calls + bytes / (PCIe x `h2d_eff`).

use serde::{Deserialize, Serialize};

use super::{BatchShape, CostModel, LoadShape, LoraKernels};
use crate::error::{Error, Result};
use crate::model::{GpuSpec, ModelSpec};
use crate::time::Nanos;

pub const SCHEMA: &str = "lora-serving-engine-profile";
pub const VERSION: u32 = 1;

/// The fitted constants. Efficiencies are fractions of the GPU's datasheet figures.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineParams {
    /// Fixed cost of one iteration, microseconds.
    pub iteration_us: f64,
    /// Cost per sequence in an iteration, microseconds.
    pub per_seq_us: f64,
    pub compute_eff: f64,
    pub mem_eff: f64,
    /// Decode attention's KV-cache read bandwidth efficiency.
    pub attn_eff: f64,
    pub lora_eff: f64,
    /// Fixed cost of an iteration that carries adapters (the LoRA kernel launches), microseconds.
    pub lora_us: f64,
    pub h2d_eff: f64,
    /// Fixed cost of one host-to-device copy call, microseconds.
    pub copy_us: f64,
}

impl EngineParams {
    pub const NAMES: [&'static str; 9] = [
        "iteration_us",
        "per_seq_us",
        "compute_eff",
        "mem_eff",
        "attn_eff",
        "lora_eff",
        "lora_us",
        "h2d_eff",
        "copy_us",
    ];

    pub fn to_vec(&self) -> [f64; 9] {
        [
            self.iteration_us,
            self.per_seq_us,
            self.compute_eff,
            self.mem_eff,
            self.attn_eff,
            self.lora_eff,
            self.lora_us,
            self.h2d_eff,
            self.copy_us,
        ]
    }

    pub fn from_slice(v: &[f64; 9]) -> EngineParams {
        EngineParams {
            iteration_us: v[0],
            per_seq_us: v[1],
            compute_eff: v[2],
            mem_eff: v[3],
            attn_eff: v[4],
            lora_eff: v[5],
            lora_us: v[6],
            h2d_eff: v[7],
            copy_us: v[8],
        }
    }

    /// Whether the named parameter is an efficiency (a fraction in (0, 1]) rather than a time (>= 0).
    pub fn is_efficiency(i: usize) -> bool {
        matches!(i, 2..=5 | 7)
    }

    /// A starting point: the analytic roofline's assumptions.
    pub fn roofline() -> EngineParams {
        EngineParams {
            iteration_us: 1000.0,
            per_seq_us: 0.0,
            compute_eff: 0.6,
            mem_eff: 0.8,
            attn_eff: 0.8,
            lora_eff: 0.2,
            lora_us: 0.0,
            h2d_eff: 0.8,
            copy_us: 10.0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        for (i, (name, v)) in Self::NAMES.iter().zip(self.to_vec()).enumerate() {
            let ok = if Self::is_efficiency(i) {
                v > 0.0 && v <= 1.0
            } else {
                v >= 0.0 && v.is_finite()
            };
            if !ok {
                let want = if Self::is_efficiency(i) {
                    "in (0, 1]"
                } else {
                    ">= 0"
                };
                return Err(Error::msg(format!(
                    "engine profile: params.{name} must be {want}, got {}",
                    crate::range::show(v)
                )));
            }
        }
        Ok(())
    }
}

/// A measured dense-layer cost (all layers, no attention) at a number of tokens.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DensePoint {
    pub tokens: u64,
    pub ms: f64,
}

/// An engine profile as stored on disk.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineProfile {
    pub schema: String,
    pub version: u32,
    /// GPU and model, by the simulator's names (`--gpu`, `--model`).
    pub gpu: String,
    pub model: String,
    pub params: EngineParams,
    /// LoRA kernels the engine runs (`slora` or `exact`).
    pub lora_kernels: String,
    /// Dense layers measured on the GPU, replacing the dense roofline term (e.g. Vidur's operator times).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense_table: Option<Vec<DensePoint>>,
    /// Where the numbers come from and how they were obtained.
    pub provenance: serde_json::Value,
    /// The fit's report: measured vs simulated per run, errors (absent for a hand-made profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<serde_json::Value>,
}

impl EngineProfile {
    pub fn parse(text: &str, source: &str) -> Result<EngineProfile> {
        let p: EngineProfile = serde_json::from_str(text).map_err(|e| {
            let at = crate::error::json_error(text, &e);
            Error::msg(format!("{source}: not an engine profile: {at}"))
        })?;
        if p.schema != SCHEMA {
            return Err(Error::msg(format!(
                "{source}: schema '{}' is not '{SCHEMA}'",
                p.schema
            )));
        }
        if p.version != VERSION {
            return Err(Error::msg(format!(
                "{source}: engine profile version {} (this build reads {VERSION})",
                p.version
            )));
        }
        p.params.validate().map_err(|e| e.context(source))?;
        LoraKernels::parse(&p.lora_kernels).map_err(|e| e.context(source))?;
        ModelSpec::by_name(&p.model).map_err(|e| e.context(source))?;
        GpuSpec::by_name(&p.gpu).map_err(|e| e.context(source))?;
        if let Some(t) = &p.dense_table
            && (t.len() < 2 || !t.iter().all(|d| d.ms > 0.0 && d.tokens > 0))
        {
            return Err(Error::msg(format!(
                "{source}: dense_table needs at least two points with tokens > 0 and ms > 0"
            )));
        }
        Ok(p)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile serialises") + "\n"
    }
}

/// The cost model of an engine profile.
#[derive(Clone, Debug)]
pub struct EngineCost {
    pub p: EngineParams,
    model: &'static ModelSpec,
    gpu: &'static GpuSpec,
    kernels: LoraKernels,
    /// (tokens, ns) of a measured dense-layer table, sorted.
    dense: Vec<(f64, f64)>,
    describe: String,
}

impl EngineCost {
    pub fn new(
        p: EngineParams,
        model: &'static ModelSpec,
        gpu: &'static GpuSpec,
        kernels: LoraKernels,
        dense: Option<&[DensePoint]>,
        source: &str,
    ) -> EngineCost {
        let mut dense: Vec<(f64, f64)> = dense
            .unwrap_or(&[])
            .iter()
            .map(|d| (d.tokens as f64, d.ms * 1e6))
            .collect();
        dense.sort_by(|a, b| a.0.total_cmp(&b.0));
        let describe = format!(
            "engine profile {source} ({} on {}, {} LoRA kernels{}: iteration {:.0}us + {:.1}us/seq, compute_eff {:.3}, \
             mem_eff {:.3}, attn_eff {:.3}, lora_eff {:.4} + {:.0}us, h2d_eff {:.3}, {:.1}us/copy)",
            model.name,
            gpu.name,
            kernels.name(),
            if dense.is_empty() {
                ""
            } else {
                ", measured dense layers"
            },
            p.iteration_us,
            p.per_seq_us,
            p.compute_eff,
            p.mem_eff,
            p.attn_eff,
            p.lora_eff,
            p.lora_us,
            p.h2d_eff,
            p.copy_us
        );
        EngineCost {
            p,
            model,
            gpu,
            kernels,
            dense,
            describe,
        }
    }

    pub fn from_profile(p: &EngineProfile, source: &str) -> Result<EngineCost> {
        Ok(EngineCost::new(
            p.params,
            ModelSpec::by_name(&p.model)?,
            GpuSpec::by_name(&p.gpu)?,
            LoraKernels::parse(&p.lora_kernels)?,
            p.dense_table.as_deref(),
            source,
        ))
    }

    /// Dense layers from the measured table, linear between points and beyond the ends (through the last
    /// two points), never below the first point's time.
    fn dense_table_ns(&self, tokens: f64) -> f64 {
        let d = &self.dense;
        let i = d.partition_point(|p| p.0 < tokens).clamp(1, d.len() - 1);
        let (a, b) = (d[i - 1], d[i]);
        let t = a.1 + (b.1 - a.1) * (tokens - a.0) / (b.0 - a.0);
        t.max(d[0].1)
    }

    /// The iteration time in ns as a float (the fit differentiates nothing, but rounding only at the end
    /// keeps the objective smooth).
    pub fn iteration_ns(&self, s: &BatchShape) -> f64 {
        let (m, g, p) = (self.model, self.gpu, &self.p);
        let (l, h, b) = (m.layers as f64, m.hidden as f64, m.dtype_bytes as f64);
        let tokens = s.tokens() as f64;
        let seqs = (s.prefill_seqs + s.decode_seqs) as f64;
        let peak = g.fp16_flops;
        let bw = g.mem_bw;
        let mut t = p.iteration_us * 1e3 + p.per_seq_us * 1e3 * seqs;
        if tokens > 0.0 {
            let head = 2.0 * h * m.vocab as f64 * seqs / (peak * p.compute_eff)
                + h * m.vocab as f64 * b / (bw * p.mem_eff);
            t += if self.dense.is_empty() {
                let flops = 2.0 * l * m.layer_params() as f64 * tokens;
                let bytes = b * l * m.layer_params() as f64;
                (flops / (peak * p.compute_eff)).max(bytes / (bw * p.mem_eff)) * 1e9
            } else {
                self.dense_table_ns(tokens)
            } + head * 1e9;
        }
        t += (2.0 * l * h * s.prefill_sq_tokens as f64 / (peak * p.compute_eff)
            + s.decode_context as f64 * m.kv_slot_bytes() as f64 / (bw * p.attn_eff))
            * 1e9;
        if s.lora_tokens > 0 {
            let w = s.lora_work(self.kernels);
            t += p.lora_us * 1e3
                + m.lora_factor()
                    * (16.0 * l * h * w.compute / (peak * p.lora_eff)
                        + 8.0 * l * h * b * w.weight_rows / (bw * p.mem_eff))
                    * 1e9;
        }
        t
    }

    pub fn load_ns(&self, load: &LoadShape) -> f64 {
        let bw = self.gpu.pcie_bw * self.p.h2d_eff * if load.pinned { 1.0 } else { 0.5 };
        load.copies as f64 * self.p.copy_us * 1e3 + load.bytes as f64 / bw * 1e9
    }
}

impl CostModel for EngineCost {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn iteration(&self, s: &BatchShape) -> Nanos {
        (self.iteration_ns(s).round() as Nanos).max(1)
    }

    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        self.load_ns(load).round() as Nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(p: EngineParams) -> EngineCost {
        EngineCost::new(
            p,
            ModelSpec::by_name("llama-7b").unwrap(),
            GpuSpec::by_name("a100-80gb").unwrap(),
            LoraKernels::Slora,
            None,
            "test",
        )
    }

    #[test]
    fn each_term_adds_what_it_says() {
        let zero = EngineParams {
            iteration_us: 0.0,
            per_seq_us: 0.0,
            compute_eff: 1.0,
            mem_eff: 1.0,
            attn_eff: 1.0,
            lora_eff: 1.0,
            lora_us: 0.0,
            h2d_eff: 1.0,
            copy_us: 0.0,
        };
        let decode = BatchShape {
            decode_seqs: 10,
            decode_context: 1000,
            ..Default::default()
        };
        let base = cost(zero).iteration_ns(&decode);
        // 2 ms fixed + 10 x 50 us per sequence.
        let over = cost(EngineParams {
            iteration_us: 2000.0,
            per_seq_us: 50.0,
            ..zero
        })
        .iteration_ns(&decode);
        assert!((over - base - 2.5e6).abs() < 1.0, "{over} {base}");
        // Half the KV bandwidth doubles the attention term: 1000 tokens x 512 KiB at 2.039 TB/s.
        let kv = 1000.0 * 524288.0 / 2039e9 * 1e9;
        let slow = cost(EngineParams {
            attn_eff: 0.5,
            ..zero
        })
        .iteration_ns(&decode);
        assert!((slow - base - kv).abs() < 1.0, "{slow} {base} {kv}");
        // A load: 64 copies x 10 us + 32 MiB over 32 GB/s x 0.5.
        let l = cost(EngineParams {
            copy_us: 10.0,
            h2d_eff: 0.5,
            ..zero
        })
        .load_ns(&LoadShape {
            bytes: 32 << 20,
            copies: 64,
            pinned: true,
        });
        assert!(
            (l - (640e3 + (32u64 << 20) as f64 / 16e9 * 1e9)).abs() < 1.0,
            "{l}"
        );
    }

    #[test]
    fn profiles_round_trip_and_bad_ones_name_the_field() {
        let p = EngineProfile {
            schema: SCHEMA.into(),
            version: VERSION,
            gpu: "a100-80gb".into(),
            model: "llama-7b".into(),
            params: EngineParams::roofline(),
            lora_kernels: "slora".into(),
            dense_table: None,
            provenance: serde_json::json!({"tool": "test"}),
            fit: None,
        };
        let back = EngineProfile::parse(&p.to_json(), "p.json").unwrap();
        assert_eq!(back, p);
        let bad = p.to_json().replace("\"mem_eff\": 0.8", "\"mem_eff\": 1.5");
        let e = EngineProfile::parse(&bad, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("params.mem_eff") && e.contains("p.json"), "{e}");
        let bad = p.to_json().replace("a100-80gb", "v100");
        assert!(EngineProfile::parse(&bad, "p.json").is_err());
    }
}
