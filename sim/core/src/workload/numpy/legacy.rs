//! numpy's legacy `RandomState` distributions, ported operation for operation
//! from numpy/random/src/legacy/legacy-distributions.c and the bounded-integer
//! code in numpy/random/src/distributions/distributions.c.
//!
//! Bit-exactness depends on two things kept identical to the C code:
//! the order of floating-point operations (no reassociation, no FMA; Rust
//! never contracts `a * b + c`), and the libm calls (`log`, `exp`, `pow`),
//! which Rust's `ln`, `exp`, `powf` forward to the platform libm, the same
//! library numpy calls on Linux.

use super::mt19937::Mt19937;

/// MT19937 plus the one-value Gaussian cache that `RandomState` keeps
/// (`aug_bitgen_t.has_gauss/gauss`). The cache must persist across calls,
/// because a later `gamma(shape > 1)` may consume the value left by an
/// earlier Gaussian draw.
#[derive(Clone, Debug)]
pub struct LegacyRandomState {
    mt: Mt19937,
    gauss: Option<f64>,
}

impl LegacyRandomState {
    /// `np.random.seed(seed)`: reseeds MT and clears the Gaussian cache
    /// (`_reset_state_variables`).
    pub fn new(seed: u32) -> Self {
        LegacyRandomState {
            mt: Mt19937::new(seed),
            gauss: None,
        }
    }

    /// Raw 32-bit output of the underlying generator.
    pub fn next_u32(&mut self) -> u32 {
        self.mt.next_u32()
    }

    /// `legacy_double` (= `random_sample`): 53-bit double in [0, 1) from two u32.
    pub fn legacy_double(&mut self) -> f64 {
        self.mt.next_double()
    }

    /// `legacy_standard_exponential`: `-log(1 - U)`; `1 - U` keeps the argument in (0, 1].
    pub fn legacy_standard_exponential(&mut self) -> f64 {
        -(1.0 - self.legacy_double()).ln()
    }

    /// `legacy_gauss`: Marsaglia polar method. Each accepted pair yields two
    /// normals; the one from `x1` is cached and returned by the next call.
    pub fn legacy_gauss(&mut self) -> f64 {
        if let Some(g) = self.gauss.take() {
            return g;
        }
        let (x1, x2, r2) = loop {
            let x1 = 2.0 * self.legacy_double() - 1.0;
            let x2 = 2.0 * self.legacy_double() - 1.0;
            let r2 = x1 * x1 + x2 * x2;
            if r2 < 1.0 && r2 != 0.0 {
                break (x1, x2, r2);
            }
        };
        let f = (-2.0 * r2.ln() / r2).sqrt();
        self.gauss = Some(f * x1);
        f * x2
    }

    /// `legacy_standard_gamma`: exponential for shape 1, Johnk/Ahrens-Dieter
    /// style rejection for shape < 1, Marsaglia-Tsang for shape > 1.
    pub fn legacy_standard_gamma(&mut self, shape: f64) -> f64 {
        if shape == 1.0 {
            return self.legacy_standard_exponential();
        }
        if shape == 0.0 {
            return 0.0;
        }
        if shape < 1.0 {
            loop {
                // Both draws happen every iteration, even if V is unused.
                let u = self.legacy_double();
                let v = self.legacy_standard_exponential();
                if u <= 1.0 - shape {
                    let x = u.powf(1.0 / shape);
                    if x <= v {
                        return x;
                    }
                } else {
                    let y = -((1.0 - u) / shape).ln();
                    let x = (1.0 - shape + shape * y).powf(1.0 / shape);
                    if x <= v + y {
                        return x;
                    }
                }
            }
        }
        let b = shape - 1.0 / 3.0;
        let c = 1.0 / (9.0 * b).sqrt();
        loop {
            let (x, v) = loop {
                let x = self.legacy_gauss();
                let v = 1.0 + c * x;
                if v > 0.0 {
                    break (x, v);
                }
            };
            let v = v * v * v;
            let u = self.legacy_double();
            // C evaluates `0.0331 * (X * X) * (X * X)` left to right.
            if u < 1.0 - 0.0331 * (x * x) * (x * x) {
                return b * v;
            }
            if u.ln() < 0.5 * x * x + b * (1.0 - v + v.ln()) {
                return b * v;
            }
        }
    }

