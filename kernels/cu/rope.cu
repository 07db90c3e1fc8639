// Rotary position embedding as Llama (HF) applies it: dimension i pairs with i + d/2 ("rotate_half"),
// frequency theta^(-2i/d). q is [tokens, heads_q, d], k is [tokens, heads_k, d], rotated in place; one block per
// token. The angle is computed in fp32 from the integer position, so long contexts lose no precision to a table.
extern "C" __global__ void rope_neox(elem_t* __restrict__ q, elem_t* __restrict__ k, const int* __restrict__ pos,
                                     int heads_q, int heads_k, int head_dim, float theta) {
    const int t = blockIdx.x, half = head_dim / 2;
    const float p = (float)pos[t];
    const int pairs = (heads_q + heads_k) * half;
    for (int idx = threadIdx.x; idx < pairs; idx += blockDim.x) {
        const int head = idx / half, i = idx % half;
        elem_t* base = head < heads_q ? q + ((u64)t * heads_q + head) * head_dim
                                      : k + ((u64)t * heads_k + (head - heads_q)) * head_dim;
        const float inv_freq = powf(theta, -2.0f * (float)i / (float)head_dim);
        float sn, cs;
        sincosf(p * inv_freq, &sn, &cs);
        const float x0 = to_f32(base[i]), x1 = to_f32(base[i + half]);
        base[i] = from_f32(x0 * cs - x1 * sn);
        base[i + half] = from_f32(x1 * cs + x0 * sn);
    }
}
