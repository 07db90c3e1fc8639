//! The joint parameter vector of the fit: one set of host terms for every GPU (the engine's software), and
//! per GPU a host factor (its machine's speed against the reference machine's) and six efficiencies shared
//! by every model on it. Values are physical; the optimiser works in bounded logit coordinates
//! (`to_x` / `from_x`) so that every value stays inside its physical range and nothing pulls it anywhere.

use std::collections::BTreeMap;
use std::path::Path;

use sim_core::cost::LoraKernels;
use sim_core::cost::fitted::{DensePoint, EngineParams, N_PARAMS, PARAMS};
use sim_core::error::Result;
use sim_core::model::{GpuSpec, ModelSpec};

use super::Prepared;

/// EngineParams indices 0..HOST are the shared host terms; HOST..N_PARAMS are per GPU.
pub const HOST: usize = 8;
pub const PER_GPU: usize = N_PARAMS - HOST;
/// `host_factor`, `compute_eff`, `mem_eff` in EngineParams order.
pub const HOST_FACTOR: usize = 8;
pub const COMPUTE_EFF: usize = 9;
pub const MEM_EFF: usize = 10;

/// The joint parameters: `values[..HOST]` host terms, then `PER_GPU` per GPU in `gpus` order.
#[derive(Clone, Debug, PartialEq)]
pub struct Joint {
    pub gpus: Vec<&'static str>,
    /// The machine every host term is measured on (host factor 1).
    pub reference: usize,
    pub values: Vec<f64>,
}

impl Joint {
    /// Per GPU, its parameters and which of them `seen` (joint indices) marks as exercised by data.
    pub fn fitted_gpus(
        &self,
        gpus: &[usize],
        seen: &[usize],
    ) -> Vec<(EngineParams, [bool; N_PARAMS])> {
        gpus.iter()
            .map(|&g| {
                let mut mask = [false; N_PARAMS];
                for (p, m) in mask.iter_mut().enumerate() {
                    *m = seen.contains(&self.index(p, g));
                }
                (self.params(g), mask)
            })
            .collect()
    }