    /// `legacy_gamma`: `scale * standard_gamma(shape)` (numpy's `gamma(shape, scale)`).
    pub fn legacy_gamma(&mut self, shape: f64, scale: f64) -> f64 {
        scale * self.legacy_standard_gamma(shape)
    }

    /// `legacy_power`: `pow(1 - exp(-E), 1/a)`, E standard exponential.
    /// Note: not simply `U^(1/a)`; the exp/log round trip changes low bits.
    pub fn legacy_power(&mut self, a: f64) -> f64 {
        (1.0 - (-self.legacy_standard_exponential()).exp()).powf(1.0 / a)
    }

    /// One `randint(low, high)` value for the default int64 dtype (`high`
    /// exclusive). Panics if `low >= high`, where numpy raises ValueError.
    pub fn randint_one(&mut self, low: i64, high: i64) -> i64 {
        assert!(low < high, "randint: low >= high");
        // numpy: high -= 1 (exclusive -> inclusive), rng = high - low and
        // off = low, both reinterpreted as uint64; the sum wraps back to int64.
        let rng = (high - 1).wrapping_sub(low) as u64;
        let off = low as u64;
        off.wrapping_add(self.bounded_masked_u64(rng)) as i64
    }

    /// `randint(low, high, n)` for int64, legacy masked-rejection mode
    /// (`random_bounded_uint64_fill(..., use_masked = true)`). The 32-bit
    /// path's `buf/bcnt` are unused by numpy, so element-by-element drawing
    /// consumes the stream identically to the fill loop.
    pub fn randint(&mut self, low: i64, high: i64, n: usize) -> Vec<i64> {
        (0..n).map(|_| self.randint_one(low, high)).collect()
    }

    /// Uniform integer in [0, rng] by masked rejection: draw, AND with the
    /// smallest all-ones mask >= rng, retry while above rng.
    fn bounded_masked_u64(&mut self, rng: u64) -> u64 {
        if rng == 0 {
            // numpy returns `off` without touching the generator.
            return 0;
        }
        let mask = gen_mask(rng);
        if rng <= 0xFFFF_FFFF {
            // Range fits in 32 bits: one u32 per attempt (no 64-bit draws).
            // rng == 0xFFFFFFFF gives mask 0xFFFFFFFF and never rejects,
            // matching numpy's plain-next_uint32 special case.
            let (rng32, mask32) = (rng as u32, mask as u32);
            loop {
                let v = self.mt.next_u32() & mask32;
                if v <= rng32 {
                    return v as u64;
                }
            }
        }
        if rng == u64::MAX {
            return self.mt.next_u64();
        }
        loop {
            let v = self.mt.next_u64() & mask;
            if v <= rng {
                return v;
            }
        }
    }
}

/// numpy's `gen_mask`: smallest 2^k - 1 that is >= max.
fn gen_mask(max: u64) -> u64 {
    if max == 0 {
        0
    } else {
        u64::MAX >> max.leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gen_mask_matches_numpy_definition() {
        assert_eq!(gen_mask(1), 1);
        assert_eq!(gen_mask(503), 511);
        assert_eq!(gen_mask(511), 511);
        assert_eq!(gen_mask(512), 1023);
        assert_eq!(gen_mask(u32::MAX as u64), u32::MAX as u64);
    }

    #[test]
    fn gauss_cache_is_consumed_before_new_draws() {
        // The second gauss call is served from the cache, so one call and
        // two calls leave the MT stream at the same position.
        let mut a = LegacyRandomState::new(7);
        a.legacy_gauss();
        a.legacy_gauss();
        let mut b = LegacyRandomState::new(7);
        b.legacy_gauss();
        assert_eq!(a.next_u32(), b.next_u32());
    }

    #[test]
    fn randint_degenerate_range_consumes_nothing() {
        let mut a = LegacyRandomState::new(1);
        assert_eq!(a.randint_one(5, 6), 5);
        let mut b = LegacyRandomState::new(1);
        assert_eq!(a.next_u32(), b.next_u32());
    }
}
