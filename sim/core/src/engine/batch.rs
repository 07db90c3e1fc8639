//! The running batch. Every running request gains one token per decode step, so its progress is derived from
//! the global step count instead of being updated request by request: a decode step costs O(1) plus
//! O(log n) per request that finishes, whatever the batch size.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use super::clock::Seq;
use super::ids::IdIndex;
use crate::time::Nanos;

/// A running (decoding) request.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Running {
    pub(crate) id: u32,
    pub(crate) input: u32,
    pub(crate) output: u32,
    /// Output tokens admission reserved memory for.
    pub(crate) budget: u32,
    pub(crate) adapter: u32,
    pub(crate) rank: u32,
    /// Decode steps completed before its first token (its prefill's end).
    join_step: u64,
    first_token: Nanos,
    /// Gap between its first and second token (set at its first decode step).
    first_gap: Nanos,
}

impl Running {
    pub(crate) fn new(
        id: u32,
        input: u32,
        output: u32,
        budget: u32,
        adapter: u32,
        rank: u32,
    ) -> Self {
        Running {
            id,
            input,
            output,
            budget,
            adapter,
            rank,
            join_step: 0,
            first_token: 0,
            first_gap: 0,
        }
    }

    /// Tokens generated after `steps` decode steps.
    pub(crate) fn generated(&self, steps: u64) -> u32 {
        1 + (steps - self.join_step) as u32
    }

    /// Tokens in its KV cache after `steps` decode steps.
    pub(crate) fn ctx(&self, steps: u64) -> u32 {
        self.input + self.generated(steps)
    }

    /// The decode step that produces its last token.
    fn end_step(&self) -> u64 {
        self.join_step + self.output as u64 - 1
    }

    /// The decode step at which its reserved output budget would run out: its remaining reservation is
    /// this minus the step count, so ordering by it orders by remaining reservation at every step.
    fn budget_step(&self) -> u64 {
        self.join_step + self.budget as u64 - 1
    }

    /// (KV held now, slots still to come) at `steps`, for the admission check.
    pub(crate) fn reservation(&self, steps: u64) -> (u64, u64) {
        (
            self.ctx(steps) as u64,
            (self.budget - self.generated(steps)) as u64,
        )
    }
}

/// Suffix maxima of the gaps between consecutive decode steps: `(step, gap)` with steps increasing and
/// gaps strictly decreasing, so the first entry at or after step `a` is the largest gap in `a..=now`.
#[derive(Default)]
struct GapMax {
    stack: Vec<(u64, Nanos)>,
}

impl GapMax {
    fn push(&mut self, step: u64, gap: Nanos) {
        while self.stack.last().is_some_and(|&(_, g)| g <= gap) {
            self.stack.pop();
        }
        self.stack.push((step, gap));
    }

    /// The largest gap of steps `from..=` the last pushed (0 if none).
    fn since(&self, from: u64) -> Nanos {
        let i = self.stack.partition_point(|&(k, _)| k < from);
        self.stack.get(i).map_or(0, |&(_, g)| g)
    }
}

pub(crate) struct Batch {
    running: Vec<Running>,
    /// Per request id: its index in `running`.
    slot: IdIndex,
    /// Decode steps completed.
    pub(crate) steps: u64,
    /// (end step, id) of running requests; entries of requests squashed since are skipped when popped.
    finishes: BinaryHeap<Reverse<(u64, u32)>>,
    /// (budget step, id) of running requests, by budget step descending: the admission check's order
    /// (remaining reservation descending), kept without sorting since every request ages alike.
    /// Each entry also carries `input + 1 - join_step` (its KV held is that plus the step count), so the
    /// peak rule over the batch reads one contiguous list (`claim`).
    by_budget: Vec<(u64, u32, i64)>,
    gaps: GapMax,
    last_decode_end: Nanos,
    /// Joined since the last decode step (their first gap is set at the next one).
    fresh: Vec<u32>,
    /// Requests admitted at the current merge, prefilling, and their prompt tokens.
    pub(crate) admitted: Vec<u32>,
    pub(crate) admitted_tokens: u64,
    pub(crate) steps_since_merge: u32,
    /// Sums a decode step's cost is computed from, kept incrementally: total context, sum of ranks over
    /// requests with an adapter, how many have one, and the distinct adapters' count and rank sum.
    pub(crate) ctx_sum: u64,
    pub(crate) token_rank_sum: u64,
    pub(crate) adapter_seqs: u64,
    pub(crate) distinct_rank_sum: u64,
    pub(crate) distinct: u64,
    /// Running requests with an adapter, by rank (the largest rank pads S-LoRA's kernels).
    ranks: BTreeMap<u32, u32>,
}

