//! Transfer a measured profile to a GPU we do not have, by datasheet ratios (roofline scaling).
//!
//! Each measured time is multiplied by (time the work would take on `to`) / (time on `from`) under a roofline
//! whose only inputs are the two GPUs' peak FLOP/s, HBM bandwidth and PCIe bandwidth. Assumptions, per table:
//!
//! - `prefill`: the dense layers dominate. One token through one 16-bit weight is 2 FLOPs per 2 bytes read, so
//!   a point of T tokens has arithmetic intensity T FLOP/byte and takes max(T / FLOPs, 1 / bandwidth) per weight
//!   byte: long prefills scale by the FLOP/s ratio, very short ones (T below the ridge point, about 200-300 on
//!   current GPUs) by the HBM bandwidth ratio. Attention is folded in at the same ratio.
//! - `decode`: memory-bound (weights and KV cache are streamed once per step): HBM bandwidth ratio.
//! - `lora`: the gathered low-rank kernels are memory-bound (each adapter's A and B are read once per pass):
//!   HBM bandwidth ratio.
//! - `adapter_load`: host-to-device copies: PCIe bandwidth ratio (per-copy latency is assumed to scale the same
//!   way, which overstates the gain of a faster link for very small copies).
//! - `iteration_overhead_ns`: host-side cost, unchanged.
//! - `gpu.memory_bytes` := the target's; driver, CUDA version and compute capability are cleared (not measured).
//!
//! Measured efficiencies (achieved fraction of peak) are assumed equal on both GPUs; that is the main error of
//! a transfer and why the result is flagged in `provenance.transferred_from` and in every simulator output.

use super::profile::CostProfile;
use crate::model::GpuSpec;

/// Time ratio to/from for work of `intensity` FLOP per byte of memory traffic.
fn roofline_ratio(intensity: f64, from: &GpuSpec, to: &GpuSpec) -> f64 {
    let t = |g: &GpuSpec| (intensity / g.fp16_flops).max(1.0 / g.mem_bw);
    t(to) / t(from)
}

fn scale(ns: u64, ratio: f64) -> u64 {
    ((ns as f64 * ratio).round() as u64).max(1)
}