    /// Every GPU at the start values; the reference machine is the A10G's when it is there, else the GPU
    /// with the most runs (`runs_per_gpu`).
    pub fn start(gpus: &[&'static str], runs_per_gpu: &[usize]) -> Joint {
        let reference = gpus.iter().position(|g| *g == "a10g").unwrap_or_else(|| {
            (0..gpus.len())
                .max_by_key(|&i| (runs_per_gpu.get(i).copied().unwrap_or(0), usize::MAX - i))
                .unwrap_or(0)
        });
        let s = EngineParams::start().to_vec();
        let mut values = s[..HOST].to_vec();
        for _ in gpus {
            values.extend_from_slice(&s[HOST..]);
        }
        Joint {
            gpus: gpus.to_vec(),
            reference,
            values,
        }
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    pub fn gpu_index(&self, gpu: &str) -> Option<usize> {
        self.gpus.iter().position(|g| *g == gpu)
    }

    /// Joint index of EngineParams index `param` for GPU `gpu` (host terms ignore the GPU).
    pub fn index(&self, param: usize, gpu: usize) -> usize {
        if param < HOST {
            param
        } else {
            HOST + gpu * PER_GPU + (param - HOST)
        }
    }

    /// (EngineParams index, GPU index or None for a host term) of joint index `k`.
    pub fn locate(&self, k: usize) -> (usize, Option<usize>) {
        if k < HOST {
            (k, None)
        } else {
            (HOST + (k - HOST) % PER_GPU, Some((k - HOST) / PER_GPU))
        }
    }

    /// `iter_us`, or `a10g.bgmv_eff`.
    pub fn name(&self, k: usize) -> String {
        match self.locate(k) {
            (p, None) => PARAMS[p].name.to_string(),
            (p, Some(g)) => format!("{}.{}", self.gpus[g], PARAMS[p].name),
        }
    }

    /// The engine parameters of GPU `gpu`.
    pub fn params(&self, gpu: usize) -> EngineParams {
        let mut v = [0.0; N_PARAMS];
        v[..HOST].copy_from_slice(&self.values[..HOST]);
        let o = HOST + gpu * PER_GPU;
        v[HOST..].copy_from_slice(&self.values[o..o + PER_GPU]);
        EngineParams::from_slice(&v)
    }

    /// Sets GPU `gpu`'s part (host factor and efficiencies) from `p`.
    pub fn set_gpu(&mut self, gpu: usize, p: &EngineParams) {
        let o = HOST + gpu * PER_GPU;
        self.values[o..o + PER_GPU].copy_from_slice(&p.to_vec()[HOST..]);
    }

    /// The parameters of every GPU by name.
    pub fn by_gpu(&self) -> BTreeMap<&'static str, EngineParams> {
        self.gpus
            .iter()
            .enumerate()
            .map(|(i, g)| (*g, self.params(i)))
            .collect()
    }
}

/// The bounds the optimiser keeps parameter `param` in: its physical range, pulled in by a hair so that the
/// logit is finite (a time can get within 1e-4 of its range of 0; an efficiency never reaches 0).
fn bounds(param: usize) -> (f64, f64) {
    let p = &PARAMS[param];
    let eps = 1e-4 * (p.hi - p.lo);
    (p.lo + eps, p.hi - eps)
}

/// Bounded logit coordinate of `v` for EngineParams index `param`.
pub fn to_x(param: usize, v: f64) -> f64 {
    let (lo, hi) = bounds(param);
    let v = v.clamp(lo, hi);
    ((v - lo) / (hi - v)).ln()
}

pub fn from_x(param: usize, x: f64) -> f64 {
    let (lo, hi) = bounds(param);
    let x = x.clamp(-40.0, 40.0);
    lo + (hi - lo) / (1.0 + (-x).exp())
}

/// Which runs depend on joint parameter `k` (the rest of the Jacobian's column is zero).
pub fn affects(joint: &Joint, k: usize, p: &Prepared) -> bool {
    let (param, gpu) = joint.locate(k);
    if let Some(g) = gpu
        && joint.gpu_index(p.gpu.name) != Some(g)
    {
        return false;
    }
    let adapters = p.has_adapters();
    let kernels = p.variant().kernels();
    let slora = adapters && matches!(kernels, LoraKernels::Slora | LoraKernels::Exact);
    match PARAMS[param].name {
        "lora_seq_us" | "lora_layer_us" | "bgmv_eff" | "mbgmm_eff" => slora,
        "copy_us" | "h2d_eff" => adapters,
        "op_us" | "bmm_iter_us" => adapters && kernels == LoraKernels::Bmm,
        _ => true,
    }
}

/// Vidur's operator profile of a GPU, by the simulator's GPU name (the files in `dir`).
pub fn vidur_file(dir: &Path, gpu: &str) -> Option<std::path::PathBuf> {
    let name = match gpu {
        "a40" => "a40",
        "a100-80gb" => "a100",
        "h100-80gb" => "h100",
        _ => return None,
    };
    let f = dir.join(format!("mlp_llama-2-7b_{name}.csv"));
    f.exists().then_some(f)
}

/// The dense layers' roofline, ns: max(FLOPs / (peak x ce), weight bytes / (HBM x me)).
pub fn dense_roofline_ns(m: &ModelSpec, g: &GpuSpec, tokens: f64, ce: f64, me: f64) -> f64 {
    let lp = m.layers as f64 * m.layer_params() as f64;
    (2.0 * lp * tokens / (g.fp16_flops * ce)).max(m.dtype_bytes as f64 * lp / (g.mem_bw * me)) * 1e9
}

/// The dense efficiencies a measured dense table implies: the (compute_eff, mem_eff) whose roofline is
/// closest to the (monotone) table in squared log error, on a grid of 1% steps.
pub fn table_effs(m: &ModelSpec, g: &GpuSpec, table: &[DensePoint]) -> (f64, f64) {
    let pts = sim_core::cost::fitted::monotone(table);
    let err = |ce: f64, me: f64| -> f64 {
        pts.iter()
            .map(|d| {
                let e = (dense_roofline_ns(m, g, d.tokens as f64, ce, me) / (d.ms * 1e6)).ln();
                e * e
            })
            .sum()
    };
    let mut best = (f64::INFINITY, 0.5, 0.5);
    for i in 1..=100 {
        for j in 1..=100 {
            let (ce, me) = (i as f64 / 100.0, j as f64 / 100.0);
            let e = err(ce, me);
            if e < best.0 {
                best = (e, ce, me);
            }
        }
    }
    (best.1, best.2)
}

/// The parameters of a GPU without runs of its own (a user's GPU, or one held out): the host terms
/// fitted, the reference machine's host (factor 1), each efficiency the mean in logit coordinates of the
/// fitted GPUs whose runs exercise it (`fitted`: parameters and, per EngineParams index, whether the data
/// saw it; the datasheet's figures carry the GPU's speed; the start value when none did), the dense
/// efficiencies from its measured table when there is one (`dense`).
pub fn transfer(
    fitted: &[(EngineParams, [bool; N_PARAMS])],
    host: &EngineParams,
    dense: Option<(f64, f64)>,
) -> EngineParams {
    let mut v = host.to_vec();
    v[HOST_FACTOR] = 1.0;
    let start = EngineParams::start().to_vec();
    for (param, slot) in v.iter_mut().enumerate().skip(HOST_FACTOR + 1) {
        let xs: Vec<f64> = fitted
            .iter()
            .filter(|(_, seen)| seen[param])
            .map(|(p, _)| to_x(param, p.to_vec()[param]))
            .collect();
        *slot = if xs.is_empty() {
            start[param]
        } else {
            from_x(param, xs.iter().sum::<f64>() / xs.len() as f64)
        };
    }
    if let Some((ce, me)) = dense {
        v[COMPUTE_EFF] = ce;
        v[MEM_EFF] = me;
    }
    EngineParams::from_slice(&v)
}

/// Dense tables (llama-7b shapes) and the efficiencies they imply, per GPU with a Vidur file in `dir`.
pub struct DenseTables {
    pub tables: BTreeMap<&'static str, Vec<DensePoint>>,
    pub effs: BTreeMap<&'static str, (f64, f64)>,
}

impl DenseTables {
    pub fn load(dir: &Path, gpus: &[&'static str]) -> Result<DenseTables> {
        let m7 = ModelSpec::by_name("llama-7b")?;
        let mut tables = BTreeMap::new();
        let mut effs = BTreeMap::new();
        for &g in gpus {
            if let Some(f) = vidur_file(dir, g) {
                let t = super::compose::vidur_dense(&f, m7)?;
                effs.insert(g, table_effs(m7, GpuSpec::by_name(g)?, &t));
                tables.insert(g, t);
            }
        }
        Ok(DenseTables { tables, effs })
    }

    /// The measured table a run's cost model uses: its GPU's, when the run's model has the table's shapes.
    pub fn for_run(&self, gpu: &str, model: &ModelSpec) -> Option<Vec<DensePoint>> {
        (model.hidden == 4096 && model.intermediate == 11008 && model.layers == 32)
            .then(|| self.tables.get(gpu).cloned())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logit_coordinates_round_trip_inside_the_physical_range() {
        for (i, p) in PARAMS.iter().enumerate() {
            for v in [p.lo, 0.5 * (p.lo + p.hi), p.hi, p.hi * 2.0] {
                let back = from_x(i, to_x(i, v));
                assert!(back > p.lo && back < p.hi, "{} {v} -> {back}", p.name);
            }
            let mid = 0.3 * p.lo + 0.7 * p.hi;
            assert!((from_x(i, to_x(i, mid)) - mid).abs() < 1e-9 * p.hi);
        }
    }

    #[test]
    fn the_joint_vector_shares_host_terms_and_splits_efficiencies() {
        let mut j = Joint::start(&["a100-40gb", "a10g"], &[5, 3]);
        assert_eq!(j.reference, 1, "the A10G's machine is the reference");
        assert_eq!(j.len(), HOST + 2 * PER_GPU);
        let k = j.index(12, 1);
        j.values[k] = 0.9;
        j.values[0] = 1234.0;
        assert_eq!(j.params(1).bgmv_eff, 0.9);
        assert_eq!(j.params(0).bgmv_eff, EngineParams::start().bgmv_eff);
        assert_eq!((j.params(0).iter_us, j.params(1).iter_us), (1234.0, 1234.0));
        assert_eq!(j.name(k), "a10g.bgmv_eff");
        assert_eq!(j.locate(k), (12, Some(1)));
        let j = Joint::start(&["a100-40gb", "h100-80gb"], &[5, 7]);
        assert_eq!(
            j.reference, 1,
            "without an A10G: the GPU with the most runs"
        );
    }

    #[test]
    fn a_transferred_gpu_takes_the_mean_efficiency_and_the_reference_host() {
        let a = EngineParams {
            bgmv_eff: 0.2,
            host_factor: 2.0,
            ..EngineParams::start()
        };
        let b = EngineParams {
            bgmv_eff: 0.8,
            ..EngineParams::start()
        };
        let c = EngineParams {
            bgmv_eff: 0.01,
            ..EngineParams::start()
        };
        // c's BGMV efficiency is not exercised by its runs: left out of the mean.
        let mut unseen = [true; N_PARAMS];
        unseen[12] = false;
        let t = transfer(
            &[(a, [true; N_PARAMS]), (b, [true; N_PARAMS]), (c, unseen)],
            &a,
            Some((0.4, 0.6)),
        );
        assert_eq!(t.host_factor, 1.0);
        assert_eq!((t.compute_eff, t.mem_eff), (0.4, 0.6));
        // The logit mean of 0.2 and 0.8 on (0, 3].
        let want = from_x(12, (to_x(12, 0.2) + to_x(12, 0.8)) / 2.0);
        assert!((t.bgmv_eff - want).abs() < 1e-12 && t.bgmv_eff > 0.2 && t.bgmv_eff < 0.8);
        assert_eq!(t.iter_us, a.iter_us);
    }

    #[test]
    fn table_effs_recover_a_roofline() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let g = GpuSpec::by_name("a40").unwrap();
        let table: Vec<DensePoint> = [1u64, 64, 256, 1024, 4096]
            .iter()
            .map(|&t| DensePoint {
                tokens: t,
                ms: dense_roofline_ns(m, g, t as f64, 0.45, 0.8) / 1e6,
            })
            .collect();
        assert_eq!(table_effs(m, g, &table), (0.45, 0.8));
    }
}
