//! The run's latency objectives: what SLO attainment is measured against and what SLO-aware policies aim at.

use crate::time::Nanos;

/// Latency objectives: the paper's P99 TTFT <= 5 s and TBT <= 150 ms.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slo {
    pub ttft_ns: Nanos,
    pub tbt_ns: Nanos,
}

impl Default for Slo {
    fn default() -> Self {
        Slo {
            ttft_ns: 5_000_000_000,
            tbt_ns: 150_000_000,
        }
    }
}
