//! Dense matmuls through cuBLAS (`cublasGemmEx`), the one operation the kernels crate does not write itself.

use std::ffi::c_void;
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, sys as blas_sys};
use cudarc::driver::{CudaStream, DevicePtr, DevicePtrMut};

use super::{i32_of, need, require_libraries};
use crate::dtype::DType;
use crate::{Error, Result};

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
