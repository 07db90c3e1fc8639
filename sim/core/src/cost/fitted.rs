//! S-LoRA's engine as a few physical terms, fitted jointly to its measured end-to-end runs on several GPUs
//! and models (`sim fit`) and stored as an engine profile (schema `lora-serving-engine-profile` v2,
//! docs/profile-schema.md). Each term is what S-LoRA's code (c1ddf48) does; docs/fidelity.md gives the line.
//!
//! An iteration is one pass of the router's `_step` (`router/manager.py`) through `model_rpc.forward`:
//!
//! ```text
//! iteration = host x (iter_us + seq_us x seqs + lora_seq_us x adapter seqs)        serial host work
//!           + max(host x layers x (layer_us + lora_layer_us [LoRA kernels run]),   the layer loop's launches
//!                 GPU time)                                                         ... overlap the GPU
//! GPU time  = dense layers  max(FLOPs / (peak x compute_eff), weight bytes / (HBM x mem_eff))
//!                           (or the profile's measured table, made monotone)
//!           + LM head, causal prefill attention (compute_eff), decode KV reads / (HBM x attn_eff)
//!           + MBGMM FLOPs (padded grid) / (peak x mbgmm_eff)
//!           + BGMV rows at each token's own rank x 8 x layers x hidden x 2 B / (HBM x bgmv_eff)
//!             + the distinct adapters' rows once / (HBM x mem_eff)
//! ```
//!
//! `host` is the machine's host factor (1 on the reference machine): the host terms are one engine's
//! software, shared by every GPU; the efficiencies are per GPU, shared by every model on it. The layer loop
//! launches kernels asynchronously and the first blocking call is the sampled tokens' `.cpu()` copy at the
//! end of `forward` (`model_rpc.py`), so launches and GPU work overlap; what follows (the per-request loop,
//! the router's bookkeeping) is serial.
//!
//! An adapter load (`infer_adapter.py` `load_lora_A/B`): one copy call per layer per pass, issued by the
//! host (`copy_us` each) while the DMA engine moves the bytes (`h2d_eff` of the PCIe figure): the longer of
//! the two. `--no-mem-pool` adds the on-GPU concatenation of every resident adapter (`naive_infer_adapter.py`).
//!
//! `params.rs` declares the parameters, `profile.rs` the profile file; this file is the cost model.

use super::{BatchShape, CostModel, LoadShape, LoraKernels};
use crate::error::Result;
use crate::model::{GpuSpec, ModelSpec};
use crate::time::Nanos;

mod params;
mod profile;

pub use params::{EngineParams, N_PARAMS, PARAMS, ParamInfo};
pub use profile::{DensePoint, EngineProfile, SCHEMA, VERSION, monotone};

