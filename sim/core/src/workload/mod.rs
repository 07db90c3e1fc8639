//! The workload the engine replays: adapters (rank, size) and requests (arrival, lengths, adapter), with
//! the adapter of each request from one of several popularity models (`AdapterModel`).

pub mod numpy;
pub mod slora;
pub mod tenants;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{Error, Result};
use crate::model::ModelSpec;
use crate::registry::{Entry, Kind, Param, Params, Props, Registry};
use crate::time::Nanos;
use crate::trace::{NO_ID, Trace};

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
    /// How requests pick adapters.
    pub model: AdapterModel,
}

impl Default for AdapterOptions {
    fn default() -> Self {
        AdapterOptions {
            count: 100,
            ranks: vec![8, 16, 32, 64, 128],
            popularity_alpha: 1.0,
            model: AdapterModel::Paper,
        }
    }
}

/// `--adapter-model`: how each request's adapter is chosen.
#[derive(Clone, Debug, PartialEq, Default)]
pub enum AdapterModel {
    /// Chameleon's setup: the rank uniformly at random, then within the rank adapter j with weight
    /// (j+1)^-popularity_alpha.
    #[default]
    Paper,
    /// Zipf over all adapters: adapter j (0 = most popular) with weight (j+1)^-alpha; `None` takes
    /// `popularity_alpha`.
    Zipf { alpha: Option<f64> },
    /// The trace's adapter (or tenant) column: the j-th most used id becomes adapter j mod count (or, with
    /// `index`, id j is adapter j mod count, as S-LoRA's generator numbers them); rows without an id run on
    /// the base model.
    Trace { tenant: bool, index: bool },
    /// ServeGen tenants (`tenants` module): adapter j = the j-th busiest tenant of the day.
    Tenants(tenants::TenantOptions),
}

/// The adapter models, for `Registry`.
pub struct AdapterModels;

impl Kind for AdapterModels {
    type Made = AdapterModel;
    type Ctx<'a> = ();
    const NAME: &'static str = "adapter model";
}

/// `--adapter-model`: how each request's adapter is chosen.
pub const ADAPTER_MODELS: Registry<AdapterModels> = Registry {
    entries: &[
        Entry {
            name: "paper",
            about: "Chameleon's: a rank uniformly, then adapter j of it with weight (j+1)^-ALPHA (--popularity)",
            params: &[],
            props: Props::DEFAULT,
            build: |_, _| Ok(Box::new(AdapterModel::Paper)),
        },
        Entry {
            name: "zipf",
            about: "Zipf over all adapters: adapter j with weight (j+1)^-alpha",
            params: &[Param::optional(
                "alpha",
                "exponent >= 0 (absent: --popularity)",
            )],
            props: Props::DEFAULT,
            build: zipf,
        },
        Entry {
            name: "trace",
            about: "the trace's adapter (or tenant) column; rows without one run on the base model",
            params: &[
                Param::new("by", "adapter", "the column: adapter or tenant"),
                Param::new(
                    "ids",
                    "popularity",
                    "popularity (the j-th most used id is adapter j) or index (id j is adapter j)",
                ),
            ],
            props: Props::DEFAULT,
            build: by_trace,
        },
        Entry {
            name: "tenants",
            about: "ServeGen tenants: adapter j is the j-th busiest tenant of the day (docs/workloads.md)",
            params: tenants::PARAMS,
            props: Props::DEFAULT,
            build: |p, _| {
                Ok(Box::new(AdapterModel::Tenants(
                    tenants::TenantOptions::from_params(p)?,
                )))
            },
        },
    ],
};

fn zipf(p: &mut Params, _: &()) -> Result<Box<AdapterModel>> {
    let alpha = match p.given("alpha") {
        None => None,
        Some(v) => Some(
            v.parse()
                .ok()
                .filter(|a: &f64| *a >= 0.0 && a.is_finite())
                .ok_or_else(|| p.bad(format!("alpha must be >= 0, got '{v}'")))?,
        ),
    };
    Ok(Box::new(AdapterModel::Zipf { alpha }))
}

fn by_trace(p: &mut Params, _: &()) -> Result<Box<AdapterModel>> {
    let tenant = match p.get::<String>("by")?.as_str() {
        "adapter" => false,
        "tenant" => true,
        by => return Err(p.bad(format!("by must be adapter or tenant, got '{by}'"))),
    };
    let index = match p.get::<String>("ids")?.as_str() {
        "popularity" => false,
        "index" => true,
        other => {
            return Err(p.bad(format!("ids must be popularity or index, got '{other}'")));
        }
    };
    Ok(Box::new(AdapterModel::Trace { tenant, index }))
}

impl AdapterModel {
    /// `paper | zipf[alpha=A] | trace[by=adapter|tenant] | tenants[...]` (`ADAPTER_MODELS`).
    pub fn parse(text: &str) -> Result<AdapterModel> {
        ADAPTER_MODELS
            .build(text, &())
            .map(|b| *b.made)
            .map_err(|e| e.context("--adapter-model"))
    }

    pub fn describe(&self, popularity_alpha: f64) -> String {
        match self {
            AdapterModel::Paper => format!("paper[alpha={popularity_alpha}]"),
            AdapterModel::Zipf { alpha } => {
                format!("zipf[alpha={}]", alpha.unwrap_or(popularity_alpha))
            }
            AdapterModel::Trace { tenant, index } => format!(
                "trace[by={}{}]",
                if *tenant { "tenant" } else { "adapter" },
                if *index { ",ids=index" } else { "" }
            ),
            AdapterModel::Tenants(t) => t.describe(),
        }
    }
}

