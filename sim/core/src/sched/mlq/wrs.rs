//! Chameleon's Weighted Request Size, and the summary hook reporting queueing per WRS class.

use crate::metrics::{Dist, RunView, num, queue_e2e, ttft_tail};
use crate::workload::{Request, Workload};

/// Chameleon's Weighted Request Size in [0, 1]:
/// `(0.4 In/MaxIn + 0.6 PredOut/MaxOut) x AdapterSlots/MaxAdapterSlots` (no adapter: factor 1), the maxima
/// over the workload (the largest prompt, prediction and adapter the server is configured for).
pub struct Wrs<'a> {
    workload: &'a Workload,
    predicted: &'a [u32],
    max_in: f64,
    max_out: f64,
    max_slots: u64,
}

impl<'a> Wrs<'a> {
    pub fn new(workload: &'a Workload, predicted: &'a [u32]) -> Wrs<'a> {
        let max_in = workload.requests.iter().map(|r| r.input).max();
        Wrs {
            workload,
            predicted,
            max_in: max_in.unwrap_or(1).max(1) as f64,
            max_out: predicted.iter().copied().max().unwrap_or(1).max(1) as f64,
            max_slots: workload.adapters.iter().map(|a| a.slots).max().unwrap_or(0),
        }
    }

    pub fn of(&self, r: &Request) -> f64 {
        let len = 0.4 * r.input as f64 / self.max_in
            + 0.6 * self.predicted[r.id as usize] as f64 / self.max_out;
        match self.workload.adapter(r.adapter) {
            Some(a) if self.max_slots > 0 => len * a.slots as f64 / self.max_slots as f64,
            _ => len,
        }
    }
}

/// Summary hook (every run, whatever its scheduler): queueing delay per WRS class, the quartiles
/// [0, .25), [.25, .5), [.5, .75), [.75, 1] of the weighted request size (`wrs_class{c}_requests`,
/// `queue_mean_wrs{c}_s`, `queue_p99_wrs{c}_s`, c = 1..4), each class's queueing as a share of its E2E
/// (`queue_share_wrs{c}`) and its share of the slowest 1% by TTFT (`ttft_tail_wrs{c}_share`).
pub fn wrs_summary(v: &RunView<'_>, m: &mut serde_json::Map<String, serde_json::Value>) {
    let sizer = Wrs::new(v.workload, v.predicted);
    let class_of = |i: usize| {
        let x = sizer.of(&v.workload.requests[i]);
        ((x * 4.0).floor().max(0.0) as usize).min(3)
    };
    let mut classes: [Vec<f64>; 4] = Default::default();
    let mut sums = [(0u64, 0u64); 4];
    for &i in v.finished {
        let c = class_of(i);
        classes[c].push(v.queue_s(i));
        let (q, e) = queue_e2e(v, i);
        sums[c].0 += q;
        sums[c].1 += e;
    }
    let mut in_tail = [0usize; 4];
    let tail = ttft_tail(v);
    for &i in &tail {
        in_tail[class_of(i)] += 1;
    }
    for (c, &(q, e)) in sums.iter().enumerate() {
        m.insert(
            format!("queue_share_wrs{}", c + 1),
            num(q as f64 / e as f64),
        );
        m.insert(
            format!("ttft_tail_wrs{}_share", c + 1),
            num(in_tail[c] as f64 / tail.len() as f64),
        );
    }
    for (c, mut q) in classes.into_iter().enumerate() {
        m.insert(format!("wrs_class{}_requests", c + 1), q.len().into());
        let d = Dist::of(&mut q);
        m.insert(format!("queue_mean_wrs{}_s", c + 1), num(d.mean));
        m.insert(format!("queue_p99_wrs{}_s", c + 1), num(d.p99));
    }
}
