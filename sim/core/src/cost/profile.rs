//! Measured cost profiles (schema v1, documented in docs/profile-schema.md) and the cost model built from one.
//!
//! A profile holds raw measured points; `ProfileCost` fits each table once at load time:
//! - prefill: piecewise-linear in tokens over single-sequence points, minus an attention term c*(T^2 - sum s^2)
//!   fitted on multi-sequence points (a batch of short sequences does less attention than one long one);
//! - decode: for each measured batch size a line in total context, interpolated linearly between batch sizes;
//! - LoRA: least squares a + b*sum(tokens*rank) + c*sum(distinct ranks);
//! - adapter load: least squares a + b*bytes for the chosen copy method (points taken alongside compute
//!   preferred, since serving overlaps loads with compute).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BatchShape, CostModel, LoadMethod, LoadShape};
use crate::error::{Error, Result};
use crate::time::Nanos;

pub const SCHEMA: &str = "lora-serving-cost-profile";
pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostProfile {
    pub schema: String,
    pub version: u32,
    pub gpu: GpuInfo,
    pub model: ModelInfo,
    pub provenance: Provenance,
    /// Fixed cost added to every iteration (serving-loop overhead not in the kernels).
    #[serde(default)]
    pub iteration_overhead_ns: u64,
    pub prefill: Vec<PrefillPoint>,
    pub decode: Vec<DecodePoint>,
    #[serde(default)]
    pub lora: Vec<LoraPoint>,
    #[serde(default)]
    pub adapter_load: Vec<LoadPoint>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GpuInfo {
    pub name: String,
    pub memory_bytes: u64,
    #[serde(default)]
    pub driver: Option<String>,
    #[serde(default)]
    pub cuda: Option<String>,
    #[serde(default)]
    pub compute_capability: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelInfo {
    pub name: String,
    pub layers: u64,
    pub hidden: u64,
    pub intermediate: u64,
    pub heads: u64,
    pub vocab: u64,
    pub dtype: String,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// ISO date of the measurement.
    pub date: String,
    /// What produced it, e.g. "calibrate 0.1.0" or "hand-written".
    pub tool: String,
    /// How it was measured (timers, repeats, statistic).
    pub method: String,
    #[serde(default)]
    pub notes: Option<String>,
    /// Set when the tables were scaled from a profile measured on another GPU.
    #[serde(default)]
    pub transferred_from: Option<String>,
}

/// One prefill iteration of `seqs` sequences of `tokens / seqs` tokens each.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PrefillPoint {
    pub tokens: u64,
    pub seqs: u64,
    pub time_ns: u64,
}

/// One decode iteration of `batch` sequences, each attending over `context` tokens.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DecodePoint {
    pub batch: u64,
    pub context: u64,
    pub time_ns: u64,
}

/// The LoRA kernels of one forward pass (all layers, q,k,v,o, shrink + expand) for `tokens` tokens split
/// evenly over distinct adapters of the given ranks.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoraPoint {
    pub tokens: u64,
    pub ranks: Vec<u32>,
    pub time_ns: u64,
}

/// One adapter load of `bytes` host->device with `method` (see `LoadMethod`), alone or alongside compute.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LoadPoint {
    pub bytes: u64,
    pub method: String,
    pub with_compute: bool,
    pub time_ns: u64,
}

