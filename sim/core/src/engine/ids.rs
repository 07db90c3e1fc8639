//! Per-request tables of one engine. A single run knows every request up front and indexes dense vectors by
//! request id; a fleet replica sees only the requests routed to it (ids stay global), so it keeps a hash map
//! of the requests in flight instead: its memory follows what it holds, not the fleet's request count.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A multiplicative hash for u32 request ids (never iterated, so its order does not matter).
#[derive(Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = (n as u64 ^ 0x5bd1_e995).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type IdMap<T> = HashMap<u32, T, BuildHasherDefault<IdHasher>>;

/// Request id -> small index, dense or sparse.
pub(crate) enum IdIndex {
    Dense(Vec<u32>),
    Sparse(IdMap<u32>),
}

const NONE: u32 = u32::MAX;

impl IdIndex {
    /// Dense over `n` ids, or sparse if `None`.
    pub(crate) fn new(n: Option<usize>) -> IdIndex {
        match n {
            Some(n) => IdIndex::Dense(vec![NONE; n]),
            None => IdIndex::Sparse(IdMap::default()),
        }
    }

    #[inline]
    pub(crate) fn get(&self, id: u32) -> Option<u32> {
        match self {
            IdIndex::Dense(v) => v.get(id as usize).copied().filter(|&i| i != NONE),
            IdIndex::Sparse(m) => m.get(&id).copied(),
        }
    }

    #[inline]
    pub(crate) fn set(&mut self, id: u32, i: u32) {
        match self {
            IdIndex::Dense(v) => v[id as usize] = i,
            IdIndex::Sparse(m) => {
                m.insert(id, i);
            }
        }
    }

    #[inline]
    pub(crate) fn clear(&mut self, id: u32) {
        match self {
            IdIndex::Dense(v) => v[id as usize] = NONE,
            IdIndex::Sparse(m) => {
                m.remove(&id);
            }
        }
    }
}
