//! The GPU operations of a Llama decoder layer with many LoRA adapters that cuBLAS does not provide, written
//! in CUDA C (`kernels/cu/*.cu`, one file per operation family) and compiled at run time by NVRTC through
//! cudarc, so building this crate needs no CUDA toolkit.
//!
//! - [`source`]: the embedded sources, the kernel names each family exports, the dtype they are built for.
//! - [`reference`]: a CPU implementation of every kernel (fp32), the definition the GPU code is checked against.
//! - [`gpu`]: NVRTC compilation, a per-family module cache and typed launch functions.
//! - [`check`]: runs every kernel on the GPU on small random inputs and compares with [`reference`].
//! - [`decoder`]: the Llama forward pass written once over an operations trait, with a CPU implementation
//!   (the references) and a GPU one (the kernels and cuBLAS), plus the KV paging, adapter store and batch
//!   layout both share.
//! - [`dtype`]: fp16/bf16 bit conversions on the host (device buffers hold raw 16-bit words).

pub mod check;
pub mod decoder;
pub mod dtype;
pub mod gpu;
pub mod reference;
pub mod source;

use std::fmt;

/// A kernel-level failure: bad arguments, a missing CUDA library, a compile or launch error.
#[derive(Debug, Clone, PartialEq)]
pub struct Error(pub String);

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}
