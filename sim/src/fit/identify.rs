//! What the runs pin down, and the plausible parameter set.
//!
//! - A 95% interval per fitted parameter from the curvature at the optimum (Laplace: covariance
//!   s² (JᵀJ)⁺ in logit coordinates, s² the residual variance per degree of freedom, so model error counts
//!   as noise), mapped back to physical units. A direction the Jacobian does not see (an eigenvalue below
//!   1e-9 of the largest) has no bound: its parameters are reported loose.
//! - A bootstrap over runs: runs resampled with replacement, each replicate one damped Gauss-Newton step
//!   from the optimum with the resampled weights (the linearised bootstrap; no new simulations), its
//!   parameters clipped to their physical ranges. The replicates are the plausible set a profile stores
//!   (`members`), each re-simulated once to record its loss.
//!
//! A parameter is *pinned* when its interval and its bootstrap range lie within a factor 2 of the best value
//! on both sides; else
//! it is *loose* (named in docs/fidelity.md and every output that rests on it); a parameter no fitted run
//! exercises is *not exercised*; one held at a measured value (Vidur's dense efficiencies) is *measured*.

use serde_json::{Value, json};

use super::joint::{self, Joint};
use super::lm::{Problem, Solution, normal_equations, sym_eigen};
use sim_core::cost::fitted::PARAMS;
use sim_core::error::Result;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Pinned,
    Loose,
    NotExercised,
    Measured,
    Fixed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Pinned => "pinned",
            Status::Loose => "loose",
            Status::NotExercised => "not exercised",
            Status::Measured => "measured (Vidur)",
            Status::Fixed => "fixed (reference)",
        }
    }
}

/// One joint parameter's identification.
#[derive(Clone, Debug)]
pub struct Range {
    pub k: usize,
    pub name: String,
    pub best: f64,
    /// Laplace 95% interval, physical units.
    pub lo: f64,
    pub hi: f64,
    /// Bootstrap replicates' smallest and largest value.
    pub boot_lo: f64,
    pub boot_hi: f64,
    pub status: Status,
}

pub struct Identification {
    pub s2: f64,
    pub ranges: Vec<Range>,
    /// The best fit and the bootstrap replicates.
    pub members: Vec<Joint>,
    pub member_loss: Vec<f64>,
}

/// Deterministic resampling (xorshift64*), so the plausible set is the same bytes every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        ((self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 33) % n as u64) as usize
    }
}

/// Identification of `sol` (fitted by `problem`); `measured` and `fixed` list joint indices held at a
/// measured value or fixed by construction; `replicates` bootstrap members are drawn and simulated.
pub fn identify(
    problem: &Problem<'_>,
    sol: &Solution,
    measured: &[usize],
    fixed: &[usize],
    replicates: usize,
) -> Result<Identification> {
    let jac = &sol.jacobian;
    let k = jac.len();
    let rows = 4 * problem.runs.len();
    let r0 = problem.resid(&sol.sim);
    let dof = rows.saturating_sub(k).max(1) as f64;
    let s2 = sol.loss / dof;
    let (a, _) = normal_equations(jac, &r0, None);
    let (evals, evecs) = sym_eigen(&a);
    let top = evals.iter().copied().fold(0.0, f64::max);
    let var: Vec<f64> = (0..k)
        .map(|j| {
            let mut v = 0.0;
            for (e, lam) in evals.iter().enumerate() {
                if *lam <= 1e-9 * top {
                    if evecs[j][e].abs() > 1e-3 {
                        return f64::INFINITY;
                    }
                    continue;
                }
                v += evecs[j][e] * evecs[j][e] / lam;
            }
            s2 * v
        })
        .collect();
    // Bootstrap replicates: runs drawn with replacement, one damped Gauss-Newton step each.
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let n_runs = problem.runs.len();
    let mut members = vec![sol.joint.clone()];
    for _ in 0..replicates {
        let mut w = vec![0.0; rows];
        for _ in 0..n_runs {
            let i = rng.below(n_runs);
            for m in 0..4 {
                w[4 * i + m] += 1.0;
            }
        }
        let (mut aw, gw) = normal_equations(jac, &r0, Some(&w));
        let dmax = (0..k).map(|i| aw[i][i]).fold(0.0, f64::max);
        for (i, row) in aw.iter_mut().enumerate() {
            row[i] += 1e-3 * row[i] + 1e-6 * dmax + 1e-12;
        }
        let neg: Vec<f64> = gw.iter().map(|v| -v).collect();
        let Some(delta) = super::lm::solve_spd(&aw, &neg) else {
            continue;
        };
        let mut m = sol.joint.clone();
        for (c, &kk) in sol.columns.iter().enumerate() {
            let (param, _) = m.locate(kk);
            let x = joint::to_x(param, m.values[kk]) + delta[c].clamp(-4.0, 4.0);
            m.values[kk] = joint::from_x(param, x);
        }
        members.push(m);
    }
    let mut member_loss = vec![sol.loss];
    for m in &members[1..] {
        let sim = problem.eval(m)?;
        member_loss.push(problem.resid(&sim).iter().map(|e| e * e).sum());
    }
    let mut ranges = Vec::new();
    for kk in 0..sol.joint.len() {
        let (param, _) = sol.joint.locate(kk);
        let best = sol.joint.values[kk];
        let boot = members.iter().map(|m| m.values[kk]);
        let (boot_lo, boot_hi) = boot.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
        let (lo, hi, status) = if measured.contains(&kk) {
            (best, best, Status::Measured)
        } else if fixed.contains(&kk) {
            (best, best, Status::Fixed)
        } else if let Some(c) = sol.columns.iter().position(|&c| c == kk) {
            let sd = var[c].sqrt();
            let x = joint::to_x(param, best);
            let (lo, hi) = if sd.is_finite() {
                (
                    joint::from_x(param, x - 2.0 * sd),
                    joint::from_x(param, x + 2.0 * sd),
                )
            } else {
                (PARAMS[param].lo, PARAMS[param].hi)
            };
            let pinned = sd.is_finite()
                && lo >= best / 2.0
                && hi <= best * 2.0
                && boot_lo >= best / 2.0
                && boot_hi <= best * 2.0;
            (
                lo,
                hi,
                if pinned {
                    Status::Pinned
                } else {
                    Status::Loose
                },
            )
        } else if problem.free.contains(&kk) {
            (PARAMS[param].lo, PARAMS[param].hi, Status::NotExercised)
        } else {
            (best, best, Status::Fixed)
        };
        ranges.push(Range {
            k: kk,
            name: sol.joint.name(kk),
            best,
            lo,
            hi,
            boot_lo,
            boot_hi,
            status,
        });
    }
    Ok(Identification {
        s2,
        ranges,
        members,
        member_loss,
    })
}