impl CostProfile {
    pub fn read(path: &Path) -> Result<CostProfile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::msg(format!("{}: cannot read profile: {e}", path.display())))?;
        Self::parse(&text).map_err(|e| e.context(path.display()))
    }

    pub fn parse(text: &str) -> Result<CostProfile> {
        // Check the header first so a profile of a future schema gets a clear message, not a field error.
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::msg(format!("not valid JSON: {e}")))?;
        match (
            v.get("schema").and_then(|s| s.as_str()),
            v.get("version").and_then(|s| s.as_u64()),
        ) {
            (Some(SCHEMA), Some(1)) => {}
            (Some(SCHEMA), Some(n)) => {
                return Err(Error::msg(format!(
                    "profile schema version {n} is not supported (this build reads 1)"
                )));
            }
            _ => {
                return Err(Error::msg(format!(
                    "not a cost profile: field \"schema\" must be \"{SCHEMA}\""
                )));
            }
        }
        let p: CostProfile = serde_json::from_str(text)
            .map_err(|e| Error::msg(format!("profile: {}", crate::error::json_error(text, &e))))?;
        p.validate()?;
        Ok(p)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |table: &str, i: usize, why: &str| {
            Err(Error::msg(format!("profile: {table}[{i}]: {why}")))
        };
        for (i, p) in self.prefill.iter().enumerate() {
            if p.tokens == 0 || p.seqs == 0 || p.seqs > p.tokens || p.time_ns == 0 {
                return bad(
                    "prefill",
                    i,
                    "tokens, seqs and time_ns must be positive and seqs <= tokens",
                );
            }
        }
        for (i, p) in self.decode.iter().enumerate() {
            if p.batch == 0 || p.time_ns == 0 {
                return bad("decode", i, "batch and time_ns must be positive");
            }
        }
        for (i, p) in self.lora.iter().enumerate() {
            if p.tokens == 0 || p.ranks.is_empty() || p.ranks.contains(&0) {
                return bad(
                    "lora",
                    i,
                    "tokens must be positive and ranks a non-empty list of positive ranks",
                );
            }
        }
        for (i, p) in self.adapter_load.iter().enumerate() {
            LoadMethod::parse(&p.method)
                .map_err(|e| e.context(format!("profile: adapter_load[{i}]")))?;
            if p.bytes == 0 || p.time_ns == 0 {
                return bad("adapter_load", i, "bytes and time_ns must be positive");
            }
        }
        if self.prefill.iter().filter(|p| p.seqs == 1).count() < 2 {
            return Err(Error::msg(
                "profile: prefill needs at least two single-sequence points",
            ));
        }
        if self.decode.is_empty() {
            return Err(Error::msg("profile: decode table is empty"));
        }
        Ok(())
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("profile serialises")
    }
}

/// Piecewise-linear function through sorted (x, y) knots, extended linearly past both ends.
#[derive(Clone, Debug)]
pub struct PiecewiseLinear {
    knots: Vec<(f64, f64)>,
}

impl PiecewiseLinear {
    /// Knots with equal x are averaged.
    pub fn new(mut pts: Vec<(f64, f64)>) -> PiecewiseLinear {
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut knots: Vec<(f64, f64, f64)> = Vec::new();
        for (x, y) in pts {
            match knots.last_mut() {
                Some(k) if k.0 == x => {
                    k.1 += y;
                    k.2 += 1.0;
                }
                _ => knots.push((x, y, 1.0)),
            }
        }
        PiecewiseLinear {
            knots: knots.into_iter().map(|(x, y, n)| (x, y / n)).collect(),
        }
    }

    pub fn eval(&self, x: f64) -> f64 {
        let k = &self.knots;
        if k.len() == 1 {
            return k[0].1;
        }
        let i = k.partition_point(|p| p.0 < x).clamp(1, k.len() - 1);
        let ((x0, y0), (x1, y1)) = (k[i - 1], k[i]);
        y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    }
}

/// Least squares for y ~ sum_j beta_j * x_j (normal equations, partial pivoting). None if singular.
pub fn least_squares<const N: usize>(rows: &[([f64; N], f64)]) -> Option<[f64; N]> {
    let mut a = [[0.0; N]; N];
    let mut b = [0.0; N];
    for (x, y) in rows {
        for i in 0..N {
            b[i] += x[i] * y;
            for j in 0..N {
                a[i][j] += x[i] * x[j];
            }
        }
    }
    for c in 0..N {
        let p = (c..N).max_by(|&i, &j| a[i][c].abs().total_cmp(&a[j][c].abs()))?;
        if a[p][c].abs() < 1e-12 * (1.0 + a[c][c].abs()) {
            return None;
        }
        a.swap(c, p);
        b.swap(c, p);
        for r in 0..N {
            if r != c {
                let f = a[r][c] / a[c][c];
                let pivot = a[c];
                for (x, y) in a[r].iter_mut().zip(pivot) {
                    *x -= f * y;
                }
                b[r] -= f * b[c];
            }
        }
    }
    Some(std::array::from_fn(|i| b[i] / a[i][i]))
}

