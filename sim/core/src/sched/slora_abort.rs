//! S-LoRA's early-abort queue (`--enable-abort`: `slora/server/router/abort_req_queue.py`, S-LoRA c1ddf48),
//! step for step:
//!
//! - the queue is kept newest first;
//! - at every merge point (each `generate_new_batch` call) it first updates its "rate" estimate: the requests
//!   that joined the queue since the last batch it formed, smoothed `rate = int(0.7 x new + 0.3 x rate)`
//!   (a count per batch, not per second; `int` truncates toward zero);
//! - it then aborts every waiting request that has waited `slo_s - margin_s` (6 - 0.5 s) or more: S-LoRA
//!   tests `attainment_func(now - arrival + 0.5) == 0`, the 6 s objective of `slora/utils/metric.py`;
//! - if `rate >= bs` (the smoothed size of the batches it formed) it offers the newest requests first,
//!   else the oldest first, stopping at the first that does not fit (S-LoRA's `_can_add_new_req` and
//!   `batch_max_tokens`, the engine's admission);
//! - after forming a batch: `last = waiting left`, `bs = max(int(0.7 x admitted + 0.3 x bs), init_bs)`.
//!
//! S-LoRA's router calls the queue at every merge point, also with nothing waiting (every 10 ms idle poll,
//! every decode step once a merge is due); those calls move the estimate too (`skipped_merges`). The server
//! idles before a benchmark's first request, so the estimate starts settled at its idle value. Times are the
//! engine's simulated clock (S-LoRA reads `time.time()`). Not modelled: S-LoRA returns before any of this
//! when the running batch holds `running_max_req_size` (1000) requests.

use std::collections::VecDeque;

use crate::engine::api::{Abort, Admission, PolicyCtx, Scheduler, Schedulers};
use crate::error::{Error, Result};
use crate::registry::{Entry, Param, Params, Props};
use crate::time::Nanos;
use crate::workload::Request;

pub const ENTRY: Entry<Schedulers> = Entry {
    name: "slora-abort",
    about: "S-LoRA's early abort: drops requests that will miss the latency objective, newest first under load",
    params: &[
        Param::new(
            "slo_s",
            "6",
            "latency objective, s (slora/utils/metric.py: response_ub)",
        ),
        Param::new(
            "margin_s",
            "0.5",
            "a request is aborted once waited + margin >= objective",
        ),
        Param::new(
            "smooth",
            "0.7",
            "weight of the newest observation in the rate and batch-size estimates",
        ),
        Param::new("init_bs", "1", "initial and least batch-size estimate"),
        Param::new(
            "switch",
            "true",
            "newest first when the rate estimate reaches the batch-size estimate (false: always oldest first)",
        ),
        Param::new(
            "init_rate",
            "1",
            "initial rate estimate (settled by the idle polls before the first request)",
        ),
    ],
    // A request waits at most until its deadline, then ends (aborted): nothing waits forever.
    props: Props::DEFAULT,
    build,
};

fn build(p: &mut Params, _ctx: &PolicyCtx) -> Result<Box<dyn Scheduler>> {
    let slo: f64 = p.get("slo_s")?;
    let margin: f64 = p.get("margin_s")?;
    let smooth: f64 = p.get("smooth")?;
    let init_bs: i64 = p.get("init_bs")?;
    let init_rate: i64 = p.get("init_rate")?;
    let switch: bool = p.get("switch")?;
    if !(slo.is_finite() && margin.is_finite() && slo > 0.0 && margin >= 0.0 && margin < slo) {
        return Err(Error::msg(format!(
            "slora-abort: need 0 <= margin_s < slo_s, got margin_s={margin}, slo_s={slo}"
        )));
    }
    if !(0.0..=1.0).contains(&smooth) {
        return Err(Error::msg(format!(
            "slora-abort: smooth must be in [0, 1], got {smooth}"
        )));
    }
    if init_bs < 1 {
        return Err(Error::msg(format!(
            "slora-abort: init_bs must be >= 1, got {init_bs}"
        )));
    }
    let mut s = SloraAbort {
        queue: VecDeque::new(),
        limit: ((slo - margin) * 1e9).round() as Nanos,
        new: smooth,
        // S-LoRA writes the complement as a literal (0.3); 1 - 0.7 is not 0.3 in binary.
        keep: (1000.0 - (smooth * 1000.0).round()) / 1000.0,
        init_bs,
        rate: init_rate,
        bs: init_bs,
        last: 0,
        switch,
    };
    // The router polls its empty queue every 10 ms from start-up: the estimate is settled by the first
    // request (a handful of calls reach the fixed point; 64 is far more).
    s.skipped_merges(64);
    Ok(Box::new(s))
}

