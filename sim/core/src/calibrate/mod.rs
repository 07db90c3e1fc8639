//! Calibration, written once: the plan ([`Plan`]) and the loop that measures it ([`measure`]) on a
//! [`Target`]. `sim fidelity` measures a backend through the engine's clock ([`OnClock`]: wall clock around
//! each `Executor` call); `calibrate` measures its GPU decoder with CUDA events. Both get the same tables:
//! prefill points, decode points over batch x context, LoRA points (the work adapters add to a batch) and
//! adapter-load points, each the median of its repeats. Repeats run in rounds (each round measures every
//! point once) so a burst of interference from other processes lands on different points, not on all
//! repeats of one.

pub mod plan;

pub use plan::{MAX_TOKENS, Plan};

use crate::cost::profile::{DecodePoint, LoadPoint, LoraPoint, PrefillPoint};
use crate::cost::{BatchShape, LoadMethod, LoadShape};
use crate::engine::{Clock, Seq};
use crate::error::{Error, Result};
use crate::metrics::median;
use crate::model::ModelSpec;
use crate::time::Nanos;
use crate::workload::{Adapter, NO_ADAPTER};

/// Request ids the calibration uses (far above any trace's).
pub const CAL_REQ: u32 = 0x8000_0000;
/// Adapter ids the calibration uses: load points from here, LoRA adapters from `CAL_ADAPTER + 1000`.
pub const CAL_ADAPTER: u32 = 0x4000_0000;

/// What the loop measures on.
pub trait Target {
    /// Puts the calibration's adapters in host memory, outside any timing.
    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()>;
    /// Runs one iteration of `seqs` and returns its duration.
    fn iteration(&mut self, seqs: &[Seq]) -> Result<Nanos>;
    /// Gives `seqs` (prefills) their KV cache, ready to decode. By default an untimed iteration.
    fn fill(&mut self, seqs: &[Seq]) -> Result<()> {
        self.iteration(seqs).map(|_| ())
    }
    /// The LoRA work of `seqs` (prefills whose sequences carry adapters). By default the iteration with
    /// the adapters minus the same iteration without them, back to back.
    fn lora(&mut self, seqs: &[Seq]) -> Result<Nanos> {
        let with = self.iteration(seqs)?;
        seqs.iter().for_each(|s| self.release(s.request));
        let base: Vec<Seq> = seqs
            .iter()
            .map(|s| Seq {
                adapter: NO_ADAPTER,
                rank: 0,
                ..*s
            })
            .collect();
        let without = self.iteration(&base)?;
        Ok(with.saturating_sub(without))
    }
    /// Makes an adapter resident and returns how long that took.
    fn load(&mut self, adapter: u32, bytes: u64) -> Result<Nanos>;
    /// One adapter-load point: by default a load (the target's own way of copying, alone) then an evict.
    fn measure_load(
        &mut self,
        adapter: u32,
        bytes: u64,
        method: LoadMethod,
        with_compute: bool,
    ) -> Result<Nanos> {
        if method != LoadMethod::PerLayerPinned || with_compute {
            return Err(Error::internal(format!(
                "this target measures only {} loads alone, not {}{}",
                LoadMethod::PerLayerPinned.name(),
                method.name(),
                if with_compute { " with compute" } else { "" }
            )));
        }
        let ns = self.load(adapter, bytes)?;
        self.evict(adapter);
        Ok(ns)
    }
    fn release(&mut self, request: u32);
    fn evict(&mut self, adapter: u32);
    /// Called before each measurement, with what it is (for a progress display).
    fn progress(&mut self, _what: &str) {}
}

/// A clock as a target: `Timed(executor)` measures with the wall clock around each call.
pub struct OnClock<'a>(pub &'a mut dyn Clock);

/// The shape the engine would give an iteration of `seqs` (a clock may look at it; `Timed` does not).
pub fn shape_of(seqs: &[Seq]) -> BatchShape {
    let mut shape = BatchShape::default();
    for s in seqs {
        let n = s.new_tokens as u64;
        if s.context == 0 {
            shape.prefill_seqs += 1;
            shape.prefill_tokens += n;
            shape.prefill_sq_tokens += n * n;
            shape.prefill_max_len = shape.prefill_max_len.max(n);
        } else {
            shape.decode_seqs += 1;
            shape.decode_context += s.context as u64;
        }
        if s.adapter != NO_ADAPTER {
            shape.lora_tokens += n;
            shape.lora_seqs += 1;
            shape.lora_max_rank = shape.lora_max_rank.max(s.rank as u64);
        }
        shape.lora_token_rank += n * s.rank as u64;
    }
    shape
}

