//! Run-time compilation (NVRTC), a module cache and typed launch functions for the kernels in `kernels/cu`.
//!
//! Device buffers of model data are `u16` words holding fp16 or bf16 (the dtype the [`Kernels`] were built for).
//! Index data (adapter offsets, segments, block tables) is uploaded only through the `Device*` structs below,
//! which validate it on the host first with the same checks as [`crate::reference`]: a bad index on the device
//! would corrupt memory silently, so it must never get there.
//!
//! cudarc loads libcuda, libnvrtc and libcublas on first use and panics if one is missing; call
//! [`require_libraries`] before anything else here so a machine without them gets an error, not a panic.

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaSlice, CudaStream, CudaView, CudaViewMut, DevicePtr,
    DevicePtrMut, LaunchConfig, PushKernelArg,
};
use cudarc::nvrtc::{CompileError, CompileOptions, Ptx, compile_ptx_with_opts};

use crate::dtype::DType;
use crate::reference::{self, AdapterSlot, AttnShape, Paging};
use crate::source::{self, Family};
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

/// Grid z extent of the segmented LoRA kernels (the hardware allows at most 65535).
fn seg_chunks(meta: &DeviceLora) -> Result<u32> {
    let z = meta.max_seg_len.div_ceil(source::SEG_CHUNK).max(1);
    u32::try_from(z)
        .ok()
        .filter(|&z| z <= 65_535)
        .ok_or_else(|| {
            Error::msg(format!(
                "a LoRA segment of {} tokens is too long",
                meta.max_seg_len
            ))
        })
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

/// Validated LoRA batch metadata on the device: where adapters are in the pool, and which tokens use which.
pub struct DeviceLora {
    pub tokens: usize,
    pub max_rank: usize,
    pub h_in: usize,
    pub h_out: usize,
    pub num_segs: usize,
    /// Longest segment, in tokens: sets the grid's z extent for the segmented kernels.
    pub max_seg_len: usize,
    a_off: CudaSlice<u64>,
    b_off: CudaSlice<u64>,
    ranks: CudaSlice<i32>,
    seg_start: CudaSlice<i32>,
    seg_adapter: CudaSlice<i32>,
    tok_adapter: CudaSlice<i32>,
}

impl DeviceLora {
    /// `tok_adapter` gives each token's adapter (-1: none); the segmented kernels need it grouped by adapter
    /// (equal values adjacent), the gathered ones do not. `pool_len` is the pool buffer's length in elements.
    #[allow(clippy::too_many_arguments)]
    pub fn upload(
        stream: &Arc<CudaStream>,
        slots: &[AdapterSlot],
        tok_adapter: &[i32],
        pool_len: usize,
        h_in: usize,
        h_out: usize,
        max_rank: usize,
    ) -> Result<DeviceLora> {
        reference::check_adapters(pool_len, slots, h_in, h_out, max_rank)?;
        reference::check_adapter_ids(tok_adapter, slots.len())?;
        i32_of("tokens", tok_adapter.len())?;
        let (seg_start, seg_adapter) = reference::segments(tok_adapter);
        let a: Vec<u64> = slots.iter().map(|s| s.a_off).collect();
        let b: Vec<u64> = slots.iter().map(|s| s.b_off).collect();
        let r: Vec<i32> = slots.iter().map(|s| s.rank as i32).collect();
        // Empty uploads are not allowed by the driver; a dummy element keeps the kernels' pointers valid.
        let pad_u = |v: Vec<u64>| if v.is_empty() { vec![0] } else { v };
        let pad_i = |v: Vec<i32>| if v.is_empty() { vec![-1] } else { v };
        Ok(DeviceLora {
            tokens: tok_adapter.len(),
            max_rank,
            h_in,
            h_out,
            num_segs: seg_adapter.len(),
            max_seg_len: seg_start
                .windows(2)
                .map(|w| (w[1] - w[0]) as usize)
                .max()
                .unwrap_or(0),
            a_off: stream.clone_htod(&pad_u(a)).map_err(drv("upload a_off"))?,
            b_off: stream.clone_htod(&pad_u(b)).map_err(drv("upload b_off"))?,
            ranks: stream.clone_htod(&pad_i(r)).map_err(drv("upload ranks"))?,
            seg_start: stream
                .clone_htod(&seg_start)
                .map_err(drv("upload seg_start"))?,
            seg_adapter: stream
                .clone_htod(&pad_i(seg_adapter))
                .map_err(drv("upload seg_adapter"))?,
            tok_adapter: stream
                .clone_htod(&pad_i(tok_adapter.to_vec()))
                .map_err(drv("upload tok_adapter"))?,
        })
    }
}

/// Validated packed-sequence boundaries for prefill attention.
pub struct DeviceSeqs {
    pub tokens: usize,
    pub num_seqs: usize,
    cu_seqlens: CudaSlice<i32>,
}

impl DeviceSeqs {
    pub fn upload(stream: &Arc<CudaStream>, seq_lens: &[usize]) -> Result<DeviceSeqs> {
        if seq_lens.is_empty() || seq_lens.contains(&0) {
            return Err(Error::msg(
                "prefill needs at least one sequence and no empty ones",
            ));
        }
        let mut cu = vec![0i32];
        for &l in seq_lens {
            cu.push(i32_of(
                "prefill tokens",
                *cu.last().unwrap_or(&0) as usize + l,
            )?);
        }
        Ok(DeviceSeqs {
            tokens: *cu.last().unwrap_or(&0) as usize,
            num_seqs: seq_lens.len(),
            cu_seqlens: stream.clone_htod(&cu).map_err(drv("upload cu_seqlens"))?,
        })
    }
}

/// Validated paged-cache geometry for decode attention and cache writes.
pub struct DevicePaging {
    pub seqs: usize,
    pub paging: Paging,
    pub cache_slots: usize,
    block_table: CudaSlice<i32>,
    context_lens: CudaSlice<i32>,
}

impl DevicePaging {
    pub fn upload(
        stream: &Arc<CudaStream>,
        block_table: &[i32],
        context_lens: &[i32],
        paging: Paging,
        cache_slots: usize,
    ) -> Result<DevicePaging> {
        let seqs = reference::check_paging(block_table, context_lens, paging, cache_slots)?;
        i32_of("cache slots", cache_slots)?;
        Ok(DevicePaging {
            seqs,
            paging,
            cache_slots,
            block_table: stream
                .clone_htod(block_table)
                .map_err(drv("upload block_table"))?,
            context_lens: stream
                .clone_htod(context_lens)
                .map_err(drv("upload context_lens"))?,
        })
    }
}

/// Validated cache slots of new tokens, for [`Kernels::kv_cache_write`].
pub struct DeviceSlots {
    pub tokens: usize,
    slots: CudaSlice<i32>,
}

impl DeviceSlots {
    pub fn upload(
        stream: &Arc<CudaStream>,
        slots: &[i32],
        cache_slots: usize,
    ) -> Result<DeviceSlots> {
        if slots.is_empty() {
            return Err(Error::msg("kv_cache_write needs at least one token"));
        }
        if let Some(s) = slots.iter().find(|&&s| s < 0 || s as usize >= cache_slots) {
            return Err(Error::msg(format!(
                "cache slot {s} not in 0..{cache_slots}"
            )));
        }
        Ok(DeviceSlots {
            tokens: slots.len(),
            slots: stream.clone_htod(slots).map_err(drv("upload slots"))?,
        })
    }
}

impl Kernels {
    /// v[t, :rank] = A_t . x[t] for the segmented (prefill) layout. v is `[tokens, max_rank]` fp32; entries
    /// past a token's rank are not written (zero v once if they are read back).
    pub fn lora_shrink_sgmv(
        &self,
        stream: &CudaStream,
        x: &CudaView<u16>,
        pool: &CudaView<u16>,
        meta: &DeviceLora,
        v: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        need("lora x", x.len(), meta.tokens * meta.h_in)?;
        need("lora v", v.len(), meta.tokens * meta.max_rank)?;
        let smem = meta.h_in * 4;
        if smem > SMEM_LIMIT {
            return Err(Error::msg(format!(
                "lora_shrink_sgmv: h_in {} exceeds the shared-memory row limit",
                meta.h_in
            )));
        }
        if meta.num_segs == 0 {
            return Ok(());
        }
        let f = self.function(source::LORA_SHRINK_SGMV)?;
        let (h, r) = (
            i32_of("h_in", meta.h_in)?,
            i32_of("max_rank", meta.max_rank)?,
        );
        let mut b = stream.launch_builder(&f);
        b.arg(x)
            .arg(pool)
            .arg(&meta.a_off)
            .arg(&meta.ranks)
            .arg(&meta.seg_start)
            .arg(&meta.seg_adapter);
        b.arg(v).arg(&h).arg(&r);
        let c = cfg(
            (
                meta.num_segs as u32,
                meta.max_rank as u32,
                seg_chunks(meta)?,
            ),
            BLOCK,
            smem as u32,
        );
        // SAFETY: argument list matches the kernel signature; sizes and indices were validated above/at upload.
        launched(source::LORA_SHRINK_SGMV, unsafe { b.launch(c) })
    }

    /// y[t] += scale * B_t^T . v[t, :rank] for the segmented layout.
    pub fn lora_expand_sgmv(
        &self,
        stream: &CudaStream,
        v: &CudaView<f32>,
        pool: &CudaView<u16>,
        meta: &DeviceLora,
        y: &mut CudaViewMut<u16>,
        scale: f32,
    ) -> Result<()> {
        need("lora v", v.len(), meta.tokens * meta.max_rank)?;
        need("lora y", y.len(), meta.tokens * meta.h_out)?;
        if meta.num_segs == 0 {
            return Ok(());
        }
        let f = self.function(source::LORA_EXPAND_SGMV)?;
        let (h, r) = (
            i32_of("h_out", meta.h_out)?,
            i32_of("max_rank", meta.max_rank)?,
        );
        let mut b = stream.launch_builder(&f);
        b.arg(v)
            .arg(pool)
            .arg(&meta.b_off)
            .arg(&meta.ranks)
            .arg(&meta.seg_start)
            .arg(&meta.seg_adapter);
        b.arg(y).arg(&h).arg(&r).arg(&scale);
        let c = cfg(
            (
                meta.num_segs as u32,
                (meta.h_out as u32).div_ceil(BLOCK),
                seg_chunks(meta)?,
            ),
            BLOCK,
            0,
        );
        // SAFETY: as in lora_shrink_sgmv.
        launched(source::LORA_EXPAND_SGMV, unsafe { b.launch(c) })
    }

    /// Gathered (decode) form of [`Kernels::lora_shrink_sgmv`]: token order is free.
    pub fn lora_shrink_bgmv(
        &self,
        stream: &CudaStream,
        x: &CudaView<u16>,
        pool: &CudaView<u16>,
        meta: &DeviceLora,
        v: &mut CudaViewMut<f32>,
    ) -> Result<()> {
        need("lora x", x.len(), meta.tokens * meta.h_in)?;
        need("lora v", v.len(), meta.tokens * meta.max_rank)?;
        if meta.tokens == 0 {
            return Ok(());
        }
        let f = self.function(source::LORA_SHRINK_BGMV)?;
        let (h, r) = (
            i32_of("h_in", meta.h_in)?,
            i32_of("max_rank", meta.max_rank)?,
        );
        let mut b = stream.launch_builder(&f);
        b.arg(x)
            .arg(pool)
            .arg(&meta.a_off)
            .arg(&meta.ranks)
            .arg(&meta.tok_adapter)
            .arg(v)
            .arg(&h)
            .arg(&r);
        let warps = BLOCK / 32;
        let c = cfg(
            (
                meta.tokens as u32,
                (meta.max_rank as u32).div_ceil(warps),
                1,
            ),
            BLOCK,
            0,
        );
        // SAFETY: as in lora_shrink_sgmv.
        launched(source::LORA_SHRINK_BGMV, unsafe { b.launch(c) })
    }

    pub fn lora_expand_bgmv(
        &self,
        stream: &CudaStream,
        v: &CudaView<f32>,
        pool: &CudaView<u16>,
        meta: &DeviceLora,
        y: &mut CudaViewMut<u16>,
        scale: f32,
    ) -> Result<()> {
        need("lora v", v.len(), meta.tokens * meta.max_rank)?;
        need("lora y", y.len(), meta.tokens * meta.h_out)?;
        if meta.tokens == 0 {
            return Ok(());
        }
        let f = self.function(source::LORA_EXPAND_BGMV)?;
        let (h, r) = (
            i32_of("h_out", meta.h_out)?,
            i32_of("max_rank", meta.max_rank)?,
        );
        let mut b = stream.launch_builder(&f);
        b.arg(v)
            .arg(pool)
            .arg(&meta.b_off)
            .arg(&meta.ranks)
            .arg(&meta.tok_adapter)
            .arg(y)
            .arg(&h)
            .arg(&r);
        b.arg(&scale);
        let c = cfg(
            (meta.tokens as u32, (meta.h_out as u32).div_ceil(BLOCK), 1),
            BLOCK,
            0,
        );
        // SAFETY: as in lora_shrink_sgmv.
        launched(source::LORA_EXPAND_BGMV, unsafe { b.launch(c) })
    }

    /// y = RMSNorm(x) * w over rows of `w.len()`.
    pub fn rms_norm(
        &self,
        stream: &CudaStream,
        x: &CudaView<u16>,
        w: &CudaView<u16>,
        y: &mut CudaViewMut<u16>,
        tokens: usize,
        eps: f32,
    ) -> Result<()> {
        let h = w.len();
        need("rms_norm x", x.len(), tokens * h)?;
        need("rms_norm y", y.len(), tokens * h)?;
        if tokens == 0 {
            return Ok(());
        }
        let f = self.function(source::RMS_NORM)?;
        let hi = i32_of("hidden", h)?;
        let mut b = stream.launch_builder(&f);
        b.arg(x).arg(w).arg(y).arg(&hi).arg(&eps);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::RMS_NORM, unsafe {
            b.launch(cfg((tokens as u32, 1, 1), BLOCK, 0))
        })
    }

    /// Rotary embedding in place on q `[tokens, heads_q, d]` and k `[tokens, heads_k, d]`; `pos` holds each
    /// token's position (any values: positions are data, not indices).
    #[allow(clippy::too_many_arguments)]
    pub fn rope_neox(
        &self,
        stream: &CudaStream,
        q: &mut CudaViewMut<u16>,
        k: &mut CudaViewMut<u16>,
        pos: &CudaView<i32>,
        heads_q: usize,
        heads_k: usize,
        head_dim: usize,
        theta: f32,
    ) -> Result<()> {
        let tokens = pos.len();
        if head_dim == 0 || !head_dim.is_multiple_of(2) {
            return Err(Error::msg(format!(
                "rope: head_dim {head_dim} must be even and positive"
            )));
        }
        need("rope q", q.len(), tokens * heads_q * head_dim)?;
        need("rope k", k.len(), tokens * heads_k * head_dim)?;
        if tokens == 0 {
            return Ok(());
        }
        let f = self.function(source::ROPE_NEOX)?;
        let (hq, hk, d) = (
            i32_of("heads", heads_q)?,
            i32_of("kv heads", heads_k)?,
            i32_of("head_dim", head_dim)?,
        );
        let mut b = stream.launch_builder(&f);
        b.arg(q)
            .arg(k)
            .arg(pos)
            .arg(&hq)
            .arg(&hk)
            .arg(&d)
            .arg(&theta);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::ROPE_NEOX, unsafe {
            b.launch(cfg((tokens as u32, 1, 1), BLOCK, 0))
        })
    }

    /// out `[tokens, inter]` = silu(gate) * up from gate_up `[tokens, 2 * inter]`.
    pub fn silu_mul(
        &self,
        stream: &CudaStream,
        gate_up: &CudaView<u16>,
        out: &mut CudaViewMut<u16>,
        tokens: usize,
        inter: usize,
    ) -> Result<()> {
        let n = tokens * inter;
        need("silu_mul gate_up", gate_up.len(), 2 * n)?;
        need("silu_mul out", out.len(), n)?;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(source::SILU_MUL)?;
        let (i, n64) = (i32_of("intermediate", inter)?, n as u64);
        let mut b = stream.launch_builder(&f);
        b.arg(gate_up).arg(out).arg(&i).arg(&n64);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::SILU_MUL, unsafe {
            b.launch(cfg((blocks(n64), 1, 1), BLOCK, 0))
        })
    }

    /// acc += x (the residual stream).
    pub fn add_inplace(
        &self,
        stream: &CudaStream,
        acc: &mut CudaViewMut<u16>,
        x: &CudaView<u16>,
    ) -> Result<()> {
        let n = x.len().min(acc.len()) as u64;
        if x.len() != acc.len() {
            return Err(Error::msg(format!(
                "add: lengths {} and {} differ",
                acc.len(),
                x.len()
            )));
        }
        if n == 0 {
            return Ok(());
        }
        let f = self.function(source::ADD_INPLACE)?;
        let mut b = stream.launch_builder(&f);
        b.arg(acc).arg(x).arg(&n);
        // SAFETY: argument list matches the kernel; sizes checked above.
        launched(source::ADD_INPLACE, unsafe {
            b.launch(cfg((blocks(n), 1, 1), BLOCK, 0))
        })
    }

    /// Fills a buffer with uniform values in [-scale, scale), deterministic in `seed`.
    pub fn fill_uniform(
        &self,
        stream: &CudaStream,
        out: &mut CudaViewMut<u16>,
        seed: u32,
        scale: f32,
    ) -> Result<()> {
        let n = out.len() as u64;
        if n == 0 {
            return Ok(());
        }
        let f = self.function(source::FILL_UNIFORM)?;
        let mut b = stream.launch_builder(&f);
        b.arg(out).arg(&n).arg(&seed).arg(&scale);
        // SAFETY: argument list matches the kernel.
        launched(source::FILL_UNIFORM, unsafe {
            b.launch(cfg((blocks(n), 1, 1), BLOCK, 0))
        })
    }

    /// Writes K and V of new tokens (`[tokens, kv_heads, d]`) into cache slots (`[slots, kv_heads, d]`).
    #[allow(clippy::too_many_arguments)]
    pub fn kv_cache_write(
        &self,
        stream: &CudaStream,
        k: &CudaView<u16>,
        v: &CudaView<u16>,
        k_cache: &mut CudaViewMut<u16>,
        v_cache: &mut CudaViewMut<u16>,
        slots: &DeviceSlots,
        kv_heads: usize,
        head_dim: usize,
        cache_slots: usize,
    ) -> Result<()> {
        let row = kv_heads * head_dim;
        need("kv_cache_write k", k.len(), slots.tokens * row)?;
        need("kv_cache_write v", v.len(), slots.tokens * row)?;
        need("k cache", k_cache.len(), cache_slots * row)?;
        need("v cache", v_cache.len(), cache_slots * row)?;
        let f = self.function(source::KV_CACHE_WRITE)?;
        let (kh, d) = (i32_of("kv heads", kv_heads)?, i32_of("head_dim", head_dim)?);
        let mut b = stream.launch_builder(&f);
        b.arg(k)
            .arg(v)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&slots.slots)
            .arg(&kh)
            .arg(&d);
        // SAFETY: argument list matches the kernel; slots were range-checked at upload against the cache size
        // the caller passes here, and the cache buffers are checked to be at least that large.
        launched(source::KV_CACHE_WRITE, unsafe {
            b.launch(cfg((slots.tokens as u32, 1, 1), BLOCK, 0))
        })
    }

    /// Causal attention over packed sequences; q/out `[tokens, heads, d]`, k/v `[tokens, kv_heads, d]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attn_prefill(
        &self,
        stream: &CudaStream,
        q: &CudaView<u16>,
        k: &CudaView<u16>,
        v: &CudaView<u16>,
        out: &mut CudaViewMut<u16>,
        seqs: &DeviceSeqs,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        sh.check()?;
        let t = seqs.tokens;
        need("attn q", q.len(), t * sh.heads * sh.head_dim)?;
        need("attn out", out.len(), t * sh.heads * sh.head_dim)?;
        need("attn k", k.len(), t * sh.kv_heads * sh.head_dim)?;
        need("attn v", v.len(), t * sh.kv_heads * sh.head_dim)?;
        let f = self.function(source::ATTN_PREFILL)?;
        let ints = [
            i32_of("sequences", seqs.num_seqs)?,
            i32_of("tokens", t)?,
            i32_of("heads", sh.heads)?,
            i32_of("kv heads", sh.kv_heads)?,
            i32_of("head_dim", sh.head_dim)?,
        ];
        let mut b = stream.launch_builder(&f);
        b.arg(q).arg(k).arg(v).arg(out).arg(&seqs.cu_seqlens);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        let warps = (t * sh.heads) as u64;
        let grid = warps.div_ceil((BLOCK / 32) as u64);
        let grid =
            u32::try_from(grid).map_err(|_| Error::msg("attn_prefill: too many tokens x heads"))?;
        // SAFETY: argument list matches the kernel; sizes and cu_seqlens validated.
        launched(source::ATTN_PREFILL, unsafe {
            b.launch(cfg((grid, 1, 1), BLOCK, 0))
        })
    }

    /// One decode step over the paged cache; q/out `[seqs, heads, d]`, caches `[slots, kv_heads, d]`.
    #[allow(clippy::too_many_arguments)]
    pub fn attn_decode_paged(
        &self,
        stream: &CudaStream,
        q: &CudaView<u16>,
        k_cache: &CudaView<u16>,
        v_cache: &CudaView<u16>,
        paging: &DevicePaging,
        out: &mut CudaViewMut<u16>,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()> {
        sh.check()?;
        let n = paging.seqs * sh.heads * sh.head_dim;
        need("decode q", q.len(), n)?;
        need("decode out", out.len(), n)?;
        let row = sh.kv_heads * sh.head_dim;
        need("k cache", k_cache.len(), paging.cache_slots * row)?;
        need("v cache", v_cache.len(), paging.cache_slots * row)?;
        let f = self.function(source::ATTN_DECODE_PAGED)?;
        let ints = [
            i32_of("heads", sh.heads)?,
            i32_of("kv heads", sh.kv_heads)?,
            i32_of("head_dim", sh.head_dim)?,
            i32_of("block size", paging.paging.block_size)?,
            i32_of("max blocks", paging.paging.max_blocks)?,
        ];
        let mut b = stream.launch_builder(&f);
        b.arg(q)
            .arg(k_cache)
            .arg(v_cache)
            .arg(&paging.block_table)
            .arg(&paging.context_lens)
            .arg(out);
        for i in &ints {
            b.arg(i);
        }
        b.arg(&scale);
        let c = cfg(
            (paging.seqs as u32, sh.heads as u32, 1),
            32 * source::DECODE_WARPS,
            0,
        );
        // SAFETY: argument list matches the kernel; the block table was validated against cache_slots.
        launched(source::ATTN_DECODE_PAGED, unsafe { b.launch(c) })
    }
}

