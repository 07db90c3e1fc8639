//! GPU datasheet figures: `--gpu`.

use crate::error::{Error, Result};

/// Datasheet figures of a GPU. `pcie_gbps` is the nominal host-to-device bandwidth of one direction.
#[derive(Clone, Debug, PartialEq)]
pub struct GpuSpec {
    pub name: &'static str,
    pub memory_bytes: u64,
    /// Dense fp16 tensor-core FLOP/s (no sparsity).
    pub fp16_flops: f64,
    /// Device memory bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Host-to-device link bandwidth, bytes/s.
    pub pcie_bw: f64,
}

const GIB: u64 = 1 << 30;

pub const GPUS: &[GpuSpec] = &[
    // AWS g5: 24 GB GDDR6, 125 TFLOP/s dense FP16 tensor, 600 GB/s, PCIe 4.0.
    GpuSpec {
        name: "a10g",
        memory_bytes: 24 * GIB,
        fp16_flops: 125e12,
        mem_bw: 600e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "a40",
        memory_bytes: 48 * GIB,
        fp16_flops: 149.7e12,
        mem_bw: 696e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "a100-40gb",
        memory_bytes: 40 * GIB,
        fp16_flops: 312e12,
        mem_bw: 1555e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "a100-80gb",
        memory_bytes: 80 * GIB,
        fp16_flops: 312e12,
        mem_bw: 2039e9,
        pcie_bw: 32e9,
    },
    GpuSpec {
        name: "h100-80gb",
        memory_bytes: 80 * GIB,
        fp16_flops: 989e12,
        mem_bw: 3350e9,
        pcie_bw: 64e9,
    },
];

/// The `--gpu` help: every GPU the simulator knows.
pub fn gpus_help() -> String {
    let names: Vec<_> = GPUS.iter().map(|g| g.name).collect();
    format!("GPU: {}", names.join(", "))
}

impl GpuSpec {
    pub fn by_name(name: &str) -> Result<&'static GpuSpec> {
        let key = name.to_ascii_lowercase();
        GPUS.iter().find(|g| g.name == key).ok_or_else(|| {
            let names: Vec<_> = GPUS.iter().map(|g| g.name).collect();
            Error::msg(format!("unknown GPU '{name}'; valid: {}", names.join(", ")))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = GpuSpec::by_name("v100").unwrap_err().to_string();
        assert!(e.contains("a40") && e.contains("h100-80gb"), "{e}");
    }
}
