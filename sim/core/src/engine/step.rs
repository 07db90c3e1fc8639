//! Stepping: the event loop (`run`, `push_arrival`, `advance_to`) and what each event does: an arrival and
//! its refusal checks, a merge and its prefill, a decode step, a finish, an adapter load, an eviction, a
//! prefetch.

use std::cmp::Reverse;

use super::Engine;
use super::admission::{self, Admission};
use super::api::{CacheView, PrefetchView, Residency};
use super::batch::Running;
use super::clock::Seq;
use super::config::Reserve;
use super::observe::{Observed, Phase};
use super::outcome::{Outcome, Reject, RequestRecord, RunOutput};
use super::state::{Busy, Event, Records};
use crate::cost::{BatchShape, LoadShape};
use crate::error::{Error, Result};
use crate::time::Nanos;
use crate::workload::NO_ADAPTER;

impl<'a> Engine<'a> {
    fn push(&mut self, at: Nanos, ev: Event) {
        self.st.seq += 1;
        self.st.events.push(Reverse((at, self.st.seq, ev)));
    }

    /// Replays the whole workload: each request is handed over at its arrival time, then the engine runs
    /// until nothing is left. One record per request, indexed by id.
    pub fn run(mut self) -> Result<RunOutput> {
        if self
            .w
            .requests
            .windows(2)
            .any(|p| p[1].arrival < p[0].arrival)
        {
            return Err(Error::msg("workload arrivals must be sorted by time"));
        }
        let w = self.w;
        for r in &w.requests {
            self.advance_to(r.arrival);
            self.push_arrival(r.id);
        }
        self.finish()
    }

    /// Hands request `id` to the engine. Arrivals must come in arrival order, none before the horizon (the
    /// latest `advance_to` target).
    pub fn push_arrival(&mut self, id: u32) {
        let at = self.w.requests[id as usize].arrival;
        debug_assert!(
            at >= self.feed.horizon,
            "an arrival before the engine's horizon"
        );
        if self.feed.queued {
            self.feed.pending.push_back(id);
        } else {
            self.feed.queued = true;
            self.st
                .events
                .push(Reverse((at, self.feed.seq, Event::Arrival(id))));
        }
    }

    /// Handles every event that comes before an arrival at `t` handed over now: all events before `t`, and
    /// those at `t` scheduled before the next arrival's sequence number. Whether an idle server starts an
    /// iteration at `t` waits until no arrival at `t` can come (the next call). So stepping gives exactly
    /// the events, in the same order, as `run` over the same arrivals.
    pub fn advance_to(&mut self, t: Nanos) {
        self.feed.horizon = self.feed.horizon.max(t);
        while self.aborted.is_none() {
            if let Some(t0) = self.feed.undecided {
                let next = self.st.events.peek().map(|Reverse((at, _, _))| *at);
                if next == Some(t0) {
                    // Another event at the same instant: decide after it.
                    self.feed.undecided = None;
                } else if t0 < t {
                    self.feed.undecided = None;
                    if let Err(e) = self.start_iteration() {
                        self.aborted = Some(e.to_string());
                    }
                    continue;
                }
            }
            let bound = if self.feed.queued {
                u64::MAX
            } else {
                self.feed.seq
            };
            match self.st.events.peek() {
                Some(&Reverse((at, seq, _))) if (at, seq) < (t, bound) => self.step(),
                _ => break,
            }
        }
    }

    /// Handles the next event.
    fn step(&mut self) {
        let Some(Reverse((t, _, ev))) = self.st.events.pop() else {
            return;
        };
        self.advance(t);
        match ev {
            Event::Arrival(id) => {
                self.on_arrival(id);
                // The next arrival's place among simultaneous events.
                self.st.seq += 1;
                self.feed.seq = self.st.seq;
                match self.feed.pending.pop_front() {
                    Some(next) => {
                        let at = self.w.requests[next as usize].arrival;
                        self.st
                            .events
                            .push(Reverse((at, self.feed.seq, Event::Arrival(next))));
                    }
                    None => self.feed.queued = false,
                }
            }
            Event::IterationDone => self.on_iteration_done(),
            Event::LoadDone(a) => self.on_load_done(a),
            Event::Poll => {
                self.st.poll_pending = false;
                self.st.busy = Busy::Idle;
            }
        }
        if self.st.busy == Busy::Polling {
            self.schedule_poll();
        } else if self.st.busy == Busy::Idle {
            self.feed.undecided = Some(t);
        }
    }