/// Row-major GEMM through cuBLAS: y `[m, n]` = x `[m, k]` . w `[k, n]`, fp16/bf16 in and out, fp32 accumulate.
pub struct Gemm {
    blas: CudaBlas,
    dtype: DType,
}

impl Gemm {
    pub fn new(stream: Arc<CudaStream>, dtype: DType) -> Result<Gemm> {
        require_libraries(false, true)?;
        let blas = CudaBlas::new(stream).map_err(|e| Error::msg(format!("cuBLAS init: {e}")))?;
        Ok(Gemm { blas, dtype })
    }

    #[allow(clippy::too_many_arguments)]
    pub fn run<X: DevicePtr<u16>, W: DevicePtr<u16>, Y: DevicePtrMut<u16>>(
        &self,
        stream: &CudaStream,
        x: &X,
        w: &W,
        y: &mut Y,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()> {
        need("gemm x", x.len(), m * k)?;
        need("gemm w", w.len(), k * n)?;
        need("gemm y", y.len(), m * n)?;
        if m == 0 || n == 0 {
            return Ok(());
        }
        let ty = match self.dtype {
            DType::F16 => blas_sys::cudaDataType::CUDA_R_16F,
            DType::Bf16 => blas_sys::cudaDataType::CUDA_R_16BF,
        };
        let (mi, ni, ki) = (
            i32_of("gemm m", m)?,
            i32_of("gemm n", n)?,
            i32_of("gemm k", k)?,
        );
        let (alpha, beta) = (1.0f32, 0.0f32);
        let (xp, _gx) = x.device_ptr(stream);
        let (wp, _gw) = w.device_ptr(stream);
        let (yp, _gy) = y.device_ptr_mut(stream);
        // Row-major y = x.w is column-major y^T = w^T.x^T: cuBLAS sees w as an n x k matrix (ld n) times x as
        // k x m (ld k), giving y^T n x m (ld n), which is y in row-major order.
        // SAFETY: pointers come from live device buffers whose sizes were checked above.
        unsafe {
            cudarc::cublas::result::gemm_ex(
                *self.blas.handle(),
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                blas_sys::cublasOperation_t::CUBLAS_OP_N,
                ni,
                mi,
                ki,
                &alpha as *const f32 as *const c_void,
                wp as *const c_void,
                ty,
                ni,
                xp as *const c_void,
                ty,
                ki,
                &beta as *const f32 as *const c_void,
                yp as *mut c_void,
                ty,
                ni,
                blas_sys::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
            )
        }
        .map_err(|e| Error::msg(format!("cuBLAS gemm {m}x{n}x{k}: {e}")))
    }
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