/// How well a fitted table reproduces its own points.
#[derive(Clone, Debug, PartialEq)]
pub struct FitQuality {
    pub table: &'static str,
    pub form: &'static str,
    pub points: usize,
    pub r2: f64,
    pub max_rel_err: f64,
}

fn quality(
    table: &'static str,
    form: &'static str,
    pairs: impl Iterator<Item = (f64, f64)>,
) -> FitQuality {
    let pairs: Vec<(f64, f64)> = pairs.collect();
    let n = pairs.len().max(1) as f64;
    let mean = pairs.iter().map(|p| p.0).sum::<f64>() / n;
    let ss_tot: f64 = pairs.iter().map(|p| (p.0 - mean).powi(2)).sum();
    let ss_res: f64 = pairs.iter().map(|p| (p.0 - p.1).powi(2)).sum();
    FitQuality {
        table,
        form,
        points: pairs.len(),
        r2: if ss_tot > 0.0 {
            1.0 - ss_res / ss_tot
        } else {
            1.0
        },
        max_rel_err: pairs
            .iter()
            .map(|(m, f)| ((f - m) / m).abs())
            .fold(0.0, f64::max),
    }
}

/// Cost model backed by a measured profile.
#[derive(Clone, Debug)]
pub struct ProfileCost {
    pub profile: CostProfile,
    source: String,
    load_method: LoadMethod,
    prefill_single: PiecewiseLinear,
    prefill_attn: f64,
    decode_base: PiecewiseLinear,
    decode_per_ctx: PiecewiseLinear,
    lora: [f64; 4],
    load: [f64; 2],
    load_with_compute: bool,
}

impl ProfileCost {
    pub fn new(profile: CostProfile, source: &str, load_method: LoadMethod) -> Result<ProfileCost> {
        profile.validate()?;
        let prefill_single = PiecewiseLinear::new(
            profile
                .prefill
                .iter()
                .filter(|p| p.seqs == 1)
                .map(|p| (p.tokens as f64, p.time_ns as f64))
                .collect(),
        );
        // Attention saved by splitting T tokens into shorter sequences: t1(T) - t = c * (T^2 - sum s^2).
        let multi: Vec<([f64; 1], f64)> = profile
            .prefill
            .iter()
            .filter(|p| p.seqs > 1)
            .map(|p| {
                let t = p.tokens as f64;
                let sq = Self::sq_sum(p);
                ([t * t - sq], prefill_single.eval(t) - p.time_ns as f64)
            })
            .collect();
        let prefill_attn = least_squares(&multi).map_or(0.0, |c| c[0].max(0.0));

        let mut batches: Vec<u64> = profile.decode.iter().map(|p| p.batch).collect();
        batches.sort_unstable();
        batches.dedup();
        let mut base = Vec::new();
        let mut per_ctx = Vec::new();
        for &b in &batches {
            let rows: Vec<([f64; 2], f64)> = profile
                .decode
                .iter()
                .filter(|p| p.batch == b)
                .map(|p| ([1.0, (p.batch * p.context) as f64], p.time_ns as f64))
                .collect();
            match least_squares(&rows) {
                Some([g, k]) => {
                    base.push((b as f64, g));
                    per_ctx.push((b as f64, k.max(0.0)));
                }
                // One context length measured at this batch size: no slope of its own.
                None => base.push((
                    b as f64,
                    rows.iter().map(|r| r.1).sum::<f64>() / rows.len() as f64,
                )),
            }
        }
        if per_ctx.is_empty() {
            per_ctx.push((1.0, 0.0));
        }

        let lora_rows: Vec<([f64; 4], f64)> = profile
            .lora
            .iter()
            .map(|p| {
                let (tok_rank, distinct) = Self::lora_features(p);
                ([1.0, tok_rank, distinct, p.tokens as f64], p.time_ns as f64)
            })
            .collect();
        let lora = if lora_rows.is_empty() {
            [0.0; 4]
        } else {
            least_squares(&lora_rows).ok_or_else(|| {
                Error::msg(
                    "profile: lora table is degenerate (vary tokens and ranks across points)",
                )
            })?
        };

        let pts = |with_compute: bool| -> Vec<([f64; 2], f64)> {
            profile
                .adapter_load
                .iter()
                .filter(|p| p.method == load_method.name() && p.with_compute == with_compute)
                .map(|p| ([1.0, p.bytes as f64], p.time_ns as f64))
                .collect()
        };
        let mut load_with_compute = true;
        let mut rows = pts(true);
        if rows.len() < 2 {
            load_with_compute = false;
            rows = pts(false);
        }
        let load = if profile.adapter_load.is_empty() {
            [0.0; 2]
        } else {
            least_squares(&rows).ok_or_else(|| {
                let mut have: Vec<&str> = profile.adapter_load.iter().map(|p| p.method.as_str()).collect();
                have.sort_unstable();
                have.dedup();
                Error::msg(format!(
                    "profile: fewer than two adapter_load points of different sizes for method '{}'; it has: {}",
                    load_method.name(),
                    have.join(", ")
                ))
            })?
        };
        Ok(ProfileCost {
            source: source.to_string(),
            load_method,
            prefill_single,
            prefill_attn,
            decode_base: PiecewiseLinear::new(base),
            decode_per_ctx: PiecewiseLinear::new(per_ctx),
            lora,
            load,
            load_with_compute,
            profile,
        })
    }

