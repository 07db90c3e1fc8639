//! Index data for the launches (adapter offsets, segments, sequence boundaries, block tables, cache slots),
//! validated on the host with the checks of [`crate::reference`] before it is uploaded: a bad index on the
//! device would corrupt memory silently.

use std::sync::Arc;

use cudarc::driver::{CudaSlice, CudaStream};

use super::{drv, i32_of};
use crate::reference::{self, AdapterSlot, Paging};
use crate::{Error, Result};

/// Validated LoRA batch metadata on the device: where adapters are in the pool, and which tokens use which.
pub struct DeviceLora {
    pub tokens: usize,
    pub max_rank: usize,
    pub h_in: usize,
    pub h_out: usize,
    pub num_segs: usize,
    /// Longest segment, in tokens: sets the grid's z extent for the segmented kernels.
    pub max_seg_len: usize,
    pub(super) a_off: CudaSlice<u64>,
    pub(super) b_off: CudaSlice<u64>,
    pub(super) ranks: CudaSlice<i32>,
    pub(super) seg_start: CudaSlice<i32>,
    pub(super) seg_adapter: CudaSlice<i32>,
    pub(super) tok_adapter: CudaSlice<i32>,
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
    pub(super) cu_seqlens: CudaSlice<i32>,
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
    pub(super) block_table: CudaSlice<i32>,
    pub(super) context_lens: CudaSlice<i32>,
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
    pub(super) slots: CudaSlice<i32>,
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
