//! Run-time compilation (NVRTC), a module cache and typed launch functions for the kernels in `kernels/cu`.
//!
//! Device buffers of model data are `u16` words holding fp16 or bf16 (the dtype the [`Kernels`] were built for).
//! Index data (adapter offsets, segments, block tables) is uploaded only through the `Device*` structs below,
//! which validate it on the host first with the same checks as [`crate::reference`]: a bad index on the device
//! would corrupt memory silently, so it must never get there.
//!
//! cudarc loads libcuda, libnvrtc and libcublas on first use and panics if one is missing; call
//! [`require_libraries`] before anything else here so a machine without them gets an error, not a panic.

//!
//! - here: which libraries load, opening a device, NVRTC compilation and the per-family module cache;
//! - [`meta`]: the validated index data (`Device*`) the launches take;
//! - `launch`: one typed launch function per kernel (methods of [`Kernels`]);
//! - [`gemm`]: the cuBLAS GEMM.

mod gemm;
mod launch;
pub mod meta;

pub use gemm::Gemm;
pub use launch::{LoraLayout, LoraStep};
pub use meta::{DeviceLora, DevicePaging, DeviceSeqs, DeviceSlots};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule, LaunchConfig};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};

use crate::dtype::DType;
use crate::source::Family;
use crate::{Error, Result};

/// Which CUDA libraries this process can load.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Libraries {
    pub driver: bool,
    pub nvrtc: bool,
    pub cublas: bool,
}

pub fn libraries() -> Libraries {
    // SAFETY: these only try to dlopen the library and drop the handle.
    unsafe {
        Libraries {
            driver: cudarc::driver::sys::is_culib_present(),
            nvrtc: cudarc::nvrtc::sys::is_culib_present(),
            cublas: cudarc::cublas::sys::is_culib_present(),
        }
    }
}

/// One-line error naming the missing libraries, checked in the order a user fixes them (driver first).
pub fn require_libraries(need_nvrtc: bool, need_cublas: bool) -> Result<()> {
    let l = libraries();
    if !l.driver {
        return Err(Error::msg(
            "no NVIDIA GPU driver found (libcuda could not be loaded): this needs a machine with an NVIDIA GPU",
        ));
    }
    let mut missing = Vec::new();
    if need_nvrtc && !l.nvrtc {
        missing.push("libnvrtc (CUDA NVRTC runtime compiler)");
    }
    if need_cublas && !l.cublas {
        missing.push("libcublas");
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "the GPU driver is present but {} could not be loaded; install the CUDA runtime libraries \
             (no toolkit needed) or add them to LD_LIBRARY_PATH",
            missing.join(" and ")
        )))
    }
}

/// What the provenance of a measurement records about the device.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    pub ordinal: usize,
    pub name: String,
    pub memory_bytes: u64,
    /// CUDA version the driver supports, e.g. "12.4" (the driver API reports no package version).
    pub driver: String,
    /// NVRTC version, i.e. the CUDA version the kernels are compiled with.
    pub nvrtc: String,
    pub compute_capability: (i32, i32),
}

fn drv(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::msg(format!("{what}: {e}"))
}

/// Opens device `ordinal`; an error (not a panic) when there is no driver or no such device.
pub fn open_device(ordinal: usize) -> Result<(Arc<CudaContext>, DeviceInfo)> {
    require_libraries(false, false)?;
    let count = CudaContext::device_count()
        .map_err(drv("CUDA driver present but not usable (cuInit failed)"))?;
    if count <= 0 {
        return Err(Error::msg("the CUDA driver reports no GPU"));
    }
    if ordinal >= count as usize {
        return Err(Error::msg(format!(
            "--device {ordinal}: only {count} GPU(s) present (0..{count})"
        )));
    }
    let ctx = CudaContext::new(ordinal).map_err(drv("cannot create a CUDA context"))?;
    let mut v = 0i32;
    // SAFETY: plain out-parameter query of the loaded driver.
    unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
    let nvrtc = if libraries().nvrtc {
        let (mut ma, mut mi) = (0i32, 0i32);
        // SAFETY: out-parameter query; the library is known to be present.
        unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut ma, &mut mi) };
        format!("{ma}.{mi}")
    } else {
        "absent".into()
    };
    let info = DeviceInfo {
        ordinal,
        name: ctx.name().map_err(drv("device name"))?,
        memory_bytes: ctx.total_mem().map_err(drv("device memory"))? as u64,
        driver: format!("{}.{}", v / 1000, (v % 1000) / 10),
        nvrtc,
        compute_capability: ctx
            .compute_capability()
            .map_err(drv("compute capability"))?,
    };
    Ok((ctx, info))
}

/// Compiles one family with NVRTC for a virtual architecture such as "compute_80". Needs only libnvrtc, no
/// GPU, so tests can run it on any machine that has the library.
pub fn compile(family: Family, dtype: DType, arch: &str) -> Result<Ptx> {
    if !libraries().nvrtc {
        return Err(Error::msg(
            "libnvrtc (CUDA NVRTC runtime compiler) could not be loaded",
        ));
    }
    let opts = CompileOptions {
        // PTX for the device's own virtual architecture: the driver JIT-compiles it for the exact GPU.
        options: vec![format!("--gpu-architecture={arch}"), "-std=c++17".into()],
        name: Some(family.file().into()),
        ..Default::default()
    };
    compile_ptx_with_opts(family.full_source(dtype), opts).map_err(|e| {
        let log = match &e {
            CompileError::CompileError { log, .. } => log.to_string_lossy().into_owned(),
            other => format!("{other:?}"),
        };
        Error::msg(format!(
            "NVRTC failed on {} ({}, {arch}): {log}",
            family.file(),
            dtype.name()
        ))
    })
}

