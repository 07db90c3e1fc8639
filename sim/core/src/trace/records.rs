//! Records of a CSV (any delimiter, quoted fields) or JSON-lines file, plain or gzip, one line at a time.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use super::format::{Format, ReadSpec};
use crate::error::{Error, Result};

/// The longest line a trace may have, bytes: a line is one request (a few numbers, or a JSON object that may
/// carry its prompt's text), so longer means the file is not a trace.
pub const MAX_LINE_BYTES: u64 = 4 << 20;

/// Files above this size show a progress bar on stderr (indicatif hides it when stderr is not a terminal).
const PROGRESS_BYTES: u64 = 64 << 20;

/// Where a role's value sits in a record.
#[derive(Clone, Debug, PartialEq)]
pub enum Col {
    Index(usize),
    Key(String),
}

enum Kind {
    Csv {
        delim: u8,
        header: Vec<String>,
        fields: Vec<String>,
    },
    Jsonl {
        keys: Vec<String>,
        obj: Map<String, Value>,
    },
}

/// Records of a CSV or JSON-lines file, one at a time, with the physical line number of each.
pub struct Records {
    pub source: String,
    input: Box<dyn BufRead>,
    kind: Kind,
    pub line: u64,
    buf: String,
    /// A JSON object read ahead at open to learn the keys.
    pending: bool,
    progress: Option<indicatif::ProgressBar>,
}

/// Opens a file, decompressing `.gz`, and shows progress on the compressed bytes for large files.
pub fn open_path(path: &Path) -> Result<(Box<dyn BufRead>, Option<indicatif::ProgressBar>)> {
    let f = File::open(path)
        .map_err(|e| Error::msg(format!("{}: cannot read trace: {e}", path.display())))?;
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let (raw, pb): (Box<dyn Read>, _) = if len >= PROGRESS_BYTES {
        let pb = indicatif::ProgressBar::new(len);
        pb.set_style(
            indicatif::ProgressStyle::with_template(
                "{bytes}/{total_bytes} [{wide_bar}] {percent}% eta {eta}",
            )
            .expect("static template"),
        );
        (Box::new(pb.wrap_read(f)), Some(pb))
    } else {
        (Box::new(f), None)
    };
    let gz = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("gz"));
    let r: Box<dyn BufRead> = if gz {
        Box::new(BufReader::with_capacity(
            1 << 16,
            flate2::read::MultiGzDecoder::new(BufReader::with_capacity(1 << 16, raw)),
        ))
    } else {
        Box::new(BufReader::with_capacity(1 << 16, raw))
    };
    Ok((r, pb))
}

fn jsonl_name(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".jsonl") || name.ends_with(".ndjson") || name.ends_with(".json")
}

impl Records {
    pub fn open(path: &Path, spec: &ReadSpec) -> Result<Records> {
        let (input, pb) = open_path(path)?;
        let mut fmt = spec.format;
        if fmt == Format::Auto && jsonl_name(path) {
            fmt = Format::Jsonl;
        }
        Records::from_reader(input, &path.display().to_string(), fmt, spec.delimiter, pb)
    }

    pub fn from_reader(
        input: Box<dyn BufRead>,
        source: &str,
        format: Format,
        delimiter: Option<u8>,
        progress: Option<indicatif::ProgressBar>,
    ) -> Result<Records> {
        let mut r = Records {
            source: source.to_string(),
            input,
            kind: Kind::Jsonl {
                keys: Vec::new(),
                obj: Map::new(),
            },
            line: 0,
            buf: String::new(),
            pending: false,
            progress,
        };
        if !r.next_line()? {
            return Err(Error::msg(format!("{source}: the trace is empty")));
        }
        // A byte-order mark (Windows tools write one) is not part of the first field or JSON object.
        if let Some(rest) = r.buf.strip_prefix('\u{feff}') {
            r.buf = rest.to_string();
        }
        let first = r.buf.as_str();
        let json = match format {
            Format::Jsonl => true,
            Format::Csv => false,
            Format::Auto => first.trim_start().starts_with('{'),
        };
        if json {
            let obj = r.parse_json()?;
            r.kind = Kind::Jsonl {
                keys: obj.keys().cloned().collect(),
                obj,
            };
            r.pending = true;
        } else {
            let delim = delimiter.unwrap_or(if first.contains('\t') && !first.contains(',') {
                b'\t'
            } else {
                b','
            });
            let mut header = Vec::new();
            split_csv(first, delim, &mut header)
                .map_err(|why| Error::msg(format!("{source}: line {}: {why}", r.line)))?;
            for h in &mut header {
                *h = h.trim().to_string();
            }
            r.kind = Kind::Csv {
                delim,
                header,
                fields: Vec::new(),
            };
        }
        Ok(r)
    }

    /// Reads the next non-blank line into `buf` (without its line end); false at the end of the file.
    fn next_line(&mut self) -> Result<bool> {
        loop {
            self.buf.clear();
            // At most one byte past the bound: a file with no line break (`/dev/zero`, a binary) fails
            // here with its line number instead of filling memory.
            let n = (&mut self.input)
                .take(MAX_LINE_BYTES + 1)
                .read_line(&mut self.buf)
                .map_err(|e| Error::msg(format!("{}: line {}: {e}", self.source, self.line + 1)))?;
            if n as u64 > MAX_LINE_BYTES {
                return Err(Error::msg(format!(
                    "{}: line {}: longer than {} MiB without a line break (one line is one request; is this a \
                     trace?)",
                    self.source,
                    self.line + 1,
                    MAX_LINE_BYTES >> 20
                )));
            }
            if n == 0 {
                if let Some(pb) = &self.progress {
                    pb.finish_and_clear();
                }
                return Ok(false);
            }
            self.line += 1;
            let t = self.buf.trim_end_matches(['\n', '\r']).len();
            self.buf.truncate(t);
            if !self.buf.trim().is_empty() {
                return Ok(true);
            }
        }
    }

