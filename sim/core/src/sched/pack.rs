//! Padding-aware first come, first served: the oldest waiting request always goes first (so nothing
//! starves); younger ones join its prefill only if they are cheap to add.
//!
//! What it exploits: S-LoRA's LoRA kernels pad a batch's work. Its prefill MBGMM kernel runs a grid of
//! requests x the longest prompt x the largest rank, and its BGMV kernel pads every token to the largest rank,
//! so one long rank-128 prompt makes every short low-rank prompt beside it cost as much as itself. FIFO merges
//! whatever arrived; this scheduler prices each candidate with the run's cost model
//! (`Admission::prefill_estimate`): a candidate joins the merge only if what it adds to the prefill is at most
//! `1 + slack` times what a prefill of its own would cost (the most it can cost later). Those refused wait for
//! a later merge (10 decode steps on S-LoRA), where they lead or join a better-matched batch. `slack` defaults
//! to 0, tuned on the Azure code trace (experiments/ours_tune_code.json), never on the conversation trace the
//! result is claimed on. Under unpadded kernels adding a request rarely costs more than running it alone, so
//! pack is then FIFO with a little skipping.

use std::collections::VecDeque;

use crate::engine::api::{Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "pack",
    about: "FIFO head first; others join its prefill only if they add at most (1 + slack) x a prefill of \
            their own (avoids S-LoRA's padded LoRA kernels)",
    params: &[
        Param::new(
            "slack",
            "0",
            "a candidate may add up to (1 + slack) x the cost of a prefill of its own",
        ),
        Param::new(
            "window",
            "64",
            "waiting requests behind the head considered at each merge",
        ),
    ],
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let slack: f64 = p.get("slack")?;
    let window: usize = p.get("window")?;
    if !(slack >= 0.0 && slack.is_finite()) {
        return Err(crate::error::Error::msg(format!(
            "pack: slack must be >= 0, got {slack}"
        )));
    }
    Ok(Box::new(Pack {
        queue: VecDeque::new(),
        slack,
        window,
    }))
}

pub struct Pack {
    queue: VecDeque<u32>,
    slack: f64,
    window: usize,
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
            let now = adm.prefill_estimate(true, None) as f64;
            let added = adm.prefill_estimate(true, Some(id)) as f64 - now;
            let alone = adm.prefill_estimate(false, Some(id)) as f64;
            if added <= (1.0 + self.slack) * alone && adm.try_admit(id) {
                self.queue.remove(i);
            } else {
                i += 1;
            }
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        for &id in &self.queue {
            if !visit(id) {
                break;
            }
        }
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }
}
