// Attention for Llama: causal prefill over packed variable-length sequences, and decode over a paged KV cache.
// head_dim must be a multiple of 32 and at most 256: each lane of a warp owns head_dim/32 dimensions, so a
// q.k dot product is a per-lane partial sum plus one warp reduction, and softmax is computed online (one pass).
// kv_heads divides heads (grouped-query attention; Llama 1/2 7B-30B have kv_heads == heads).
#define MAX_DPL 8

// Scatter the new tokens' K and V into the cache. Cache layout: [slots, kv_heads, head_dim] where a slot is
// block * block_size + offset; slot[t] is token t's slot (S-LoRA's token-level pages are block_size 1).
extern "C" __global__ void kv_cache_write(const elem_t* __restrict__ k, const elem_t* __restrict__ v,
                                          elem_t* __restrict__ k_cache, elem_t* __restrict__ v_cache,
                                          const int* __restrict__ slot, int kv_heads, int head_dim) {
    const int t = blockIdx.x, row = kv_heads * head_dim;
    const u64 dst = (u64)slot[t] * row, src = (u64)t * row;
    for (int i = threadIdx.x; i < row; i += blockDim.x) {
        k_cache[dst + i] = k[src + i];
        v_cache[dst + i] = v[src + i];
    }
}

// q, k, v, out: [tokens, heads or kv_heads, head_dim], sequences packed: sequence s is tokens
// [cu_seqlens[s], cu_seqlens[s+1]). One warp per (token, head); the token attends to its own sequence's
// tokens up to and including itself.
extern "C" __global__ void attn_prefill(const elem_t* __restrict__ q, const elem_t* __restrict__ k,
                                        const elem_t* __restrict__ v, elem_t* __restrict__ out,
                                        const int* __restrict__ cu_seqlens, int num_seqs, int tokens, int heads,
                                        int kv_heads, int head_dim, float scale) {
    const int lane = threadIdx.x & 31;
    const u64 wid = (u64)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (wid >= (u64)tokens * heads) return;
    const int t = (int)(wid / heads), h = (int)(wid % heads), kvh = h / (heads / kv_heads);
    int lo = 0, hi = num_seqs;  // the sequence s with cu_seqlens[s] <= t < cu_seqlens[s+1]
    while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (cu_seqlens[mid] <= t) lo = mid; else hi = mid;
    }
    const int start = cu_seqlens[lo], dpl = head_dim / 32;
    float qv[MAX_DPL], acc[MAX_DPL];
    const elem_t* qr = q + ((u64)t * heads + h) * head_dim;
    for (int i = 0; i < dpl; ++i) {
        qv[i] = to_f32(qr[lane + 32 * i]) * scale;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (int j = start; j <= t; ++j) {
        const u64 off = ((u64)j * kv_heads + kvh) * head_dim;
        float s = 0.0f;
        for (int i = 0; i < dpl; ++i) s += qv[i] * to_f32(k[off + lane + 32 * i]);
        s = warp_sum(s);
        const float m2 = fmaxf(m, s), corr = __expf(m - m2), p = __expf(s - m2);
        l = l * corr + p;
        for (int i = 0; i < dpl; ++i) acc[i] = acc[i] * corr + p * to_f32(v[off + lane + 32 * i]);
        m = m2;
    }
    elem_t* o = out + ((u64)t * heads + h) * head_dim;
    for (int i = 0; i < dpl; ++i) o[lane + 32 * i] = from_f32(acc[i] / l);
}

// Decode: q, out [seqs, heads, head_dim]; sequence b's context_lens[b] cached tokens are at positions p in
// physical slot block_table[b * max_blocks + p / block_size] * block_size + p % block_size. One block of
// DECODE_WARPS warps per (sequence, head): warp w takes positions w, w + DECODE_WARPS, ... and the partial
// softmax states are merged at the end, so one long context is read by several warps in parallel.
#define DECODE_WARPS 8
extern "C" __global__ void attn_decode_paged(const elem_t* __restrict__ q, const elem_t* __restrict__ k_cache,
                                             const elem_t* __restrict__ v_cache, const int* __restrict__ block_table,
                                             const int* __restrict__ context_lens, elem_t* __restrict__ out,
                                             int heads, int kv_heads, int head_dim, int block_size, int max_blocks,
                                             float scale) {
    __shared__ float sm_m[DECODE_WARPS], sm_l[DECODE_WARPS], sm_acc[DECODE_WARPS][32 * MAX_DPL];
    const int b = blockIdx.x, h = blockIdx.y, kvh = h / (heads / kv_heads);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, dpl = head_dim / 32;
    const elem_t* qr = q + ((u64)b * heads + h) * head_dim;
    float qv[MAX_DPL], acc[MAX_DPL];
    for (int i = 0; i < dpl; ++i) {
        qv[i] = to_f32(qr[lane + 32 * i]) * scale;
        acc[i] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    const int* table = block_table + (u64)b * max_blocks;
    for (int p = warp; p < context_lens[b]; p += DECODE_WARPS) {
        const u64 slot = (u64)table[p / block_size] * block_size + p % block_size;
        const u64 off = (slot * kv_heads + kvh) * head_dim;
        float s = 0.0f;
        for (int i = 0; i < dpl; ++i) s += qv[i] * to_f32(k_cache[off + lane + 32 * i]);
        s = warp_sum(s);
        const float m2 = fmaxf(m, s), corr = __expf(m - m2), pr = __expf(s - m2);
        l = l * corr + pr;
        for (int i = 0; i < dpl; ++i) acc[i] = acc[i] * corr + pr * to_f32(v_cache[off + lane + 32 * i]);
        m = m2;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
    for (int i = 0; i < dpl; ++i) sm_acc[warp][lane + 32 * i] = acc[i];
    __syncthreads();
    if (warp != 0) return;
    float gm = NEG_INF;
    for (int w = 0; w < DECODE_WARPS; ++w) gm = fmaxf(gm, sm_m[w]);
    float gl = 0.0f, o[MAX_DPL];
    for (int i = 0; i < dpl; ++i) o[i] = 0.0f;
    for (int w = 0; w < DECODE_WARPS; ++w) {
        if (sm_l[w] == 0.0f) continue;  // a warp that saw no position (context shorter than DECODE_WARPS)
        const float c = __expf(sm_m[w] - gm);
        gl += sm_l[w] * c;
        for (int i = 0; i < dpl; ++i) o[i] += sm_acc[w][lane + 32 * i] * c;
    }
    elem_t* orow = out + ((u64)b * heads + h) * head_dim;
    for (int i = 0; i < dpl; ++i) orow[lane + 32 * i] = from_f32(gl > 0.0f ? o[i] / gl : 0.0f);
}
