// RMSNorm (Llama): y = x / sqrt(mean(x^2) + eps) * w, one block per token row, statistics in fp32.
extern "C" __global__ void rms_norm(const elem_t* __restrict__ x, const elem_t* __restrict__ w,
                                    elem_t* __restrict__ y, int h, float eps) {
    const elem_t* xr = x + (u64)blockIdx.x * h;
    elem_t* yr = y + (u64)blockIdx.x * h;
    float ss = 0.0f;
    for (int k = threadIdx.x; k < h; k += blockDim.x) {
        const float f = to_f32(xr[k]);
        ss += f * f;
    }
    const float inv = rsqrtf(block_sum(ss) / (float)h + eps);
    for (int k = threadIdx.x; k < h; k += blockDim.x) yr[k] = from_f32(to_f32(xr[k]) * inv * to_f32(w[k]));
}