    fn parse_json(&self) -> Result<Map<String, Value>> {
        match crate::json::parse(&self.buf) {
            Ok(Value::Object(m)) => Ok(m),
            Ok(_) => Err(Error::msg(format!(
                "{}: line {}: expected a JSON object",
                self.source, self.line
            ))),
            Err(e) => Err(Error::msg(format!(
                "{}: line {}: not JSON: {e}",
                self.source, self.line
            ))),
        }
    }

    /// Advances to the next record; false at the end.
    pub fn advance(&mut self) -> Result<bool> {
        if self.pending {
            self.pending = false;
            return Ok(true);
        }
        if !self.next_line()? {
            return Ok(false);
        }
        match &mut self.kind {
            Kind::Csv {
                delim,
                header,
                fields,
            } => {
                split_csv(&self.buf, *delim, fields).map_err(|why| {
                    Error::msg(format!("{}: line {}: {why}", self.source, self.line))
                })?;
                if fields.len() != header.len() {
                    return Err(Error::msg(format!(
                        "{}: line {}: expected {} fields, found {}",
                        self.source,
                        self.line,
                        header.len(),
                        fields.len()
                    )));
                }
            }
            Kind::Jsonl { .. } => {
                let obj = self.parse_json()?;
                if let Kind::Jsonl { obj: o, .. } = &mut self.kind {
                    *o = obj;
                }
            }
        }
        Ok(true)
    }

    pub fn is_json(&self) -> bool {
        matches!(self.kind, Kind::Jsonl { .. })
    }

    /// Column (CSV) or key (JSON) names of the file.
    pub fn names(&self) -> &[String] {
        match &self.kind {
            Kind::Csv { header, .. } => header,
            Kind::Jsonl { keys, .. } => keys,
        }
    }

    /// Finds a column by exact name, then case-insensitively.
    pub fn find(&self, name: &str) -> Option<Col> {
        let names = self.names();
        let i = names
            .iter()
            .position(|n| n == name)
            .or_else(|| names.iter().position(|n| n.eq_ignore_ascii_case(name)))?;
        Some(match &self.kind {
            Kind::Csv { .. } => Col::Index(i),
            Kind::Jsonl { .. } => Col::Key(names[i].clone()),
        })
    }

    /// The current record's value in `col`; `None` when empty, null or absent.
    pub fn cell(&self, col: &Col) -> Option<Cow<'_, str>> {
        match (&self.kind, col) {
            (Kind::Csv { fields, .. }, Col::Index(i)) => {
                let v = fields.get(*i)?.trim();
                (!v.is_empty()).then_some(Cow::Borrowed(v))
            }
            (Kind::Jsonl { obj, .. }, Col::Key(k)) => match obj.get(k)? {
                Value::Null => None,
                Value::String(s) if s.trim().is_empty() => None,
                Value::String(s) => Some(Cow::Borrowed(s.trim())),
                v => Some(Cow::Owned(v.to_string())),
            },
            _ => None,
        }
    }

    /// An error about the current record.
    pub fn err(&self, field: &str, why: impl std::fmt::Display) -> Error {
        let what = if self.is_json() { "field" } else { "column" };
        Error::msg(format!(
            "{}: line {}, {what} {field}: {why}",
            self.source, self.line
        ))
    }
}

/// Splits one CSV line (RFC 4180 quoting: `"a,b"`, `""` for a quote) into `out`.
pub fn split_csv(line: &str, delim: u8, out: &mut Vec<String>) -> Result<(), String> {
    // Fields are written into `out`'s existing strings, so a file costs no allocation per field.
    let mut n = 0;
    let field = |out: &mut Vec<String>, n: &mut usize| -> usize {
        if *n == out.len() {
            out.push(String::new());
        }
        out[*n].clear();
        *n += 1;
        *n - 1
    };
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        let k = field(out, &mut n);
        if i < b.len() && b[i] == b'"' {
            i += 1;
            let mut start = i;
            loop {
                match b[i..].iter().position(|&c| c == b'"') {
                    None => {
                        return Err(
                            "unterminated quoted field (fields spanning lines are not supported)"
                                .into(),
                        );
                    }
                    Some(p) => {
                        out[k].push_str(&line[start..i + p]);
                        i += p + 1;
                        if i < b.len() && b[i] == b'"' {
                            out[k].push('"');
                            i += 1;
                            start = i;
                        } else {
                            break;
                        }
                    }
                }
            }
            if i < b.len() && b[i] != delim {
                return Err(format!("text after the closing quote of field {}", k + 1));
            }
        } else {
            let end = b[i..]
                .iter()
                .position(|&c| c == delim)
                .map_or(b.len(), |p| i + p);
            out[k].push_str(&line[i..end]);
            i = end;
        }
        if i >= b.len() {
            out.truncate(n);
            return Ok(());
        }
        i += 1; // the delimiter
        if i == b.len() {
            field(out, &mut n);
            out.truncate(n);
            return Ok(());
        }
    }
}
