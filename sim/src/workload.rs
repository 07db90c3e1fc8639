//! The workload the engine replays: adapters (rank, size) and requests (arrival, lengths, adapter).

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::cost::Nanos;
use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::trace::Trace;

/// `Request::adapter` of a request served by the base model alone.
pub const NO_ADAPTER: u32 = u32::MAX;

#[derive(Clone, Debug, PartialEq)]
pub struct Adapter {
    pub id: u32,
    pub rank: u32,
    pub bytes: u64,
    /// Footprint in KV-cache slots of the unified pool.
    pub slots: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub id: u32,
    pub arrival: Nanos,
    pub input: u32,
    pub output: u32,
    pub adapter: u32,
}

#[derive(Clone, Debug)]
pub struct Workload {
    pub adapters: Vec<Adapter>,
    pub requests: Vec<Request>,
}

/// How adapters are made and assigned to requests.
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterOptions {
    /// Number of adapters; 0 serves the base model alone.
    pub count: u32,
    /// Ranks, dealt round-robin: with 100 adapters and 5 ranks, 20 of each.
    pub ranks: Vec<u32>,
    /// Popularity within a rank: adapter j (0-based) of its rank is drawn with weight (j+1)^-alpha.
    /// 0 = uniform; 1 = Zipf (the first adapter of a rank is twice as popular as the second).
    pub popularity_alpha: f64,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            count: 100,
            ranks: vec![8, 16, 32, 64, 128],
            popularity_alpha: 1.0,
        }
    }
}

impl Workload {
    /// Builds adapters for `model` and assigns one to each request: the rank uniformly at random, then the
    /// adapter within the rank by the power law. The assignment has its own random stream, so changing the
    /// arrival process (e.g. the rate) keeps each request's adapter.
    pub fn build(
        trace: &Trace,
        model: &ModelSpec,
        opts: &AdapterOptions,
        seed: u64,
    ) -> Result<Workload> {
        if opts.count > 0 && (opts.ranks.is_empty() || opts.ranks.contains(&0)) {
            return Err(Error::msg(
                "--ranks must be a non-empty list of positive ranks",
            ));
        }
        if !(opts.popularity_alpha >= 0.0 && opts.popularity_alpha.is_finite()) {
            return Err(Error::msg(format!(
                "--popularity must be >= 0, got {}",
                opts.popularity_alpha
            )));
        }
        if trace.rows.len() > u32::MAX as usize {
            return Err(Error::msg("trace has more than 2^32 requests"));
        }
        let k = opts.ranks.len();
        let adapters: Vec<Adapter> = (0..opts.count)
            .map(|id| {
                let rank = opts.ranks[id as usize % k];
                Adapter {
                    id,
                    rank,
                    bytes: model.adapter_bytes(rank),
                    slots: model.adapter_slots(rank),
                }
            })
            .collect();
        // groups[g] = adapters of rank g in popularity order, with the cumulative weights to draw from.
        let mut groups: Vec<(Vec<u32>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); k];
        for a in &adapters {
            let (ids, cdf) = &mut groups[a.id as usize % k];
            let w = ((ids.len() + 1) as f64).powf(-opts.popularity_alpha);
            cdf.push(cdf.last().copied().unwrap_or(0.0) + w);
            ids.push(a.id);
        }
        groups.retain(|g| !g.0.is_empty());
        let mut rng = StdRng::seed_from_u64(seed ^ 0xADA9_7E25_0000_0002);
        let requests = trace
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let adapter = if groups.is_empty() {
                    NO_ADAPTER
                } else {
                    let (ids, cdf) = &groups[rng.random_range(0..groups.len())];
                    let u = rng.random::<f64>() * cdf[cdf.len() - 1];
                    ids[cdf.partition_point(|&c| c <= u).min(ids.len() - 1)]
                };
                Request {
                    id: i as u32,
                    arrival: r.arrival,
                    input: r.input,
                    output: r.output,
                    adapter,
                }
            })
            .collect();
        Ok(Workload { adapters, requests })
    }

    pub fn adapter(&self, id: u32) -> Option<&Adapter> {
        self.adapters.get(id as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceRow;

    fn trace(n: usize) -> Trace {
        Trace {
            source: "t".into(),
            rows: (0..n)
                .map(|i| TraceRow {
                    arrival: i as u64,
                    input: 10,
                    output: 5,
                })
                .collect(),
        }
    }

    #[test]
    fn default_adapters_are_20_of_each_rank_sized_for_the_model() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let w = Workload::build(&trace(1), m, &AdapterOptions::default(), 0).unwrap();
        assert_eq!(w.adapters.len(), 100);
        for r in [8, 16, 32, 64, 128] {
            let of_rank: Vec<_> = w.adapters.iter().filter(|a| a.rank == r).collect();
            assert_eq!(of_rank.len(), 20);
            assert!(
                of_rank
                    .iter()
                    .all(|a| a.slots == 4 * r as u64 && a.bytes == (2 << 20) * r as u64)
            );
        }
    }

    #[test]
    fn ranks_are_uniform_and_zipf_skews_within_a_rank() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let n = 100_000;
        let w = Workload::build(&trace(n), m, &AdapterOptions::default(), 3).unwrap();
        let mut per_adapter = vec![0usize; 100];
        for r in &w.requests {
            per_adapter[r.adapter as usize] += 1;
        }
        let per_rank =
            |g: usize| (0..20).map(|j| per_adapter[g + 5 * j]).sum::<usize>() as f64 / n as f64;
        for g in 0..5 {
            assert!(
                (per_rank(g) - 0.2).abs() < 0.01,
                "rank group {g}: {}",
                per_rank(g)
            );
        }
        // Zipf(1): the first adapter of a rank is drawn about twice as often as the second.
        let ratio = per_adapter[0] as f64 / per_adapter[5] as f64;
        assert!((ratio - 2.0).abs() < 0.15, "{ratio}");
        let uniform = AdapterOptions {
            popularity_alpha: 0.0,
            ..Default::default()
        };
        let w0 = Workload::build(&trace(n), m, &uniform, 3).unwrap();
        let first = w0.requests.iter().filter(|r| r.adapter == 0).count() as f64 / n as f64;
        assert!((first - 0.01).abs() < 0.002, "{first}");
    }

    #[test]
    fn zero_adapters_serves_the_base_model() {
        let m = ModelSpec::by_name("llama-7b").unwrap();
        let opts = AdapterOptions {
            count: 0,
            ..Default::default()
        };
        let w = Workload::build(&trace(10), m, &opts, 0).unwrap();
        assert!(w.adapters.is_empty() && w.requests.iter().all(|r| r.adapter == NO_ADAPTER));
    }
}