    /// Moves the clock, integrating memory use over the elapsed time.
    fn advance(&mut self, t: Nanos) {
        let st = &mut self.st;
        debug_assert!(t >= st.now);
        let dt = (t - st.last_account) as u128;
        st.stats.kv_slot_ns += st.mem.kv_used as u128 * dt;
        st.stats.adapter_slot_ns += st.mem.adapter_used as u128 * dt;
        st.stats.kv_claim_slot_ns += st.mem.kv_claim as u128 * dt;
        st.last_account = t;
        st.now = t;
    }

    fn note_work(&mut self, s: &BatchShape) {
        let w = &mut self.st.stats;
        w.tokens += s.tokens();
        w.prefill_sq_tokens += s.prefill_sq_tokens;
        w.decode_context += s.decode_context;
    }

    fn note_memory(&mut self) {
        let (m, s) = (&self.st.mem, &mut self.st.stats);
        s.peak_kv_slots = s.peak_kv_slots.max(m.kv_used);
        s.peak_adapter_slots = s.peak_adapter_slots.max(m.adapter_used);
        s.peak_total_slots = s.peak_total_slots.max(m.kv_used + m.adapter_used);
        s.peak_kv_claim_slots = s.peak_kv_claim_slots.max(m.kv_claim);
        assert!(
            m.kv_used + m.adapter_used <= self.cfg.pool_slots,
            "memory invariant violated (engine bug)"
        );
    }

    fn on_arrival(&mut self, id: u32) {
        let r = self.w.requests[id as usize];
        if let Records::Live { live, .. } = &mut self.st.records {
            live.insert(id, RequestRecord::new());
        }
        let slots = self.w.adapter(r.adapter).map_or(0, |a| a.slots);
        let need = r.input as u64 + self.cfg.budget(&r) as u64 + slots;
        let (input, total) = (r.input as u64, r.input as u64 + r.output as u64);
        // The first limit a request breaks is its reason: what the model cannot compute, then what the
        // memory cannot hold, then the server's configured limits.
        let reason = if let Some(max) = self.cfg.context_tokens
            && total > max
        {
            Some(Reject::Context { total, max })
        } else if need > self.cfg.pool_slots {
            Some(Reject::Pool {
                need,
                pool: self.cfg.pool_slots,
            })
        } else if let Some(max) = self.cfg.max_input_tokens
            && input > max
        {
            Some(Reject::Input { input, max })
        } else if let Some(max) = self.cfg.max_total_tokens
            && total > max
        {
            Some(Reject::Total { total, max })
        } else if input > self.cfg.max_prefill_tokens {
            Some(Reject::Prefill {
                input,
                max: self.cfg.max_prefill_tokens,
            })
        } else if r.adapter != NO_ADAPTER && self.w.adapter(r.adapter).is_none() {
            Some(Reject::Adapter { adapter: r.adapter })
        } else {
            None
        };
        if let Some(reason) = reason {
            let rec = self.st.records.get(id);
            rec.outcome = Outcome::Rejected(reason);
            rec.finished = self.st.now;
            self.st.records.finalize(id);
            self.emit(Observed::Rejected { id });
            return;
        }
        if r.adapter != NO_ADAPTER {
            self.prefetch.on_arrival(r.adapter, self.st.now);
            self.st.adapters[r.adapter as usize].queued += 1;
            self.cache.on_arrival(&r, self.st.now);
        }
        self.sched.on_arrival(&r, self.st.now);
        self.emit(Observed::Arrival { id });
    }

    fn start_iteration(&mut self) -> Result<()> {
        let b = &self.st.batch;
        let due = match self.cfg.policy_cadence {
            true => self.sched.merge_every(),
            false => None,
        }
        .map_or(b.steps_since_merge >= self.cfg.max_wait_tokens, |k| {
            b.steps_since_merge >= k
        });
        let merge = b.is_empty() || due;
        if merge && self.sched.waiting() == 0 {
            self.st.skipped_merges += 1;
        }
        if merge && self.sched.waiting() > 0 && self.merge()? {
            return Ok(());
        }
        if !self.st.batch.is_empty() {
            self.start_decode()?;
        } else if self.cfg.idle_poll_ns > 0 {
            // Nothing to run: the server sleeps and polls (S-LoRA: `asyncio.sleep(0.01)` when the batch is
            // empty), so the next admission happens at a poll, not on arrival.
            self.st.busy = Busy::Polling;
            self.st.idle_since = self.st.now;
            self.schedule_poll();
        }
        Ok(())
    }