impl Batch {
    /// A batch of requests with ids below `requests` (dense tables), or of any ids (`None`: a map of the
    /// running ones).
    pub(crate) fn new(requests: Option<usize>) -> Batch {
        Batch {
            running: Vec::new(),
            slot: IdIndex::new(requests),
            steps: 0,
            finishes: BinaryHeap::new(),
            by_budget: Vec::new(),
            gaps: GapMax::default(),
            last_decode_end: 0,
            fresh: Vec::new(),
            admitted: Vec::new(),
            admitted_tokens: 0,
            steps_since_merge: 0,
            ctx_sum: 0,
            token_rank_sum: 0,
            adapter_seqs: 0,
            distinct_rank_sum: 0,
            distinct: 0,
            ranks: BTreeMap::new(),
        }
    }

    /// Counts a running request with an adapter of `rank` in (`joined`) or out.
    pub(crate) fn count_rank(&mut self, rank: u32, joined: bool) {
        if joined {
            *self.ranks.entry(rank).or_insert(0) += 1;
        } else if let Some(n) = self.ranks.get_mut(&rank) {
            *n -= 1;
            if *n == 0 {
                self.ranks.remove(&rank);
            }
        }
    }

    /// The largest rank among running requests with an adapter (0 if none).
    pub(crate) fn max_rank(&self) -> u64 {
        self.ranks.last_key_value().map_or(0, |(&r, _)| r as u64)
    }

    pub(crate) fn len(&self) -> usize {
        self.running.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.running.is_empty()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Running> + '_ {
        self.running.iter()
    }

    pub(crate) fn get(&self, id: u32) -> Option<&Running> {
        self.slot.get(id).map(|i| &self.running[i as usize])
    }

    /// Every running request's (KV held, slots still to come), by slots to come descending.
    pub(crate) fn reservations(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.by_budget.iter().map(|&(_, id, _)| {
            self.running[self.slot.get(id).expect("running") as usize].reservation(self.steps)
        })
    }

    /// The admission rule's peak over the running requests (`admission::peak` of `reservations`), from
    /// the budget-ordered list alone: KV held = input + generated, remaining = budget step - steps.
    pub(crate) fn claim(&self) -> u64 {
        let (mut cum, mut best) = (0u64, 0u64);
        for (i, &(budget_step, _, base)) in self.by_budget.iter().enumerate() {
            cum += (base + self.steps as i64) as u64;
            best = best.max(cum + (budget_step - self.steps) * (i as u64 + 1));
        }
        best
    }