impl Target for OnClock<'_> {
    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
        self.0.prepare(adapters)
    }
    fn iteration(&mut self, seqs: &[Seq]) -> Result<Nanos> {
        self.0.iteration(&shape_of(seqs), &mut seqs.iter().copied())
    }
    fn load(&mut self, adapter: u32, bytes: u64) -> Result<Nanos> {
        // The executor copies its own way; the shape matters only to a simulated clock.
        let one = LoadShape {
            bytes,
            copies: 1,
            pinned: true,
        };
        self.0.load(adapter, bytes, &one)
    }
    fn release(&mut self, request: u32) {
        self.0.release(request)
    }
    fn evict(&mut self, adapter: u32) {
        self.0.evict(adapter)
    }
}

/// The measured tables, ready for a profile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Tables {
    pub prefill: Vec<PrefillPoint>,
    pub decode: Vec<DecodePoint>,
    pub lora: Vec<LoraPoint>,
    pub adapter_load: Vec<LoadPoint>,
}

/// The median of a point's repeats, at least 1 ns.
fn med(v: &[Nanos]) -> Nanos {
    let mut f: Vec<f64> = v.iter().map(|&x| x as f64).collect();
    (median(&mut f).unwrap_or(0.0).round() as Nanos).max(1)
}

/// Tokens split as evenly as possible over `seqs` sequences.
fn split(tokens: u64, seqs: u64) -> Vec<u64> {
    (0..seqs)
        .map(|i| tokens / seqs + u64::from(i < tokens % seqs))
        .collect()
}

struct Loop<'a> {
    t: &'a mut dyn Target,
    next_req: u32,
}

impl Loop<'_> {
    /// Prefill sequences of the given lengths (adapters per sequence, the rest without), with new ids.
    fn prefills(&mut self, lens: &[u64], adapters: &[(u32, u32)]) -> Vec<Seq> {
        lens.iter()
            .enumerate()
            .map(|(i, &l)| {
                let (adapter, rank) = adapters.get(i).copied().unwrap_or((NO_ADAPTER, 0));
                self.next_req += 1;
                Seq {
                    request: self.next_req - 1,
                    new_tokens: l as u32,
                    context: 0,
                    adapter,
                    rank,
                }
            })
            .collect()
    }

    fn release(&mut self, seqs: &[Seq]) {
        seqs.iter().for_each(|s| self.t.release(s.request));
    }
}

