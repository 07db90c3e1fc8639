//! Admission: the memory check a scheduler's choice must pass (S-LoRA's reservation rule).
//!
//! With requests sorted by remaining output descending, request i's future needs peak at
//! `max_i (sum_{j<=i} held_j + remaining_i * i)` KV slots (all requests grow one slot per step and free
//! their slots when they finish). A request is admitted only if that peak over the running batch plus the
//! new requests, plus every adapter in use or loading, fits the pool. Idle cached adapters do not count:
//! they are evicted when the memory is actually needed.

use super::api::{CachePolicy, Residency};
use super::clock::Clock;
use super::config::EngineConfig;
use super::outcome::{Abort, Outcome};
use super::state::State;
use crate::cost::BatchShape;
use crate::time::Nanos;
use crate::workload::{Request, Workload};

/// Peak future KV use of `held` (sorted by remaining descending).
pub(crate) fn peak(held: &[(u64, u64)]) -> u64 {
    let mut cum = 0;
    let mut best = 0;
    for (i, &(len, rem)) in held.iter().enumerate() {
        cum += len;
        best = best.max(cum + rem * (i as u64 + 1));
    }
    best
}

/// `peak` of `held` with `cand` inserted, without inserting it.
fn peak_with(held: &[(u64, u64)], cand: (u64, u64)) -> u64 {
    let (mut cum, mut best, mut n, mut placed) = (0u64, 0u64, 0u64, false);
    for &(len, rem) in held {
        if !placed && cand.1 > rem {
            placed = true;
            cum += cand.0;
            n += 1;
            best = best.max(cum + cand.1 * n);
        }
        cum += len;
        n += 1;
        best = best.max(cum + rem * n);
    }
    if !placed {
        cum += cand.0;
        n += 1;
        best = best.max(cum + cand.1 * n);
    }
    best
}

fn insert(held: &mut Vec<(u64, u64)>, cand: (u64, u64)) {
    let at = held.partition_point(|&(_, rem)| rem >= cand.1);
    held.insert(at, cand);
}

/// Why a request can or cannot be admitted now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    Yes,
    /// The running batch is at `max_batch`.
    BatchFull,
    /// Its prompt would push this merge's prefill past `max_prefill_tokens`.
    PrefillTokens,
    /// Its KV reservation does not fit.
    Memory,
    /// Its KV reservation fits, but not together with its adapter, which is not resident or in use.
    AdapterMemory,
}

/// What a scheduler's `select` works with: the requests, the adapters' state, and `try_admit`.
pub struct Admission<'a> {
    w: &'a Workload,
    cfg: &'a EngineConfig,
    st: &'a mut State,
    cache: &'a mut dyn CachePolicy,
    clock: &'a mut dyn Clock,
}

