//! Output-length predictors. Schedulers see predictions, never true lengths (except through `oracle`).
//!
//! - `oracle`: the true output length.
//! - `noisy[accuracy=0.8]`: with probability `accuracy` the true length; otherwise the output length of a
//!   random other request of the trace (a wrong guess drawn from the real length distribution). The paper's
//!   BERT proxy is about 80% accurate; its study uses 60/80/100%.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use crate::error::{Error, Result};
use crate::spec::Spec;
use crate::workload::Workload;

pub const PREDICTORS: &[(&str, &str)] = &[
    ("oracle", "the true output length"),
    (
        "noisy[accuracy=0.8]",
        "true length with probability accuracy, else a random trace length",
    ),
];

/// Predicted output length of every request, indexed by request id; seeded.
pub fn predict(spec: &str, w: &Workload, seed: u64) -> Result<(String, Vec<u32>)> {
    let mut spec = Spec::parse(spec)?;
    let outs: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
    match spec.name.as_str() {
        "oracle" => {
            spec.finish(&[])?;
            Ok(("oracle".into(), outs))
        }
        "noisy" => {
            let acc: f64 = spec.get("accuracy", 0.8)?;
            spec.finish(&["accuracy"])?;
            if !(0.0..=1.0).contains(&acc) {
                return Err(Error::msg(format!(
                    "noisy: accuracy must be in [0, 1], got {acc}"
                )));
            }
            let mut rng = StdRng::seed_from_u64(seed ^ 0x9E37_79B9_0000_0003);
            let pred = outs
                .iter()
                .map(|&o| {
                    if rng.random::<f64>() < acc {
                        o
                    } else {
                        outs[rng.random_range(0..outs.len())]
                    }
                })
                .collect();
            Ok((format!("noisy[accuracy={acc}]"), pred))
        }
        other => Err(Error::msg(format!(
            "unknown predictor '{other}'; valid: oracle, noisy[accuracy=A]"
        ))),
    }
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