/// The cost model of an engine profile.
#[derive(Clone, Debug)]
pub struct EngineCost {
    pub p: EngineParams,
    model: &'static ModelSpec,
    gpu: &'static GpuSpec,
    kernels: LoraKernels,
    /// Adapters outside the unified pool (`--no-mem-pool`): each load also concatenates the resident ones.
    mem_pool: bool,
    /// (tokens, ns) of a measured dense-layer table, sorted and monotone.
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
        let mut pts: Vec<DensePoint> = dense.unwrap_or(&[]).to_vec();
        pts.sort_by_key(|d| d.tokens);
        pts.dedup_by_key(|d| d.tokens);
        let dense: Vec<(f64, f64)> = monotone(&pts)
            .iter()
            .map(|d| (d.tokens as f64, d.ms * 1e6))
            .collect();
        let describe = format!(
            "engine profile {source} ({} on {}, {} LoRA kernels{}: host x{:.2}: {:.0}us/iteration + {:.1}us/seq + \
             {:.1}us/adapter seq serial, {:.1}+{:.1}us/layer launches overlapping the GPU; compute_eff {:.3}, \
             mem_eff {:.3}, attn_eff {:.3}, bgmv_eff {:.3}, mbgmm_eff {:.4}; loads max({:.1}us/copy, PCIe x {:.3}))",
            model.name,
            gpu.name,
            kernels.name(),
            if dense.is_empty() {
                ""
            } else {
                ", measured dense layers (monotone)"
            },
            p.host_factor,
            p.iter_us,
            p.seq_us,
            p.lora_seq_us,
            p.layer_us,
            p.lora_layer_us,
            p.compute_eff,
            p.mem_eff,
            p.attn_eff,
            p.bgmv_eff,
            p.mbgmm_eff,
            p.copy_us,
            p.h2d_eff
        );
        EngineCost {
            p,
            model,
            gpu,
            kernels,
            mem_pool: true,
            dense,
            describe,
        }
    }

    /// `--no-mem-pool`: adapters live outside the unified pool (S-LoRA's `NaiveInferAdapter`).
    pub fn without_mem_pool(mut self) -> EngineCost {
        self.mem_pool = false;
        self.describe =
            self.describe
                .replacen("LoRA kernels", "LoRA kernels, adapters outside the pool", 1);
        self
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

    pub fn kernels(&self) -> LoraKernels {
        self.kernels
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

    /// The parts of an iteration, ns: (serial host, launch host, GPU). `iteration_ns` combines them.
    pub fn parts_ns(&self, s: &BatchShape) -> (f64, f64, f64) {
        let (m, g, p) = (self.model, self.gpu, &self.p);
        let (l, h, b) = (m.layers as f64, m.hidden as f64, m.dtype_bytes as f64);
        let tokens = s.tokens() as f64;
        let seqs = (s.prefill_seqs + s.decode_seqs) as f64;
        let (peak, bw) = (g.fp16_flops, g.mem_bw);
        let lora = s.lora_tokens > 0;
        let k = self.kernels;
        let mut serial = p.iter_us + p.seq_us * seqs;
        let mut launch = l * p.layer_us;
        // The per-request adapter lookup runs when the LoRA engine gets the pool (not --no-lora-compute,
        // not --bmm: `model_rpc.forward`).
        if lora && matches!(k, LoraKernels::Slora | LoraKernels::Exact) {
            serial += p.lora_seq_us * s.lora_seqs as f64;
            launch += l * p.lora_layer_us;
        }
        let mut gpu = 0.0;
        if tokens > 0.0 {
            let head = 2.0 * h * m.vocab as f64 * seqs / (peak * p.compute_eff)
                + h * m.vocab as f64 * b / (bw * p.mem_eff);
            gpu += if self.dense.is_empty() {
                let flops = 2.0 * l * m.layer_params() as f64 * tokens;
                let bytes = b * l * m.layer_params() as f64;
                (flops / (peak * p.compute_eff)).max(bytes / (bw * p.mem_eff)) * 1e9
            } else {
                self.dense_table_ns(tokens)
            } + head * 1e9;
        }
        gpu += (2.0 * l * h * s.prefill_sq_tokens as f64 / (peak * p.compute_eff)
            + s.decode_context as f64 * m.kv_slot_bytes() as f64 / (bw * p.attn_eff))
            * 1e9;
        if lora {
            let w = s.lora_work(k);
            // BGMV: each distinct adapter's rows come from HBM once (the weight streams), every token's
            // pass over its rows at the kernel's own rate (served by L2 after the first).
            let hbm = if w.bgmv > 0.0 {
                8.0 * l * h * b * w.weight_rows / (bw * p.mem_eff)
            } else {
                0.0
            };
            // Written for adapters on q,k,v,o; other targets scale the work (`ModelSpec::lora_factor`).
            gpu += m.lora_factor()
                * (16.0 * l * h * w.mbgmm / (peak * p.mbgmm_eff)
                    + 8.0 * l * h * b * w.bgmv / (bw * p.bgmv_eff)
                    + hbm)
                * 1e9;
            if k == LoraKernels::Bmm {
                let (segs, _) = s.bmm_segments();
                let segs = segs as f64;
                // Each iteration: [layers, 4, runs, hidden, max rank] A and B buffers zeroed, filled with
                // the runs' adapters and read by the batched GEMMs (three passes over them), the GEMMs'
                // padded multiply-adds; host: 8 copies per run per layer, and per layer 2 input copies and 4
                // adds per run (decode) or 4 x (2 matmuls, a scale, an add) per run (prefill).
                let buf = m.lora_factor() * 8.0 * l * h * b * segs * s.lora_max_rank as f64;
                gpu += (3.0 * buf / (bw * p.mem_eff)
                    + 16.0 * l * h * w.bmm / (peak * p.compute_eff))
                    * 1e9;
                let ops = if s.prefill_seqs > 0 {
                    l * 24.0 * segs
                } else {
                    l * (14.0 * segs + 8.0)
                };
                launch += ops * p.op_us;
                serial += p.bmm_iter_us;
            }
        }
        let hf = p.host_factor * 1e3;
        (serial * hf, launch * hf, gpu)
    }

    /// The iteration time in ns as a float (the fit rounds only at the end, keeping the objective smooth).
    pub fn iteration_ns(&self, s: &BatchShape) -> f64 {
        let (serial, launch, gpu) = self.parts_ns(s);
        // --bmm's prefill slices by GPU tensors per adapter run (`b_start_loc[...]`), a sync each time: its
        // launches do not overlap the GPU.
        if self.kernels == LoraKernels::Bmm && s.prefill_seqs > 0 && s.lora_tokens > 0 {
            serial + launch + gpu
        } else {
            serial + launch.max(gpu)
        }
    }

    /// An adapter load: the host issues `copies` copy calls while the link moves the bytes; with
    /// `--no-mem-pool` each layer's resident adapters are also concatenated with the new one on the GPU
    /// (read + write of `resident_bytes`).
    pub fn load_ns(&self, load: &LoadShape) -> f64 {
        let bw = self.gpu.pcie_bw * self.p.h2d_eff * if load.pinned { 1.0 } else { 0.5 };
        self.load_host_ns(load).max(load.bytes as f64 / bw * 1e9)
    }

    /// The host's part of a load: issuing its copy calls (`load_lora_A/B`'s per-layer loop).
    pub fn load_host_ns(&self, load: &LoadShape) -> f64 {
        load.copies as f64 * self.p.copy_us * self.p.host_factor * 1e3
    }

    /// `--no-mem-pool`: copying `bytes` of resident adapters on the GPU (a concatenation when one is loaded,
    /// a gather of the rest when one is freed: read + write).
    pub fn repack_ns(&self, bytes: u64) -> f64 {
        if self.mem_pool {
            0.0
        } else {
            2.0 * bytes as f64 / (self.gpu.mem_bw * self.p.mem_eff) * 1e9
        }
    }

    pub fn mem_pool(&self) -> bool {
        self.mem_pool
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

    fn adapter_load_host(&self, load: &LoadShape) -> Nanos {
        self.load_host_ns(load).round() as Nanos
    }

    fn adapter_repack(&self, resident_bytes: u64) -> Nanos {
        self.repack_ns(resident_bytes).round() as Nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(p: EngineParams, k: LoraKernels) -> EngineCost {
        EngineCost::new(
            p,
            ModelSpec::by_name("llama-7b").unwrap(),
            GpuSpec::by_name("a100-80gb").unwrap(),
            k,
            None,
            "test",
        )
    }

    /// Every host term 0, every efficiency 1, no host factor.
    fn zero() -> EngineParams {
        EngineParams {
            iter_us: 0.0,
            seq_us: 0.0,
            lora_seq_us: 0.0,
            layer_us: 0.0,
            lora_layer_us: 0.0,
            copy_us: 0.0,
            op_us: 0.0,
            bmm_iter_us: 0.0,
            host_factor: 1.0,
            compute_eff: 1.0,
            mem_eff: 1.0,
            attn_eff: 1.0,
            bgmv_eff: 1.0,
            mbgmm_eff: 1.0,
            h2d_eff: 1.0,
        }
    }

    fn decode(n: u64) -> BatchShape {
        BatchShape {
            decode_seqs: n,
            decode_context: 100 * n,
            ..Default::default()
        }
    }

    #[test]
    fn host_work_is_serial_and_launches_overlap_the_gpu() {
        let d = decode(10);
        let gpu = cost(zero(), LoraKernels::Slora).iteration_ns(&d);
        // Llama-7B decode on an A100-80GB at full efficiency: the weights (12.9 GB) over 2.039 TB/s plus the
        // LM head and KV reads, about 6.6 ms.
        assert!(gpu > 6.0e6 && gpu < 7.5e6, "{gpu}");
        // 2 ms + 10 x 50 us serial: added.
        let p = EngineParams {
            iter_us: 2000.0,
            seq_us: 50.0,
            ..zero()
        };
        assert!((cost(p, LoraKernels::Slora).iteration_ns(&d) - gpu - 2.5e6).abs() < 1.0);
        // 32 layers x 100 us of launches = 3.2 ms < the GPU's time: hidden.
        let p = EngineParams {
            layer_us: 100.0,
            ..zero()
        };
        assert!((cost(p, LoraKernels::Slora).iteration_ns(&d) - gpu).abs() < 1.0);
        // 32 x 300 us = 9.6 ms > GPU: the launches set the pace; a host twice as slow doubles them.
        let p = EngineParams {
            layer_us: 300.0,
            host_factor: 2.0,
            ..zero()
        };
        assert!((cost(p, LoraKernels::Slora).iteration_ns(&d) - 19.2e6).abs() < 1.0);
    }

    #[test]
    fn bgmv_costs_each_tokens_own_rank_and_mbgmm_the_padded_grid() {
        let h = 4096.0;
        // Decode: 3 sequences at ranks 8, 16, 64: 88 rank rows x 8 x 32 layers x 4096 x 2 B at 2.039 TB/s.
        let d = BatchShape {
            lora_tokens: 3,
            lora_token_rank: 88,
            lora_distinct_rank: 88,
            lora_distinct: 3,
            lora_seqs: 3,
            lora_max_rank: 64,
            ..decode(3)
        };
        let c = cost(zero(), LoraKernels::Slora);
        // Plus the 3 adapters' 88 rows from HBM once (mem_eff 1).
        let want = 2.0 * 88.0 * 8.0 * 32.0 * h * 2.0 / 2039e9 * 1e9;
        let got = c.iteration_ns(&d) - c.iteration_ns(&decode(3));
        assert!((got - want).abs() < 1.0, "{got} {want}");
        // Half the BGMV efficiency doubles the token part; the MBGMM efficiency does not touch a decode.
        let slow = cost(
            EngineParams {
                bgmv_eff: 0.5,
                mbgmm_eff: 0.01,
                ..zero()
            },
            LoraKernels::Slora,
        );
        let got = slow.iteration_ns(&d) - slow.iteration_ns(&decode(3));
        assert!((got - 1.5 * want).abs() < 1.0, "{got}");
        // A prefill of 300 (rank 64) + 100 (rank 8) tokens: MBGMM over 2 x 320 (10 tiles of 32) x 64,
        // 16 x 32 layers x 4096 FLOPs each at 312 TFLOP/s x 0.01.
        let mut p = BatchShape::default();
        p.add_prompt(300, Some((64, true)));
        p.add_prompt(100, Some((8, true)));
        let base = {
            let mut b = BatchShape::default();
            b.add_prompt(300, None);
            b.add_prompt(100, None);
            slow.iteration_ns(&b)
        };
        let want = 2.0 * 320.0 * 64.0 * 16.0 * 32.0 * h / (312e12 * 0.01) * 1e9;
        let got = slow.iteration_ns(&p) - base;
        assert!((got - want).abs() < 1.0, "{got} {want}");
        // Prompts under 200 tokens: BGMV at own rank, 150 x 64 + 100 x 8 rank rows.
        let mut q = BatchShape::default();
        q.add_prompt(150, Some((64, true)));
        q.add_prompt(100, Some((8, true)));
        let qb = {
            let mut b = BatchShape::default();
            b.add_prompt(150, None);
            b.add_prompt(100, None);
            slow.iteration_ns(&b)
        };
        let want = ((150.0 * 64.0 + 800.0) / 0.5 + 72.0) * 8.0 * 32.0 * h * 2.0 / 2039e9 * 1e9;
        let got = slow.iteration_ns(&q) - qb;
        assert!((got - want).abs() < 1.0, "{got} {want}");
    }

    #[test]
    fn no_lora_compute_keeps_the_base_cost_and_bmm_pays_its_buffers() {
        let d = BatchShape {
            lora_tokens: 4,
            lora_token_rank: 4 * 64,
            lora_distinct_rank: 2 * 64,
            lora_distinct: 2,
            lora_seqs: 4,
            lora_max_rank: 64,
            lora_segments: 3,
            lora_max_segment: 2,
            ..decode(4)
        };
        let p = EngineParams {
            lora_seq_us: 100.0,
            op_us: 10.0,
            ..zero()
        };
        let off = cost(p, LoraKernels::Off);
        assert_eq!(off.iteration_ns(&d), off.iteration_ns(&decode(4)));
        // BMM decode: 3 runs: buffers 8 x 32 x 4096 x 2 B x 3 x 64 passed 3 times at 2.039 TB/s, GEMMs over
        // 3 x 2 x 64 token-ranks (16 x 32 x 4096 FLOPs each) at 312 TFLOP/s; launches 32 x (14 x 3 + 8) ops
        // x 10 us = 16 ms, more than the GPU's time, so they set the pace.
        let bmm = cost(p, LoraKernels::Bmm);
        let (serial, launch, gpu) = bmm.parts_ns(&d);
        let (_, _, base_gpu) = bmm.parts_ns(&decode(4));
        let buf = 8.0 * 32.0 * 4096.0 * 2.0 * 3.0 * 64.0;
        let want = (3.0 * buf / 2039e9 + 16.0 * 32.0 * 4096.0 * 384.0 / 312e12) * 1e9;
        assert!(
            (gpu - base_gpu - want).abs() < 1.0,
            "{gpu} {base_gpu} {want}"
        );
        assert_eq!(serial, 0.0, "--bmm skips the per-request adapter lookup");
        assert!((launch - 32.0 * 50.0 * 10e3).abs() < 1e-6, "{launch}");
        assert!((bmm.iteration_ns(&d) - launch).abs() < 1.0);
    }

    #[test]
    fn a_load_is_the_longer_of_issuing_its_copies_and_moving_its_bytes() {
        let load = LoadShape {
            bytes: 32 << 20,
            copies: 64,
            pinned: true,
        };
        // 32 MiB over 32 GB/s x 0.5 = 2.10 ms against 64 x 10 us = 0.64 ms of calls.
        let c = cost(
            EngineParams {
                copy_us: 10.0,
                h2d_eff: 0.5,
                ..zero()
            },
            LoraKernels::Slora,
        );
        let wire = (32u64 << 20) as f64 / 16e9 * 1e9;
        assert!((c.load_ns(&load) - wire).abs() < 1.0);
        // 64 x 50 us = 3.2 ms of calls: the host sets the pace.
        let c = cost(
            EngineParams {
                copy_us: 50.0,
                h2d_eff: 0.5,
                ..zero()
            },
            LoraKernels::Slora,
        );
        assert!((c.load_ns(&load) - 3.2e6).abs() < 1.0);
        // The host's part alone (what S-LoRA's prefetch holds the decode step for): the calls, either way.
        assert_eq!(c.adapter_load_host(&load), 3_200_000);
        // Without the unified pool, freeing or adding an adapter copies the resident ones (read + write).
        let c = c.without_mem_pool();
        assert!((c.repack_ns(1 << 30) - 2.0 * (1u64 << 30) as f64 / 2039e9 * 1e9).abs() < 1.0);
    }

    #[test]
    fn monotone_pools_dips_into_their_mean() {
        let pts: Vec<DensePoint> = [(1, 5.0), (2, 7.0), (3, 6.0), (4, 5.0), (5, 9.0)]
            .iter()
            .map(|&(t, ms)| DensePoint { tokens: t, ms })
            .collect();
        let m: Vec<f64> = monotone(&pts).iter().map(|d| d.ms).collect();
        assert_eq!(m, vec![5.0, 6.0, 6.0, 6.0, 9.0]);
    }

    fn profile() -> EngineProfile {
        EngineProfile {
            schema: SCHEMA.into(),
            version: VERSION,
            gpu: "a100-80gb".into(),
            model: "llama-7b".into(),
            params: EngineParams::start(),
            lora_kernels: "slora".into(),
            dense_table: None,
            ranges: None,
            members: vec![EngineParams::start()],
            validation: None,
            provenance: serde_json::json!({"tool": "test"}),
            fit: None,
        }
    }

    #[test]
    fn profiles_round_trip_and_bad_ones_name_the_field() {
        let p = profile();
        let back = EngineProfile::parse(&p.to_json(), "p.json").unwrap();
        assert_eq!(back, p);
        let bad = p.to_json().replace("\"mem_eff\": 0.7", "\"mem_eff\": 1.5");
        let e = EngineProfile::parse(&bad, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("params.mem_eff") && e.contains("p.json"), "{e}");
        let bad = p.to_json().replace("a100-80gb", "v100");
        assert!(EngineProfile::parse(&bad, "p.json").is_err());
        let bad = p.to_json().replace("\"version\": 2", "\"version\": 7");
        let e = EngineProfile::parse(&bad, "p.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("version 7"), "{e}");
    }

    #[test]
    fn version_1_profiles_load_converted() {
        let v1 = r#"{"schema": "lora-serving-engine-profile", "version": 1, "gpu": "a10g", "model": "llama-7b",
            "params": {"iteration_us": 4000, "per_seq_us": 1, "compute_eff": 0.25, "mem_eff": 0.8,
            "attn_eff": 0.8, "lora_eff": 0.01, "lora_us": 0, "h2d_eff": 0.85, "copy_us": 10},
            "lora_kernels": "slora", "provenance": {"tool": "old"}}"#;
        let p = EngineProfile::parse(v1, "old.json").unwrap();
        assert_eq!(p.version, VERSION);
        assert_eq!((p.params.iter_us, p.params.layer_us), (4000.0, 0.0));
        assert_eq!(p.params.mbgmm_eff, 0.01);
        // One BGMV token x rank costs what v1 charged it: 16 L h / (peak x lora_eff).
        let g = GpuSpec::by_name("a10g").unwrap();
        let v1_cost = 16.0 / (g.fp16_flops * 0.01);
        let v2_cost = 16.0 / (g.mem_bw * p.params.bgmv_eff);
        assert!((v1_cost / v2_cost - 1.0).abs() < 1e-9);
        assert!(p.provenance.get("converted_from_version_1").is_some());
    }
}
