//! Padding-aware first come, first served: the oldest waiting request always goes first (so nothing
//! starves); younger ones join its prefill only if they are cheap to add.
//!
//! What it exploits: S-LoRA's LoRA kernels pad a batch's work. Its prefill MBGMM kernel runs a grid of
//! requests x the longest prompt x the largest rank, and its BGMV kernel pads every token to the largest rank,
//! so one long rank-128 prompt makes every short low-rank prompt beside it cost as much as itself. FIFO merges
//! whatever arrived; this scheduler prices each candidate with the run's cost model
//! (`Admission::prefill_estimate`) three ways: what it adds to the merge's prefill, what a prefill of its own
//! would cost, and what it adds to a batch of its likes (same prompt and adapter: its work unpadded). It
//! joins unless merging it costs more than a prefill of its own *and* pads its work by more than `slack`
//! (default 0.25, tuned on the Azure code trace in experiments/ours_tune_code.json, never on the
//! conversation trace the result is claimed on). Those refused wait for a later merge (10 decode steps on
//! S-LoRA), where they lead or join a better-matched batch. Where padding is cheap (the analytic model) the
//! second test admits nearly everything, and pack is FIFO.

use std::collections::VecDeque;

use crate::engine::api::{Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "pack",
    about: "FIFO head first; others join its prefill unless that costs more than a prefill of their own and \
            pads their work by more than slack (avoids S-LoRA's padded LoRA kernels)",
    params: &[
        Param::new(
            "slack",
            "0.25",
            "padding a candidate may add, as a fraction of its own unpadded work, when merging it costs more than a prefill of its own",
        ),
        Param::new(
            "window",
            "64",
            "waiting requests behind the head considered at each merge",
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

fn build(p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let slack: f64 = p.get("slack")?;
    let window: usize = p.get("window")?;
    let merge: u32 = p.get("merge")?;
    if !(slack >= 0.0 && slack.is_finite()) || merge == 0 {
        return Err(crate::error::Error::msg(format!(
            "pack: need slack >= 0 and merge >= 1, got slack={slack}, merge={merge}"
        )));
    }
    Ok(Box::new(Pack {
        queue: VecDeque::new(),
        slack,
        window,
        merge,
    }))
}

pub struct Pack {
    queue: VecDeque<u32>,
    slack: f64,
    window: usize,
    merge: u32,
}

impl Scheduler for Pack {
    fn on_arrival(&mut self, req: &Request, _now: Nanos) {
        self.queue.push_back(req.id);
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        // The head leads, as in FIFO; if it does not fit, nobody goes (no bypass of the head's memory).
        let Some(&head) = self.queue.front() else {
            return;
        };
        if !adm.try_admit(head) {
            return;
        }
        self.queue.pop_front();
        let mut i = 0;
        let mut seen = 0;
        while i < self.queue.len() && seen < self.window {
            seen += 1;
            let id = self.queue[i];
            let now = adm.prefill_estimate(true, &[]) as f64;
            let added = adm.prefill_estimate(true, &[id]) as f64 - now;
            let alone = adm.prefill_estimate(false, &[id]) as f64;
            // What it adds to a batch of its likes (same prompt, same adapter): its work without padding.
            let like = (adm.prefill_estimate(false, &[id, id]) - adm.prefill_estimate(false, &[id]))
                as f64;
            // Joins unless merging it costs more than a prefill of its own *and* pads its work by more
            // than `slack`.
            let cheap = added <= alone || added <= (1.0 + self.slack) * like;
            if cheap && adm.try_admit(id) {
                self.queue.remove(i);
            } else {
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
