//! What the router sees at an arrival instant (the information model, docs/fleet.md): per replica, the
//! requests routed to it and not yet finished (outstanding requests, and their tokens: prompt + predicted
//! output) and which adapters it holds in GPU memory (resident or loading), as a replica would report them.
//! Nothing else: not its queue order, its memory, its batch or its clock.

/// Minimum over replicas of a load key, with the lowest index among equals: a segment tree, O(log n) per
/// update, O(1) per query.
#[derive(Clone, Debug)]
pub struct MinTree {
    n: usize,
    /// Leaf i at size + i; each node holds the index of its subtree's minimum.
    node: Vec<u32>,
    key: Vec<f64>,
    size: usize,
}

impl MinTree {
    pub fn new(keys: Vec<f64>) -> MinTree {
        let n = keys.len();
        let size = n.next_power_of_two().max(1);
        let mut t = MinTree {
            n,
            node: vec![u32::MAX; 2 * size],
            key: keys,
            size,
        };
        for i in 0..n {
            t.node[size + i] = i as u32;
        }
        for p in (1..size).rev() {
            t.node[p] = t.better(t.node[2 * p], t.node[2 * p + 1]);
        }
        t
    }

    fn better(&self, a: u32, b: u32) -> u32 {
        match (a, b) {
            (u32::MAX, b) => b,
            (a, u32::MAX) => a,
            (a, b) => {
                if self.key[b as usize] < self.key[a as usize] {
                    b
                } else {
                    a
                }
            }
        }
    }

    pub fn set(&mut self, i: usize, k: f64) {
        debug_assert!(i < self.n);
        self.key[i] = k;
        let mut p = (self.size + i) / 2;
        while p >= 1 {
            self.node[p] = self.better(self.node[2 * p], self.node[2 * p + 1]);
            p /= 2;
        }
    }

    pub fn key(&self, i: usize) -> f64 {
        self.key[i]
    }

    /// The index with the smallest key (the lowest index among equals).
    pub fn argmin(&self) -> usize {
        if self.size == 1 {
            return 0;
        }
        self.node[1] as usize
    }
}

/// The least-loaded indexes, brought up to date when asked (a router that never asks costs nothing).
struct Least {
    by_requests: MinTree,
    by_tokens: MinTree,
    /// Replicas whose load changed since the last question.
    dirty: Vec<u32>,
    is_dirty: Vec<bool>,
}

/// The router's view of the fleet.
pub struct FleetView {
    /// Per replica: requests routed and not finished (or rejected) yet.
    outstanding: Vec<u32>,
    /// Per replica: their prompt + predicted output tokens.
    tokens: Vec<u64>,
    /// Per replica: relative capacity (1 for a homogeneous fleet); loads are compared divided by it.
    capacity: Vec<f64>,
    least: std::cell::RefCell<Least>,
    /// Per replica, a bit per adapter: held (resident or loading).
    held: Vec<Vec<u64>>,
    /// Per adapter: the replicas holding it (in the order they started to).
    holders: Vec<Vec<u32>>,
    total_outstanding: u64,
}

impl FleetView {
    pub fn new(capacity: Vec<f64>, adapters: usize) -> FleetView {
        let n = capacity.len();
        let words = adapters.div_ceil(64);
        FleetView {
            outstanding: vec![0; n],
            tokens: vec![0; n],
            least: std::cell::RefCell::new(Least {
                by_requests: MinTree::new(vec![0.0; n]),
                by_tokens: MinTree::new(vec![0.0; n]),
                dirty: Vec::new(),
                is_dirty: vec![false; n],
            }),
            capacity,
            held: vec![vec![0; words]; n],
            holders: vec![Vec::new(); adapters],
            total_outstanding: 0,
        }
    }

    pub fn replicas(&self) -> usize {
        self.outstanding.len()
    }

    pub fn outstanding(&self, r: usize) -> u32 {
        self.outstanding[r]
    }

    pub fn outstanding_tokens(&self, r: usize) -> u64 {
        self.tokens[r]
    }

    /// Outstanding requests over all replicas.
    pub fn total_outstanding(&self) -> u64 {
        self.total_outstanding
    }

    /// Relative capacity of replica `r` (1 in a homogeneous fleet).
    pub fn capacity(&self, r: usize) -> f64 {
        self.capacity[r]
    }

