//! Simulated time: integer nanoseconds, so runs are exact and deterministic.

/// Simulated time in integer nanoseconds.
pub type Nanos = u64;

pub const MS: Nanos = 1_000_000;
pub const SEC: Nanos = 1_000_000_000;

/// Nanoseconds as seconds.
pub fn secs(ns: Nanos) -> f64 {
    ns as f64 / 1e9
}

/// Seconds as nanoseconds, rounded (the caller validates the range).
pub fn from_secs(s: f64) -> Nanos {
    (s * 1e9).round() as Nanos
}

/// Seconds with 9 decimals from integer ns: what `{:.9}` prints for `secs(ns)` (exactly, below 2^53 ns),
/// without float formatting.
pub struct S9(pub Nanos);

impl std::fmt::Display for S9 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}.{:09}",
            self.0 / 1_000_000_000,
            self.0 % 1_000_000_000
        )
    }
}
