//! Levenberg-Marquardt over the joint parameters in bounded logit coordinates.
//!
//! The residuals are every fitted run's four weighted log errors; the Jacobian is by forward differences,
//! one column per free parameter, each simulating only the runs that parameter touches (`joint::affects`:
//! a GPU's efficiencies only its runs, the BMM term only the BMM runs), all columns' simulations in one
//! parallel batch. A column that is zero everywhere (no run exercises the parameter) is left out of the
//! step and reported as not identified. No prior: the step minimises the data's misfit alone.

use indicatif::ProgressBar;

use super::joint::{self, Joint};
use super::{Metrics, Prepared, residuals, simulate_tasks};
use sim_core::cost::fitted::EngineParams;
use sim_core::error::{Error, Result};

/// What the optimiser sees: the runs it fits, which joint parameters it may move, how hard it works.
pub struct Problem<'a> {
    pub prepared: &'a [Prepared],
    /// Indices into `prepared` of the runs fitted.
    pub runs: Vec<usize>,
    /// Joint indices the fit moves; the rest keep their values.
    pub free: Vec<usize>,
    pub threads: usize,
    /// Forward-difference step in logit units.
    pub step: f64,
    /// Coordinate-search rounds after the first descent (each followed by another descent if it gains).
    pub rounds: usize,
    pub progress: Option<&'a ProgressBar>,
}

/// The fit's result at its best point.
#[derive(Clone, Debug)]
pub struct Solution {
    pub joint: Joint,
    pub loss: f64,
    /// Per fitted run (in `Problem::runs` order): the simulated metrics.
    pub sim: Vec<Metrics>,
    /// The Jacobian at the best point, one column per entry of `columns` (rows: 4 per fitted run).
    pub jacobian: Vec<Vec<f64>>,
    /// Joint indices of the Jacobian's columns (free parameters some run depends on).
    pub columns: Vec<usize>,
    /// Free parameters no fitted run depends on.
    pub unexercised: Vec<usize>,
    pub iterations: usize,
    /// Runs simulated in all.
    pub simulations: usize,
}

