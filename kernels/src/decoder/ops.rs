//! The operations a forward pass is made of. Buffers are allocated once and reused (a GPU allocation
//! inside a timed iteration would be measured), so every operation writes into a destination and takes
//! its row counts explicitly: a buffer may be longer than the batch in it.

use super::batch::Layout;
use super::shape::Shape;
use super::store::AdapterLayout;
use crate::Result;
use crate::reference::AttnShape;

pub trait Ops {
    /// Model data: activations, weights, the KV cache, the adapter pool (f32 on the CPU, fp16/bf16 words
    /// on the GPU).
    type Buf;
    /// The embedding table, in host memory on both (rows are gathered on the host).
    type Embed;
    /// An adapter's weights in host memory, packed as [`Shape::adapter_offsets`] (pinned on the GPU).
    type HostAdapter: ?Sized;
    /// A batch's index data, validated (on the GPU: uploaded).
    type Meta;

    fn alloc(&mut self, n: usize) -> Result<Self::Buf>;
    fn len(buf: &Self::Buf) -> usize;
    /// Makes `buf` hold at least `n` elements; its contents need not survive (scratch buffers).
    fn reserve(&mut self, buf: &mut Self::Buf, n: usize) -> Result<()>;
    /// Makes `buf` hold at least `n` elements, keeping its contents (a growing KV cache or adapter pool).
    fn grow(&mut self, buf: &mut Self::Buf, n: usize) -> Result<()>;
    /// A weight tensor from host values.
    fn upload_tensor(&mut self, v: Vec<f32>) -> Result<Self::Buf>;
    fn embed_table(&mut self, v: Vec<f32>) -> Result<Self::Embed>;
    fn host_adapter(&mut self, w: Vec<f32>) -> Result<Box<Self::HostAdapter>>;
    fn host_len(host: &Self::HostAdapter) -> usize;

    /// Validates (and uploads) a batch's index data.
    fn upload(&mut self, lay: &Layout) -> Result<Self::Meta>;
    /// x `[tokens, hidden]` = the tokens' embedding rows.
    fn embed(
        &mut self,
        table: &Self::Embed,
        tokens: &[u32],
        hidden: usize,
        x: &mut Self::Buf,
    ) -> Result<()>;
    /// y = RMSNorm(x) * w over `rows` rows of `w`'s length.
    fn rms_norm(
        &mut self,
        x: &Self::Buf,
        w: &Self::Buf,
        y: &mut Self::Buf,
        rows: usize,
        eps: f32,
    ) -> Result<()>;
    /// y `[m, n]` = x `[m, k]` . w `[k, n]`.
    fn gemm(
        &mut self,
        x: &Self::Buf,
        w: &Self::Buf,
        y: &mut Self::Buf,
        m: usize,
        n: usize,
        k: usize,
    ) -> Result<()>;
    /// y += scale * x . A^T . B for every token's adapter, for the (layer, projection) `group`
    /// (layer * 4 + projection).
    #[allow(clippy::too_many_arguments)]
    fn lora(
        &mut self,
        meta: &Self::Meta,
        pool: &Self::Buf,
        group: usize,
        x: &Self::Buf,
        y: &mut Self::Buf,
        h_in: usize,
        h_out: usize,
    ) -> Result<()>;
    /// Rotary embedding of the batch's q and k at its positions.
    fn rope(
        &mut self,
        meta: &Self::Meta,
        q: &mut Self::Buf,
        k: &mut Self::Buf,
        s: &Shape,
    ) -> Result<()>;
    /// Writes the batch's K and V rows into their cache slots.
    fn kv_write(
        &mut self,
        meta: &Self::Meta,
        k: &Self::Buf,
        v: &Self::Buf,
        k_cache: &mut Self::Buf,
        v_cache: &mut Self::Buf,
        sh: AttnShape,
    ) -> Result<()>;
    /// Causal attention over the packed prefill rows (q/out `[rows, heads, d]`, k/v `[rows, kv_heads, d]`).
    #[allow(clippy::too_many_arguments)]
    fn attn_prefill(
        &mut self,
        meta: &Self::Meta,
        q: &Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        out: &mut Self::Buf,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()>;
    /// Paged attention of the decode rows over the cache.
    #[allow(clippy::too_many_arguments)]
    fn attn_decode(
        &mut self,
        meta: &Self::Meta,
        q: &Self::Buf,
        k_cache: &Self::Buf,
        v_cache: &Self::Buf,
        out: &mut Self::Buf,
        sh: AttnShape,
        scale: f32,
    ) -> Result<()>;
    /// out `[rows, inter]` = silu(gate) * up from gate_up `[rows, 2 * inter]`.
    fn silu_mul(
        &mut self,
        gate_up: &Self::Buf,
        out: &mut Self::Buf,
        rows: usize,
        inter: usize,
    ) -> Result<()>;
    /// acc[..n] += x[..n].
    fn add(&mut self, acc: &mut Self::Buf, x: &Self::Buf, n: usize) -> Result<()>;
    /// Copies rows `from..from + rows` of src to rows `to..` of dst (rows `width` wide).
    fn copy_rows(
        &mut self,
        src: &Self::Buf,
        from: usize,
        dst: &mut Self::Buf,
        to: usize,
        rows: usize,
        width: usize,
    ) -> Result<()>;
    /// The first n values of a buffer, on the host, as f32 (waits for the work before it).
    fn read(&mut self, buf: &Self::Buf, n: usize) -> Result<Vec<f32>>;
    /// Copies an adapter's host weights into the pool where it was placed.
    #[allow(clippy::too_many_arguments)]
    fn copy_adapter(
        &mut self,
        pool: &mut Self::Buf,
        layout: AdapterLayout,
        s: &Shape,
        off: usize,
        rank: u32,
        host: &Self::HostAdapter,
    ) -> Result<()>;
}