/// Measures every point of `plan` on `t`. `kv_slots` bounds how many decode points' sequences are held at
/// once; `engine_model` gives adapters their bytes.
pub fn measure(
    t: &mut dyn Target,
    plan: &Plan,
    engine_model: &ModelSpec,
    kv_slots: u64,
) -> Result<Tables> {
    let mut l = Loop {
        t,
        next_req: CAL_REQ,
    };
    let rounds = plan.rounds() as usize;
    let keep = |round: usize| round >= plan.warmup as usize;
    // Warm-up: one small prefill (first-touch allocation, caches).
    let seqs = l.prefills(&[8, 8], &[]);
    l.t.iteration(&seqs)?;
    l.release(&seqs);

    let mut prefill = vec![Vec::new(); plan.prefill.len()];
    for round in 0..rounds {
        for (i, &(tokens, n)) in plan.prefill.iter().enumerate() {
            l.t.progress(&format!("prefill {tokens} tokens in {n} sequences"));
            let seqs = l.prefills(&split(tokens, n), &[]);
            let ns = l.t.iteration(&seqs)?;
            l.release(&seqs);
            if keep(round) {
                prefill[i].push(ns);
            }
        }
    }

    // Decode: fill the sequences of as many points as the KV cache holds at once, then rounds of one
    // timed step per point (each step one token longer).
    let mut decode = vec![Vec::new(); plan.decode.len()];
    let mut start = 0;
    while start < plan.decode.len() {
        let (mut end, mut live) = (start, 0);
        while end < plan.decode.len() {
            let (b, c) = plan.decode[end];
            let need = plan.decode_need(b, c);
            if end > start && live + need > kv_slots {
                break;
            }
            live += need;
            end += 1;
        }
        let mut groups = Vec::new();
        for &(batch, context) in &plan.decode[start..end] {
            let seqs = l.prefills(&vec![context; batch as usize], &[]);
            l.t.fill(&seqs)?;
            groups.push(seqs);
        }
        for step in 0..rounds {
            for (g, &(batch, context)) in plan.decode[start..end].iter().enumerate() {
                l.t.progress(&format!("decode batch {batch}, context {context}"));
                let ctx = context + 1 + step as u64;
                let seqs: Vec<Seq> = groups[g]
                    .iter()
                    .map(|s| Seq {
                        new_tokens: 1,
                        context: ctx as u32,
                        ..*s
                    })
                    .collect();
                let ns = l.t.iteration(&seqs)?;
                if keep(step) {
                    decode[start + g].push(ns);
                }
            }
        }
        for seqs in &groups {
            l.release(seqs);
        }
        start = end;
    }

    // Every calibration adapter is put in host memory first, as the run's adapters are.
    let adapter = |id: u32, rank: u32| Adapter {
        id,
        rank,
        bytes: engine_model.adapter_bytes(rank),
        slots: engine_model.adapter_slots(rank),
    };
    let (lora_ranks, lora_points) = plan.lora_adapters();
    let lora_id = |k: usize| CAL_ADAPTER + 1000 + k as u32;
    let mut host: Vec<Adapter> = plan
        .loads
        .iter()
        .enumerate()
        .map(|(i, &(r, _, _))| adapter(CAL_ADAPTER + i as u32, r))
        .collect();
    host.extend(
        lora_ranks
            .iter()
            .enumerate()
            .map(|(k, &r)| adapter(lora_id(k), r)),
    );
    l.t.prepare(&host)?;

    let mut loads = vec![Vec::new(); plan.loads.len()];
    for round in 0..rounds {
        for (i, &(rank, method, with_compute)) in plan.loads.iter().enumerate() {
            l.t.progress(&format!(
                "load rank {rank} {} {}",
                method.name(),
                if with_compute {
                    "with compute"
                } else {
                    "alone"
                }
            ));
            let (id, bytes) = (CAL_ADAPTER + i as u32, engine_model.adapter_bytes(rank));
            let ns = l.t.measure_load(id, bytes, method, with_compute)?;
            if keep(round) {
                loads[i].push(ns);
            }
        }
    }

    // LoRA: up to 16 tokens, one-token sequences dealt round-robin to the adapters (a decode step's
    // shape); more, one sequence per adapter.
    for (k, &r) in lora_ranks.iter().enumerate() {
        l.t.load(lora_id(k), engine_model.adapter_bytes(r))?;
    }
    // Per point: sequence lengths and each sequence's (adapter, rank).
    type Batch = (Vec<u64>, Vec<(u32, u32)>);
    let lora_in: Vec<Batch> = plan
        .lora
        .iter()
        .zip(&lora_points)
        .map(|((tokens, ranks), ids)| {
            let adapters: Vec<(u32, u32)> =
                ids.iter().map(|&k| (lora_id(k), lora_ranks[k])).collect();
            if *tokens <= 16 {
                let per = (0..*tokens as usize)
                    .map(|i| adapters[i % adapters.len()])
                    .collect();
                (vec![1; *tokens as usize], per)
            } else {
                (split(*tokens, ranks.len() as u64), adapters)
            }
        })
        .collect();
    let mut lora = vec![Vec::new(); plan.lora.len()];
    for round in 0..rounds {
        for (i, (lens, per_seq)) in lora_in.iter().enumerate() {
            let (tokens, ranks) = &plan.lora[i];
            l.t.progress(&format!("LoRA {tokens} tokens, ranks {ranks:?}"));
            let seqs = l.prefills(lens, per_seq);
            let ns = l.t.lora(&seqs)?;
            l.release(&seqs);
            if keep(round) {
                lora[i].push(ns);
            }
        }
    }
    (0..lora_ranks.len()).for_each(|k| l.t.evict(lora_id(k)));

    Ok(Tables {
        prefill: plan
            .prefill
            .iter()
            .zip(&prefill)
            .map(|(&(tokens, seqs), v)| PrefillPoint {
                tokens,
                seqs,
                time_ns: med(v),
            })
            .collect(),
        decode: plan
            .decode
            .iter()
            .zip(&decode)
            .map(|(&(batch, context), v)| DecodePoint {
                batch,
                context,
                time_ns: med(v),
            })
            .collect(),
        lora: plan
            .lora
            .iter()
            .zip(&lora)
            .map(|((tokens, ranks), v)| LoraPoint {
                tokens: *tokens,
                ranks: ranks.clone(),
                time_ns: med(v),
            })
            .collect(),
        adapter_load: plan
            .loads
            .iter()
            .zip(&loads)
            .map(|(&(rank, method, with_compute), v)| LoadPoint {
                bytes: engine_model.adapter_bytes(rank),
                method: method.name().into(),
                with_compute,
                time_ns: med(v),
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    /// A target whose costs are formulas of the batch: 10 ns per prefill token, 1 ns per decode context
    /// token, 100 ns per token x rank of LoRA, 1 ns per KiB copied. It checks the loop's bookkeeping.
    #[derive(Default)]
    struct Fake {
        live: HashSet<u32>,
        resident: HashSet<u32>,
        host: HashSet<u32>,
    }

    impl Target for Fake {
        fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
            self.host.extend(adapters.iter().map(|a| a.id));
            Ok(())
        }
        fn iteration(&mut self, seqs: &[Seq]) -> Result<Nanos> {
            for s in seqs {
                if s.context == 0 {
                    self.live.insert(s.request);
                } else {
                    assert!(self.live.contains(&s.request), "decode before prefill");
                }
                if s.adapter != NO_ADAPTER {
                    assert!(self.resident.contains(&s.adapter), "adapter not loaded");
                }
            }
            let b = shape_of(seqs);
            Ok(10 * b.prefill_tokens + b.decode_context + 100 * b.lora_token_rank)
        }
        fn load(&mut self, adapter: u32, bytes: u64) -> Result<Nanos> {
            assert!(self.host.contains(&adapter), "adapter not prepared");
            self.resident.insert(adapter);
            Ok(bytes / 1024)
        }
        fn release(&mut self, request: u32) {
            self.live.remove(&request);
        }
        fn evict(&mut self, adapter: u32) {
            self.resident.remove(&adapter);
        }
    }

    #[test]
    fn the_loop_measures_every_point_discards_warm_up_rounds_and_cleans_up() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let plan = Plan {
            prefill: vec![(64, 1), (64, 4)],
            decode: vec![(2, 100), (8, 30)],
            lora: vec![(4, vec![8, 16]), (40, vec![8, 8])],
            loads: vec![(8, LoadMethod::PerLayerPinned, false)],
            warmup: 1,
            repeats: 2,
            skipped: vec![],
        };
        let mut t = Fake::default();
        let tab = measure(&mut t, &plan, m, 1000).unwrap();
        assert!(t.live.is_empty() && t.resident.is_empty());
        assert_eq!(
            tab.prefill.iter().map(|p| p.time_ns).collect::<Vec<_>>(),
            [640, 640]
        );
        // Decode steps read context + 1 + round; rounds 1 and 2 are kept, round 0 warms up.
        let want = |b: u64, c: u64| ((b * (c + 2) + b * (c + 3)) as f64 / 2.0).round() as u64;
        assert_eq!(tab.decode[0].time_ns, want(2, 100));
        assert_eq!(tab.decode[1].time_ns, want(8, 30));
        // LoRA: with minus without, 100 ns per token x rank (4 one-token sequences alternate 8 and 16).
        assert_eq!(tab.lora[0].time_ns, 100 * (8 + 16 + 8 + 16));
        assert_eq!(tab.lora[1].time_ns, 100 * 40 * 8);
        assert_eq!(tab.adapter_load[0].time_ns, m.adapter_bytes(8) / 1024);
        assert_eq!(tab.adapter_load[0].method, "per_layer_pinned");
        // One load adapter and three LoRA ones: the second point's first rank-8 one is the first point's.
        assert_eq!(t.host.len(), 1 + 3);
    }

    #[test]
    fn a_clock_target_measures_only_what_it_can() {
        let mut t = Fake::default();
        t.host.insert(1);
        let e = t
            .measure_load(1, 1 << 20, LoadMethod::ContiguousPageable, false)
            .unwrap_err();
        assert!(e.to_string().contains("contiguous_pageable"), "{e}");
        assert_eq!(
            t.measure_load(1, 1 << 20, LoadMethod::PerLayerPinned, false)
                .unwrap(),
            1024
        );
        assert!(t.resident.is_empty());
    }
}
