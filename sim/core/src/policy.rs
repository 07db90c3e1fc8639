//! What a scheduler or cache policy is built with: the workload, predictions, the pool, and cost estimates.

use crate::cost::{BatchShape, CostModel};
use crate::metrics::Slo;
use crate::time::Nanos;
use crate::workload::{Request, Workload};

pub struct PolicyCtx<'a> {
    pub workload: &'a Workload,
    /// Per request, the output length the predictor gives (`--predictor`); the oracle gives the true one.
    pub predicted_output: &'a [u32],
    /// KV slots of the unified pool.
    pub pool_slots: u64,
    pub slo: Slo,
    /// Cost of one prompt token in a prefill iteration (a 1024-token prefill, divided by 1024).
    pub prefill_ns_per_token: f64,
    /// Cost of one decode step of a mid-sized batch (32 sequences of 1024 tokens).
    pub decode_ns_per_step: f64,
    /// Per adapter, the time to load it when the link is free.
    pub load_ns: Vec<Nanos>,
    /// Largest prompt, predicted output and adapter of the workload (the WRS normalisers).
    max_in: f64,
    max_out: f64,
    max_slots: u64,
}

impl<'a> PolicyCtx<'a> {
    pub fn new(
        workload: &'a Workload,
        predicted_output: &'a [u32],
        pool_slots: u64,
        slo: Slo,
        cost: &dyn CostModel,
    ) -> PolicyCtx<'a> {
        let prefill = cost.iteration(&BatchShape {
            prefill_seqs: 1,
            prefill_tokens: 1024,
            prefill_sq_tokens: 1024 * 1024,
            ..Default::default()
        });
        let decode = cost.iteration(&BatchShape {
            decode_seqs: 32,
            decode_context: 32 * 1024,
            ..Default::default()
        });
        PolicyCtx {
            workload,
            predicted_output,
            pool_slots,
            slo,
            prefill_ns_per_token: prefill as f64 / 1024.0,
            decode_ns_per_step: decode as f64,
            load_ns: workload
                .adapters
                .iter()
                .map(|a| cost.adapter_load(a.bytes))
                .collect(),
            max_in: workload
                .requests
                .iter()
                .map(|r| r.input)
                .max()
                .unwrap_or(1)
                .max(1) as f64,
            max_out: predicted_output.iter().copied().max().unwrap_or(1).max(1) as f64,
            max_slots: workload.adapters.iter().map(|a| a.slots).max().unwrap_or(0),
        }
    }

    /// Slots a request occupies at its peak: prompt + predicted output + its adapter.
    pub fn size_tokens(&self, r: &Request) -> u64 {
        r.input as u64
            + self.predicted_output[r.id as usize] as u64
            + self.workload.adapter(r.adapter).map_or(0, |a| a.slots)
    }

    /// Chameleon's Weighted Request Size in [0, 1]:
    /// `(0.4 In/MaxIn + 0.6 PredOut/MaxOut) x AdapterSlots/MaxAdapterSlots` (no adapter: factor 1).
    pub fn wrs(&self, r: &Request) -> f64 {
        let len = 0.4 * r.input as f64 / self.max_in
            + 0.6 * self.predicted_output[r.id as usize] as f64 / self.max_out;
        match self.workload.adapter(r.adapter) {
            Some(a) if self.max_slots > 0 => len * a.slots as f64 / self.max_slots as f64,
            _ => len,
        }
    }

    /// Expected time to serve a request alone once admitted: its prefill plus one decode step per token.
    pub fn service_ns(&self, r: &Request) -> f64 {
        r.input as f64 * self.prefill_ns_per_token
            + self.predicted_output[r.id as usize] as f64 * self.decode_ns_per_step
    }
}