    fn sq_sum(p: &PrefillPoint) -> f64 {
        let s = p.tokens as f64 / p.seqs as f64;
        p.seqs as f64 * s * s
    }

    fn prefill_ns(&self, tokens: f64, sq: f64) -> f64 {
        self.prefill_single.eval(tokens) - self.prefill_attn * (tokens * tokens - sq)
    }

    fn decode_ns(&self, batch: f64, context: f64) -> f64 {
        self.decode_base.eval(batch) + self.decode_per_ctx.eval(batch) * context
    }

    /// sum(tokens x rank) and sum(distinct ranks) of a LoRA point (tokens split evenly over its adapters).
    fn lora_features(p: &LoraPoint) -> (f64, f64) {
        let share = p.tokens as f64 / p.ranks.len() as f64;
        let tok_rank = p.ranks.iter().map(|&r| share * r as f64).sum();
        (tok_rank, p.ranks.iter().map(|&r| r as f64).sum())
    }

    fn lora_ns(&self, tokens: f64, tok_rank: f64, distinct_rank: f64) -> f64 {
        if tokens == 0.0 {
            return 0.0;
        }
        let [a, b, c, d] = self.lora;
        // A fit with a negative intercept must not make a small batch's LoRA cost negative.
        (a + b * tok_rank + c * distinct_rank + d * tokens).max(0.0)
    }

    /// R^2 and worst relative error of each fitted table against its own points.
    pub fn fit_report(&self) -> Vec<FitQuality> {
        let p = &self.profile;
        let mut out = vec![
            quality(
                "prefill",
                "piecewise-linear(tokens) - c*(T^2 - sum s^2)",
                p.prefill.iter().map(|x| {
                    (
                        x.time_ns as f64,
                        self.prefill_ns(x.tokens as f64, Self::sq_sum(x)),
                    )
                }),
            ),
            quality(
                "decode",
                "g(batch) + k(batch)*context, linear between batch sizes",
                p.decode.iter().map(|x| {
                    (
                        x.time_ns as f64,
                        self.decode_ns(x.batch as f64, (x.batch * x.context) as f64),
                    )
                }),
            ),
        ];
        if !p.lora.is_empty() {
            out.push(quality(
                "lora",
                "a + b*sum(tokens*rank) + c*sum(distinct ranks) + d*tokens",
                p.lora.iter().map(|x| {
                    let (tr, d) = Self::lora_features(x);
                    (x.time_ns as f64, self.lora_ns(x.tokens as f64, tr, d))
                }),
            ));
        }
        if !p.adapter_load.is_empty() {
            out.push(quality(
                "adapter_load",
                "latency + bytes/bandwidth",
                p.adapter_load
                    .iter()
                    .filter(|x| {
                        x.method == self.load_method.name()
                            && x.with_compute == self.load_with_compute
                    })
                    .map(|x| {
                        (
                            x.time_ns as f64,
                            self.load[0] + self.load[1] * x.bytes as f64,
                        )
                    }),
            ));
        }
        out
    }
}

