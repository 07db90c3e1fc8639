//! First come, first served with backfilling (EASY backfilling, as batch schedulers of HPC clusters do).
//!
//! What it exploits: S-LoRA's FIFO stops at the first waiting request whose memory reservation does not
//! fit, and every request behind it waits, even one that would fit and finish long before the first could
//! start. Where memory binds (the conversation trace at the knee: S-LoRA's peak-rule reservations fill most
//! of the pool) that head-of-line blocking idles capacity. Here the oldest request (the head) is admitted
//! first whenever it fits, as in FIFO. When it does not, its *shadow* is computed: the fewest decode steps
//! after which the running requests' reservations (they are exact: admission reserves each request's whole
//! output) leave room for it (`Admission::fits_after`). A younger request in the window may then go first
//! only if it fits now and either finishes within the shadow or leaves the head room at the shadow anyway:
//! the head never starts later than it would have under FIFO (up to the adapters pinned meanwhile), so
//! nothing starves, and the gaps fill. The same holds for a head held back by this merge's prefill budget
//! (S-LoRA's `batch_max_tokens`): it cannot start before the next merge, and shorter prompts behind it may
//! use the budget left. While the head has waited less than `patience` of its TTFT objective (the whole
//! objective by default: it still has slack), any younger request that fits goes first (first fit in
//! arrival order); past that it is protected, so no request is overtaken for longer than that.
//!
//! Under `--merge-cadence policy` it merges every `merge` decode steps (default 10, S-LoRA's); under the
//! engine's cadence at the engine's. Its parameters were chosen on the Azure code trace
//! (experiments/ours_tune_code.json), never on the conversation trace its result is claimed on.

use std::collections::VecDeque;

use crate::engine::api::{Admission, Fit, PolicyCtx, Scheduler, Schedulers};
use crate::error::{Error, Result};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "backfill",
    about: "FIFO; when the oldest request does not fit, younger ones that fit go first only if they do not \
            delay its start (EASY backfilling over the exact memory reservations)",
    params: &[
        Param::new(
            "window",
            "64",
            "waiting requests behind the oldest considered for backfilling at each merge",
        ),
        Param::new(
            "patience",
            "1",
            "while the oldest has waited less than this share of the TTFT objective, any younger request that fits goes first; after, only those that do not delay it",
        ),
        Param::new(
            "merge",
            "10",
            "decode steps between merges under --merge-cadence policy (S-LoRA's 10)",
        ),
    ],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let window: usize = p.get("window")?;
    let patience: f64 = p.get("patience")?;
    let merge: u32 = p.get("merge")?;
    if merge == 0 || !(0.0..=1.0).contains(&patience) {
        return Err(Error::msg(format!(
            "backfill: need merge >= 1 and patience in [0, 1], got merge={merge}, patience={patience}"
        )));
    }
    Ok(Box::new(Backfill {
        queue: VecDeque::new(),
        arrival: vec![0; ctx.workload.requests.len()],
        window,
        patience_ns: (patience * ctx.slo.ttft_ns as f64) as Nanos,
        merge,
    }))
}

pub struct Backfill {
    queue: VecDeque<u32>,
    /// Arrival time per request id.
    arrival: Vec<Nanos>,
    window: usize,
    /// How long the oldest may be overtaken freely.
    patience_ns: Nanos,
    merge: u32,
}

/// The fewest decode steps after which `head` fits (`None`: not within 2^20 steps).
fn shadow(adm: &Admission<'_>, head: u32, with: &[u32]) -> Option<u64> {
    // Fitting later is monotone in the steps (the future peak of a fixed set only falls): double, then
    // bisect.
    let mut hi = 1u64;
    while !adm.fits_after(head, hi, with) {
        hi *= 2;
        if hi > 1 << 20 {
            return None;
        }
    }
    let mut lo = 0u64;
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if adm.fits_after(head, mid, with) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    Some(hi)
}

impl Scheduler for Backfill {
    fn on_arrival(&mut self, req: &Request, now: Nanos) {
        self.arrival[req.id as usize] = now;
        self.queue.push_back(req.id);
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        while let Some(&id) = self.queue.front() {
            if !adm.try_admit(id) {
                break;
            }
            self.queue.pop_front();
        }
        let Some(&head) = self.queue.front() else {
            return;
        };
        // The head's shadow: the decode steps until its memory fits; a head held back by this merge's prefill
        // budget (the prompts before it) starts at the next merge at the earliest. A full batch holds back
        // everyone alike.
        let why = adm.fit(head);
        if why == Fit::BatchFull {
            return;
        }
        let Some(mut k) = shadow(adm, head, &[]) else {
            return;
        };
        if why == Fit::PrefillTokens {
            k = k.max(self.merge as u64);
        }
        // While the head has waited less than its patience, younger requests that fit simply go first.
        let patient = adm.now().saturating_sub(self.arrival[head as usize]) < self.patience_ns;
        // Admitted ahead of the head and still running at its shadow.
        let mut long: Vec<u32> = Vec::new();
        let mut i = 1;
        let mut seen = 0;
        while i < self.queue.len() && seen < self.window {
            seen += 1;
            let id = self.queue[i];
            if !adm.fits(id) {
                i += 1;
                continue;
            }
            let short = patient || adm.budget(id) as u64 <= k;
            // Long: it must leave the head room at its shadow.
            let harmless = short || {
                long.push(id);
                let ok = adm.fits_after(head, k, &long);
                if !ok {
                    long.pop();
                }
                ok
            };
            if harmless && adm.try_admit(id) {
                self.queue.remove(i);
            } else {
                if !short && harmless {
                    long.pop();
                }
                i += 1;
            }
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        super::visit_in_order(self.queue.iter().copied(), visit);
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }

    fn merge_every(&self) -> Option<u32> {
        Some(self.merge)
    }
}
