//! Option values from JSON (sweep configs, run config files): a value may be written natively (`6`, `[8, 16]`,
//! `true`) or as the text a flag takes (`"6"`, `"8,16"`), and is parsed by the same `FromStr` as the flag, so
//! a config and a command line accept exactly the same values.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

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
fn show(v: f64) -> String {
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

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn parse<T: FromStr, E: serde::de::Error>(s: &str) -> Result<T, E>
where
    T::Err: Display,
{
    s.trim()
        .parse()
        .map_err(|e| E::custom(format!("bad value '{s}': {e}")))
}

/// A scalar option.
pub fn scalar<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<T, D::Error>
where
    T::Err: Display,
{
    let v = Value::deserialize(d)?;
    let s = text(&v).ok_or_else(|| D::Error::custom(format!("expected a value, got {v}")))?;
    parse(&s)
}

/// An option that may be absent (`null`).
pub fn optional<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Option<T>, D::Error>
where
    T::Err: Display,
{
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => {
            let s =
                text(&v).ok_or_else(|| D::Error::custom(format!("expected a value, got {v}")))?;
            parse(&s).map(Some)
        }
    }
}

/// A list option: a JSON list, one value, or comma-separated text.
pub fn list<'de, D: Deserializer<'de>, T: FromStr>(d: D) -> Result<Vec<T>, D::Error>
where
    T::Err: Display,
{
    match Value::deserialize(d)? {
        Value::Array(xs) => xs
            .iter()
            .map(|x| {
                let s = text(x)
                    .ok_or_else(|| D::Error::custom(format!("expected a value, got {x}")))?;
                parse(&s)
            })
            .collect(),
        v => {
            let s =
                text(&v).ok_or_else(|| D::Error::custom(format!("expected a list, got {v}")))?;
            s.split(',').map(parse).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, Debug, PartialEq)]
    struct T {
        #[serde(deserialize_with = "scalar")]
        x: f64,
        #[serde(default, deserialize_with = "optional")]
        y: Option<u32>,
        #[serde(deserialize_with = "list")]
        z: Vec<u32>,
    }

    #[test]
    fn native_and_text_values_parse_alike() {
        let a: T = serde_json::from_str(r#"{"x": 0.5, "y": 3, "z": [8, 16]}"#).unwrap();
        let b: T = serde_json::from_str(r#"{"x": "0.5", "y": "3", "z": "8,16"}"#).unwrap();
        assert_eq!(a, b);
        let c: T = serde_json::from_str(r#"{"x": 1, "y": null, "z": 8}"#).unwrap();
        assert_eq!((c.y, c.z), (None, vec![8]));
        let e = serde_json::from_str::<T>(r#"{"x": "abc", "z": 8}"#).unwrap_err();
        assert!(e.to_string().contains("bad value 'abc'"), "{e}");
        assert!(serde_json::from_str::<T>(r#"{"x": [1], "z": 8}"#).is_err());
    }
}
