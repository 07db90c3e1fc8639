//! The device adapter store: one pool buffer, adapters placed first-fit, freed ranges coalesced. Where an
//! adapter's (layer, projection) pieces sit inside the pool is the [`AdapterLayout`].

use std::collections::HashMap;

use super::shape::{PROJECTIONS, Shape};
use crate::reference::AdapterSlot;
use crate::{Error, Result};

/// How adapters are laid out in the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterLayout {
    /// Each adapter is one block in the packed order of [`Shape::adapter_offsets`] (what the host holds),
    /// so a load is one copy. The pool can grow (the CPU's does).
    Packed,
    /// `4 x layers` sub-regions of `region` elements, one per (layer, projection); an adapter sits at the
    /// same offset in each (A `[rank, hidden]`, then B `[rank, out]`). The LoRA kernels then take one
    /// offset table for every projection, uploaded once per batch instead of `4 x layers` times; a load is
    /// `8 x layers` copies, as S-LoRA does. The region is fixed (the GPU's).
    Strided { region: usize },
}

impl AdapterLayout {
    /// Units of the free list an adapter of rank r takes: elements of the pool (packed) or of each
    /// sub-region (strided, sized for the widest projection so every one fits at the same offset).
    pub fn units(&self, s: &Shape, rank: u32) -> usize {
        match self {
            AdapterLayout::Packed => s.adapter_len(rank),
            AdapterLayout::Strided { .. } => rank as usize * (s.hidden + s.hidden.max(s.kv_row())),
        }
    }

    /// Where A and B of projection p of layer l are for an adapter placed at `off`.
    pub fn slot(&self, s: &Shape, off: usize, rank: u32, layer: usize, p: usize) -> AdapterSlot {
        let (a, b) = match self {
            AdapterLayout::Packed => {
                let (a, b) = s.adapter_offsets(rank, layer, p);
                (off + a, off + b)
            }
            AdapterLayout::Strided { region } => {
                let a = (layer * PROJECTIONS + p) * region + off;
                (a, a + rank as usize * s.hidden)
            }
        };
        AdapterSlot {
            a_off: a as u64,
            b_off: b as u64,
            rank,
        }
    }

    /// The copies that place an adapter at `off`: (offset in its packed host weights, offset in the pool,
    /// elements), A and B of every (layer, projection).
    pub fn pieces(&self, s: &Shape, off: usize, rank: u32) -> Vec<(usize, usize, usize)> {
        let r = rank as usize;
        let mut v = Vec::with_capacity(2 * PROJECTIONS * s.layers);
        for l in 0..s.layers {
            for p in 0..PROJECTIONS {
                let (ha, hb) = s.adapter_offsets(rank, l, p);
                let slot = self.slot(s, off, rank, l, p);
                v.push((ha, slot.a_off as usize, r * s.hidden));
                v.push((hb, slot.b_off as usize, r * s.proj_out(p)));
            }
        }
        v
    }

    /// Elements of a pool whose free list spans `capacity` units.
    pub fn pool_len(&self, s: &Shape, capacity: usize) -> usize {
        match self {
            AdapterLayout::Packed => capacity,
            AdapterLayout::Strided { .. } => PROJECTIONS * s.layers * capacity,
        }
    }
}

/// A resident adapter: where it is, its rank, how many units it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resident {
    pub off: usize,
    pub rank: u32,
    pub len: usize,
}

pub struct AdapterStore<B> {
    pub pool: B,
    pub layout: AdapterLayout,
    /// Free (offset, len) ranges in units of [`AdapterLayout::units`], by offset.
    pub free: Vec<(usize, usize)>,
    resident: HashMap<u32, Resident>,
    /// Units the pool holds.
    capacity: usize,
    growable: bool,
}

impl<B> AdapterStore<B> {
    /// A packed store over `pool` (`capacity` elements, all free) that grows when nothing fits.
    pub fn packed(pool: B, capacity: usize) -> AdapterStore<B> {
        AdapterStore {
            pool,
            layout: AdapterLayout::Packed,
            free: if capacity > 0 {
                vec![(0, capacity)]
            } else {
                vec![]
            },
            resident: HashMap::new(),
            capacity,
            growable: true,
        }
    }

    /// A fixed strided store over `pool` (`4 x layers x region` elements).
    pub fn strided(pool: B, region: usize) -> AdapterStore<B> {
        AdapterStore {
            pool,
            layout: AdapterLayout::Strided { region },
            free: if region > 0 {
                vec![(0, region)]
            } else {
                vec![]
            },
            resident: HashMap::new(),
            capacity: region,
            growable: false,
        }
    }