/// The compiled kernels for one context and dtype. Each family is compiled on first use and cached.
pub struct Kernels {
    ctx: Arc<CudaContext>,
    dtype: DType,
    arch: String,
    modules: Mutex<HashMap<Family, Arc<CudaModule>>>,
}

/// Threads per block for the 1-D kernels; 256 keeps several blocks resident per SM on every recent GPU.
const BLOCK: u32 = 256;
/// Cap on grid size for the grid-stride kernels: enough blocks to fill any current GPU many times over.
const MAX_GRID: u64 = 65_536;
/// Shared memory a block may use without opting in to the large carve-out.
const SMEM_LIMIT: usize = 48 * 1024;

fn blocks(n: u64) -> u32 {
    n.div_ceil(BLOCK as u64).clamp(1, MAX_GRID) as u32
}

fn cfg(grid: (u32, u32, u32), block: u32, smem: u32) -> LaunchConfig {
    LaunchConfig {
        grid_dim: grid,
        block_dim: (block, 1, 1),
        shared_mem_bytes: smem,
    }
}

fn need(what: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return Err(Error::msg(format!(
            "{what}: buffer has {have} elements, needs {want}"
        )));
    }
    Ok(())
}

fn i32_of(what: &str, n: usize) -> Result<i32> {
    i32::try_from(n).map_err(|_| {
        Error::msg(format!(
            "{what} = {n} does not fit the kernels' 32-bit index"
        ))
    })
}

impl Kernels {
    pub fn new(ctx: Arc<CudaContext>, dtype: DType) -> Result<Kernels> {
        require_libraries(true, false)?;
        let (ma, mi) = ctx
            .compute_capability()
            .map_err(drv("compute capability"))?;
        Ok(Kernels {
            ctx,
            dtype,
            arch: format!("compute_{ma}{mi}"),
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Compiles every family now, so compile time never lands inside a timed region.
    pub fn compile_all(&self) -> Result<()> {
        Family::ALL
            .into_iter()
            .try_for_each(|f| self.module(f).map(|_| ()))
    }

    fn module(&self, family: Family) -> Result<Arc<CudaModule>> {
        let mut cache = self
            .modules
            .lock()
            .map_err(|_| Error::msg("kernel module cache poisoned"))?;
        if let Some(m) = cache.get(&family) {
            return Ok(m.clone());
        }
        let ptx = compile(family, self.dtype, &self.arch)?;
        let m = self.ctx.load_module(ptx).map_err(drv(&format!(
            "loading {} (is the driver older than NVRTC?)",
            family.file()
        )))?;
        cache.insert(family, m.clone());
        Ok(m)
    }

    fn function(&self, name: &str) -> Result<CudaFunction> {
        let family =
            Family::of(name).ok_or_else(|| Error::msg(format!("no kernel named {name}")))?;
        self.module(family)?
            .load_function(name)
            .map_err(drv(&format!("kernel {name}")))
    }
}

fn launched<T>(name: &str, r: std::result::Result<T, cudarc::driver::DriverError>) -> Result<()> {
    r.map(|_| ())
        .map_err(|e| Error::msg(format!("launching {name}: {e}")))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_libraries_are_an_error_not_a_panic() {
        // On a machine without the driver this must be an Err; on one with it, the same call succeeds.
        match (libraries().driver, require_libraries(true, true)) {
            (false, Err(e)) => assert!(e.0.contains("no NVIDIA GPU driver"), "{e}"),
            (false, Ok(())) => panic!("no driver, yet libraries were accepted"),
            (true, _) => {}
        }
        if !libraries().driver {
            assert!(open_device(0).is_err());
        }
    }

    /// NVRTC needs no GPU: where libnvrtc is installed (e.g. `pip install nvidia-cuda-nvrtc` and
    /// LD_LIBRARY_PATH), every family must compile for both dtypes and export its kernels by their plain names.
    #[test]
    fn nvrtc_compiles_every_family_where_available() {
        if !libraries().nvrtc {
            eprintln!("libnvrtc not found: NVRTC compilation not tested here");
            return;
        }
        for dtype in [DType::F16, DType::Bf16] {
            for arch in ["compute_80", "compute_90"] {
                for f in Family::ALL {
                    let ptx = compile(f, dtype, arch)
                        .unwrap_or_else(|e| panic!("{e}"))
                        .to_src();
                    for k in f.kernels() {
                        assert!(
                            ptx.contains(&format!(".entry {k}(")),
                            "{k} not exported by {}",
                            f.file()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn launch_geometry_helpers() {
        assert_eq!(blocks(0), 1);
        assert_eq!(blocks(257), 2);
        assert_eq!(blocks(u64::MAX / 2), MAX_GRID as u32);
        assert!(
            i32_of("x", 1 << 31)
                .unwrap_err()
                .0
                .contains("x = 2147483648")
        );
        assert!(need("buf", 3, 4).unwrap_err().0.contains("needs 4"));
    }
}