/// A copy of `p` (measured on `from`) with every table scaled to `to`; see the module doc for the assumptions.
pub fn transfer(p: &CostProfile, from: &GpuSpec, to: &GpuSpec) -> CostProfile {
    let mut out = p.clone();
    let mem = from.mem_bw / to.mem_bw;
    let pcie = from.pcie_bw / to.pcie_bw;
    for x in &mut out.prefill {
        x.time_ns = scale(x.time_ns, roofline_ratio(x.tokens as f64, from, to));
    }
    for x in &mut out.decode {
        x.time_ns = scale(x.time_ns, mem);
    }
    for x in &mut out.lora {
        x.time_ns = scale(x.time_ns, mem);
    }
    for x in &mut out.adapter_load {
        x.time_ns = scale(x.time_ns, pcie);
    }
    out.gpu.name = to.name.to_string();
    out.gpu.memory_bytes = to.memory_bytes;
    out.gpu.driver = None;
    out.gpu.cuda = None;
    out.gpu.compute_capability = None;
    let measured_on = format!(
        "{} (spec {}), profile dated {}",
        p.gpu.name, from.name, p.provenance.date
    );
    out.provenance.transferred_from = Some(match &p.provenance.transferred_from {
        Some(earlier) => format!("{measured_on}, itself transferred from {earlier}"),
        None => measured_on,
    });
    let why = format!(
        "transferred {} -> {} by spec ratios: prefill by roofline per point (FLOP/s ratio {:.3}, HBM ratio {:.3}), \
         decode and lora by HBM bandwidth ({mem:.3}), adapter_load by PCIe bandwidth ({pcie:.3}), overhead unchanged",
        from.name,
        to.name,
        from.fp16_flops / to.fp16_flops,
        mem,
    );
    out.provenance.notes = Some(match &p.provenance.notes {
        Some(n) => format!("{why}; original notes: {n}"),
        None => why,
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost::profile::{LoadPoint, ProfileCost};
    use crate::cost::{BatchShape, CostModel, LoadMethod};

    const EXAMPLE: &str = include_str!("../../../../docs/example-profile.json");

    fn gpus() -> (&'static GpuSpec, &'static GpuSpec) {
        (
            GpuSpec::by_name("a40").unwrap(),
            GpuSpec::by_name("h100-80gb").unwrap(),
        )
    }

    #[test]
    fn each_table_scales_by_its_documented_ratio() {
        let p = CostProfile::parse(EXAMPLE).unwrap();
        let (a40, h100) = gpus();
        let t = transfer(&p, a40, h100);
        let close = |got: u64, want: f64| (got as f64 - want).abs() <= 1.0;
        for (a, b) in p.decode.iter().zip(&t.decode) {
            assert!(
                close(b.time_ns, a.time_ns as f64 * 696e9 / 3350e9),
                "{a:?} {b:?}"
            );
        }
        for (a, b) in p.lora.iter().zip(&t.lora) {
            assert!(close(b.time_ns, a.time_ns as f64 * 696e9 / 3350e9));
        }
        for (a, b) in p.adapter_load.iter().zip(&t.adapter_load) {
            assert!(close(b.time_ns, a.time_ns as f64 * 0.5));
        }
        // 8192 tokens: compute-bound on both GPUs (ridges 215 and 295 FLOP/byte), so the FLOP/s ratio.
        let (a, b) = p
            .prefill
            .iter()
            .zip(&t.prefill)
            .find(|(a, _)| a.tokens == 8192)
            .unwrap();
        assert!(close(b.time_ns, a.time_ns as f64 * 149.7e12 / 989e12));
        // 16 tokens: memory-bound on both, so the bandwidth ratio.
        let (a, b) = p
            .prefill
            .iter()
            .zip(&t.prefill)
            .find(|(a, _)| a.tokens == 16)
            .unwrap();
        assert!(close(b.time_ns, a.time_ns as f64 * 696e9 / 3350e9));
        assert_eq!(t.iteration_overhead_ns, p.iteration_overhead_ns);
        assert_eq!(t.prefill.len(), p.prefill.len());
    }

    #[test]
    fn roofline_ratio_is_continuous_at_the_ridge() {
        let (a40, h100) = gpus();
        let ridge = a40.fp16_flops / a40.mem_bw;
        let below = roofline_ratio(ridge * 0.999_999, a40, h100);
        let above = roofline_ratio(ridge * 1.000_001, a40, h100);
        assert!((below - above).abs() < 1e-4, "{below} {above}");
        assert_eq!(roofline_ratio(1e9, a40, a40), 1.0);
    }

    #[test]
    fn result_is_flagged_valid_and_usable() {
        let p = CostProfile::parse(EXAMPLE).unwrap();
        let (a40, h100) = gpus();
        let t = transfer(&p, a40, h100);
        assert_eq!(t.gpu.name, "h100-80gb");
        assert_eq!(t.gpu.memory_bytes, h100.memory_bytes);
        assert!(t.gpu.driver.is_none() && t.gpu.cuda.is_none());
        let from = t.provenance.transferred_from.as_deref().unwrap();
        assert!(from.contains("a40") && from.contains(&p.gpu.name), "{from}");
        assert!(t.provenance.notes.as_deref().unwrap().contains("PCIe"));
        // It survives the JSON round trip and builds a cost model whose description says it was transferred.
        let back = CostProfile::parse(&t.to_json()).unwrap();
        assert_eq!(back, t);
        let c = ProfileCost::new(back, "t.json", LoadMethod::PerLayerPinned).unwrap();
        assert!(c.describe().contains("TRANSFERRED"));
        // A faster GPU makes every part faster.
        let slow = ProfileCost::new(p, "p.json", LoadMethod::PerLayerPinned).unwrap();
        let shape = BatchShape {
            prefill_seqs: 1,
            prefill_tokens: 1024,
            prefill_sq_tokens: 1 << 20,
            ..Default::default()
        };
        assert!(c.iteration(&shape) < slow.iteration(&shape));
        let load = crate::cost::LoadShape {
            bytes: 64 << 20,
            copies: 64,
            pinned: true,
        };
        assert!(c.adapter_load(&load) < slow.adapter_load(&load));
    }

    #[test]
    fn there_and_back_is_the_identity_and_chains_are_recorded() {
        let p = CostProfile::parse(EXAMPLE).unwrap();
        let (a40, h100) = gpus();
        let t = transfer(&p, a40, h100);
        let back = transfer(&t, h100, a40);
        for (a, b) in p.prefill.iter().zip(&back.prefill) {
            assert!((a.time_ns as f64 / b.time_ns as f64 - 1.0).abs() < 1e-6);
        }
        for (a, b) in p.decode.iter().zip(&back.decode) {
            assert!((a.time_ns as f64 / b.time_ns as f64 - 1.0).abs() < 1e-6);
        }
        assert!(
            back.provenance
                .transferred_from
                .as_deref()
                .unwrap()
                .contains("itself transferred from")
        );
    }

    #[test]
    fn tiny_times_never_become_zero() {
        let mut p = CostProfile::parse(EXAMPLE).unwrap();
        p.adapter_load.push(LoadPoint {
            bytes: 1,
            method: "contiguous_pinned".into(),
            with_compute: false,
            time_ns: 1,
        });
        let (a40, h100) = gpus();
        let t = transfer(&p, a40, h100);
        assert!(t.adapter_load.iter().all(|x| x.time_ns >= 1));
        t.validate().unwrap();
    }
}
