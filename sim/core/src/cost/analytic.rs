//! Roofline cost model from datasheet figures: each part of an iteration takes the larger of its FLOPs over
//! achievable compute and its bytes over achievable memory bandwidth. The efficiencies are assumptions, printed
//! with every result; a measured profile replaces them.

use super::{BatchShape, CostModel, LoadShape, LoraKernels};
use crate::model::{GpuSpec, ModelSpec};
use crate::time::Nanos;

#[derive(Clone, Debug)]
pub struct Analytic {
    model: ModelSpec,
    gpu: GpuSpec,
    /// Fraction of peak FLOP/s reached by dense GEMMs and attention.
    pub compute_eff: f64,
    /// Fraction of peak memory bandwidth reached when streaming weights and KV.
    pub mem_eff: f64,
    /// Fraction of peak FLOP/s reached by the gathered, mixed-rank LoRA kernels.
    pub lora_eff: f64,
    /// Fixed per-iteration cost: kernel launches, sampling, the serving loop.
    pub overhead_ns: Nanos,
    /// Fraction of nominal PCIe bandwidth reached by a host-to-device copy.
    pub h2d_eff: f64,
    /// Fixed cost of one cudaMemcpy call.
    pub copy_latency_ns: Nanos,
    /// Pageable host memory reaches this fraction of the pinned bandwidth (a staging copy on the host).
    pub pageable_factor: f64,
    /// Which LoRA kernels (S-LoRA's padded ones by default).
    pub lora: LoraKernels,
}

impl Analytic {
    pub fn new(model: &ModelSpec, gpu: &GpuSpec) -> Analytic {
        Analytic {
            model: model.clone(),
            gpu: gpu.clone(),
            compute_eff: 0.6,
            mem_eff: 0.8,
            lora_eff: 0.2,
            overhead_ns: 1_000_000,
            h2d_eff: 0.8,
            copy_latency_ns: 10_000,
            pageable_factor: 0.5,
            lora: LoraKernels::Slora,
        }
    }

    fn flops_time(&self, flops: f64, eff: f64) -> f64 {
        flops / (self.gpu.fp16_flops * eff)
    }

    fn bytes_time(&self, bytes: f64) -> f64 {
        bytes / (self.gpu.mem_bw * self.mem_eff)
    }
}

impl CostModel for Analytic {
    fn describe(&self) -> String {
        format!(
            "analytic roofline ({} on {}: compute_eff={}, mem_eff={}, lora_eff={} with {} LoRA kernels, \
             overhead={}us, h2d_eff={}, copy_latency={}us per copy, pageable x{}; datasheet figures, not measured)",
            self.model.name,
            self.gpu.name,
            self.compute_eff,
            self.mem_eff,
            self.lora_eff,
            self.lora.name(),
            self.overhead_ns as f64 / 1e3,
            self.h2d_eff,
            self.copy_latency_ns as f64 / 1e3,
            self.pageable_factor
        )
    }

    fn iteration(&self, s: &BatchShape) -> Nanos {
        let m = &self.model;
        let (l, h, b) = (m.layers as f64, m.hidden as f64, m.dtype_bytes as f64);
        let tokens = s.tokens() as f64;
        let logits_rows = (s.prefill_seqs + s.decode_seqs) as f64;
        // Dense layers: every token passes every weight once; the LM head runs only for the last token.
        let lin_flops =
            2.0 * l * m.layer_params() as f64 * tokens + 2.0 * h * m.vocab as f64 * logits_rows;
        let lin_bytes = b * (l * m.layer_params() as f64 + h * m.vocab as f64);
        let linear = self
            .flops_time(lin_flops, self.compute_eff)
            .max(self.bytes_time(lin_bytes));
        // Causal prefill attention: QK^T and PV, 2*s^2*h FLOPs per layer; decode reads each token's K and V.
        let attn = self.flops_time(2.0 * l * h * s.prefill_sq_tokens as f64, self.compute_eff)
            + self.bytes_time(s.decode_context as f64 * m.kv_slot_bytes() as f64);
        // LoRA on q,k,v,o: shrink + expand = 4*h*r FLOPs per projection per token, and the weight rows read.
        let w = s.lora_work(self.lora);
        // Other targets than q,k,v,o (`--lora-targets`) scale the work by their width.
        let k = m.lora_factor();
        let lora = self
            .flops_time(16.0 * l * h * k * w.compute(), self.lora_eff)
            .max(self.bytes_time(8.0 * l * h * b * k * w.weight_rows));
        self.overhead_ns + ((linear + attn + lora) * 1e9).ceil() as Nanos
    }

    fn adapter_load(&self, load: &LoadShape) -> Nanos {
        let bw = self.gpu.pcie_bw
            * self.h2d_eff
            * if load.pinned {
                1.0
            } else {
                self.pageable_factor
            };
        let wire = load.bytes as f64 / bw;
        load.copies * self.copy_latency_ns + (wire * 1e9).ceil() as Nanos
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a40_7b() -> Analytic {
        Analytic::new(
            ModelSpec::by_name("llama-7b").unwrap(),
            GpuSpec::by_name("a40").unwrap(),
        )
    }

    #[test]
    fn single_decode_is_bound_by_reading_the_weights() {
        let a = a40_7b();
        let t = a.iteration(&BatchShape {
            decode_seqs: 1,
            decode_context: 100,
            ..Default::default()
        });
        let floor = ModelSpec::by_name("llama-7b").unwrap().weight_bytes() as f64 / 696e9;
        let got = (t - a.overhead_ns) as f64 / 1e9;
        assert!(
            got > floor && got < floor / 0.8 * 1.05,
            "{got} vs floor {floor}"
        );
    }

    #[test]
    fn costs_grow_with_work() {
        let a = a40_7b();
        let p = |n: u64| {
            a.iteration(&BatchShape {
                prefill_seqs: 1,
                prefill_tokens: n,
                prefill_sq_tokens: n * n,
                ..Default::default()
            })
        };
        assert!(p(2048) > p(1024) && p(1024) > p(16));
        let lora = |r: u64| {
            a.iteration(&BatchShape {
                prefill_seqs: 1,
                prefill_tokens: 1024,
                prefill_sq_tokens: 1024 * 1024,
                lora_tokens: 1024,
                lora_token_rank: 1024 * r,
                lora_distinct_rank: r,
                lora_distinct: 1,
                lora_seqs: 1,
                lora_max_rank: r,
                prefill_max_len: 1024,
                ..Default::default()
            })
        };
        assert!(lora(128) > lora(8));
        let load = |bytes| LoadShape {
            bytes,
            copies: 64,
            pinned: true,
        };
        assert!(a.adapter_load(&load(256 << 20)) > a.adapter_load(&load(16 << 20)));
    }
}
