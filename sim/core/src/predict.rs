//! Output-length predictors. Schedulers see predictions, never true lengths (except through `oracle`).
//! One entry per predictor in `REGISTRY`, like the policies.
//!
//! - `oracle`: the true output length.
//! - `noisy[accuracy=0.8]`: with probability `accuracy` the true length; otherwise the output length of a
//!   random other request of the trace (a wrong guess drawn from the real length distribution). The paper's
//!   BERT proxy is about 80% accurate; its study uses 60/80/100%.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::Result;
use crate::registry::{Entry, Kind, Param, Params, Props, Registry};
use crate::workload::Workload;

/// Predicts every request's output length, indexed by request id.
pub trait Predictor {
    fn predict(&mut self, w: &Workload) -> Vec<u32>;
}

/// What a predictor is built with.
pub struct PredictCtx {
    pub seed: u64,
}

pub struct Predictors;

impl Kind for Predictors {
    type Made = dyn Predictor;
    type Ctx<'a> = PredictCtx;
    const NAME: &'static str = "predictor";
}

/// Every predictor `--predictor` accepts.
pub const REGISTRY: Registry<Predictors> = Registry {
    entries: &[
        Entry {
            name: "oracle",
            about: "the true output length",
            params: &[],
            props: Props::DEFAULT,
            build: |_, _| Ok(Box::new(Oracle)),
        },
        Entry {
            name: "noisy",
            about: "the true length with probability `accuracy`, else a random trace length",
            params: &[Param::new("accuracy", "0.8", "chance of the true length")],
            props: Props::DEFAULT,
            build: build_noisy,
        },
    ],
};

struct Oracle;

impl Predictor for Oracle {
    fn predict(&mut self, w: &Workload) -> Vec<u32> {
        w.requests.iter().map(|r| r.output).collect()
    }
}

fn build_noisy(p: &mut Params, ctx: &PredictCtx) -> Result<Box<dyn Predictor>> {
    let accuracy: f64 = p.get("accuracy")?;
    if !(0.0..=1.0).contains(&accuracy) {
        return Err(p.bad(format!("accuracy must be in [0, 1], got {accuracy}")));
    }
    Ok(Box::new(Noisy {
        accuracy,
        seed: ctx.seed,
    }))
}

struct Noisy {
    accuracy: f64,
    seed: u64,
}

impl Predictor for Noisy {
    fn predict(&mut self, w: &Workload) -> Vec<u32> {
        let outs: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
        let mut rng = StdRng::seed_from_u64(self.seed ^ 0x9E37_79B9_0000_0003);
        outs.iter()
            .map(|&o| {
                if rng.random::<f64>() < self.accuracy {
                    o
                } else {
                    outs[rng.random_range(0..outs.len())]
                }
            })
            .collect()
    }
}

/// Predicted output length of every request, indexed by request id, and the predictor's full spec; seeded.
pub fn predict(spec: &str, w: &Workload, seed: u64) -> Result<(String, Vec<u32>)> {
    let mut b = REGISTRY.build(spec, &PredictCtx { seed })?;
    Ok((b.spec, b.made.predict(w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::{NO_ADAPTER, Request};

    #[test]
    fn noisy_predictor_hits_its_accuracy() {
        let requests = (0..20_000)
            .map(|id| Request {
                id,
                arrival: 0,
                input: 1,
                output: 1 + id % 500,
                adapter: NO_ADAPTER,
            })
            .collect();
        let w = Workload {
            adapters: vec![],
            requests,
        };
        let (_, p) = predict("noisy[accuracy=0.6]", &w, 1).unwrap();
        let right = p
            .iter()
            .zip(&w.requests)
            .filter(|(p, r)| **p == r.output)
            .count() as f64
            / 20_000.0;
        assert!((right - 0.6).abs() < 0.02, "{right}");
        assert_eq!(
            predict("oracle", &w, 1).unwrap().1,
            w.requests.iter().map(|r| r.output).collect::<Vec<_>>()
        );
        assert!(predict("noisy[accuracy=2]", &w, 1).is_err());
        assert!(
            predict("psychic", &w, 1)
                .unwrap_err()
                .to_string()
                .contains("oracle")
        );
    }
}