    /// While polling with requests waiting, wakes at the next poll tick.
    fn schedule_poll(&mut self) {
        if self.st.poll_pending || self.sched.waiting() == 0 {
            return;
        }
        let (since, every) = (self.st.idle_since, self.cfg.idle_poll_ns);
        let ticks = (self.st.now - since).div_ceil(every).max(1);
        // Polls between going idle and now found the queue empty (a request just arrived into it).
        self.st.skipped_merges += ticks - 1;
        self.st.poll_pending = true;
        self.push(since + ticks * every, Event::Poll);
    }

    /// Admits new requests and starts their prefill; false if none could be admitted.
    fn merge(&mut self) -> Result<bool> {
        let now = self.st.now;
        let st = &mut self.st;
        st.mem.reserve.clear();
        st.mem.reserve.extend(st.batch.reservations());
        st.batch.admitted.clear();
        st.batch.admitted_tokens = 0;
        if st.skipped_merges > 0 {
            self.sched
                .skipped_merges(std::mem::take(&mut st.skipped_merges));
        }
        {
            let mut adm = Admission::new(
                self.w,
                &self.cfg,
                &mut self.st,
                self.cache.as_mut(),
                &mut *self.clock,
            );
            self.sched.select(&mut adm);
            if self.sched.waiting() > 0 {
                let mut first = None;
                self.sched.peek(&mut |id| {
                    first = Some(id);
                    false
                });
                if let Some(id) = first {
                    let why = adm.fit(id);
                    adm.note_blocked(why);
                }
            }
        }
        self.st.stats.merges += 1;
        if !self.st.aborted_now.is_empty() {
            for id in std::mem::take(&mut self.st.aborted_now) {
                self.emit(Observed::Aborted { id });
            }
        }
        if self.st.batch.admitted.is_empty() {
            self.st.stats.merges_empty += 1;
            return Ok(false);
        }
        // `reserve` now lists the running and the admitted requests (admission inserted them).
        self.st.mem.kv_claim = admission::peak(&self.st.mem.reserve);
        if self.obs.is_some() {
            for i in 0..self.st.batch.admitted.len() {
                let id = self.st.batch.admitted[i];
                let hit = self.st.records.get(id).adapter_hit;
                self.emit(Observed::Admitted { id, hit });
            }
        }
        let batch = std::mem::take(&mut self.st.batch.admitted);
        let mut ready = now;
        let mut shape = BatchShape::default();
        let mut kv_need = 0;
        self.st.seq += 1;
        let stamp = self.st.seq;
        for &id in &batch {
            let r = self.w.requests[id as usize];
            kv_need += r.input as u64 + 1;
            if r.adapter == NO_ADAPTER {
                shape.add_prompt(r.input as u64, None);
                continue;
            }
            let a = r.adapter as usize;
            let first = self.st.stamp[a] != stamp;
            self.st.stamp[a] = stamp;
            shape.add_prompt(
                r.input as u64,
                Some((self.w.adapters[a].rank as u64, first)),
            );
            if self.st.adapters[a].residency == Residency::Host {
                self.st.mem.pending_pin -= self.st.adapters[a].slots;
                self.start_load(r.adapter)?;
            }
            if self.st.adapters[a].residency == Residency::Loading {
                ready = ready.max(self.st.adapters[a].load_done);
            }
        }
        self.make_room(kv_need);
        self.st.mem.kv_used += kv_need;
        self.note_memory();
        for &id in &batch {
            self.st.records.get(id).load_wait = ready - now;
        }
        self.st.stats.load_stall_ns += ready - now;
        self.st.stats.prefill_iterations += 1;
        self.note_work(&shape);
        let w = self.w;
        let mut seqs = batch.iter().map(|&id| {
            let r = &w.requests[id as usize];
            Seq {
                request: id,
                new_tokens: r.input,
                context: 0,
                adapter: r.adapter,
                rank: w.adapter(r.adapter).map_or(0, |a| a.rank),
            }
        });
        let dur = self.clock.iteration(&shape, &mut seqs)?.max(1)
            + std::mem::take(&mut self.st.repack_ns);
        self.st.batch.admitted = batch;
        self.st.stats.busy_ns += dur;
        self.st.busy = Busy::Prefill;
        self.st.batch.steps_since_merge = 0;
        self.push(ready + dur, Event::IterationDone);
        self.observe_iteration(Phase::Prefill, ready, ready + dur, &shape);
        if self.prefetch.at_merge() {
            // Issued after the prefill was launched: its host time is not charged (no S-LoRA code path
            // prefetches here; Chameleon's histogram prefetch is modelled as off the launch loop).
            self.prefetch_next_batch()?;
        }
        Ok(true)
    }

