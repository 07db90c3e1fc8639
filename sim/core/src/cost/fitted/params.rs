//! The engine's parameters: each one's name, unit, physical range and source in S-LoRA's code, and the
//! fitted vector with its conversions (flat vector, the fit's start, version-1 profiles).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::{Error, Result};
use crate::model::GpuSpec;

/// What one parameter is: name, unit, physical range, whether it is a host term (shared by every GPU), and
/// where in S-LoRA's code it comes from.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ParamInfo {
    pub name: &'static str,
    pub unit: &'static str,
    pub lo: f64,
    pub hi: f64,
    pub host: bool,
    pub what: &'static str,
}

/// The fitted constants. Times are microseconds on the reference host; efficiencies are fractions of the
/// GPU's datasheet figures.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EngineParams {
    pub iter_us: f64,
    pub seq_us: f64,
    pub lora_seq_us: f64,
    pub layer_us: f64,
    pub lora_layer_us: f64,
    pub copy_us: f64,
    pub op_us: f64,
    pub bmm_iter_us: f64,
    pub host_factor: f64,
    pub compute_eff: f64,
    pub mem_eff: f64,
    pub attn_eff: f64,
    pub bgmv_eff: f64,
    pub mbgmm_eff: f64,
    pub h2d_eff: f64,
}

pub const N_PARAMS: usize = 15;

/// Every parameter, in `EngineParams` order.
pub const PARAMS: [ParamInfo; N_PARAMS] = [
    ParamInfo {
        name: "iter_us",
        unit: "us",
        lo: 0.0,
        hi: 50_000.0,
        host: true,
        what: "serial host time per iteration: the router's _step, model_rpc.forward's set-up, the sampled tokens' .cpu() sync",
    },
    ParamInfo {
        name: "seq_us",
        unit: "us/sequence",
        lo: 0.0,
        hi: 2_000.0,
        host: true,
        what: "serial host time per sequence per iteration: forward's per-request loop, _add_token_id_to_req, the detokenizer message",
    },
    ParamInfo {
        name: "lora_seq_us",
        unit: "us/sequence",
        lo: 0.0,
        hi: 2_000.0,
        host: true,
        what: "serial host time per adapter sequence: LoraUnorderedBatchInfer.__init__ looks up each request's adapter and writes req_bins[i] on the GPU",
    },
    ParamInfo {
        name: "layer_us",
        unit: "us/layer",
        lo: 0.0,
        hi: 2_000.0,
        host: true,
        what: "host time launching one transformer layer's kernels (overlaps the GPU)",
    },
    ParamInfo {
        name: "lora_layer_us",
        unit: "us/layer",
        lo: 0.0,
        hi: 2_000.0,
        host: true,
        what: "host time launching one layer's 8 LoRA kernels (4 projections x shrink + expand; overlaps the GPU)",
    },
    ParamInfo {
        name: "copy_us",
        unit: "us/copy",
        lo: 0.0,
        hi: 2_000.0,
        host: true,
        what: "host time per adapter copy call: load_lora_A/B's per-layer w_combined_home.to('cuda') and the scatter into the pool",
    },
    ParamInfo {
        name: "op_us",
        unit: "us/op",
        lo: 0.0,
        hi: 200.0,
        host: true,
        what: "host time per tensor op in --bmm's per-adapter-run Python loops (lora_bmm_infer.py)",
    },
    ParamInfo {
        name: "bmm_iter_us",
        unit: "us",
        lo: 0.0,
        hi: 200_000.0,
        host: true,
        what: "--bmm's per-iteration cost: model_rpc.forward's torch.cuda.empty_cache() and the re-allocation of the freed buffers",
    },
    ParamInfo {
        name: "host_factor",
        unit: "x",
        lo: 0.25,
        hi: 4.0,
        host: false,
        what: "this machine's host speed against the reference machine's (the A10G's): multiplies every host term",
    },
    ParamInfo {
        name: "compute_eff",
        unit: "of peak FLOP/s",
        lo: 0.0,
        hi: 1.0,
        host: false,
        what: "dense GEMMs, LM head and prefill attention: fraction of the datasheet fp16 FLOP/s",
    },
    ParamInfo {
        name: "mem_eff",
        unit: "of HBM bandwidth",
        lo: 0.0,
        hi: 1.0,
        host: false,
        what: "streaming the weights (and --bmm's buffers, --no-mem-pool's copies): fraction of the datasheet HBM bandwidth",
    },
    ParamInfo {
        name: "attn_eff",
        unit: "of HBM bandwidth",
        lo: 0.0,
        hi: 1.0,
        host: false,
        what: "decode attention reading the KV cache: fraction of the datasheet HBM bandwidth",
    },
    ParamInfo {
        name: "bgmv_eff",
        unit: "of HBM bandwidth",
        lo: 0.0,
        hi: 3.0,
        host: false,
        what: "BGMV (bgmv_impl.cuh): each token's pass over its own adapter's rank rows (the distinct adapters' first read is HBM at mem_eff), as bytes at this fraction of HBM bandwidth; above 1 only through L2 (at most ~3x HBM)",
    },
    ParamInfo {
        name: "mbgmm_eff",
        unit: "of peak FLOP/s",
        lo: 0.0,
        hi: 1.0,
        host: false,
        what: "Triton MBGMM (lora_prefill.py): the padded grid's multiply-adds, fraction of the datasheet fp16 FLOP/s",
    },
    ParamInfo {
        name: "h2d_eff",
        unit: "of PCIe bandwidth",
        lo: 0.0,
        hi: 1.0,
        host: false,
        what: "adapter copies from pinned host memory: fraction of the datasheet PCIe bandwidth",
    },
];