impl Problem<'_> {
    fn gpu_of(&self, joint: &Joint, run: usize) -> usize {
        joint
            .gpu_index(self.prepared[run].gpu.name)
            .expect("every run's GPU is in the joint vector")
    }

    /// Simulates the fitted runs at `joint`.
    pub fn eval(&self, joint: &Joint) -> Result<Vec<Metrics>> {
        let tasks: Vec<(usize, EngineParams)> = self
            .runs
            .iter()
            .map(|&r| (r, joint.params(self.gpu_of(joint, r))))
            .collect();
        let out = simulate_tasks(self.prepared, &tasks, self.threads)?;
        if let Some(b) = self.progress {
            b.inc(tasks.len() as u64);
        }
        Ok(out)
    }

    pub fn resid(&self, sim: &[Metrics]) -> Vec<f64> {
        self.runs
            .iter()
            .zip(sim)
            .flat_map(|(&r, s)| residuals(&self.prepared[r].run.measured, s))
            .collect()
    }

    /// Jacobian columns (d residual / d logit) of the free parameters at `joint`, whose residuals are `r0`
    /// and simulated metrics `sim0`: (columns, their joint indices, free parameters touching no run).
    #[allow(clippy::type_complexity)]
    pub fn jacobian(
        &self,
        joint: &Joint,
        sim0: &[Metrics],
    ) -> Result<(Vec<Vec<f64>>, Vec<usize>, Vec<usize>, usize)> {
        let mut tasks = Vec::new();
        let mut owners = Vec::new();
        let mut unexercised = Vec::new();
        let mut cols = Vec::new();
        for &k in &self.free {
            let mut moved = joint.clone();
            let (param, _) = joint.locate(k);
            let x = joint::to_x(param, joint.values[k]) + self.step;
            moved.values[k] = joint::from_x(param, x);
            let rows: Vec<usize> = (0..self.runs.len())
                .filter(|&i| joint::affects(joint, k, &self.prepared[self.runs[i]]))
                .collect();
            if rows.is_empty() {
                unexercised.push(k);
                continue;
            }
            for &i in &rows {
                let r = self.runs[i];
                tasks.push((r, moved.params(self.gpu_of(joint, r))));
                owners.push((cols.len(), i));
            }
            cols.push(k);
        }
        let sims = simulate_tasks(self.prepared, &tasks, self.threads)?;
        if let Some(b) = self.progress {
            b.inc(tasks.len() as u64);
        }
        let n = 4 * self.runs.len();
        let mut jac = vec![vec![0.0; n]; cols.len()];
        for ((c, i), s) in owners.iter().zip(&sims) {
            let meas = &self.prepared[self.runs[*i]].run.measured;
            let (a, b) = (residuals(meas, s), residuals(meas, &sim0[*i]));
            for m in 0..4 {
                jac[*c][4 * i + m] = (a[m] - b[m]) / self.step;
            }
        }
        // A column the step did not move at all: no run is sensitive to it here.
        let mut keep = Vec::new();
        let mut kept_cols = Vec::new();
        for (c, col) in jac.into_iter().enumerate() {
            if col.iter().any(|v| *v != 0.0) {
                keep.push(col);
                kept_cols.push(cols[c]);
            } else {
                unexercised.push(cols[c]);
            }
        }
        unexercised.sort();
        Ok((keep, kept_cols, unexercised, tasks.len()))
    }

    /// Levenberg-Marquardt from `start` (at most `max_iter` Jacobians per round), then a coordinate search
    /// (each free parameter moved +-2, +-1, +-0.3, +-0.1 in logit units, only its runs re-simulated): the
    /// simulated metrics jump where a batch changes shape, which can stall a gradient step; rounds repeat
    /// while the search gains more than 1e-4 of the loss, at most `rounds` times.
    pub fn solve(&self, start: Joint, max_iter: usize) -> Result<Solution> {
        let mut sol = self.lm(start, max_iter)?;
        for _ in 0..self.rounds {
            let (joint, sims, gained) = self.coordinate_search(&sol)?;
            sol.simulations += sims;
            if gained < 1e-5 * sol.loss {
                break;
            }
            let sims = sol.simulations;
            sol = self.lm(joint, max_iter)?;
            sol.simulations += sims;
        }
        Ok(sol)
    }

    /// `solve` from `start` and from `starts - 1` deterministic perturbations of the best point found
    /// (each free parameter +-1 logit unit, signs by a fixed pattern); the best wins.
    pub fn solve_multi(&self, start: Joint, max_iter: usize, starts: usize) -> Result<Solution> {
        let mut best = self.solve(start, max_iter)?;
        for j in 1..starts.max(1) {
            let mut y = best.joint.clone();
            for (n, &k) in self.free.iter().enumerate() {
                let (param, _) = y.locate(k);
                let sign = if (j * 7 + n * 3 + j * n) % 2 == 0 {
                    1.0
                } else {
                    -1.0
                };
                y.values[k] = joint::from_x(param, joint::to_x(param, y.values[k]) + sign);
            }
            let sims = best.simulations;
            let s = self.solve(y, max_iter)?;
            if s.loss < best.loss {
                best = Solution {
                    simulations: sims + s.simulations,
                    ..s
                };
            } else {
                best.simulations += s.simulations;
            }
        }
        Ok(best)
    }

    /// One pass of coordinate search from `sol`: (best point, runs simulated, loss gained).
    fn coordinate_search(&self, sol: &Solution) -> Result<(Joint, usize, f64)> {
        let mut joint = sol.joint.clone();
        let mut sim = sol.sim.clone();
        let run_loss = |i: usize, m: &Metrics| -> f64 {
            residuals(&self.prepared[self.runs[i]].run.measured, m)
                .iter()
                .map(|e| e * e)
                .sum()
        };
        let mut loss = sol.loss;
        let mut sims = 0;
        // Every free parameter, those the last Jacobian saw no effect of too: a term hidden under the
        // overlap at one point can be the longer one at another.
        for &k in &self.free {
            let rows: Vec<usize> = (0..self.runs.len())
                .filter(|&i| joint::affects(&joint, k, &self.prepared[self.runs[i]]))
                .collect();
            if rows.is_empty() {
                continue;
            }
            let (param, _) = joint.locate(k);
            for d in [2.0, -2.0, 1.0, -1.0, 0.3, -0.3, 0.1, -0.1] {
                let mut trial = joint.clone();
                trial.values[k] = joint::from_x(param, joint::to_x(param, joint.values[k]) + d);
                let tasks: Vec<(usize, EngineParams)> = rows
                    .iter()
                    .map(|&i| {
                        (
                            self.runs[i],
                            trial.params(self.gpu_of(&trial, self.runs[i])),
                        )
                    })
                    .collect();
                let out = simulate_tasks(self.prepared, &tasks, self.threads)?;
                sims += tasks.len();
                if let Some(b) = self.progress {
                    b.inc(tasks.len() as u64);
                }
                let old: f64 = rows.iter().map(|&i| run_loss(i, &sim[i])).sum();
                let new: f64 = rows.iter().zip(&out).map(|(&i, m)| run_loss(i, m)).sum();
                if new < old - 1e-12 {
                    loss += new - old;
                    joint = trial;
                    for (&i, m) in rows.iter().zip(out) {
                        sim[i] = m;
                    }
                }
            }
        }
        Ok((joint, sims, sol.loss - loss))
    }

    /// Levenberg-Marquardt from `start` for at most `max_iter` Jacobians; stops when a step gains less than
    /// 1e-4 of the loss or no damping finds a better point.
    fn lm(&self, start: Joint, max_iter: usize) -> Result<Solution> {
        if self.runs.is_empty() {
            return Err(Error::msg("sim fit: no runs to fit"));
        }
        let mut joint = start;
        let mut sim = self.eval(&joint)?;
        let mut simulations = sim.len();
        let mut r = self.resid(&sim);
        let mut loss: f64 = r.iter().map(|e| e * e).sum();
        let mut lambda = 1e-2;
        let mut iterations = 0;
        for it in 0..max_iter.max(1) {
            iterations = it + 1;
            let (jac, cols, _, n) = self.jacobian(&joint, &sim)?;
            simulations += n;
            let k = cols.len();
            let (a, g) = normal_equations(&jac, &r, None);
            if k == 0 {
                break;
            }
            let improved = damped_step(&a, &g, &mut lambda, 6, 1e-7, |delta| {
                let mut trial = joint.clone();
                for (c, &kk) in cols.iter().enumerate() {
                    let (param, _) = joint.locate(kk);
                    let x = joint::to_x(param, joint.values[kk]) + delta[c];
                    trial.values[kk] = joint::from_x(param, x);
                }
                let s2 = self.eval(&trial)?;
                simulations += s2.len();
                let r2 = self.resid(&s2);
                let l2: f64 = r2.iter().map(|e| e * e).sum();
                if l2 < loss {
                    let gain = (loss - l2) / loss.max(1e-12);
                    joint = trial;
                    sim = s2;
                    r = r2;
                    loss = l2;
                    Ok(Some(gain >= 1e-5))
                } else {
                    Ok(None)
                }
            })?
            .unwrap_or(false);
            if let Some(b) = self.progress {
                b.set_message(format!("loss {loss:.4}, {it} Jacobians"));
            }
            if !improved {
                break;
            }
        }
        // The Jacobian at the final point (the last one was taken before the last accepted step).
        let (jac, cols, unexercised, n) = self.jacobian(&joint, &sim)?;
        simulations += n;
        Ok(Solution {
            joint,
            loss,
            sim,
            jacobian: jac,
            columns: cols,
            unexercised,
            iterations,
            simulations,
        })
    }
}