    pub fn total_capacity(&self) -> f64 {
        self.capacity.iter().sum()
    }

    /// Outstanding requests divided by capacity.
    pub fn load(&self, r: usize) -> f64 {
        self.outstanding[r] as f64 / self.capacity[r]
    }

    /// The replica with the fewest outstanding requests per unit of capacity (lowest index among equals).
    pub fn least_outstanding(&self) -> usize {
        self.refresh().by_requests.argmin()
    }

    /// The replica with the fewest outstanding tokens per unit of capacity (lowest index among equals).
    pub fn least_outstanding_tokens(&self) -> usize {
        self.refresh().by_tokens.argmin()
    }

    fn refresh(&self) -> std::cell::RefMut<'_, Least> {
        let mut l = self.least.borrow_mut();
        let l2 = &mut *l;
        for r in l2.dirty.drain(..) {
            let r = r as usize;
            l2.is_dirty[r] = false;
            let c = self.capacity[r];
            l2.by_requests.set(r, self.outstanding[r] as f64 / c);
            l2.by_tokens.set(r, self.tokens[r] as f64 / c);
        }
        l
    }

    /// Whether replica `r` holds `adapter` (resident or loading).
    pub fn holds(&self, r: usize, adapter: u32) -> bool {
        self.held[r]
            .get(adapter as usize / 64)
            .is_some_and(|w| w >> (adapter % 64) & 1 == 1)
    }

    /// The replicas holding `adapter`.
    pub fn holders(&self, adapter: u32) -> &[u32] {
        self.holders
            .get(adapter as usize)
            .map_or(&[], |v| v.as_slice())
    }

    /// A request of `tokens` (prompt + predicted output) was routed to `r`.
    pub fn routed(&mut self, r: usize, tokens: u64) {
        self.outstanding[r] += 1;
        self.tokens[r] += tokens;
        self.total_outstanding += 1;
        self.update(r);
    }

    /// A request of `tokens` on `r` became final.
    pub fn done(&mut self, r: usize, tokens: u64) {
        self.outstanding[r] -= 1;
        self.tokens[r] -= tokens;
        self.total_outstanding -= 1;
        self.update(r);
    }

    fn update(&mut self, r: usize) {
        let l = self.least.get_mut();
        if !l.is_dirty[r] {
            l.is_dirty[r] = true;
            l.dirty.push(r as u32);
        }
    }

    pub(crate) fn set_held(&mut self, r: usize, adapter: u32, held: bool) {
        let (w, b) = (adapter as usize / 64, adapter % 64);
        let was = self.held[r][w] >> b & 1 == 1;
        if was == held {
            return;
        }
        self.held[r][w] ^= 1 << b;
        let list = &mut self.holders[adapter as usize];
        if held {
            list.push(r as u32);
        } else if let Some(i) = list.iter().position(|&x| x == r as u32) {
            list.remove(i);
        }
    }

    /// Adapters held by at least one replica, and the sum over adapters of their holders.
    pub fn replication(&self) -> (usize, usize) {
        let held = self.holders.iter().filter(|h| !h.is_empty()).count();
        let total = self.holders.iter().map(Vec::len).sum();
        (held, total)
    }

    /// The largest number of replicas holding one adapter.
    pub fn max_replication(&self) -> usize {
        self.holders.iter().map(Vec::len).max().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_tree_keeps_the_lowest_index_among_equals() {
        let mut t = MinTree::new(vec![3.0, 1.0, 1.0, 5.0, 0.5]);
        assert_eq!(t.argmin(), 4);
        t.set(4, 2.0);
        assert_eq!(t.argmin(), 1);
        t.set(1, 9.0);
        assert_eq!(t.argmin(), 2);
        let one = MinTree::new(vec![7.0]);
        assert_eq!(one.argmin(), 0);
    }

    #[test]
    fn holders_follow_loads_and_evictions() {
        let mut v = FleetView::new(vec![1.0; 3], 70);
        v.set_held(2, 65, true);
        v.set_held(0, 65, true);
        v.set_held(0, 65, true);
        assert_eq!(v.holders(65), &[2, 0]);
        assert!(v.holds(0, 65) && !v.holds(1, 65));
        v.set_held(2, 65, false);
        assert_eq!(v.holders(65), &[0]);
        assert_eq!(v.replication(), (1, 1));
    }
}
