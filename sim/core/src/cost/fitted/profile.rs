//! An engine profile as stored on disk (schema `lora-serving-engine-profile`), and a measured dense table
//! made monotone.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::super::LoraKernels;
use super::EngineParams;
use crate::error::{Error, Result};
use crate::model::{GpuSpec, ModelSpec};

pub const SCHEMA: &str = "lora-serving-engine-profile";
pub const VERSION: u32 = 2;

/// A measured dense-layer cost (all layers, no attention) at a number of tokens.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DensePoint {
    pub tokens: u64,
    pub ms: f64,
}

/// `points` (sorted by tokens) made non-decreasing in time by isotonic regression (pool adjacent
/// violators, equal weights): a measured table's dips (e.g. Vidur's A40 from 1,280 to 1,296 tokens, +20 ms)
/// become flat stretches at their mean, so no result rests on a measurement cliff.
pub fn monotone(points: &[DensePoint]) -> Vec<DensePoint> {
    let mut blocks: Vec<(f64, usize)> = Vec::with_capacity(points.len());
    for p in points {
        blocks.push((p.ms, 1));
        while blocks.len() >= 2 {
            let (b, nb) = blocks[blocks.len() - 1];
            let (a, na) = blocks[blocks.len() - 2];
            if a <= b {
                break;
            }
            blocks.pop();
            let n = na + nb;
            *blocks.last_mut().expect("two blocks") =
                ((a * na as f64 + b * nb as f64) / n as f64, n);
        }
    }
    let mut out = Vec::with_capacity(points.len());
    let mut i = 0;
    for (v, n) in blocks {
        for p in &points[i..i + n] {
            out.push(DensePoint {
                tokens: p.tokens,
                ms: v,
            });
        }
        i += n;
    }
    out
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
    /// The fitted (best) parameters.
    pub params: EngineParams,
    /// LoRA kernels the engine runs (`slora`, `exact`, `bmm` or `off`).
    pub lora_kernels: String,
    /// Dense layers measured on the GPU for this model, replacing the dense roofline term (e.g. Vidur's
    /// operator times); made monotone when loaded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dense_table: Option<Vec<DensePoint>>,
    /// Each parameter's plausible range and whether the data pin it (from the fit's identification).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Value>,
    /// The plausible parameter vectors (a bootstrap over the measured runs): `--cost profile[member=K]`
    /// runs member K; `members[0]` is the best fit.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<EngineParams>,
    /// The validation error that applies to this profile (in-sample, or held out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validation: Option<Value>,
    /// Where the numbers come from and how they were obtained.
    pub provenance: Value,
    /// The fit's report: measured vs simulated per run, errors (absent for a composed profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fit: Option<Value>,
}

impl EngineProfile {
    /// Parses a profile; a version-1 profile is converted (`EngineParams::from_v1`) and says so in its
    /// provenance.
    pub fn parse(text: &str, source: &str) -> Result<EngineProfile> {
        let at = |e: serde_json::Error| {
            let at = crate::error::json_error(text, &e);
            Error::msg(format!("{source}: not an engine profile: {at}"))
        };
        let mut v: Value = serde_json::from_str(text).map_err(at)?;
        if v.get("schema").and_then(Value::as_str) != Some(SCHEMA) {
            return Err(Error::msg(format!(
                "{source}: schema '{}' is not '{SCHEMA}'",
                v.get("schema").and_then(Value::as_str).unwrap_or("?")
            )));
        }
        let version = v.get("version").and_then(Value::as_u64).unwrap_or(0);
        let p: EngineProfile = if version == 1 {
            let gpu = v.get("gpu").and_then(Value::as_str).unwrap_or("");
            let g = GpuSpec::by_name(gpu).map_err(|e| e.context(source))?;
            let params = EngineParams::from_v1(&v["params"], g).map_err(|e| e.context(source))?;
            let o = v.as_object_mut().expect("an object");
            o.insert(
                "params".into(),
                serde_json::to_value(params).expect("params"),
            );
            o.insert("version".into(), VERSION.into());
            let prov = o.entry("provenance").or_insert(Value::Null).take();
            o.insert(
                "provenance".into(),
                serde_json::json!({
                    "converted_from_version_1": "host overheads kept serial, no launch overlap; BGMV now at each \
                        token's own rank with the efficiency that charges a token x rank what v1 did; refit with \
                        `sim fit` for the physical model",
                    "original": prov,
                }),
            );
            serde_json::from_value(v)
                .map_err(|e| Error::msg(format!("{source}: not an engine profile: {e}")))?
        } else if version == VERSION as u64 {
            // Parsed from the text, so that an error names its line.
            serde_json::from_str(text).map_err(at)?
        } else {
            return Err(Error::msg(format!(
                "{source}: engine profile version {version} (this build reads {VERSION} and converts 1)"
            )));
        };
        p.params.validate().map_err(|e| e.context(source))?;
        for (k, m) in p.members.iter().enumerate() {
            m.validate()
                .map_err(|e| e.context(format!("{source}: members[{k}]")))?;
        }
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

    /// The plausible parameter vectors (the members; the best fit alone for a profile without them): a
    /// study over the model's uncertainty runs each (`--cost profile[member=K]` selects one).
    pub fn plausible(&self) -> Vec<EngineParams> {
        if self.members.is_empty() {
            vec![self.params]
        } else {
            self.members.clone()
        }
    }
}
