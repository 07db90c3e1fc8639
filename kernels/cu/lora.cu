// LoRA for a batch whose tokens use adapters of different ranks (Punica SGMV/BGMV, S-LoRA MBGMM/MBGMV).
//
// All adapters live in one pool buffer (S-LoRA's unified pages): adapter a has A at pool + a_off[a], shape
// [ranks[a], h_in] row-major, and B at pool + b_off[a], shape [ranks[a], h_out] row-major. Both are stored
// rank-major so that the inner loops read contiguous memory: shrink walks a row of A along h_in, expand
// walks a row of B along h_out with one thread per output column.
// The rank-sized intermediate v is [tokens, max_rank] fp32: it is tiny, and fp32 avoids a second rounding.
// The arithmetic is fp32 FMA on CUDA cores, not tensor cores (Punica's SGMV uses them): simpler and exact to
// check, but slower for long prefill segments, which a profile measured with these kernels will show.

// The segmented kernels split each segment into chunks of SEG_CHUNK tokens along grid z, so one long segment
// (a single-adapter prefill of thousands of tokens) still spreads over many blocks.
#define SEG_CHUNK 64

// Segmented, matrix-matrix form (prefill): tokens are grouped so each segment s, tokens
// [seg_start[s], seg_start[s+1]), uses adapter seg_adapter[s]. Block (s, j, z) stages row j of A in shared
// memory once and reuses it for every token of its chunk, one warp per token.
extern "C" __global__ void lora_shrink_sgmv(const elem_t* __restrict__ x, const elem_t* __restrict__ pool,
                                            const u64* __restrict__ a_off, const int* __restrict__ ranks,
                                            const int* __restrict__ seg_start, const int* __restrict__ seg_adapter,
                                            float* __restrict__ v, int h_in, int max_rank) {
    extern __shared__ float a_row[];
    const int s = blockIdx.x, j = blockIdx.y, ad = seg_adapter[s];
    const int t0 = seg_start[s] + blockIdx.z * SEG_CHUNK, t1 = min(seg_start[s + 1], t0 + SEG_CHUNK);
    if (ad < 0 || j >= ranks[ad] || t0 >= t1) return;  // whole block leaves together: no barrier is skipped
    const elem_t* a = pool + a_off[ad] + (u64)j * h_in;
    for (int k = threadIdx.x; k < h_in; k += blockDim.x) a_row[k] = to_f32(a[k]);
    __syncthreads();
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int t = t0 + warp; t < t1; t += warps) {
        const elem_t* xr = x + (u64)t * h_in;
        float acc = 0.0f;
        for (int k = lane; k < h_in; k += 32) acc += to_f32(xr[k]) * a_row[k];
        acc = warp_sum(acc);
        if (lane == 0) v[(u64)t * max_rank + j] = acc;
    }
}

// y[t, :] += scale * v[t, :rank] . B for chunk blockIdx.z of segment blockIdx.x; blockIdx.y tiles h_out.
extern "C" __global__ void lora_expand_sgmv(const float* __restrict__ v, const elem_t* __restrict__ pool,
                                            const u64* __restrict__ b_off, const int* __restrict__ ranks,
                                            const int* __restrict__ seg_start, const int* __restrict__ seg_adapter,
                                            elem_t* __restrict__ y, int h_out, int max_rank, float scale) {
    const int s = blockIdx.x, ad = seg_adapter[s];
    const int col = blockIdx.y * blockDim.x + threadIdx.x;
    const int t0 = seg_start[s] + blockIdx.z * SEG_CHUNK, t1 = min(seg_start[s + 1], t0 + SEG_CHUNK);
    if (ad < 0 || col >= h_out) return;
    const int r = ranks[ad];
    const elem_t* b = pool + b_off[ad];
    for (int t = t0; t < t1; ++t) {
        const float* vr = v + (u64)t * max_rank;
        float acc = 0.0f;
        for (int j = 0; j < r; ++j) acc += vr[j] * to_f32(b[(u64)j * h_out + col]);
        elem_t* yp = y + (u64)t * h_out + col;
        *yp = from_f32(to_f32(*yp) + scale * acc);
    }
}

// Gathered, matrix-vector form (decode): token t uses adapter tok_adapter[t] (-1: no adapter). Block
// (t, jb) has one warp per rank row j = jb * warps + warp.
extern "C" __global__ void lora_shrink_bgmv(const elem_t* __restrict__ x, const elem_t* __restrict__ pool,
                                            const u64* __restrict__ a_off, const int* __restrict__ ranks,
                                            const int* __restrict__ tok_adapter, float* __restrict__ v, int h_in,
                                            int max_rank) {
    const int t = blockIdx.x, ad = tok_adapter[t];
    const int lane = threadIdx.x & 31, j = blockIdx.y * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (ad < 0 || j >= ranks[ad]) return;
    const elem_t* a = pool + a_off[ad] + (u64)j * h_in;
    const elem_t* xr = x + (u64)t * h_in;
    float acc = 0.0f;
    for (int k = lane; k < h_in; k += 32) acc += to_f32(xr[k]) * to_f32(a[k]);
    acc = warp_sum(acc);
    if (lane == 0) v[(u64)t * max_rank + j] = acc;
}

extern "C" __global__ void lora_expand_bgmv(const float* __restrict__ v, const elem_t* __restrict__ pool,
                                            const u64* __restrict__ b_off, const int* __restrict__ ranks,
                                            const int* __restrict__ tok_adapter, elem_t* __restrict__ y, int h_out,
                                            int max_rank, float scale) {
    const int t = blockIdx.x, ad = tok_adapter[t];
    const int col = blockIdx.y * blockDim.x + threadIdx.x;
    if (ad < 0 || col >= h_out) return;
    const int r = ranks[ad];
    const elem_t* b = pool + b_off[ad];
    const float* vr = v + (u64)t * max_rank;
    float acc = 0.0f;
    for (int j = 0; j < r; ++j) acc += vr[j] * to_f32(b[(u64)j * h_out + col]);
    elem_t* yp = y + (u64)t * h_out + col;
    *yp = from_f32(to_f32(*yp) + scale * acc);
}