impl EngineParams {
    pub const NAMES: [&'static str; N_PARAMS] = {
        let mut n = [""; N_PARAMS];
        let mut i = 0;
        while i < N_PARAMS {
            n[i] = PARAMS[i].name;
            i += 1;
        }
        n
    };

    pub fn to_vec(&self) -> [f64; N_PARAMS] {
        [
            self.iter_us,
            self.seq_us,
            self.lora_seq_us,
            self.layer_us,
            self.lora_layer_us,
            self.copy_us,
            self.op_us,
            self.bmm_iter_us,
            self.host_factor,
            self.compute_eff,
            self.mem_eff,
            self.attn_eff,
            self.bgmv_eff,
            self.mbgmm_eff,
            self.h2d_eff,
        ]
    }

    pub fn from_slice(v: &[f64; N_PARAMS]) -> EngineParams {
        EngineParams {
            iter_us: v[0],
            seq_us: v[1],
            lora_seq_us: v[2],
            layer_us: v[3],
            lora_layer_us: v[4],
            copy_us: v[5],
            op_us: v[6],
            bmm_iter_us: v[7],
            host_factor: v[8],
            compute_eff: v[9],
            mem_eff: v[10],
            attn_eff: v[11],
            bgmv_eff: v[12],
            mbgmm_eff: v[13],
            h2d_eff: v[14],
        }
    }

    pub fn index(name: &str) -> Option<usize> {
        Self::NAMES.iter().position(|n| *n == name)
    }

    /// Whether parameter `i` is an efficiency (bounded away from 0: a zero efficiency is an infinite time).
    pub fn is_efficiency(i: usize) -> bool {
        i >= 9
    }

    /// A starting point inside every range (not a prior: nothing pulls the fit toward it).
    pub fn start() -> EngineParams {
        EngineParams {
            iter_us: 3000.0,
            seq_us: 30.0,
            lora_seq_us: 30.0,
            layer_us: 100.0,
            lora_layer_us: 50.0,
            copy_us: 30.0,
            op_us: 10.0,
            bmm_iter_us: 1000.0,
            host_factor: 1.0,
            compute_eff: 0.5,
            mem_eff: 0.7,
            attn_eff: 0.5,
            bgmv_eff: 0.5,
            mbgmm_eff: 0.1,
            h2d_eff: 0.7,
        }
    }

    /// Every value inside its physical range (efficiencies strictly above 0).
    pub fn validate(&self) -> Result<()> {
        for (i, v) in self.to_vec().into_iter().enumerate() {
            let p = &PARAMS[i];
            let ok = v.is_finite()
                && v <= p.hi
                && if Self::is_efficiency(i) {
                    v > p.lo
                } else {
                    v >= p.lo
                };
            if !ok {
                let lo = if Self::is_efficiency(i) {
                    format!("({}", p.lo)
                } else {
                    format!("[{}", p.lo)
                };
                return Err(Error::msg(format!(
                    "engine profile: params.{} must be in {lo}, {}] {}, got {}",
                    p.name,
                    p.hi,
                    p.unit,
                    crate::range::show(v)
                )));
            }
        }
        Ok(())
    }

    /// A version-1 profile's parameters in this model (v1 added every host term to the GPU time, charged
    /// BGMV at the batch's largest rank and both LoRA kernels at one FLOP efficiency): the per-iteration and
    /// per-sequence overheads stay serial, no launch term (so the GPU time adds as before), the MBGMM
    /// efficiency is v1's LoRA efficiency and BGMV gets the bandwidth efficiency that charges one token x
    /// rank what v1 charged it (16 x layers x hidden FLOPs at `lora_eff` of peak), within its range (3).
    pub fn from_v1(v: &Value, gpu: &GpuSpec) -> Result<EngineParams> {
        let get = |k: &str| {
            v.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| Error::msg(format!("version 1 params.{k} missing or not a number")))
        };
        let lora_eff = get("lora_eff")?;
        Ok(EngineParams {
            iter_us: get("iteration_us")? + get("lora_us").unwrap_or(0.0),
            seq_us: get("per_seq_us")?,
            lora_seq_us: 0.0,
            layer_us: 0.0,
            lora_layer_us: 0.0,
            copy_us: get("copy_us")?,
            op_us: 0.0,
            bmm_iter_us: 0.0,
            host_factor: 1.0,
            compute_eff: get("compute_eff")?,
            mem_eff: get("mem_eff")?,
            attn_eff: get("attn_eff")?,
            bgmv_eff: (lora_eff * gpu.fp16_flops / gpu.mem_bw).clamp(1e-9, 3.0),
            mbgmm_eff: lora_eff,
            h2d_eff: get("h2d_eff")?,
        })
    }
}