impl Identification {
    /// The ranges of GPU `gpu`'s parameters (host terms and that GPU's), as a profile stores them.
    pub fn ranges_json(&self, joint: &Joint, gpu: Option<usize>) -> Value {
        let mut o = serde_json::Map::new();
        for r in &self.ranges {
            let (param, g) = joint.locate(r.k);
            if g.is_some() && g != gpu {
                continue;
            }
            o.insert(
                PARAMS[param].name.into(),
                json!({
                    "best": r.best,
                    "interval_95": [r.lo, r.hi],
                    "bootstrap": [r.boot_lo, r.boot_hi],
                    "unit": PARAMS[param].unit,
                    "physical_range": [PARAMS[param].lo, PARAMS[param].hi],
                    "status": r.status.name(),
                }),
            );
        }
        Value::Object(o)
    }

    /// Joint indices of the parameters the data saw: pinned or loose by the runs, or measured.
    pub fn exercised(&self) -> Vec<usize> {
        self.ranges
            .iter()
            .filter(|r| matches!(r.status, Status::Pinned | Status::Loose | Status::Measured))
            .map(|r| r.k)
            .collect()
    }

    /// The names of the loose and not-exercised parameters.
    pub fn unpinned(&self) -> Vec<String> {
        self.ranges
            .iter()
            .filter(|r| matches!(r.status, Status::Loose | Status::NotExercised))
            .map(|r| format!("{} ({})", r.name, r.status.name()))
            .collect()
    }

    /// The parameter table (markdown): name, unit, best, 95% interval, bootstrap range, status.
    pub fn markdown(&self) -> String {
        let mut o = String::from(
            "| parameter | unit | physical range | best | 95% interval | bootstrap range | status |\n\
             | --- | --- | --- | --- | --- | --- | --- |\n",
        );
        let f = |v: f64| {
            if v == 0.0 {
                "0".to_string()
            } else if v.abs() >= 100.0 {
                format!("{v:.0}")
            } else if v.abs() >= 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.3}")
            }
        };
        for r in &self.ranges {
            let (param, _) = {
                let k = r.k;
                if k < joint::HOST {
                    (k, None)
                } else {
                    (joint::HOST + (k - joint::HOST) % joint::PER_GPU, Some(()))
                }
            };
            let p = &PARAMS[param];
            o += &format!(
                "| {} | {} | {}-{} | {} | {}-{} | {}-{} | {} |\n",
                r.name,
                p.unit,
                f(p.lo),
                f(p.hi),
                f(r.best),
                f(r.lo),
                f(r.hi),
                f(r.boot_lo),
                f(r.boot_hi),
                r.status.name()
            );
        }
        o
    }
}