    fn start_decode(&mut self) -> Result<()> {
        // S-LoRA awaits the prefetch's `load_adapters` before `_decode_batch`: the host issuing its copy
        // calls holds the decode step back (the copies themselves overlap it on the side stream).
        let issue = if self.prefetch.at_step(self.st.batch.steps_since_merge) {
            self.prefetch_next_batch()?
        } else {
            0
        };
        let start = self.st.now + issue;
        self.st.stats.load_stall_ns += issue;
        let n = self.st.batch.len() as u64;
        self.make_room(n);
        self.st.mem.kv_used += n;
        self.note_memory();
        let b = &self.st.batch;
        let shape = BatchShape {
            decode_seqs: n,
            decode_context: b.ctx_sum,
            lora_tokens: b.adapter_seqs,
            lora_token_rank: b.token_rank_sum,
            lora_distinct_rank: b.distinct_rank_sum,
            lora_distinct: b.distinct,
            lora_seqs: b.adapter_seqs,
            lora_max_rank: b.max_rank(),
            ..Default::default()
        };
        let dur = self.clock.iteration(&shape, &mut b.seqs())?.max(1)
            + std::mem::take(&mut self.st.repack_ns);
        self.note_work(&shape);
        self.st.stats.busy_ns += dur;
        self.st.stats.decode_iterations += 1;
        self.st.batch.steps_since_merge += 1;
        self.st.busy = Busy::Decode;
        self.push(start + dur, Event::IterationDone);
        self.observe_iteration(Phase::Decode, start, start + dur, &shape);
        Ok(())
    }

    fn on_iteration_done(&mut self) {
        let now = self.st.now;
        let finished = self.st.stats.finished;
        let held = self.st.mem.kv_used;
        match std::mem::replace(&mut self.st.busy, Busy::Idle) {
            Busy::Prefill => {
                let batch = std::mem::take(&mut self.st.batch.admitted);
                for &id in &batch {
                    let r = self.w.requests[id as usize];
                    self.st.records.get(id).first_token = now;
                    self.emit(Observed::FirstToken { id });
                    if r.output == 1 {
                        self.finish_request(id, r.adapter, r.input as u64 + 1, 0);
                    } else {
                        let rank = self.w.adapter(r.adapter).map_or(0, |a| a.rank);
                        let budget = self.cfg.budget(&r);
                        let run = Running::new(id, r.input, r.output, budget, r.adapter, rank);
                        self.st.join(run, now);
                    }
                }
                self.st.batch.admitted = batch;
                self.st.batch.admitted.clear();
            }
            Busy::Decode => {
                self.st.batch.step(now);
                while let Some(id) = self.st.batch.pop_finished() {
                    let r = self.st.batch.remove(id).expect("running");
                    let ctx = r.ctx(self.st.batch.steps) as u64;
                    let gap = self.st.batch.max_gap(&r);
                    self.st.leave(&r);
                    self.finish_request(id, r.adapter, ctx, gap);
                }
            }
            Busy::Idle | Busy::Polling => unreachable!("iteration finished while idle"),
        }
        // With an oracle reserve a request finishes with nothing left reserved, last in the peak rule's
        // order: the claim changes only if it was the total held now (the tail's term). Else recompute.
        if self.st.stats.finished != finished
            && (self.cfg.reserve != Reserve::Oracle || self.st.mem.kv_claim <= held)
        {
            self.recompute_claim();
        }
        if self.st.batch.is_empty() && self.obs.is_some() {
            let snap = self.snapshot();
            self.emit(Observed::Idle { snap: &snap });
        }
    }

    /// Request `id` produced its last token: its KV (`ctx` slots) and its hold on `adapter` go.
    fn finish_request(&mut self, id: u32, adapter: u32, ctx: u64, max_gap: Nanos) {
        let now = self.st.now;
        self.clock.release(id);
        self.st.mem.kv_used -= ctx;
        self.st.stats.finished += 1;
        let rec = self.st.records.get(id);
        rec.outcome = Outcome::Finished;
        rec.finished = now;
        rec.max_gap = max_gap;
        self.st.records.finalize(id);
        self.st
            .unpin(adapter, self.cache.as_mut(), &mut *self.clock);
        self.sched.on_finish(&self.w.requests[id as usize], now);
        self.emit(Observed::Finished { id });
    }

    /// The KV claim after requests left at the end of an iteration (no request is prefilling then): the
    /// peak rule over those still running.
    fn recompute_claim(&mut self) {
        self.st.mem.kv_claim = self.st.batch.claim();
    }

