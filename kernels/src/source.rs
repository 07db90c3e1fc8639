//! The CUDA sources, embedded at build time, and the kernels each one exports. The launch functions in
//! [`crate::gpu`] name kernels only through the constants here, and a test checks these lists against the
//! `extern "C" __global__` definitions in the files, so a renamed kernel fails on the CPU, not on a GPU.

use crate::dtype::DType;

/// Prepended to every family's source: element conversions and warp/block reductions.
pub const PRELUDE: &str = include_str!("../cu/prelude.cuh");

pub const LORA_SHRINK_SGMV: &str = "lora_shrink_sgmv";
pub const LORA_EXPAND_SGMV: &str = "lora_expand_sgmv";
pub const LORA_SHRINK_BGMV: &str = "lora_shrink_bgmv";
pub const LORA_EXPAND_BGMV: &str = "lora_expand_bgmv";
pub const RMS_NORM: &str = "rms_norm";
pub const ROPE_NEOX: &str = "rope_neox";
pub const SILU_MUL: &str = "silu_mul";
pub const ADD_INPLACE: &str = "add_inplace";
pub const FILL_UNIFORM: &str = "fill_uniform";
pub const KV_CACHE_WRITE: &str = "kv_cache_write";
pub const ATTN_PREFILL: &str = "attn_prefill";
pub const ATTN_DECODE_PAGED: &str = "attn_decode_paged";

/// Largest head dimension the attention kernels support (32 lanes x MAX_DPL in attention.cu).
pub const MAX_HEAD_DIM: usize = 256;
/// Tokens per block along grid z in the segmented LoRA kernels (SEG_CHUNK in lora.cu).
pub const SEG_CHUNK: usize = 64;
/// Warps per (sequence, head) block in `attn_decode_paged` (DECODE_WARPS in attention.cu).
pub const DECODE_WARPS: u32 = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    Lora,
    Norm,
    Rope,
    Act,
    Attention,
}

impl Family {
    pub const ALL: [Family; 5] = [
        Family::Lora,
        Family::Norm,
        Family::Rope,
        Family::Act,
        Family::Attention,
    ];

    pub fn file(self) -> &'static str {
        match self {
            Family::Lora => "lora.cu",
            Family::Norm => "norm.cu",
            Family::Rope => "rope.cu",
            Family::Act => "act.cu",
            Family::Attention => "attention.cu",
        }
    }

    pub fn source(self) -> &'static str {
        match self {
            Family::Lora => include_str!("../cu/lora.cu"),
            Family::Norm => include_str!("../cu/norm.cu"),
            Family::Rope => include_str!("../cu/rope.cu"),
            Family::Act => include_str!("../cu/act.cu"),
            Family::Attention => include_str!("../cu/attention.cu"),
        }
    }

    pub fn kernels(self) -> &'static [&'static str] {
        match self {
            Family::Lora => &[
                LORA_SHRINK_SGMV,
                LORA_EXPAND_SGMV,
                LORA_SHRINK_BGMV,
                LORA_EXPAND_BGMV,
            ],
            Family::Norm => &[RMS_NORM],
            Family::Rope => &[ROPE_NEOX],
            Family::Act => &[SILU_MUL, ADD_INPLACE, FILL_UNIFORM],
            Family::Attention => &[KV_CACHE_WRITE, ATTN_PREFILL, ATTN_DECODE_PAGED],
        }
    }

    /// The family a kernel belongs to, by name.
    pub fn of(kernel: &str) -> Option<Family> {
        Family::ALL
            .into_iter()
            .find(|f| f.kernels().contains(&kernel))
    }

    /// The text NVRTC compiles: a dtype define, the prelude, the family's file.
    pub fn full_source(self, dtype: DType) -> String {
        let define = match dtype {
            DType::F16 => "",
            DType::Bf16 => "#define ELEM_BF16 1\n",
        };
        format!(
            "{define}{PRELUDE}\n// ---- {} ----\n{}",
            self.file(),
            self.source()
        )
    }
}

/// Names of the `extern "C" __global__ void NAME(` definitions in a source text.
pub fn exported_kernels(src: &str) -> Vec<String> {
    let key = "extern \"C\" __global__ void ";
    src.match_indices(key)
        .filter_map(|(i, _)| {
            let rest = &src[i + key.len()..];
            let end = rest.find('(')?;
            Some(rest[..end].trim().to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_family_exports_exactly_its_listed_kernels() {
        let mut all = Vec::new();
        for f in Family::ALL {
            let mut got = exported_kernels(f.source());
            let mut want: Vec<String> = f.kernels().iter().map(|s| s.to_string()).collect();
            got.sort();
            want.sort();
            assert_eq!(got, want, "{}", f.file());
            all.extend(want);
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            n,
            "kernel names must be unique across families (one module lookup per name)"
        );
        assert!(exported_kernels(PRELUDE).is_empty());
        assert_eq!(Family::of(ATTN_DECODE_PAGED), Some(Family::Attention));
        assert_eq!(Family::of("nope"), None);
    }

    #[test]
    fn sources_are_self_contained_and_balanced() {
        for f in Family::ALL {
            let src = f.full_source(DType::F16);
            // NVRTC gets no include paths: a header would make compilation depend on a local CUDA install.
            assert!(
                !src.lines().any(|l| l.trim_start().starts_with("#include")),
                "{}",
                f.file()
            );
            // Comments use half-open ranges like [a, b), so only code is counted.
            let code: String = src
                .lines()
                .map(|l| l.split("//").next().unwrap_or(""))
                .collect();
            for (open, close) in [('{', '}'), ('(', ')'), ('[', ']')] {
                assert_eq!(
                    code.matches(open).count(),
                    code.matches(close).count(),
                    "{} {open}{close}",
                    f.file()
                );
            }
            assert!(!src.contains("ELEM_BF16 1"));
            assert!(
                f.full_source(DType::Bf16)
                    .starts_with("#define ELEM_BF16 1\n")
            );
        }
    }

    #[test]
    fn device_constants_match_the_rust_side() {
        let attn = Family::Attention.source();
        assert!(attn.contains(&format!("#define DECODE_WARPS {DECODE_WARPS}")));
        assert!(
            Family::Lora
                .source()
                .contains(&format!("#define SEG_CHUNK {SEG_CHUNK}"))
        );
        assert!(attn.contains(&format!("#define MAX_DPL {}", MAX_HEAD_DIM / 32)));
    }
}