/// One Levenberg-Marquardt step from the normal equations (`a`, `g`) in logit coordinates: the damped
/// step, each coordinate clamped to +-3, is offered to `take`, the damping raised x4 after each refusal
/// (`take` gives `None`) or singular system, at most `tries` times, and lowered /3 (not below `floor`) once
/// a step is taken. What `take` said of the step it took, or `None` when none was.
pub fn damped_step<T>(
    a: &[Vec<f64>],
    g: &[f64],
    lambda: &mut f64,
    tries: usize,
    floor: f64,
    mut take: impl FnMut(&[f64]) -> Result<Option<T>>,
) -> Result<Option<T>> {
    let neg_g: Vec<f64> = g.iter().map(|v| -v).collect();
    for _ in 0..tries {
        let mut m = a.to_vec();
        for (i, row) in m.iter_mut().enumerate() {
            row[i] += *lambda * a[i][i].max(1e-9) + 1e-9;
        }
        if let Some(delta) = solve_spd(&m, &neg_g) {
            let delta: Vec<f64> = delta.iter().map(|d| d.clamp(-3.0, 3.0)).collect();
            if let Some(v) = take(&delta)? {
                *lambda = (*lambda / 3.0).max(floor);
                return Ok(Some(v));
            }
        }
        *lambda *= 4.0;
    }
    Ok(None)
}