    fn on_load_done(&mut self, a: u32) {
        let s = &mut self.st.adapters[a as usize];
        debug_assert_eq!(s.residency, Residency::Loading);
        s.residency = Residency::Resident;
        if s.refs == 0 {
            self.st.mem.idle_slots += s.slots;
        }
        self.cache.on_load(a, self.st.now);
        self.st
            .maybe_release(a, self.cache.as_mut(), &mut *self.clock);
    }

    /// Evicts idle adapters, chosen by the cache policy, until `need` slots are free. Admission guarantees
    /// this succeeds: the KV peak of admitted requests plus pinned adapters fits in the pool.
    fn make_room(&mut self, need: u64) {
        while self.st.free_slots(self.cfg.pool_slots) < need {
            let mut idle = std::mem::take(&mut self.st.scratch);
            idle.clear();
            idle.extend(
                (0..self.st.adapters.len() as u32)
                    .filter(|&a| self.st.adapters[a as usize].is_idle()),
            );
            assert!(
                !idle.is_empty(),
                "no idle adapter to evict for {need} slots (engine bug)"
            );
            let view = CacheView {
                now: self.st.now,
                workload: self.w,
                adapters: &self.st.adapters,
            };
            let v = self.cache.victim(&idle, &view);
            assert!(
                idle.contains(&v),
                "cache policy chose {v}, which is not idle"
            );
            self.st.scratch = idle;
            self.st.evict(v, self.cache.as_mut(), &mut *self.clock);
        }
    }

    fn start_load(&mut self, a: u32) -> Result<LoadShape> {
        let ad = &self.w.adapters[a as usize];
        // Room first: the clock hears of evictions before a load that may reuse it (or reload the adapter).
        self.make_room(ad.slots);
        let start = self.st.now.max(self.st.link_free_at);
        let load = self.cfg.load_path.shape(ad.bytes);
        // Without the unified pool the new adapter's buffers are concatenated with the resident ones'.
        let repack = self
            .clock
            .estimates()
            .adapter_repack(self.st.mem.adapter_used * self.st.slot_bytes);
        let done = start + self.clock.load(a, ad.bytes, &load)? + repack;
        self.st.link_free_at = done;
        self.st.stats.link_busy_ns += done - start;
        let s = &mut self.st.adapters[a as usize];
        s.residency = Residency::Loading;
        s.load_done = done;
        self.st.mem.adapter_used += ad.slots;
        self.st.stats.adapter_loads += 1;
        self.st.stats.pcie_bytes += load.bytes;
        if let Some(log) = &mut self.st.residency_log {
            log.push((a, true));
        }
        self.note_memory();
        self.push(done, Event::LoadDone(a));
        self.emit(Observed::Load {
            adapter: a,
            start,
            end: done,
        });
        Ok(load)
    }

    /// Loads the adapters the prefetcher wants into memory that is free now, in its order, without evicting
    /// anything and without breaking any admitted request's reservation. Marked adapters survive S-LoRA's
    /// free-when-unused rule until the next prefetch. Returns the host time of issuing the loads started.
    fn prefetch_next_batch(&mut self) -> Result<Nanos> {
        let mut want = std::mem::take(&mut self.st.want);
        want.clear();
        let view = PrefetchView {
            now: self.st.now,
            workload: self.w,
            adapters: &self.st.adapters,
            scheduler: self.sched.as_ref(),
        };
        self.prefetch.wanted(&view, &mut want);
        // Unmark (and, without a cache, free) what the previous prefetch wanted and this one does not.
        for a in std::mem::take(&mut self.st.prefetched) {
            if !want.contains(&a) {
                self.st.adapters[a as usize].wanted = false;
                self.st
                    .maybe_release(a, self.cache.as_mut(), &mut *self.clock);
            }
        }
        let reserved_peak = admission::peak(&self.st.mem.reserve);
        let mut room = true;
        let mut issue = 0;
        for &a in &want {
            let s = &mut self.st.adapters[a as usize];
            s.wanted = true;
            let slots = s.slots;
            let host = s.residency == Residency::Host;
            self.st.prefetched.push(a);
            // Load in order until the first that does not fit; later ones stay marked only.
            room = room
                && (!host
                    || self.st.free_slots(self.cfg.pool_slots) >= slots
                        && reserved_peak + self.st.mem.pinned_slots() + slots
                            <= self.cfg.pool_slots);
            if room && host {
                let load = self.start_load(a)?;
                issue += self.clock.load_issue(&load);
            }
        }
        self.st.want = want;
        Ok(issue)
    }
}
