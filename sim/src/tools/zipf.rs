//! Fitting a Zipf law to observed adapter (or tenant) use: the rank-frequency model P(rank i) ∝ i^-s over
//! the n items seen, by maximum likelihood, with two goodness-of-fit figures.

use serde_json::{Map, Value, json};

#[derive(Clone, Debug, PartialEq)]
pub struct ZipfFit {
    /// Distinct items (ranks 1..=n).
    pub items: usize,
    /// Observations (uses).
    pub uses: u64,
    /// Maximum-likelihood exponent over ranks 1..=n.
    pub alpha: f64,
    /// Its standard error from the Fisher information, 1 / sqrt(N Var(ln rank)) under the fit (sampling
    /// noise only: it does not widen when the law itself fits badly, which `ks` shows).
    pub alpha_se: f64,
    /// Exponent of a least-squares line through log(count) vs log(rank), and its R².
    pub alpha_loglog: f64,
    pub r2_loglog: f64,
    /// Kolmogorov-Smirnov distance between the observed and fitted rank CDFs (0 = identical).
    pub ks: f64,
    /// (k, observed share of the top k, share the fit predicts) for k = 1, 10, 100.
    pub top: Vec<(usize, f64, f64)>,
}

/// Generalised harmonic number H(n, s) and Σ i^-s ln i, the likelihood's normaliser and its derivative.
fn harmonic(n: usize, s: f64) -> (f64, f64) {
    let (mut h, mut d) = (0.0, 0.0);
    for i in 1..=n {
        let l = (i as f64).ln();
        let w = (-s * l).exp();
        h += w;
        d += w * l;
    }
    (h, d)
}

/// Fits counts of item use (any order; zeros ignored). `None` with fewer than two items.
pub fn fit_zipf(counts: &[u64]) -> Option<ZipfFit> {
    let mut c: Vec<u64> = counts.iter().copied().filter(|&c| c > 0).collect();
    c.sort_unstable_by(|a, b| b.cmp(a));
    let n = c.len();
    if n < 2 {
        return None;
    }
    let uses: u64 = c.iter().sum();
    let total = uses as f64;
    // d/ds log L = -Σ c_i ln i + N Σ i^-s ln i / H(n,s); it decreases in s (the likelihood is concave), so
    // bisection on its sign finds the maximum.
    let sum_c_ln: f64 = c
        .iter()
        .enumerate()
        .map(|(i, &x)| x as f64 * ((i + 1) as f64).ln())
        .sum();
    let grad = |s: f64| {
        let (h, d) = harmonic(n, s);
        -sum_c_ln + total * d / h
    };
    let (mut lo, mut hi) = (0.0f64, 10.0f64);
    if grad(lo) <= 0.0 {
        hi = 0.0;
    } else {
        for _ in 0..100 {
            let mid = 0.5 * (lo + hi);
            if grad(mid) > 0.0 {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    let alpha = 0.5 * (lo + hi);
    let (h, _) = harmonic(n, alpha);
    let p = |i: usize| ((i + 1) as f64).powf(-alpha) / h;
    let (m1, m2) = (0..n).fold((0.0, 0.0), |(a, b), i| {
        let l = ((i + 1) as f64).ln();
        (a + p(i) * l, b + p(i) * l * l)
    });
    let alpha_se = 1.0 / (total * (m2 - m1 * m1)).sqrt();

    let pts: Vec<(f64, f64)> = c
        .iter()
        .enumerate()
        .map(|(i, &x)| (((i + 1) as f64).ln(), (x as f64).ln()))
        .collect();
    let mx = pts.iter().map(|p| p.0).sum::<f64>() / n as f64;
    let my = pts.iter().map(|p| p.1).sum::<f64>() / n as f64;
    let sxy: f64 = pts.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    let sxx: f64 = pts.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let syy: f64 = pts.iter().map(|p| (p.1 - my).powi(2)).sum();
    let slope = sxy / sxx;
    let r2 = if syy > 0.0 {
        sxy * sxy / (sxx * syy)
    } else {
        1.0
    };

    let (mut ks, mut fe, mut ff) = (0.0f64, 0.0, 0.0);
    let mut top = Vec::new();
    for (i, &x) in c.iter().enumerate() {
        fe += x as f64 / total;
        ff += p(i);
        ks = ks.max((fe - ff).abs());
        if [1, 10, 100].contains(&(i + 1)) {
            top.push((i + 1, fe, ff));
        }
    }
    Some(ZipfFit {
        items: n,
        uses,
        alpha,
        alpha_se,
        alpha_loglog: -slope,
        r2_loglog: r2,
        ks,
        top,
    })
}

impl ZipfFit {
    pub fn text(&self) -> String {
        let mut o = format!(
            "zipf fit over {} distinct ids, {} uses: alpha = {:.4} +- {:.4} (maximum likelihood, ranks 1..{})\n",
            self.items, self.uses, self.alpha, self.alpha_se, self.items
        );
        o += &format!(
            "goodness of fit: KS distance {:.4} between observed and fitted rank CDFs; \
             log-log least squares alpha {:.4}, R^2 {:.4}\n",
            self.ks, self.alpha_loglog, self.r2_loglog
        );
        for (k, obs, fit) in &self.top {
            o += &format!("top-{k:<4} share: observed {obs:.4}, fitted {fit:.4}\n");
        }
        o
    }

    pub fn json(&self) -> Value {
        let mut m = Map::new();
        m.insert("items".into(), json!(self.items));
        m.insert("uses".into(), json!(self.uses));
        m.insert("alpha_mle".into(), json!(self.alpha));
        m.insert("alpha_se".into(), json!(self.alpha_se));
        m.insert("alpha_loglog".into(), json!(self.alpha_loglog));
        m.insert("r2_loglog".into(), json!(self.r2_loglog));
        m.insert("ks".into(), json!(self.ks));
        for (k, obs, fit) in &self.top {
            m.insert(format!("top{k}_observed"), json!(obs));
            m.insert(format!("top{k}_fitted"), json!(fit));
        }
        Value::Object(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recovers_the_exponent_of_exact_zipf_counts() {
        for s in [0.0, 0.8, 1.0, 1.5] {
            let counts: Vec<u64> = (1..=200)
                .map(|i| (1e7 * (i as f64).powf(-s)).round() as u64)
                .collect();
            let f = fit_zipf(&counts).unwrap();
            assert!((f.alpha - s).abs() < 1e-3, "{s}: {}", f.alpha);
            assert!((f.alpha_loglog - s).abs() < 1e-3, "{s}: {}", f.alpha_loglog);
            assert!(f.ks < 1e-4, "{}", f.ks);
        }
    }

    #[test]
    fn hand_checked_small_case() {
        // Counts 2 and 1: the MLE solves 2^-s = 1/2 ... i.e. p1 = 2/3, so s = 1.
        let f = fit_zipf(&[1, 2]).unwrap();
        assert!((f.alpha - 1.0).abs() < 1e-9, "{}", f.alpha);
        assert_eq!((f.items, f.uses), (2, 3));
        assert_eq!(f.top[0].0, 1);
        assert!((f.top[0].1 - 2.0 / 3.0).abs() < 1e-12);
        assert!(fit_zipf(&[5]).is_none());
        assert!(fit_zipf(&[5, 0]).is_none());
    }
}
