//! `calibrate`: measures the GPU costs of serving a Llama model with many LoRA adapters and writes a cost
//! profile (schema v1, `sim_core::cost::profile`), and works with existing profiles (predict, transfer, report).
//!
//! Everything except [`measure`] runs without a GPU; [`measure`] needs the CUDA driver, NVRTC and cuBLAS
//! libraries at run time (not at build time) and fails with a one-line error when they are absent.

pub mod cli;
pub mod measure;
pub mod predict;
pub mod report;
pub mod sysinfo;

pub use sim_core::{cost, model};

/// Errors carry their exit code: 2 for input the user can fix (flags, files, no GPU), 1 otherwise.
pub use sim_core::error::{Error, Result};

/// Maps a kernel-crate error (no GPU, NVRTC, launch) to an exit-code-carrying error.
pub fn gpu_err(e: kernels::Error) -> Error {
    Error::msg(e.0)
}
