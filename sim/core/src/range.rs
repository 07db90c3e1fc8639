//! The valid range of a numeric option and clap value parsers that check it: the same check runs for a flag
//! (`sim run`, `calibrate`) and for a value from JSON, so both accept exactly the same values and a refusal
//! names the option's rule in words.

use std::str::FromStr;

/// The valid values of a numeric option. The same check runs in clap's value parser (a flag) and in
/// `RunArgs::check` (a value from JSON), so both paths accept exactly the same values and name the option.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Range {
    /// A finite number > 0 and <= the bound.
    Positive(f64),
    /// A finite number >= 0 and <= the bound.
    NonNegative(f64),
    /// A fraction in (0, 1].
    Fraction,
    /// A whole number >= the bound.
    AtLeast(u64),
    /// A whole number in [lo, hi].
    Between(u64, u64),
}

impl Range {
    /// Why `v` is out of range, if it is.
    pub fn check(self, v: f64) -> Result<(), String> {
        let ok = match self {
            Range::Positive(hi) => v > 0.0 && v <= hi,
            Range::NonNegative(hi) => (0.0..=hi).contains(&v),
            Range::Fraction => v > 0.0 && v <= 1.0,
            Range::AtLeast(lo) => v >= lo as f64,
            Range::Between(lo, hi) => v >= lo as f64 && v <= hi as f64,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{}, got {}", self.rule(), show(v)))
        }
    }

    /// The rule in words.
    pub fn rule(self) -> String {
        match self {
            Range::Positive(hi) if hi == f64::MAX => "must be a positive number".into(),
            Range::Positive(hi) => format!("must be a number in (0, {hi}]"),
            Range::NonNegative(hi) if hi == f64::MAX => "must be a number >= 0".into(),
            Range::NonNegative(hi) => format!("must be a number in [0, {hi}]"),
            Range::Fraction => "must be a fraction in (0, 1]".into(),
            Range::AtLeast(0) => "must be a whole number >= 0".into(),
            Range::AtLeast(lo) => format!("must be a whole number >= {lo}"),
            Range::Between(lo, hi) => format!("must be a whole number in [{lo}, {hi}]"),
        }
    }
}

/// A number as a reader wrote it: 1e30, not thirty-one digits.
pub fn show(v: f64) -> String {
    if v != 0.0 && !(1e-4..1e7).contains(&v.abs()) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// clap's value parser for a real option in `r`: `#[arg(value_parser = options::real(R))]`.
pub fn real(r: Range) -> impl Fn(&str) -> Result<f64, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let v: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("'{s}' is not a number"))?;
        r.check(v)?;
        Ok(v)
    }
}

/// Whole-number option types.
pub trait Whole: FromStr + Copy + Send + Sync + 'static {
    fn as_f64(self) -> f64;
}

impl Whole for u32 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}
impl Whole for u64 {
    fn as_f64(self) -> f64 {
        self as f64
    }
}
impl Whole for usize {
    fn as_f64(self) -> f64 {
        self as f64
    }
}

/// clap's value parser for a whole-number option in `r` (a negative, fractional or oversized value is
/// refused in words, not as clap's "invalid digit").
pub fn whole<T: Whole>(
    r: Range,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |s: &str| {
        let t = s.trim();
        match t.parse::<T>() {
            Ok(v) => {
                r.check(v.as_f64())?;
                Ok(v)
            }
            Err(_) => Err(match t.parse::<f64>() {
                Ok(f) if f >= 0.0 && f.fract() == 0.0 => format!("'{t}' is too large"),
                Ok(f) if f.is_finite() => format!("{}, got {t}", r.rule()),
                _ => format!("'{s}' is not a whole number"),
            }),
        }
    }
}