    /// Places an adapter (replacing it if present) and returns its offset. A growable store that has no
    /// free range large enough grows by the adapter's size; the caller then grows the pool to
    /// [`AdapterStore::pool_len`].
    pub fn insert(&mut self, s: &Shape, adapter: u32, rank: u32) -> Result<usize> {
        self.remove(adapter);
        let n = self.layout.units(s, rank);
        let off = match self.free.iter().position(|&(_, len)| len >= n) {
            Some(i) => {
                let (off, len) = self.free[i];
                if len == n {
                    self.free.remove(i);
                } else {
                    self.free[i] = (off + n, len - n);
                }
                off
            }
            None if self.growable => {
                self.capacity += n;
                self.capacity - n
            }
            None => {
                return Err(Error::msg(format!(
                    "adapter region full loading adapter {adapter} of rank {rank} ({} adapters resident)",
                    self.resident.len()
                )));
            }
        };
        self.resident
            .insert(adapter, Resident { off, rank, len: n });
        Ok(off)
    }

    /// Frees an adapter's range, merging it with free neighbours.
    pub fn remove(&mut self, adapter: u32) {
        let Some(Resident { off, len, .. }) = self.resident.remove(&adapter) else {
            return;
        };
        let free = &mut self.free;
        let i = free.partition_point(|&(o, _)| o < off);
        free.insert(i, (off, len));
        let mut j = i.saturating_sub(1);
        while j + 1 < free.len() && j <= i {
            if free[j].0 + free[j].1 == free[j + 1].0 {
                free[j].1 += free[j + 1].1;
                free.remove(j + 1);
            } else {
                j += 1;
            }
        }
    }

    pub fn get(&self, adapter: u32) -> Option<Resident> {
        self.resident.get(&adapter).copied()
    }

    pub fn is_resident(&self, adapter: u32) -> bool {
        self.resident.contains_key(&adapter)
    }

    /// Adapters resident.
    pub fn resident(&self) -> usize {
        self.resident.len()
    }

    /// Elements the pool buffer must hold.
    pub fn pool_len(&self, s: &Shape) -> usize {
        self.layout.pool_len(s, self.capacity)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decoder::tests::shape;

    #[test]
    fn packed_store_grows_reuses_and_coalesces() {
        let s = shape();
        let mut st = AdapterStore::packed((), 0);
        let (l8, l16) = (s.adapter_len(8), s.adapter_len(16));
        assert_eq!(st.insert(&s, 1, 8).unwrap(), 0);
        assert_eq!(st.insert(&s, 2, 16).unwrap(), l8);
        assert_eq!(st.insert(&s, 3, 8).unwrap(), l8 + l16);
        assert_eq!(st.pool_len(&s), 2 * l8 + l16);
        st.remove(1);
        st.remove(2);
        assert_eq!(st.free, vec![(0, l8 + l16)]);
        assert_eq!(st.insert(&s, 4, 16).unwrap(), 0);
        assert_eq!(st.insert(&s, 5, 8).unwrap(), l16);
        assert!(st.free.is_empty());
        assert_eq!(st.pool_len(&s), 2 * l8 + l16, "freed space reused");
    }

    #[test]
    fn strided_store_is_fixed_and_places_every_projection_at_one_offset() {
        let s = shape();
        let units = AdapterLayout::Strided { region: 0 }.units(&s, 8);
        assert_eq!(units, 8 * 128);
        let mut st = AdapterStore::strided((), 2 * units);
        assert_eq!(st.pool_len(&s), 8 * 2 * units);
        let off = st.insert(&s, 1, 8).unwrap();
        st.insert(&s, 2, 8).unwrap();
        let e = st.insert(&s, 3, 8).unwrap_err();
        assert!(e.0.contains("adapter region full"), "{e}");
        let region = 2 * units;
        let slot = st.layout.slot(&s, off, 8, 1, 2);
        assert_eq!(slot.a_off as usize, (4 + 2) * region + off);
        assert_eq!(slot.b_off - slot.a_off, 8 * 64);
        // Every piece of the adapter stays inside its sub-region, for the widest projection too.
        for p in 0..PROJECTIONS {
            let sl = st.layout.slot(&s, region - units, 8, 0, p);
            assert!(sl.b_off as usize + 8 * s.proj_out(p) <= (p + 1) * region);
        }
    }
}
