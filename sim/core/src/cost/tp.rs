//! Tensor parallelism: one replica spread over `degree` GPUs (Megatron-style: attention heads and MLP columns
//! split, two all-reduces per layer), as a wrapper around a cost model with datasheet terms.
//!
//! Per GPU, an iteration does 1/degree of the dense FLOPs, reads 1/degree of the weights and of the KV cache,
//! and runs 1/degree of the LoRA work (each GPU holds a shard of every adapter, like the base weights). That
//! is the inner model evaluated on a GPU with `degree` times the peak FLOP/s and memory bandwidth
//! (`GpuSpec::tp_shard`), with the fixed per-iteration costs (launches, sampling, the serving loop) unchanged.
//! Added to it: two ring all-reduces per layer of the iteration's activations (tokens x hidden x dtype bytes),
//! each `2 (t-1)` steps of `latency` plus `2 (t-1)/t x bytes` over the interconnect (`Interconnect`).
//!
//! Adapter loads (Chameleon §3.2, Fig. 5): every GPU of the replica copies its 1/degree shard of the adapter
//! over its own host link, all at once, with as many copy calls as one GPU would make (the shard of each
//! layer's matrices is still one copy each). The bytes per GPU shrink with the degree but the per-copy
//! latency does not, while the compute shrinks: the loading share of TTFT grows with TP.

use std::sync::{Arc, Mutex, OnceLock};

use serde::Deserialize;

use super::{BatchShape, CostModel, LoadShape};
use crate::error::{Error, Result};
use crate::model::{GpuSpec, ModelSpec};
use crate::spec::Spec;
use crate::time::Nanos;

/// The GPU-to-GPU link all-reduces run over: bandwidth per GPU per direction (datasheet), a fixed latency
/// per ring step, and the fraction of the bandwidth a collective reaches.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Interconnect {
    /// `nvlink`, `pcie`, or a name from a file.
    pub name: String,
    pub bw_gbps: f64,
    pub latency_us: f64,
    #[serde(default = "default_eff")]
    pub eff: f64,
}

fn default_eff() -> f64 {
    0.8
}

impl Interconnect {
    /// NVLink where the GPU has it in its usual (SXM) form, per direction: A100 300 GB/s (NVLink 3, 600 GB/s
    /// both ways), H100 450 GB/s (NVLink 4); 2 us per ring step.
    pub fn nvlink(gpu: &GpuSpec) -> Option<Interconnect> {
        let bw = match gpu.name {
            "a100-40gb" | "a100-80gb" => 300.0,
            "h100-80gb" => 450.0,
            // The A40's NVLink bridge joins pairs only (56.25 GB/s per direction).
            "a40" => 56.25,
            _ => return None,
        };
        Some(Interconnect {
            name: "nvlink".into(),
            bw_gbps: bw,
            latency_us: 2.0,
            eff: 0.8,
        })
    }

    /// Peer-to-peer over PCIe at the GPU's host-link bandwidth; 5 us per ring step.
    pub fn pcie(gpu: &GpuSpec) -> Interconnect {
        Interconnect {
            name: "pcie".into(),
            bw_gbps: gpu.pcie_bw / 1e9,
            latency_us: 5.0,
            eff: 0.8,
        }
    }

    /// The GPU's default for a group of `degree`: NVLink where it has it (on an A40 only for pairs), else
    /// PCIe.
    pub fn default_for(gpu: &GpuSpec, degree: u32) -> Interconnect {
        match Self::nvlink(gpu) {
            Some(l) if gpu.name != "a40" || degree <= 2 => l,
            _ => Self::pcie(gpu),
        }
    }

    /// `--interconnect`: `auto`, `nvlink[bw_gbps=..,latency_us=..,eff=..]`, `pcie[...]`, or a JSON file
    /// `{"name": .., "bw_gbps": .., "latency_us": .., "eff": ..}` (measured figures).
    pub fn parse(text: &str, gpu: &GpuSpec, degree: u32) -> Result<Interconnect> {
        if text.ends_with(".json") {
            let body = crate::json::read_text(std::path::Path::new(text))
                .map_err(|e| Error::msg(format!("--interconnect {text}: {e}")))?;
            let l: Interconnect = serde_json::from_str(&body)
                .map_err(|e| Error::msg(format!("--interconnect {text}: {e}")))?;
            return l.validated();
        }
        let mut s = Spec::parse(text).map_err(|e| e.context("--interconnect"))?;
        let mut l = match s.name.as_str() {
            "auto" => Self::default_for(gpu, degree),
            "nvlink" => Self::nvlink(gpu).ok_or_else(|| {
                Error::msg(format!(
                    "--interconnect nvlink: {} has no NVLink figure; give nvlink[bw_gbps=..]",
                    gpu.name
                ))
            })?,
            "pcie" => Self::pcie(gpu),
            other => {
                return Err(Error::msg(format!(
                    "--interconnect: unknown link '{other}'; valid: auto, nvlink[..], pcie[..], FILE.json"
                )));
            }
        };
        l.bw_gbps = s.get("bw_gbps", l.bw_gbps)?;
        l.latency_us = s.get("latency_us", l.latency_us)?;
        l.eff = s.get("eff", l.eff)?;
        s.finish(&["bw_gbps", "latency_us", "eff"])
            .map_err(|e| e.context("--interconnect"))?;
        l.validated()
    }

