// Element-wise pieces of the Llama MLP and residual stream, plus a weight filler.

// gate_up is [tokens, 2 * inter] (gate then up, as one fused GEMM writes it); out[t, i] = silu(gate) * up.
extern "C" __global__ void silu_mul(const elem_t* __restrict__ gate_up, elem_t* __restrict__ out, int inter,
                                    u64 n) {
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (u64)gridDim.x * blockDim.x) {
        const u64 t = idx / inter, i = idx % inter;
        const float g = to_f32(gate_up[t * 2 * inter + i]), u = to_f32(gate_up[t * 2 * inter + inter + i]);
        out[idx] = from_f32(g / (1.0f + __expf(-g)) * u);
    }
}

// Residual connection: acc += x.
extern "C" __global__ void add_inplace(elem_t* __restrict__ acc, const elem_t* __restrict__ x, u64 n) {
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (u64)gridDim.x * blockDim.x)
        acc[idx] = from_f32(to_f32(acc[idx]) + to_f32(x[idx]));
}

// Uniform values in [-scale, scale) from a hash of (seed, index). Timing runs use it instead of zeros because
// all-zero operands draw less power and let the GPU clock higher than real weights would.
extern "C" __global__ void fill_uniform(elem_t* __restrict__ out, u64 n, u32 seed, float scale) {
    for (u64 idx = (u64)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (u64)gridDim.x * blockDim.x) {
        u32 h = (u32)idx * 0x9e3779b1u ^ (u32)(idx >> 32) * 0x85ebca6bu ^ seed * 0xc2b2ae35u;
        h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
        out[idx] = from_f32(((float)(h >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f) * scale);
    }
}