impl CostModel for ProfileCost {
    fn describe(&self) -> String {
        let p = &self.profile;
        let mut s = format!(
            "measured profile {} ({} on {}, {}, {}; adapter loads: {})",
            self.source,
            p.model.name,
            p.gpu.name,
            p.provenance.date,
            p.provenance.tool,
            self.load_method.name()
        );
        if let Some(from) = &p.provenance.transferred_from {
            s.push_str(&format!(
                "; TRANSFERRED from {from} by spec ratios, not measured on this GPU"
            ));
        }
        if p.lora.is_empty() {
            s.push_str("; no LoRA table: LoRA compute not modelled");
        }
        if p.adapter_load.is_empty() {
            s.push_str("; no adapter_load table: loads are free");
        }
        s
    }

    fn iteration(&self, s: &BatchShape) -> Nanos {
        let mut t = self.profile.iteration_overhead_ns as f64;
        if s.prefill_tokens > 0 {
            t += self.prefill_ns(s.prefill_tokens as f64, s.prefill_sq_tokens as f64);
        }
        if s.decode_seqs > 0 {
            t += self.decode_ns(s.decode_seqs as f64, s.decode_context as f64);
        }
        t += self.lora_ns(
            s.lora_tokens as f64,
            s.lora_token_rank as f64,
            s.lora_distinct_rank as f64,
        );
        (t.round() as i64).max(1) as Nanos
    }

    /// The measured copy method's line at the bytes moved (the copy count and pinning are the method's).
    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        ((self.load[0] + self.load[1] * load.bytes as f64).round() as i64).max(0) as Nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const EXAMPLE: &str = include_str!("../../../../docs/example-profile.json");

    #[test]
    fn example_profile_parses_and_fits_its_own_points() {
        let p = CostProfile::parse(EXAMPLE).unwrap();
        let c = ProfileCost::new(p, "example", LoadMethod::PerLayerPinned).unwrap();
        for q in c.fit_report() {
            assert!(q.r2 > 0.99 && q.max_rel_err < 0.05, "{q:?}");
        }
        // The example's decode table is linear, so interpolation is exact at a measured point.
        let t = c.iteration(&BatchShape {
            decode_seqs: 8,
            decode_context: 8 * 1024,
            ..Default::default()
        });
        let want = c
            .profile
            .decode
            .iter()
            .find(|d| d.batch == 8 && d.context == 1024)
            .unwrap()
            .time_ns;
        assert_eq!(t, want + c.profile.iteration_overhead_ns);
    }

    #[test]
    fn piecewise_linear_interpolates_and_extrapolates() {
        let f = PiecewiseLinear::new(vec![(10.0, 100.0), (0.0, 0.0), (20.0, 300.0)]);
        assert_eq!(f.eval(5.0), 50.0);
        assert_eq!(f.eval(15.0), 200.0);
        assert_eq!(f.eval(30.0), 500.0);
        assert_eq!(f.eval(-10.0), -100.0);
    }

    #[test]
    fn least_squares_recovers_a_plane() {
        let rows: Vec<([f64; 3], f64)> = (0..20)
            .map(|i| (i as f64, (i * i % 7) as f64))
            .map(|(x, z)| ([1.0, x, z], 3.0 + 2.0 * x - 0.5 * z))
            .collect();
        let b = least_squares(&rows).unwrap();
        assert!(
            (b[0] - 3.0).abs() < 1e-9 && (b[1] - 2.0).abs() < 1e-9 && (b[2] + 0.5).abs() < 1e-9
        );
        assert!(least_squares::<2>(&[([1.0, 1.0], 1.0)]).is_none());
    }

    #[test]
    fn bad_profiles_are_named_errors() {
        let e = CostProfile::parse("{\"schema\":\"x\"}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a cost profile"), "{e}");
        let v2 = EXAMPLE.replacen("\"version\": 1", "\"version\": 2", 1);
        assert!(
            CostProfile::parse(&v2)
                .unwrap_err()
                .to_string()
                .contains("version 2")
        );
        let zero = EXAMPLE.replacen("\"batch\": 1,", "\"batch\": 0,", 1);
        assert!(
            CostProfile::parse(&zero)
                .unwrap_err()
                .to_string()
                .contains("decode[0]")
        );
    }
}