impl<'a> Admission<'a> {
    pub(crate) fn new(
        w: &'a Workload,
        cfg: &'a EngineConfig,
        st: &'a mut State,
        cache: &'a mut dyn CachePolicy,
        clock: &'a mut dyn Clock,
    ) -> Admission<'a> {
        Admission {
            w,
            cfg,
            st,
            cache,
            clock,
        }
    }

    pub fn now(&self) -> Nanos {
        self.st.now
    }

    pub fn request(&self, id: u32) -> &Request {
        &self.w.requests[id as usize]
    }

    pub fn workload(&self) -> &Workload {
        self.w
    }

    /// Whether the adapter is resident now (base-model requests: always).
    pub fn adapter_resident(&self, adapter: u32) -> bool {
        self.st
            .adapters
            .get(adapter as usize)
            .is_none_or(|a| a.residency == Residency::Resident)
    }

    /// Requests admitted so far at this merge.
    pub fn admitted(&self) -> usize {
        self.st.batch.admitted.len()
    }

    /// Slots the request's adapter would add to the pinned set (0 if already in use or loading).
    fn extra_adapter_slots(&self, r: &Request) -> u64 {
        match self.st.adapters.get(r.adapter as usize) {
            Some(a) if a.refs == 0 && a.residency != Residency::Loading => a.slots,
            _ => 0,
        }
    }

    /// Whether `id` could be admitted now, and if not, why.
    pub fn fit(&self, id: u32) -> Fit {
        let r = &self.w.requests[id as usize];
        let st = &self.st;
        if st.batch.len() + st.batch.admitted.len() >= self.cfg.max_batch as usize {
            return Fit::BatchFull;
        }
        if st.batch.admitted_tokens + r.input as u64 > self.cfg.max_prefill_tokens {
            return Fit::PrefillTokens;
        }
        let kv = peak_with(
            &st.mem.reserve,
            (r.input as u64 + 1, self.cfg.budget(r) as u64 - 1),
        ) + st.mem.pinned_slots();
        let extra = self.extra_adapter_slots(r);
        if kv + extra <= self.cfg.pool_slots {
            Fit::Yes
        } else if extra > 0 && kv <= self.cfg.pool_slots {
            Fit::AdapterMemory
        } else {
            Fit::Memory
        }
    }

    /// Counts a merge that left `why` as the reason its first waiting request waited.
    pub(crate) fn note_blocked(&mut self, why: Fit) {
        let b = &mut self.st.stats.blocked;
        match why {
            Fit::Yes => b.policy += 1,
            Fit::BatchFull => b.batch += 1,
            Fit::PrefillTokens => b.prefill_tokens += 1,
            Fit::Memory => b.memory += 1,
            Fit::AdapterMemory => b.adapter_memory += 1,
        }
    }

    pub fn fits(&self, id: u32) -> bool {
        self.fit(id) == Fit::Yes
    }

    /// The output tokens admission reserves for `id` (`--reserve`: its true output, S-LoRA's max new
    /// tokens, by default).
    pub fn budget(&self, id: u32) -> u32 {
        self.cfg.budget(&self.w.requests[id as usize])
    }

    /// Whether `id`'s memory would fit after `steps` more decode steps if nothing changed but time: the
    /// running requests and those admitted at this merge, plus `with` (admitted now too), each either gone
    /// (finished within `steps`) or holding `steps` more tokens. The adapters pinned now stay pinned (their
    /// users' finishing may free them sooner). For a scheduler that lets a younger request go first only
    /// where the oldest would not start later (backfilling); the batch and prefill limits are not checked.
    pub fn fits_after(&self, id: u32, steps: u64, with: &[u32]) -> bool {
        let advance = |(len, rem): (u64, u64)| (rem > steps).then(|| (len + steps, rem - steps));
        let mut held: Vec<(u64, u64)> = self
            .st
            .mem
            .reserve
            .iter()
            .filter_map(|&e| advance(e))
            .collect();
        for &c in with {
            let r = &self.w.requests[c as usize];
            if let Some(e) = advance((r.input as u64 + 1, self.cfg.budget(r) as u64 - 1)) {
                insert(&mut held, e);
            }
        }
        let r = &self.w.requests[id as usize];
        peak_with(&held, (r.input as u64 + 1, self.cfg.budget(r) as u64 - 1))
            + self.st.mem.pinned_slots()
            + self.extra_adapter_slots(r)
            <= self.cfg.pool_slots
    }

    /// Whether `id` would fit if the running request `victim` were squashed first.
    pub fn fits_if_squashed(&self, id: u32, victim: u32) -> bool {
        let st = &self.st;
        let Some(v) = st.batch.get(victim) else {
            return false;
        };
        let r = &self.w.requests[id as usize];
        if st.batch.len() - 1 + st.batch.admitted.len() >= self.cfg.max_batch as usize
            || st.batch.admitted_tokens + r.input as u64 > self.cfg.max_prefill_tokens
        {
            return false;
        }
        let mut held = st.mem.reserve.clone();
        let gone = v.reservation(st.batch.steps);
        if let Some(i) = held.iter().position(|&e| e == gone) {
            held.remove(i);
        }
        let mut pinned = st.mem.pinned_slots();
        let mut extra = self.extra_adapter_slots(r);
        if let Some(a) = st.adapters.get(v.adapter as usize)
            && a.refs == 1
        {
            // The victim was its adapter's only user: the adapter becomes idle (evictable).
            pinned -= a.slots;
            if r.adapter == v.adapter {
                extra = a.slots;
            }
        }
        peak_with(&held, (r.input as u64 + 1, self.cfg.budget(r) as u64 - 1)) + pinned + extra
            <= self.cfg.pool_slots
    }

    /// The estimated duration (the run's cost model, without adapter loads) of a prefill iteration of the
    /// requests admitted so far at this merge if `admitted`, plus `extra` (which may repeat a request: a
    /// batch of copies prices a request among its likes). What a scheduler that shapes prefill batches
    /// weighs, e.g. the padding of S-LoRA's LoRA kernels.
    pub fn prefill_estimate(&self, admitted: bool, extra: &[u32]) -> Nanos {
        let ids: &[u32] = if admitted {
            &self.st.batch.admitted
        } else {
            &[]
        };
        let mut shape = BatchShape::default();
        let all = || ids.iter().chain(extra).copied();
        for (i, id) in all().enumerate() {
            let r = &self.w.requests[id as usize];
            let lora = self.w.adapter(r.adapter).map(|a| {
                let first = !all()
                    .take(i)
                    .any(|o| self.w.requests[o as usize].adapter == r.adapter);
                (a.rank as u64, first)
            });
            shape.add_prompt(r.input as u64, lora);
        }
        self.clock.estimates().iteration(&shape)
    }

    /// Running requests as (id, tokens generated so far).
    pub fn running(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        let steps = self.st.batch.steps;
        self.st
            .batch
            .iter()
            .map(move |r| (r.id, r.generated(steps)))
    }

    /// Stops a running request, frees its memory and drops its progress; it counts as waiting again and the
    /// scheduler must queue it again. False if `id` is not running.
    pub fn squash(&mut self, id: u32) -> bool {
        let Some(r) = self.st.batch.remove(id) else {
            return false;
        };
        self.st.leave(&r);
        self.st.mem.kv_used -= r.ctx(self.st.batch.steps) as u64;
        self.st.unpin(r.adapter, self.cache, self.clock);
        if let Some(a) = self.st.adapters.get_mut(r.adapter as usize) {
            a.queued += 1;
        }
        let rec = self.st.records.get(id);
        rec.outcome = Outcome::Waiting;
        rec.max_gap = 0;
        rec.squashes += 1;
        self.st.stats.squashes += 1;
        self.clock.release(id);
        // Its reservation goes too: rebuild from what is still admitted.
        let (st, cfg, w) = (&mut *self.st, self.cfg, self.w);
        st.mem.reserve.clear();
        let steps = st.batch.steps;
        st.mem
            .reserve
            .extend(st.batch.iter().map(|r| r.reservation(steps)));
        st.mem.reserve.extend(st.batch.admitted.iter().map(|&id| {
            let q = &w.requests[id as usize];
            (q.input as u64 + 1, cfg.budget(q) as u64 - 1)
        }));
        st.mem
            .reserve
            .sort_unstable_by_key(|&(_, rem)| std::cmp::Reverse(rem));
        true
    }

    /// Drops the waiting request `id` for `why`: it ends now without having run (outcome `Aborted`). The
    /// caller must drop it from its queue.
    pub fn abort(&mut self, id: u32, why: Abort) {
        let r = &self.w.requests[id as usize];
        if let Some(a) = self.st.adapters.get_mut(r.adapter as usize) {
            a.queued -= 1;
        }
        let rec = self.st.records.get(id);
        debug_assert_eq!(
            rec.outcome,
            Outcome::Waiting,
            "only a waiting request is aborted"
        );
        rec.outcome = Outcome::Aborted(why);
        rec.finished = self.st.now;
        self.st.records.finalize(id);
        self.st.stats.aborted += 1;
        self.st.aborted_now.push(id);
    }

    /// Admits `id` if it fits; the caller must then drop it from its queue. Its prefill runs in the
    /// iteration this merge starts (after its adapter is loaded, if it is not resident).
    pub fn try_admit(&mut self, id: u32) -> bool {
        if !self.fits(id) {
            return false;
        }
        let r = self.w.requests[id as usize];
        let cand = (r.input as u64 + 1, self.cfg.budget(&r) as u64 - 1);
        insert(&mut self.st.mem.reserve, cand);
        self.st.batch.admitted_tokens += r.input as u64;
        self.st.batch.admitted.push(id);
        let now = self.st.now;
        let rec = self.st.records.get(id);
        rec.admitted = now;
        if let Some(a) = self.st.adapters.get_mut(r.adapter as usize) {
            rec.adapter_hit = a.residency == Residency::Resident;
            match (a.refs, a.residency) {
                (0, Residency::Resident) => self.st.mem.idle_slots -= a.slots,
                (0, Residency::Host) => self.st.mem.pending_pin += a.slots,
                _ => {}
            }
            a.refs += 1;
            a.queued -= 1;
            self.cache.on_admit(&r, now);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peak_matches_slora_formula() {
        // Held (len, remaining): (10, 5), (20, 2). Sorted by remaining: 10+5*1=15, 30+2*2=34.
        let held = vec![(10, 5), (20, 2)];
        assert_eq!(peak(&held), 34);
        // A new (5, 10) goes first: 5+10=15, 15+5*2=25, 35+2*3=41.
        assert_eq!(peak_with(&held, (5, 10)), 41);
        let mut h = held.clone();
        insert(&mut h, (5, 10));
        assert_eq!(h, vec![(5, 10), (10, 5), (20, 2)]);
        assert_eq!(peak(&h), 41);
        assert_eq!(peak_with(&[], (7, 3)), 10);
    }
}