    /// The decode sequences of the next step.
    pub(crate) fn seqs(&self) -> impl Iterator<Item = Seq> + '_ {
        let steps = self.steps;
        self.running.iter().map(move |r| Seq {
            request: r.id,
            new_tokens: 1,
            context: r.ctx(steps),
            adapter: r.adapter,
            rank: r.rank,
        })
    }

    /// Adds a request whose prefill (its first token) ended at `now`. The caller keeps the sums.
    pub(crate) fn push(&mut self, mut r: Running, now: Nanos) {
        r.join_step = self.steps;
        r.first_token = now;
        r.first_gap = 0;
        self.slot.set(r.id, self.running.len() as u32);
        self.finishes.push(Reverse((r.end_step(), r.id)));
        let key = (
            r.budget_step(),
            r.id,
            r.input as i64 + 1 - r.join_step as i64,
        );
        let at = self.by_budget.partition_point(|&(b, _, _)| b >= key.0);
        self.by_budget.insert(at, key);
        self.fresh.push(r.id);
        self.running.push(r);
    }

    /// Removes a running request. The caller keeps the sums.
    pub(crate) fn remove(&mut self, id: u32) -> Option<Running> {
        let i = self.slot.get(id)?;
        self.slot.clear(id);
        let r = self.running.swap_remove(i as usize);
        let b = r.budget_step();
        let from = self.by_budget.partition_point(|&(x, _, _)| x > b);
        let at = from
            + self.by_budget[from..]
                .iter()
                .position(|&(x, i, _)| (x, i) == (b, id))
                .expect("listed");
        self.by_budget.remove(at);
        if let Some(moved) = self.running.get(i as usize) {
            self.slot.set(moved.id, i);
        }
        Some(r)
    }

    /// A decode step ended at `now`: every running request has one more token.
    pub(crate) fn step(&mut self, now: Nanos) {
        self.ctx_sum += self.running.len() as u64;
        self.steps += 1;
        self.gaps.push(self.steps, now - self.last_decode_end);
        self.last_decode_end = now;
        for id in self.fresh.drain(..) {
            if let Some(i) = self.slot.get(id) {
                let r = &mut self.running[i as usize];
                r.first_gap = now - r.first_token;
            }
        }
    }

    /// The next request whose last token the latest step produced, if any.
    pub(crate) fn pop_finished(&mut self) -> Option<u32> {
        while let Some(&Reverse((end, id))) = self.finishes.peek() {
            if end > self.steps {
                return None;
            }
            self.finishes.pop();
            // Skip a request squashed since (or re-admitted with another end step).
            if self.get(id).is_some_and(|r| r.end_step() == end) {
                return Some(id);
            }
        }
        None
    }

    /// The longest gap between two of `r`'s tokens, now that it has produced its last one.
    pub(crate) fn max_gap(&self, r: &Running) -> Nanos {
        if r.output <= 1 {
            return 0;
        }
        r.first_gap.max(self.gaps.since(r.join_step + 2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_maxima_answer_the_largest_gap_since_a_step() {
        let mut g = GapMax::default();
        for (k, gap) in [(1, 5), (2, 9), (3, 4), (4, 6), (5, 2)] {
            g.push(k, gap);
        }
        assert_eq!(g.since(1), 9);
        assert_eq!(g.since(3), 6);
        assert_eq!(g.since(5), 2);
        assert_eq!(g.since(6), 0);
    }

    #[test]
    fn progress_follows_the_step_count() {
        let mut b = Batch::new(Some(4));
        b.push(Running::new(2, 10, 3, 3, 0, 0), 100);
        b.step(130);
        assert_eq!(b.get(2).unwrap().generated(b.steps), 2);
        assert_eq!(b.get(2).unwrap().ctx(b.steps), 12);
        assert_eq!(b.pop_finished(), None);
        b.push(Running::new(3, 1, 2, 2, 0, 0), 140);
        b.step(190);
        // Request 2: gaps 30 and 60; request 3: 50.
        assert_eq!(b.pop_finished(), Some(2));
        assert_eq!(b.pop_finished(), Some(3));
        assert_eq!(b.max_gap(b.get(2).unwrap()), 60);
        assert_eq!(b.max_gap(b.get(3).unwrap()), 50);
        b.remove(2);
        assert!(b.get(2).is_none() && b.get(3).is_some());
        let held: Vec<(u64, u64)> = b.reservations().collect();
        assert_eq!(b.claim(), crate::engine::admission::peak(&held));
        // Request 3 at its last token holds 3 slots and reserves none; request 1 joins (40 + 9, budget 12).
        assert_eq!(held, vec![(3, 0)]);
        b.push(Running::new(1, 40, 9, 12, 0, 0), 200);
        let held: Vec<(u64, u64)> = b.reservations().collect();
        assert_eq!(held, vec![(41, 11), (3, 0)]);
        // max(41 + 11 x 1, 44 + 0 x 2)
        assert_eq!(b.claim(), 52);
        assert_eq!(b.claim(), crate::engine::admission::peak(&held));
    }
}
