//! A decoder run for real as the engine's executor, the same for both backends (they differ only in their
//! operations and how they are built): the engine's sequences become decoder steps (a prefill starts the
//! request over with its prompt, a decode feeds the token the request generated last), `prepare` puts
//! every adapter in host memory outside any timing, `load` copies one into the decoder's adapter store.

use std::collections::HashMap;
use std::time::Instant;

use kernels::decoder::{Decoder, Ops, Step, adapter_weights, prompt};

use super::{Dims, Estimator};
use sim_core::cost::{BatchShape, CostModel};
use sim_core::engine::{Executor, Seq};
use sim_core::error::{Error, Result};
use sim_core::model::ModelSpec;
use sim_core::workload::{Adapter, NO_ADAPTER};

/// Request ids (and the adapter id) the warm-up uses: far above any trace's.
const WARM_IDS: [u32; 2] = [u32::MAX - 2, u32::MAX - 1];
const WARM_ADAPTER: u32 = u32::MAX - 1;

pub struct RealBackend<O: Ops> {
    pub(crate) model: Decoder<O>,
    /// "Host memory": every adapter's weights (and rank), made by `prepare` before the run.
    host: HashMap<u32, (u32, Box<O::HostAdapter>)>,
    /// Names the backend in errors ("cpu backend", "cuda backend").
    name: &'static str,
    /// Seeds the prompts and the adapters' weights.
    seed: u64,
    /// Appended to an "adapter region full" error: what the user can raise.
    full_hint: &'static str,
    iterations: u64,
    tokens_generated: u64,
    /// The engine's model: converts the engine's adapter bytes into a rank.
    engine_model: &'static ModelSpec,
    describe: String,
    estimate: Estimator,
}

impl<O: Ops> RealBackend<O> {
    /// `elem_bytes` is the size of one of the decoder's values (its adapters' bytes per rank follow).
    pub(crate) fn from_decoder(
        model: Decoder<O>,
        name: &'static str,
        seed: u64,
        full_hint: &'static str,
        engine_model: &'static ModelSpec,
        describe: String,
        elem_bytes: usize,
    ) -> RealBackend<O> {
        let s = model.shape;
        let own = (s.adapter_len(1) * elem_bytes) as f64;
        let estimate = Estimator {
            dims: Dims {
                layers: s.layers as f64,
                hidden: s.hidden as f64,
                kv_row: s.kv_row() as f64,
                intermediate: s.intermediate as f64,
                vocab: s.vocab as f64,
            },
            ns_per_flop: 1.0,
            ns_per_byte: 0.1,
            bytes_ratio: own / engine_model.adapter_bytes(1) as f64,
            fixed_ns: 0.0,
        };
        RealBackend {
            model,
            host: HashMap::new(),
            name,
            seed,
            full_hint,
            iterations: 0,
            tokens_generated: 0,
            engine_model,
            describe,
            estimate,
        }
    }

