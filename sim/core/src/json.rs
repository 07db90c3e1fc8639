//! JSON read strictly: a key given twice in one object is an error naming it, not the last value silently
//! (serde_json's `Value` keeps the last). Every JSON file the tools read (model configs, profiles, sweep and
//! run configs, JSON-lines traces) goes through `parse`.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// `text` as a JSON value; a duplicate key is a serde error at its position ("duplicate key 'x'").
pub fn parse(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<Strict>(text).map(|s| s.0)
}

/// The largest JSON file read (model configs, profiles, run and sweep configs are kilobytes).
pub const MAX_FILE_BYTES: u64 = 64 << 20;

/// A user-given JSON file's text, read at most `MAX_FILE_BYTES` (a device such as `/dev/zero` or a huge
/// file is an error, not an allocation that never ends).
pub fn read_text(path: &std::path::Path) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} MiB: not a JSON file of this tool",
            MAX_FILE_BYTES >> 20
        )));
    }
    Ok(text)
}

/// A `Value` whose objects refuse duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict::deserialize(d).map(|s| s.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut v = Vec::new();
        while let Some(Strict(x)) = seq.next_element()? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let Strict(v) = map.next_value()?;
            if m.contains_key(&k) {
                return Err(de::Error::custom(format!(
                    "duplicate key '{k}' (a key may appear once per object)"
                )));
            }
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        let v = parse(r#"{"a": 1, "b": [1.5, "x", null, {"c": true}]}"#).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": 1, "b": [1.5, "x", null, {"c": true}]})
        );
        let e = parse("{\"a\": 1,\n \"a\": 2}").unwrap_err().to_string();
        assert!(
            e.contains("duplicate key 'a'") && e.contains("line 2"),
            "{e}"
        );
        let e = parse(r#"{"x": {"y": 1, "y": 1}}"#).unwrap_err().to_string();
        assert!(e.contains("duplicate key 'y'"), "{e}");
        // Numbers keep their type.
        assert!(parse("18446744073709551615").unwrap().is_u64());
        assert!(parse("-3").unwrap().is_i64());
    }
}
