//! 16-bit element types. Device buffers hold raw `u16` words (cudarc's fp16 types need the `half` crate, and
//! the kernels convert by hand anyway), so the host converts with these functions.

use crate::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    Bf16,
}

impl DType {
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "fp16",
            DType::Bf16 => "bf16",
        }
    }

    pub fn parse(s: &str) -> Result<DType> {
        match s.to_ascii_lowercase().as_str() {
            "fp16" | "f16" | "float16" | "half" => Ok(DType::F16),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            _ => Err(Error::msg(format!(
                "unknown dtype '{s}'; valid: fp16, bf16"
            ))),
        }
    }

    pub fn to_bits(self, f: f32) -> u16 {
        match self {
            DType::F16 => f32_to_f16(f),
            DType::Bf16 => f32_to_bf16(f),
        }
    }

    pub fn from_bits(self, b: u16) -> f32 {
        match self {
            DType::F16 => f16_to_f32(b),
            DType::Bf16 => bf16_to_f32(b),
        }
    }

    /// Rounds through the 16-bit type: what a value becomes once stored in a device buffer.
    pub fn round(self, f: f32) -> f32 {
        self.from_bits(self.to_bits(f))
    }
}

pub fn bf16_to_f32(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

/// Round to nearest even, as the device code does; NaN stays NaN.
pub fn f32_to_bf16(f: f32) -> u16 {
    let u = f.to_bits();
    if f.is_nan() {
        return ((u >> 16) | 0x40) as u16;
    }
    (u.wrapping_add(0x7fff + ((u >> 16) & 1)) >> 16) as u16
}

pub fn f16_to_f32(h: u16) -> f32 {
    let sign = ((h as u32) & 0x8000) << 16;
    let exp = ((h >> 10) & 0x1f) as u32;
    let man = (h & 0x3ff) as u32;
    let bits = match (exp, man) {
        (0, 0) => sign,
        (0, m) => {
            // Subnormal: value m * 2^-24, exact in f32.
            let v = m as f32 * (1.0 / 16_777_216.0);
            return if sign != 0 { -v } else { v };
        }
        (0x1f, 0) => sign | 0x7f80_0000,
        (0x1f, m) => sign | 0x7f80_0000 | (m << 13),
        (e, m) => sign | ((e + 112) << 23) | (m << 13),
    };
    f32::from_bits(bits)
}

/// Round to nearest even, overflow to infinity, NaN stays NaN (what `cvt.rn.f16.f32` does).
pub fn f32_to_f16(f: f32) -> u16 {
    let u = f.to_bits();
    let sign = ((u >> 16) & 0x8000) as u16;
    let a = f.abs();
    if a.is_nan() {
        return sign | 0x7e00;
    }
    if a >= 65520.0 {
        return sign | 0x7c00;
    }
    if a < 6.103_515_6e-5 {
        // Subnormal range of f16: quantum 2^-24; round_ties_even gives nearest-even.
        return sign | (a * 16_777_216.0).round_ties_even() as u16;
    }
    let au = a.to_bits();
    let exp = (au >> 23) as i32 - 127 + 15;
    let man = au & 0x7f_ffff;
    let mut h = ((exp as u32) << 10) | (man >> 13);
    let rest = man & 0x1fff;
    if rest > 0x1000 || (rest == 0x1000 && (h & 1) == 1) {
        h += 1; // a carry into the exponent is the correct rounding
    }
    sign | h as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_known_bit_patterns() {
        for (f, b) in [
            (1.0, 0x3c00),
            (-2.0, 0xc000),
            (65504.0, 0x7bff),
            (0.5, 0x3800),
            (0.0, 0x0000),
        ] {
            assert_eq!(f32_to_f16(f), b, "{f}");
            assert_eq!(f16_to_f32(b), f);
        }
        assert_eq!(f32_to_f16(0.1), 0x2e66);
        assert_eq!(f32_to_f16(1e6), 0x7c00);
        assert_eq!(f16_to_f32(0x0001), 2f32.powi(-24));
        assert_eq!(f32_to_f16(2f32.powi(-24)), 0x0001);
        // 1 + 2^-11 is halfway between 1 and the next f16: ties go to the even mantissa (1.0).
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert!(f16_to_f32(f32_to_f16(f32::NAN)).is_nan());
    }

    #[test]
    fn bf16_known_bit_patterns() {
        assert_eq!(f32_to_bf16(1.0), 0x3f80);
        assert_eq!(f32_to_bf16(-2.0), 0xc000);
        assert_eq!(bf16_to_f32(0x3f80), 1.0);
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3f80); // tie to even
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3f82);
        assert!(bf16_to_f32(f32_to_bf16(f32::NAN)).is_nan());
    }

    #[test]
    fn round_trip_is_within_half_an_ulp() {
        for i in -1000..1000 {
            let f = i as f32 * 0.0137;
            assert!(
                (DType::F16.round(f) - f).abs() <= f.abs() * 2f32.powi(-11) + 1e-7,
                "{f}"
            );
            assert!(
                (DType::Bf16.round(f) - f).abs() <= f.abs() * 2f32.powi(-8) + 1e-30,
                "{f}"
            );
        }
        assert_eq!(DType::parse("BF16").unwrap(), DType::Bf16);
        assert!(DType::parse("fp8").unwrap_err().0.contains("fp16, bf16"));
    }
}
