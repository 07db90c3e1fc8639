//! `Name[k=v,...]` specs: how a policy, scheduler or cost model and its parameters are named on the CLI.

use crate::error::{Error, Result};

/// A parsed spec. Parameters must all be consumed (`finish`) so a typo is an error, not a silent default.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    params: Vec<(String, String, bool)>,
}

impl Spec {
    pub fn parse(text: &str) -> Result<Spec> {
        let text = text.trim();
        let bad = |why: &str| {
            Error::msg(format!(
                "bad spec '{text}': {why} (expected Name or Name[k=v,...])"
            ))
        };
        let (name, rest) = match text.find('[') {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad("the name must be letters, digits, '-' or '_'"));
        }
        let mut params = Vec::new();
        if let Some(rest) = rest {
            let body = rest
                .strip_suffix(']')
                .ok_or_else(|| bad("missing closing ']'"))?;
            for kv in body.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad(&format!("'{kv}' is not k=v")))?;
                let (k, v) = (k.trim(), v.trim());
                if params
                    .iter()
                    .any(|(p, _, _): &(String, String, bool)| p == k)
                {
                    return Err(bad(&format!("parameter '{k}' given twice")));
                }
                params.push((k.to_string(), v.to_string(), false));
            }
        }
        Ok(Spec {
            name: name.to_ascii_lowercase(),
            params,
        })
    }

    /// A string parameter, if given.
    pub fn take_str(&mut self, key: &str) -> Option<String> {
        self.take(key)
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.params
            .iter_mut()
            .find(|(k, _, _)| k == key)
            .map(|(_, v, used)| {
                *used = true;
                v.clone()
            })
    }

    /// A numeric (or any `FromStr`) parameter with a default.
    pub fn get<T: std::str::FromStr>(&mut self, key: &str, default: T) -> Result<T> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| {
                Error::msg(format!(
                    "{}: parameter '{key}' has bad value '{v}'",
                    self.name
                ))
            }),
        }
    }

    /// Errors on any parameter the component did not read, listing the ones it knows.
    pub fn finish(&self, known: &[&str]) -> Result<()> {
        if let Some((k, _, _)) = self.params.iter().find(|(_, _, used)| !used) {
            return Err(Error::msg(format!(
                "{}: unknown parameter '{k}'; valid: {}",
                self.name,
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_name_and_params() {
        let mut s = Spec::parse("Chameleon[freq=0.5, size=0.4]").unwrap();
        assert_eq!(s.name, "chameleon");
        assert_eq!(s.get("freq", 0.0).unwrap(), 0.5);
        assert_eq!(s.get("recency", 0.1).unwrap(), 0.1);
        assert!(
            s.finish(&["freq", "size", "recency"]).is_err(),
            "size was never read"
        );
        assert_eq!(s.get("size", 0.0).unwrap(), 0.4);
        s.finish(&["freq", "size", "recency"]).unwrap();
    }

    #[test]
    fn rejects_malformed_specs() {
        for bad in ["", "lru[", "lru[k]", "lru[a=1,a=2]", "l ru"] {
            assert!(Spec::parse(bad).is_err(), "{bad}");
        }
        let mut s = Spec::parse("fifo[x=abc]").unwrap();
        let e = s.get("x", 1u32).unwrap_err().to_string();
        assert!(e.contains("'x'") && e.contains("abc"), "{e}");
    }
}