    fn validated(self) -> Result<Interconnect> {
        let ok = self.bw_gbps > 0.0
            && self.bw_gbps.is_finite()
            && self.latency_us >= 0.0
            && self.latency_us.is_finite()
            && self.eff > 0.0
            && self.eff <= 1.0;
        if !ok {
            return Err(Error::msg(format!(
                "--interconnect: need bw_gbps > 0, latency_us >= 0 and eff in (0, 1], got {self:?}"
            )));
        }
        Ok(self)
    }

    pub fn describe(&self) -> String {
        format!(
            "{} {} GB/s x {} per direction, {} us per ring step",
            self.name, self.bw_gbps, self.eff, self.latency_us
        )
    }
}

/// A replica's tensor-parallel degree and the link its GPUs all-reduce over.
#[derive(Clone, Debug, PartialEq)]
pub struct Tp {
    pub degree: u32,
    pub link: Interconnect,
}

impl Tp {
    pub const DEGREES: [u32; 4] = [1, 2, 4, 8];

    pub fn new(degree: u32, link: Interconnect) -> Result<Tp> {
        if !Self::DEGREES.contains(&degree) {
            return Err(Error::msg(format!(
                "--tp must be 1, 2, 4 or 8, got {degree}"
            )));
        }
        Ok(Tp { degree, link })
    }

    /// One GPU, no collectives.
    pub fn single(gpu: &GpuSpec) -> Tp {
        Tp {
            degree: 1,
            link: Interconnect::default_for(gpu, 1),
        }
    }

    /// One ring all-reduce of `bytes` over the group, ns (0 on one GPU).
    pub fn allreduce_ns(&self, bytes: f64) -> f64 {
        if self.degree <= 1 {
            return 0.0;
        }
        let t = self.degree as f64;
        let steps = 2.0 * (t - 1.0);
        steps * self.link.latency_us * 1e3
            + steps / t * bytes / (self.link.bw_gbps * 1e9 * self.link.eff) * 1e9
    }

    /// All-reduces of one iteration: two per layer over its tokens' activations, ns.
    pub fn iteration_comm_ns(&self, model: &ModelSpec, s: &BatchShape) -> Nanos {
        let tokens = s.tokens();
        if self.degree <= 1 || tokens == 0 {
            return 0;
        }
        let bytes = (tokens * model.hidden * model.dtype_bytes) as f64;
        (2.0 * model.layers as f64 * self.allreduce_ns(bytes)).ceil() as Nanos
    }

    /// What one GPU of the group copies for an adapter load: its shard of the bytes, the same copy calls.
    pub fn shard_load(&self, load: &LoadShape) -> LoadShape {
        LoadShape {
            bytes: load.bytes.div_ceil(self.degree as u64),
            ..*load
        }
    }
}

impl GpuSpec {
    /// The GPU a tensor-parallel shard of degree `degree` looks like to a cost model: `degree` times the peak
    /// FLOP/s, memory bandwidth and memory of one GPU, the same host link. Interned: one leak per (GPU,
    /// degree) for the process.
    pub fn tp_shard(&self, degree: u32) -> &'static GpuSpec {
        type Shards = Mutex<Vec<(String, u32, &'static GpuSpec)>>;
        static SHARDS: OnceLock<Shards> = OnceLock::new();
        let mut v = SHARDS
            .get_or_init(Default::default)
            .lock()
            .expect("not poisoned");
        if let Some(&(_, _, g)) = v.iter().find(|(n, d, _)| n == self.name && *d == degree) {
            return g;
        }
        let t = degree as f64;
        let g: &'static GpuSpec = Box::leak(Box::new(GpuSpec {
            memory_bytes: self.memory_bytes * degree as u64,
            fp16_flops: self.fp16_flops * t,
            mem_bw: self.mem_bw * t,
            ..self.clone()
        }));
        v.push((self.name.to_string(), degree, g));
        g
    }
}

/// The cost of one GPU of a tensor-parallel replica: `inner` built for `GpuSpec::tp_shard`, plus the
/// all-reduces, with adapter loads per shard.
pub struct TensorParallel {
    inner: Arc<dyn CostModel>,
    tp: Tp,
    model: &'static ModelSpec,
    describe: String,
}