/// JᵀWJ and JᵀWr (W: per-row weights, 1 when None), columns of `jac` as the parameters.
pub fn normal_equations(
    jac: &[Vec<f64>],
    r: &[f64],
    w: Option<&[f64]>,
) -> (Vec<Vec<f64>>, Vec<f64>) {
    let k = jac.len();
    let wt = |i: usize| w.map_or(1.0, |w| w[i]);
    let mut a = vec![vec![0.0; k]; k];
    let mut g = vec![0.0; k];
    for i in 0..k {
        for j in i..k {
            let v: f64 = (0..r.len()).map(|n| wt(n) * jac[i][n] * jac[j][n]).sum();
            a[i][j] = v;
            a[j][i] = v;
        }
        g[i] = (0..r.len()).map(|n| wt(n) * jac[i][n] * r[n]).sum();
    }
    (a, g)
}

/// Solves A x = b for a symmetric positive definite A (Cholesky); None if A is not.
pub fn solve_spd(a: &[Vec<f64>], b: &[f64]) -> Option<Vec<f64>> {
    let n = b.len();
    let mut l = vec![vec![0.0; n]; n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i][k] * l[j][k]).sum();
            if i == j {
                let d = a[i][i] - s;
                if d <= 0.0 || !d.is_finite() {
                    return None;
                }
                l[i][i] = d.sqrt();
            } else {
                l[i][j] = (a[i][j] - s) / l[j][j];
            }
        }
    }
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i][k] * y[k]).sum::<f64>()) / l[i][i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k][i] * x[k]).sum::<f64>()) / l[i][i];
    }
    Some(x)
}

/// Eigenvalues and eigenvectors (columns) of a symmetric matrix, by cyclic Jacobi rotations.
pub fn sym_eigen(a: &[Vec<f64>]) -> (Vec<f64>, Vec<Vec<f64>>) {
    let n = a.len();
    let mut m: Vec<Vec<f64>> = a.to_vec();
    let mut v = vec![vec![0.0; n]; n];
    for (i, row) in v.iter_mut().enumerate() {
        row[i] = 1.0;
    }
    for _ in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| m[i][j] * m[i][j])
            .sum();
        if off < 1e-22 {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                if m[p][q].abs() < 1e-300 {
                    continue;
                }
                let theta = (m[q][q] - m[p][p]) / (2.0 * m[p][q]);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for row in m.iter_mut() {
                    let (mkp, mkq) = (row[p], row[q]);
                    row[p] = c * mkp - s * mkq;
                    row[q] = s * mkp + c * mkq;
                }
                let (rp, rq) = (m[p].clone(), m[q].clone());
                for k in 0..n {
                    m[p][k] = c * rp[k] - s * rq[k];
                    m[q][k] = s * rp[k] + c * rq[k];
                }
                for row in v.iter_mut() {
                    let (vp, vq) = (row[p], row[q]);
                    row[p] = c * vp - s * vq;
                    row[q] = s * vp + c * vq;
                }
            }
        }
    }
    ((0..n).map(|i| m[i][i]).collect(), v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cholesky_solves_and_refuses_an_indefinite_matrix() {
        let a = vec![vec![4.0, 2.0], vec![2.0, 3.0]];
        let x = solve_spd(&a, &[2.0, 5.0]).unwrap();
        assert!((4.0 * x[0] + 2.0 * x[1] - 2.0).abs() < 1e-12);
        assert!((2.0 * x[0] + 3.0 * x[1] - 5.0).abs() < 1e-12);
        assert!(solve_spd(&[vec![1.0, 2.0], vec![2.0, 1.0]], &[1.0, 1.0]).is_none());
    }

    #[test]
    fn jacobi_finds_the_eigenpairs() {
        let a = vec![vec![2.0, 1.0], vec![1.0, 2.0]];
        let (mut e, v) = sym_eigen(&a);
        e.sort_by(f64::total_cmp);
        assert!((e[0] - 1.0).abs() < 1e-12 && (e[1] - 3.0).abs() < 1e-12);
        // A v = lambda v for every column.
        for (c, _) in e.iter().enumerate() {
            let lam = (0..2).map(|i| a[0][i] * v[i][c]).sum::<f64>() / v[0][c];
            assert!((lam - 1.0).abs() < 1e-9 || (lam - 3.0).abs() < 1e-9);
        }
    }
}