pub struct SloraAbort {
    /// Waiting requests (id, arrival), oldest first.
    queue: VecDeque<(u32, Nanos)>,
    /// A request that has waited this long is aborted (slo - margin).
    limit: Nanos,
    new: f64,
    keep: f64,
    init_bs: i64,
    /// S-LoRA's `apprx_req_rate`, `apprx_bs` and `last_req_num`.
    rate: i64,
    bs: i64,
    last: i64,
    switch: bool,
}

impl SloraAbort {
    fn smooth(&self, x: i64, prev: i64) -> i64 {
        // Python's int() truncates toward zero, as `as` does.
        (self.new * x as f64 + self.keep * prev as f64) as i64
    }

    /// The order of the next offer: newest first while new requests outpace the batches it forms.
    fn newest_first(&self) -> bool {
        self.switch && self.rate >= self.bs
    }

    /// The request-rate estimate the next `select` starts by taking (S-LoRA updates it at every call).
    fn next_rate(&self) -> i64 {
        self.smooth(self.queue.len() as i64 - self.last, self.rate)
    }
}

impl Scheduler for SloraAbort {
    fn on_arrival(&mut self, req: &Request, now: Nanos) {
        self.queue.push_back((req.id, now));
    }

    fn select(&mut self, adm: &mut Admission<'_>) {
        self.rate = self.next_rate();
        // Arrival stamps grow along the queue: the aborted requests are its oldest.
        let now = adm.now();
        while let Some(&(id, at)) = self.queue.front() {
            let waited = now - at;
            if waited < self.limit {
                break;
            }
            adm.abort(
                id,
                Abort::Deadline {
                    waited,
                    limit: self.limit,
                },
            );
            self.queue.pop_front();
        }
        let mut admitted = 0usize;
        if self.newest_first() {
            while let Some(&(id, _)) = self.queue.back() {
                if !adm.try_admit(id) {
                    break;
                }
                self.queue.pop_back();
                admitted += 1;
            }
        } else {
            while let Some(&(id, _)) = self.queue.front() {
                if !adm.try_admit(id) {
                    break;
                }
                self.queue.pop_front();
                admitted += 1;
            }
        }
        if admitted > 0 {
            self.last = self.queue.len() as i64;
            self.bs = self.smooth(admitted as i64, self.bs).max(self.init_bs);
        }
    }

    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        // The order the next `select` takes, after its estimate update.
        let ids = self.queue.iter().map(|&(id, _)| id);
        if self.switch && self.next_rate() >= self.bs {
            super::visit_in_order(ids.rev(), visit);
        } else {
            super::visit_in_order(ids, visit);
        }
    }

    fn waiting(&self) -> usize {
        self.queue.len()
    }

    fn skipped_merges(&mut self, calls: u64) {
        // Each call sees an empty queue: rate = int(0.7 x (0 - last) + 0.3 x rate), which reaches its fixed
        // point within a few calls.
        for _ in 0..calls.min(64) {
            let next = self.smooth(-self.last, self.rate);
            if next == self.rate {
                break;
            }
            self.rate = next;
        }
    }
}
