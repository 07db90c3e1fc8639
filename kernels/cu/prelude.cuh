// Shared by every kernel family; the Rust side prepends it to each .cu file before NVRTC compiles it.
// No #include: NVRTC then needs no CUDA headers on the host, only libnvrtc. fp16/bf16 are carried as raw
// 16-bit words and converted by hand, so one source serves both dtypes (ELEM_BF16 picks the conversion).

typedef unsigned short elem_t;
typedef unsigned int u32;
typedef unsigned long long u64;

// INFINITY comes from math headers NVRTC is not given.
#define NEG_INF __int_as_float(0xff800000)

__device__ __forceinline__ float to_f32(elem_t v) {
#ifdef ELEM_BF16
    return __uint_as_float(((u32)v) << 16);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v));
    return f;
#endif
}

__device__ __forceinline__ elem_t from_f32(float f) {
#ifdef ELEM_BF16
    u32 u = __float_as_uint(f);
    if ((u & 0x7f800000u) == 0x7f800000u && (u & 0x007fffffu)) return (elem_t)((u >> 16) | 0x40u);  // keep NaN a NaN
    u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
    return (elem_t)(u >> 16);
#else
    elem_t h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the result.
__device__ __forceinline__ float block_sum(float v) {
    __shared__ float partial[32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // partial[] may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    v = lane < warps ? partial[lane] : 0.0f;
    return warp_sum(v);
}
