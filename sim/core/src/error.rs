//! One error type for the whole crate: a message, plus the process exit code it maps to.

use std::fmt;

/// Exit code 2 = bad input or usage (the user can fix it); 1 = anything else.
#[derive(Debug)]
pub struct Error {
    msg: String,
    pub code: i32,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Bad input: a file, flag or value the user gave.
    pub fn msg(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            code: 2,
        }
    }
    /// Something failed that the user did not cause directly (I/O while writing, ...).
    pub fn internal(msg: impl Into<String>) -> Self {
        Error {
            msg: msg.into(),
            code: 1,
        }
    }
    pub fn context(self, ctx: impl fmt::Display) -> Self {
        Error {
            msg: format!("{ctx}: {}", self.msg),
            code: self.code,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::internal(e.to_string())
    }
}

/// A command-line parser's message (clap's: blocks of text, a usage block, tips) as one line: the message
/// and its tips, without the usage block, whitespace collapsed.
pub fn one_line(text: &str) -> String {
    let mut parts = Vec::new();
    for block in text.split("\n\n") {
        let block = block.trim();
        if block.starts_with("Usage:") || block.starts_with("For more information") {
            continue;
        }
        let one = block
            .trim_start_matches("error: ")
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        if !one.is_empty() {
            parts.push(one);
        }
    }
    parts.join("; ")
}

/// A serde_json error on `text` as one line naming where it is: `line L, field NAME: what`. serde reports
/// a bad value ("invalid value: integer `-5`, expected u64") with its position but not its field; the field
/// is the last object key before that position.
pub fn json_error(text: &str, e: &serde_json::Error) -> String {
    let what = e.to_string();
    let what = match what.rfind(" at line ") {
        Some(i) => &what[..i],
        None => &what,
    };
    if e.line() == 0 {
        return what.to_string();
    }
    let offset: usize = text
        .split_inclusive('\n')
        .take(e.line() - 1)
        .map(str::len)
        .sum::<usize>()
        + e.column();
    let upto = &text[..offset.min(text.len())];
    match (what.starts_with("invalid "), last_key(upto)) {
        (true, Some(k)) => format!("line {}, field {k}: {what}", e.line()),
        _ => format!("line {}: {what}", e.line()),
    }
}

/// The last `"key":` of a JSON prefix (strings and escapes respected).
fn last_key(prefix: &str) -> Option<String> {
    let b = prefix.as_bytes();
    let (mut i, mut key, mut last) = (0, None, None);
    while i < b.len() {
        match b[i] {
            b'"' => {
                let start = i + 1;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                last = prefix.get(start..i.min(b.len())).map(str::to_string);
            }
            b':' => key = last.take(),
            c if !c.is_ascii_whitespace() => last = None,
            _ => {}
        }
        i += 1;
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_errors_name_the_line_and_the_field() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct P {
            name: String,
            points: Vec<Q>,
        }
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct Q {
            tokens: u64,
            time_ns: u64,
        }
        let text = "{\n  \"name\": \"a:b \\\"q\\\"\",\n  \"points\": [\n    {\"tokens\": 1, \"time_ns\": 5},\n    {\"tokens\": 2, \"time_ns\": -5}\n  ]\n}";
        let e = serde_json::from_str::<P>(text).unwrap_err();
        assert_eq!(
            json_error(text, &e),
            "line 5, field time_ns: invalid value: integer `-5`, expected u64"
        );
        let e = serde_json::from_str::<P>("{\"name\": \"x\"}").unwrap_err();
        assert_eq!(
            json_error("{\"name\": \"x\"}", &e),
            "line 1: missing field `points`"
        );
    }
}
