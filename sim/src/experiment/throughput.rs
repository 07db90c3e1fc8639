//! Throughput at the SLO, as in the paper: the highest request rate whose P99 TTFT meets the objective,
//! found by bisection over the rate.

use sim_core::error::Result;

/// Where the search ended: the highest rate that passed and the lowest that failed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Bracket {
    /// Highest passing rate probed; None when even the lowest rate failed.
    pub pass: Option<f64>,
    /// Lowest failing rate probed; None when every rate up to the cap passed.
    pub fail: Option<f64>,
    pub probes: usize,
}

impl Bracket {
    /// The reported throughput: the highest passing rate (0 when none passed).
    pub fn throughput(&self) -> f64 {
        self.pass.unwrap_or(0.0)
    }
    pub fn status(&self) -> &'static str {
        match (self.pass, self.fail) {
            (None, _) => "below_lo",
            (Some(_), None) => "at_max",
            _ => "bracketed",
        }
    }
}

/// Bisection for the threshold of a monotone predicate (`pass(r)` true below it, false above): probes
/// `lo`, then `hi` (doubling it while it passes, up to `max`), then halves the bracket until it is at most
/// `tol` wide.
pub fn bisect(
    lo: f64,
    hi: f64,
    max: f64,
    tol: f64,
    mut pass: impl FnMut(f64) -> Result<bool>,
) -> Result<Bracket> {
    let mut probes = 1;
    if !pass(lo)? {
        return Ok(Bracket {
            pass: None,
            fail: Some(lo),
            probes,
        });
    }
    let (mut good, mut bad) = (lo, hi);
    loop {
        probes += 1;
        if !pass(bad)? {
            break;
        }
        good = bad;
        if bad >= max {
            return Ok(Bracket {
                pass: Some(good),
                fail: None,
                probes,
            });
        }
        bad = (bad * 2.0).min(max);
    }
    while bad - good > tol {
        let mid = 0.5 * (good + bad);
        probes += 1;
        if pass(mid)? {
            good = mid;
        } else {
            bad = mid;
        }
    }
    Ok(Bracket {
        pass: Some(good),
        fail: Some(bad),
        probes,
    })
}