impl TensorParallel {
    /// `inner` must already be built over `gpu.tp_shard(tp.degree)`.
    pub fn new(inner: Arc<dyn CostModel>, tp: Tp, model: &'static ModelSpec) -> TensorParallel {
        let describe = format!(
            "TP{} over {} (per GPU: 1/{} of the FLOPs, weight, KV and LoRA bytes = the model below on a GPU \
             with {}x the peaks; 2 ring all-reduces per layer; adapter loads: each GPU copies its 1/{} shard \
             over its own host link, same copy calls): {}",
            tp.degree,
            tp.link.describe(),
            tp.degree,
            tp.degree,
            tp.degree,
            inner.describe()
        );
        TensorParallel {
            inner,
            tp,
            model,
            describe,
        }
    }
}

impl CostModel for TensorParallel {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn iteration(&self, shape: &BatchShape) -> Nanos {
        self.inner.iteration(shape) + self.tp.iteration_comm_ns(self.model, shape)
    }

    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        self.inner.adapter_load(&self.tp.shard_load(load))
    }

    fn adapter_load_host(&self, load: &LoadShape) -> Nanos {
        self.inner.adapter_load_host(&self.tp.shard_load(load))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::analytic::Analytic;

    #[test]
    fn tp2_halves_the_per_gpu_weight_bytes_and_adds_the_stated_all_reduce() {
        // Llama-7B on A100-80GB, one decode step of one sequence: bound by reading the weights.
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let g = GpuSpec::by_name("a100-80gb").unwrap();
        let one = Analytic::new(m, g);
        let link = Interconnect::nvlink(g).unwrap();
        let tp = Tp::new(2, link).unwrap();
        let two = TensorParallel::new(Arc::new(Analytic::new(m, g.tp_shard(2))), tp.clone(), m);
        let s = BatchShape {
            decode_seqs: 1,
            decode_context: 1,
            ..Default::default()
        };
        let overhead = one.overhead_ns;
        let t1 = one.iteration(&s) - overhead;
        let t2 = two.iteration(&s) - overhead;
        // Weights (dense layers + LM head) per GPU: half of 13.5 GB, at 2.039 TB/s x 0.8.
        let w = (m.layers * m.layer_params() + m.hidden * m.vocab) as f64 * 2.0;
        let read1 = w / (2039e9 * 0.8) * 1e9;
        assert!((t1 as f64 - read1).abs() / read1 < 0.01, "{t1} vs {read1}");
        // All-reduce of one token's activations (4096 x 2 bytes) over 2 GPUs: 2 ring steps of 2 us plus
        // 2 x 1/2 x 8192 B at 300 GB/s x 0.8 = 4034.1 ns; two per layer, 32 layers: 258,185 ns.
        let ar: f64 = 2.0 * 2000.0 + 1.0 * 8192.0 / (300e9 * 0.8) * 1e9;
        assert!((ar - 4034.13).abs() < 0.01, "{ar}");
        let comm = tp.iteration_comm_ns(m, &s);
        assert_eq!(comm, (64.0 * ar).ceil() as Nanos);
        assert_eq!(comm, 258_185);
        // Per GPU: half of TP1's reads (the weights and the token's KV), to the ns rounding.
        let read2 = t2 as f64 - comm as f64;
        assert!(
            (read2 - t1 as f64 / 2.0).abs() < 2.0,
            "{read2} vs half of {t1}"
        );
        // Loads: half the bytes per GPU, the same copy calls.
        let load = LoadShape {
            bytes: 64 << 20,
            copies: 64,
            pinned: true,
        };
        let l1 = one.adapter_load(&load);
        let l2 = two.adapter_load(&load);
        assert_eq!(
            l1 - l2,
            (((64u64 << 20) / 2) as f64 / (32e9 * 0.8) * 1e9).ceil() as Nanos
        );
    }

    #[test]
    fn interconnect_specs_and_files() {
        let g = GpuSpec::by_name("a40").unwrap();
        assert_eq!(Interconnect::parse("auto", g, 4).unwrap().name, "pcie");
        assert_eq!(Interconnect::parse("auto", g, 2).unwrap().name, "nvlink");
        let l = Interconnect::parse("pcie[bw_gbps=16,latency_us=10]", g, 4).unwrap();
        assert_eq!((l.bw_gbps, l.latency_us, l.eff), (16.0, 10.0, 0.8));
        assert!(Interconnect::parse("pcie[bw=1]", g, 4).is_err());
        assert!(Interconnect::parse("nvlink", GpuSpec::by_name("a10g").unwrap(), 2).is_err());
        assert!(Tp::new(3, l).is_err());
    }
}
