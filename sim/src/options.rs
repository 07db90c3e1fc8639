//! Option values from JSON (sweep configs, run config files): a value may be written natively (`6`, `[8, 16]`,
//! `true`) or as the text a flag takes (`"6"`, `"8,16"`), and is parsed by the same `FromStr` as the flag, so
//! a config and a command line accept exactly the same values.

use std::fmt::Display;
use std::str::FromStr;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

pub use sim_core::range::{Range, Whole, real, show, whole};

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