/// Draws from cumulative weights.
fn draw(cdf: &[f64], rng: &mut StdRng) -> usize {
    let u = rng.random::<f64>() * cdf[cdf.len() - 1];
    cdf.partition_point(|&c| c <= u).min(cdf.len() - 1)
}

impl Workload {
    /// Builds adapters for `model` (ranks dealt round-robin) and assigns one to each request by
    /// `opts.model`. Under paper and zipf the assignment has its own random stream, so changing the arrival
    /// process (e.g. the rate) keeps each request's adapter; tenants depend on arrival times by design.
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
        let n = trace.rows.len();
        let mut lengths: Option<Vec<(u32, u32)>> = None;
        let mut arrivals: Option<Vec<Nanos>> = None;
        let assigned: Vec<u32> = if adapters.is_empty() {
            vec![NO_ADAPTER; n]
        } else {
            match &opts.model {
                AdapterModel::Paper => paper(trace, &adapters, k, opts.popularity_alpha, seed),
                AdapterModel::Zipf { alpha } => {
                    let alpha = alpha.unwrap_or(opts.popularity_alpha);
                    let mut acc = 0.0;
                    let cdf: Vec<f64> = (0..adapters.len())
                        .map(|j| {
                            acc += ((j + 1) as f64).powf(-alpha);
                            acc
                        })
                        .collect();
                    let mut rng = StdRng::seed_from_u64(seed ^ 0xADA9_7E25_0000_0002);
                    (0..n).map(|_| draw(&cdf, &mut rng) as u32).collect()
                }
                AdapterModel::Trace { tenant, index } => {
                    let id =
                        |r: &crate::trace::TraceRow| if *tenant { r.tenant } else { r.adapter };
                    let distinct = trace.rows.iter().map(id).filter(|&i| i != NO_ID).max();
                    let Some(max) = distinct else {
                        return Err(Error::msg(format!(
                            "--adapter-model trace: {} has no {} column (name it with --trace-format ...[{}=COLUMN])",
                            trace.source,
                            if *tenant { "tenant" } else { "adapter" },
                            if *tenant { "tenant" } else { "adapter" }
                        )));
                    };
                    let mut uses = vec![0u64; max as usize + 1];
                    for r in &trace.rows {
                        if id(r) != NO_ID {
                            uses[id(r) as usize] += 1;
                        }
                    }
                    // Most used first; ties keep first appearance (or the ids' own order).
                    let mut order: Vec<u32> = (0..=max).collect();
                    if !*index {
                        order.sort_by(|&a, &b| {
                            uses[b as usize].cmp(&uses[a as usize]).then(a.cmp(&b))
                        });
                    }
                    let mut rank_of = vec![0u32; order.len()];
                    for (j, &i) in order.iter().enumerate() {
                        rank_of[i as usize] = (j % adapters.len()) as u32;
                    }
                    trace
                        .rows
                        .iter()
                        .map(|r| {
                            if id(r) == NO_ID {
                                NO_ADAPTER
                            } else {
                                rank_of[id(r) as usize]
                            }
                        })
                        .collect()
                }
                AdapterModel::Tenants(t) => {
                    let a = tenants::assign(trace, t, opts.count, seed)?;
                    lengths = a.lengths;
                    arrivals = a.arrivals;
                    a.adapters
                }
            }
        };
        let requests = trace
            .rows
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let (input, output) = lengths.as_ref().map_or((r.input, r.output), |l| l[i]);
                Request {
                    id: i as u32,
                    arrival: arrivals.as_ref().map_or(r.arrival, |a| a[i]),
                    input,
                    output,
                    adapter: assigned[i],
                }
            })
            .collect();
        Ok(Workload { adapters, requests })
    }

    pub fn adapter(&self, id: u32) -> Option<&Adapter> {
        self.adapters.get(id as usize)
    }
}

/// The paper's model; the random stream is the simulator's original one, so old runs reproduce.
fn paper(trace: &Trace, adapters: &[Adapter], k: usize, alpha: f64, seed: u64) -> Vec<u32> {
    // groups[g] = adapters of rank g in popularity order, with the cumulative weights to draw from.
    let mut groups: Vec<(Vec<u32>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); k];
    for a in adapters {
        let (ids, cdf) = &mut groups[a.id as usize % k];
        let w = ((ids.len() + 1) as f64).powf(-alpha);
        cdf.push(cdf.last().copied().unwrap_or(0.0) + w);
        ids.push(a.id);
    }
    groups.retain(|g| !g.0.is_empty());
    let mut rng = StdRng::seed_from_u64(seed ^ 0xADA9_7E25_0000_0002);
    trace
        .rows
        .iter()
        .map(|_| {
            let (ids, cdf) = &groups[rng.random_range(0..groups.len())];
            ids[draw(cdf, &mut rng)]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::TraceRow;

    fn trace(n: usize) -> Trace {
        Trace {
            source: "t".into(),
            rows: (0..n).map(|i| TraceRow::new(i as u64, 10, 5)).collect(),
            ..Default::default()
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