    fn err(&self) -> impl Fn(kernels::Error) -> Error + '_ {
        move |e| {
            let hint = if e.0.contains("adapter region full") {
                self.full_hint
            } else {
                ""
            };
            Error::internal(format!("{}: {e}{hint}", self.name))
        }
    }

    pub fn estimator(&self) -> Estimator {
        self.estimate
    }

    /// (KV pages in use, adapters resident, sequences held): what the backend holds now.
    pub fn occupancy(&self) -> (usize, usize, usize) {
        (
            self.model.kv.pages_in_use(),
            self.model.store.resident(),
            self.model.seqs.len(),
        )
    }

    /// (iterations run, tokens generated).
    pub fn counters(&self) -> (u64, u64) {
        (self.iterations, self.tokens_generated)
    }

    fn rank_of(&self, adapter: u32, bytes: u64) -> Result<u32> {
        let per_rank = self.engine_model.adapter_bytes(1);
        if bytes == 0 || !bytes.is_multiple_of(per_rank) {
            return Err(Error::internal(format!(
                "{}: adapter {adapter}: {bytes} bytes is not a whole rank of {}",
                self.name, self.engine_model.name
            )));
        }
        Ok((bytes / per_rank) as u32)
    }

    fn host_adapter(&mut self, adapter: u32, rank: u32) -> Result<()> {
        if self.host.get(&adapter).is_some_and(|h| h.0 == rank) {
            return Ok(());
        }
        let w = adapter_weights(&self.model.shape, self.seed, adapter, rank);
        let host = self.model.ops.host_adapter(w).map_err(self.err())?;
        self.host.insert(adapter, (rank, host));
        Ok(())
    }

    /// The decoder steps of an iteration's sequences.
    fn steps(&mut self, seqs: &mut dyn Iterator<Item = Seq>) -> Result<Vec<Step>> {
        let vocab = self.model.shape.vocab;
        let mut steps = Vec::new();
        for s in seqs {
            let adapter = (s.adapter != NO_ADAPTER).then_some(s.adapter);
            let tokens = if s.context == 0 {
                // A prefill; a request squashed and re-admitted starts over.
                self.model.release(s.request);
                prompt(self.seed, vocab, s.request, s.new_tokens as usize)
            } else {
                let next = self.model.next_token(s.request).ok_or_else(|| {
                    Error::internal(format!(
                        "{}: request {} decodes before its prefill",
                        self.name, s.request
                    ))
                })?;
                vec![next; s.new_tokens.min(1) as usize]
            };
            steps.push(Step {
                request: s.request,
                tokens,
                adapter,
            });
        }
        Ok(steps)
    }

    /// Times a prefill of two `n`-token sequences plus four decode steps, and a load of a rank-`rank`
    /// adapter (each the fastest of three), for the policies' estimates. Leaves the model as it found it.
    pub(crate) fn warm_up(&mut self, n: usize, rank: u32) -> Result<()> {
        let steps = 4u64;
        let (mut best, mut best_load) = (f64::INFINITY, f64::INFINITY);
        let w = adapter_weights(&self.model.shape, self.seed, WARM_ADAPTER, rank);
        let host = self.model.ops.host_adapter(w).map_err(self.err())?;
        for _ in 0..3 {
            let r = warm_round(&mut self.model, self.seed, n, steps, rank, &host);
            WARM_IDS.iter().for_each(|&r| self.model.release(r));
            self.model.evict_adapter(WARM_ADAPTER);
            let (pass, load) = r.map_err(self.err())?;
            best = best.min(pass);
            best_load = best_load.min(load);
        }
        let k = WARM_IDS.len() as u64;
        let n = n as u64;
        let d = self.estimate.dims;
        let flops = d.flops(&BatchShape {
            prefill_seqs: k,
            prefill_tokens: k * n,
            prefill_sq_tokens: k * n * n,
            ..Default::default()
        }) + steps as f64
            * d.flops(&BatchShape {
                decode_seqs: k,
                decode_context: k * (n + steps / 2),
                ..Default::default()
            });
        let own = self.engine_model.adapter_bytes(rank) as f64 * self.estimate.bytes_ratio;
        self.estimate.ns_per_flop = best / flops;
        self.estimate.ns_per_byte = best_load / own;
        Ok(())
    }
}

/// One warm-up round: (ns of the prefill and the decode steps, ns of the adapter load).
fn warm_round<O: Ops>(
    m: &mut Decoder<O>,
    seed: u64,
    n: usize,
    steps: u64,
    rank: u32,
    host: &O::HostAdapter,
) -> kernels::Result<(f64, f64)> {
    let vocab = m.shape.vocab;
    let t = Instant::now();
    let pre: Vec<Step> = WARM_IDS
        .iter()
        .map(|&r| Step {
            request: r,
            tokens: prompt(seed, vocab, r, n),
            adapter: None,
        })
        .collect();
    m.forward(&pre)?;
    for _ in 0..steps {
        let dec: Vec<Step> = WARM_IDS
            .iter()
            .map(|&r| Step {
                request: r,
                tokens: vec![m.next_token(r).unwrap_or(0)],
                adapter: None,
            })
            .collect();
        m.forward(&dec)?;
    }
    let pass = t.elapsed().as_nanos() as f64;
    let t = Instant::now();
    m.load_adapter(WARM_ADAPTER, rank, host)?;
    Ok((pass, t.elapsed().as_nanos() as f64))
}

impl<O: Ops> Executor for RealBackend<O> {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn estimates(&self) -> &dyn CostModel {
        &self.estimate
    }

    fn prepare(&mut self, adapters: &[Adapter]) -> Result<()> {
        for a in adapters {
            self.host_adapter(a.id, a.rank)?;
        }
        Ok(())
    }

    fn run_iteration(&mut self, seqs: &mut dyn Iterator<Item = Seq>) -> Result<()> {
        let steps = self.steps(seqs)?;
        let out = self.model.forward(&steps).map_err(self.err())?;
        self.iterations += 1;
        self.tokens_generated += out.next.len() as u64;
        Ok(())
    }

    fn load(&mut self, adapter: u32, bytes: u64) -> Result<()> {
        let rank = self.rank_of(adapter, bytes)?;
        let (host_rank, host) = self.host.get(&adapter).ok_or_else(|| {
            Error::internal(format!(
                "{}: adapter {adapter} was never prepared",
                self.name
            ))
        })?;
        if *host_rank != rank {
            return Err(Error::internal(format!(
                "{}: adapter {adapter} loaded with rank {rank}, prepared with {host_rank}",
                self.name
            )));
        }
        let (name, hint) = (self.name, self.full_hint);
        self.model.load_adapter(adapter, rank, host).map_err(|e| {
            let hint = if e.0.contains("adapter region full") {
                hint
            } else {
                ""
            };
            Error::internal(format!("{name}: {e}{hint}"))
        })
    }

    fn release(&mut self, request: u32) {
        self.model.release(request);
    }

    fn evict(&mut self, adapter: u32) {
        self.model.evict_adapter(adapter);
    }
}
