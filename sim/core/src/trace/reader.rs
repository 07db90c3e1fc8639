//! Streaming trace readers: CSV (any delimiter, quoted fields) or JSON lines, plain or gzip, with a column
//! mapping from the file's names to the facts the simulator needs (arrival, input and output tokens, and
//! optionally an adapter and a tenant id). Rows are read one line at a time, so a 10-million-row file costs
//! the memory of one line plus what the consumer keeps.

use std::borrow::Cow;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::spec::Spec;

/// Files above this size show a progress bar on stderr (indicatif hides it when stderr is not a terminal).
const PROGRESS_BYTES: u64 = 64 << 20;

/// Column-name guesses, tried in order, case-insensitively. The first of each list is the Azure 2023 name, so a
/// file missing it is reported in the Azure vocabulary the default trace uses.
const TIME_NAMES: &[&str] = &[
    "TIMESTAMP",
    "arrival_s",
    "arrival_ms",
    "arrival_us",
    "arrival_ns",
    "arrival_time",
    "arrival",
    "time",
    "timestamp_ms",
    "timestamp_us",
    "ts",
    "created_at",
    "gmt_create",
];
const INPUT_NAMES: &[&str] = &[
    "ContextTokens",
    "input_tokens",
    "input_len",
    "input_length",
    "prompt_tokens",
    "prompt_len",
    "request_tokens",
    "input",
];
const OUTPUT_NAMES: &[&str] = &[
    "GeneratedTokens",
    "output_tokens",
    "output_len",
    "output_length",
    "completion_tokens",
    "response_tokens",
    "generated_tokens",
    "output",
];
const ADAPTER_NAMES: &[&str] = &["adapter", "adapter_id", "lora", "lora_id", "model_id"];
const TENANT_NAMES: &[&str] = &["tenant", "tenant_id", "client_id", "user_id", "groupId"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `.jsonl`/`.ndjson`/`.json` (before an optional `.gz`) or a first line starting with `{` = JSON lines.
    Auto,
    Csv,
    Jsonl,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeUnit {
    /// A datetime if the first value parses as one, else a number in the unit the column name ends with
    /// (`_ms`, `_us`, `_ns`), else seconds.
    Auto,
    Seconds,
    Millis,
    Micros,
    Nanos,
    Datetime,
}

impl TimeUnit {
    fn parse(s: &str) -> Option<TimeUnit> {
        Some(match s {
            "auto" => TimeUnit::Auto,
            "s" => TimeUnit::Seconds,
            "ms" => TimeUnit::Millis,
            "us" => TimeUnit::Micros,
            "ns" => TimeUnit::Nanos,
            "datetime" => TimeUnit::Datetime,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Auto => "auto",
            TimeUnit::Seconds => "s",
            TimeUnit::Millis => "ms",
            TimeUnit::Micros => "us",
            TimeUnit::Nanos => "ns",
            TimeUnit::Datetime => "datetime",
        }
    }
    fn ns(self) -> i128 {
        match self {
            TimeUnit::Millis => 1_000_000,
            TimeUnit::Micros => 1_000,
            TimeUnit::Nanos => 1,
            _ => 1_000_000_000,
        }
    }
}

/// What to do with a row whose input or output count is 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Zeros {
    Error,
    Skip,
    /// Count it as one token (the engine needs at least one of each).
    One,
}

/// How to read a trace file: `--trace-format auto | azure | csv[k=v,...] | jsonl[k=v,...]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ReadSpec {
    pub format: Format,
    pub time: Option<String>,
    pub input: Option<String>,
    pub output: Option<String>,
    /// `None` = guess; `Some("")` = the file has no such column.
    pub adapter: Option<String>,
    pub tenant: Option<String>,
    pub unit: TimeUnit,
    /// Requests sharing a timestamp are spread evenly over this many ns (0 = keep them simultaneous).
    pub spread_ns: u64,
    /// Sort by arrival (stable: equal timestamps keep file order) instead of failing on a backwards timestamp.
    pub sort: bool,
    pub zeros: Zeros,
    /// `None` = comma, or tab when the header has tabs and no comma.
    pub delimiter: Option<u8>,
    /// Read only the first N requests (after sorting, with `sort`); set from `--max-requests`.
    pub limit: Option<usize>,
}

impl Default for ReadSpec {
    fn default() -> Self {
        ReadSpec {
            format: Format::Auto,
            time: None,
            input: None,
            output: None,
            adapter: None,
            tenant: None,
            unit: TimeUnit::Auto,
            spread_ns: 0,
            sort: false,
            zeros: Zeros::Error,
            delimiter: None,
            limit: None,
        }
    }
}

pub const FORMAT_PARAMS: &[&str] = &[
    "time", "input", "output", "adapter", "tenant", "unit", "spread", "sort", "zeros", "delim",
];

impl ReadSpec {
    /// `auto`, `azure`, `csv[...]` or `jsonl[...]`; parameters: time=COL, input=COL, output=COL, adapter=COL,
    /// tenant=COL (empty = none), unit=s|ms|us|ns|datetime|auto, spread=SECONDS, sort=true, zeros=error|skip|one,
    /// delim=comma|tab|semicolon|pipe.
    pub fn parse(text: &str) -> Result<ReadSpec> {
        let mut s = Spec::parse(text).map_err(|e| e.context("--trace-format"))?;
        let mut r = ReadSpec {
            format: match s.name.as_str() {
                "auto" => Format::Auto,
                "csv" | "azure" => Format::Csv,
                "jsonl" | "json" | "ndjson" => Format::Jsonl,
                other => {
                    return Err(Error::msg(format!(
                        "--trace-format: unknown format '{other}' (expected auto, azure, csv[...] or jsonl[...])"
                    )));
                }
            },
            ..ReadSpec::default()
        };
        if s.name == "azure" {
            r.time = Some("TIMESTAMP".into());
            r.input = Some("ContextTokens".into());
            r.output = Some("GeneratedTokens".into());
            r.adapter = Some(String::new());
            r.tenant = Some(String::new());
            r.unit = TimeUnit::Datetime;
        }
        let bad = |k: &str, v: &str| {
            Error::msg(format!(
                "--trace-format: parameter '{k}' has bad value '{v}'"
            ))
        };
        for (key, slot) in [
            ("time", &mut r.time),
            ("input", &mut r.input),
            ("output", &mut r.output),
            ("adapter", &mut r.adapter),
            ("tenant", &mut r.tenant),
        ] {
            if let Some(v) = s.take_str(key) {
                *slot = Some(v);
            }
        }
        if let Some(v) = s.take_str("unit") {
            r.unit = TimeUnit::parse(&v).ok_or_else(|| bad("unit", &v))?;
        }
        if let Some(v) = s.take_str("spread") {
            let secs: f64 = v.parse().map_err(|_| bad("spread", &v))?;
            if !(secs >= 0.0 && secs.is_finite()) {
                return Err(bad("spread", &v));
            }
            r.spread_ns = (secs * 1e9).round() as u64;
        }
        r.sort = s.get("sort", false)?;
        if let Some(v) = s.take_str("zeros") {
            r.zeros = match v.as_str() {
                "error" => Zeros::Error,
                "skip" => Zeros::Skip,
                "one" => Zeros::One,
                _ => return Err(bad("zeros", &v)),
            };
        }
        if let Some(v) = s.take_str("delim") {
            r.delimiter = Some(match v.as_str() {
                "comma" | "," => b',',
                "tab" | "\\t" => b'\t',
                "semicolon" | ";" => b';',
                "pipe" | "|" => b'|',
                _ => return Err(bad("delim", &v)),
            });
        }
        s.finish(FORMAT_PARAMS)
            .map_err(|e| e.context("--trace-format"))?;
        Ok(r)
    }
}

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
        let first = r.buf.trim_start_matches('\u{feff}');
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
            let n = self
                .input
                .read_line(&mut self.buf)
                .map_err(|e| Error::msg(format!("{}: line {}: {e}", self.source, self.line + 1)))?;
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
        match serde_json::from_str::<Value>(&self.buf) {
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
    out.clear();
    let b = line.as_bytes();
    let mut i = 0;
    loop {
        let mut field = String::new();
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
                        field.push_str(&line[start..i + p]);
                        i += p + 1;
                        if i < b.len() && b[i] == b'"' {
                            field.push('"');
                            i += 1;
                            start = i;
                        } else {
                            break;
                        }
                    }
                }
            }
            if i < b.len() && b[i] != delim {
                return Err(format!(
                    "text after the closing quote of field {}",
                    out.len() + 1
                ));
            }
        } else {
            let end = b[i..]
                .iter()
                .position(|&c| c == delim)
                .map_or(b.len(), |p| i + p);
            field.push_str(&line[i..end]);
            i = end;
        }
        out.push(field);
        if i >= b.len() {
            return Ok(());
        }
        i += 1; // the delimiter
        if i == b.len() {
            out.push(String::new());
            return Ok(());
        }
    }
}

/// One request as read: absolute time in ns (unit of the file converted), lengths, ids as text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRow {
    pub line: u64,
    pub time: i128,
    pub input: u32,
    pub output: u32,
    pub adapter: Option<String>,
    pub tenant: Option<String>,
}

/// The resolved mapping, for reports.
#[derive(Clone, Debug)]
pub struct Mapping {
    pub time: String,
    pub unit: TimeUnit,
    pub input: String,
    pub output: String,
    pub adapter: Option<String>,
    pub tenant: Option<String>,
    pub json: bool,
}

impl Mapping {
    pub fn describe(&self) -> String {
        format!(
            "{}; time={} [{}], input={}, output={}, adapter={}, tenant={}",
            if self.json { "jsonl" } else { "csv" },
            self.time,
            self.unit.name(),
            self.input,
            self.output,
            self.adapter.as_deref().unwrap_or("-"),
            self.tenant.as_deref().unwrap_or("-")
        )
    }
}

/// Trace rows, in file order, validated. Timestamps must not go backwards unless the spec says `sort`
/// (the consumer sorts); `spread` is applied by [`Spread`].
pub struct RowReader {
    rec: Records,
    cols: [Col; 3],
    adapter: Option<Col>,
    tenant: Option<Col>,
    pub mapping: Mapping,
    zeros: Zeros,
    check_order: bool,
    prev: Option<(i128, String)>,
    pub skipped: u64,
}

fn resolve(
    rec: &Records,
    role: &str,
    given: &Option<String>,
    guesses: &[&str],
    required: bool,
) -> Result<Option<(Col, String)>> {
    match given {
        Some(name) if name.is_empty() => Ok(None),
        Some(name) => match rec.find(name) {
            Some(c) => Ok(Some((c, name.clone()))),
            None => Err(Error::msg(format!(
                "{}: missing column '{name}' (found: {})",
                rec.source,
                rec.names().join(", ")
            ))),
        },
        None => {
            for g in guesses {
                if let Some(c) = rec.find(g) {
                    let name = rec.names()[match &c {
                        Col::Index(i) => *i,
                        Col::Key(k) => rec.names().iter().position(|n| n == k).unwrap_or(0),
                    }]
                    .clone();
                    return Ok(Some((c, name)));
                }
            }
            if required {
                Err(Error::msg(format!(
                    "{}: missing column '{}' (or any of {}) for {role} (found: {}); name it with --trace-format csv[{role}=COLUMN]",
                    rec.source,
                    guesses[0],
                    guesses[1..].join(", "),
                    rec.names().join(", ")
                )))
            } else {
                Ok(None)
            }
        }
    }
}

impl RowReader {
    pub fn open(path: &Path, spec: &ReadSpec) -> Result<RowReader> {
        RowReader::new(Records::open(path, spec)?, spec)
    }

    pub fn new(rec: Records, spec: &ReadSpec) -> Result<RowReader> {
        let time = resolve(&rec, "time", &spec.time, TIME_NAMES, true)?.expect("required");
        let input = resolve(&rec, "input", &spec.input, INPUT_NAMES, true)?.expect("required");
        let output = resolve(&rec, "output", &spec.output, OUTPUT_NAMES, true)?.expect("required");
        let adapter = resolve(&rec, "adapter", &spec.adapter, ADAPTER_NAMES, false)?;
        let tenant = resolve(&rec, "tenant", &spec.tenant, TENANT_NAMES, false)?;
        let mut unit = spec.unit;
        if unit == TimeUnit::Auto {
            let lower = time.1.to_ascii_lowercase();
            unit = if lower.ends_with("ms") {
                TimeUnit::Millis
            } else if lower.ends_with("us") {
                TimeUnit::Micros
            } else if lower.ends_with("ns") {
                TimeUnit::Nanos
            } else {
                TimeUnit::Auto // decided by the first value: a datetime, else seconds
            };
        }
        let mapping = Mapping {
            time: time.1,
            unit,
            input: input.1,
            output: output.1,
            adapter: adapter.as_ref().map(|a| a.1.clone()),
            tenant: tenant.as_ref().map(|a| a.1.clone()),
            json: rec.is_json(),
        };
        Ok(RowReader {
            rec,
            cols: [time.0, input.0, output.0],
            adapter: adapter.map(|a| a.0),
            tenant: tenant.map(|a| a.0),
            mapping,
            zeros: spec.zeros,
            check_order: !spec.sort,
            prev: None,
            skipped: 0,
        })
    }

    pub fn source(&self) -> &str {
        &self.rec.source
    }

    fn time(&mut self) -> Result<i128> {
        let name = &self.mapping.time;
        let v = self
            .rec
            .cell(&self.cols[0])
            .ok_or_else(|| self.rec.err(name, "empty"))?;
        if self.mapping.unit == TimeUnit::Auto {
            self.mapping.unit = if super::parse_timestamp(&v).is_some() {
                TimeUnit::Datetime
            } else {
                TimeUnit::Seconds
            };
        }
        let t = match self.mapping.unit {
            TimeUnit::Datetime => super::parse_timestamp(&v),
            u => parse_decimal(&v, u.ns()),
        };
        t.ok_or_else(|| {
            let want = match self.mapping.unit {
                TimeUnit::Datetime => "a timestamp YYYY-MM-DD HH:MM:SS[.fffffff]".to_string(),
                u => format!("a number of {}", u.name()),
            };
            self.rec.err(name, format!("'{v}' is not {want}"))
        })
    }

    fn tokens(&self, i: usize, name: &str) -> Result<Option<u32>> {
        let v = self
            .rec
            .cell(&self.cols[i])
            .ok_or_else(|| self.rec.err(name, "empty"))?;
        let n = match v.parse::<i64>() {
            Ok(n) => n,
            // pandas writes integer columns with missing values as floats: "12.0"
            Err(_) => match v.parse::<f64>() {
                Ok(f) if f.fract() == 0.0 && f.abs() < 1e15 => f as i64,
                _ => return Err(self.rec.err(name, format!("'{v}' is not an integer"))),
            },
        };
        match n {
            0 => match self.zeros {
                Zeros::Error => Err(self.rec.err(
                    name,
                    "token count must be positive, got 0 (zeros=skip or zeros=one in --trace-format)",
                )),
                Zeros::Skip => Ok(None),
                Zeros::One => Ok(Some(1)),
            },
            n if n > 0 && n <= u32::MAX as i64 => Ok(Some(n as u32)),
            n => Err(self
                .rec
                .err(name, format!("token count must be positive, got {n}"))),
        }
    }

    /// The next row, or `None` at the end of the file.
    pub fn next_row(&mut self) -> Result<Option<RawRow>> {
        loop {
            if !self.rec.advance()? {
                return Ok(None);
            }
            let time = self.time()?;
            if self.check_order
                && let Some((p, p_text)) = &self.prev
                && time < *p
            {
                let now = self
                    .rec
                    .cell(&self.cols[0])
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                return Err(self.rec.err(
                    &self.mapping.time,
                    format!(
                        "timestamps go backwards ('{now}' after '{p_text}'; sort=true in --trace-format sorts them)"
                    ),
                ));
            }
            if self.check_order {
                let text = self
                    .rec
                    .cell(&self.cols[0])
                    .map(|c| c.into_owned())
                    .unwrap_or_default();
                self.prev = Some((time, text));
            }
            let input = self.tokens(1, &self.mapping.input.clone())?;
            let output = self.tokens(2, &self.mapping.output.clone())?;
            let (Some(input), Some(output)) = (input, output) else {
                self.skipped += 1;
                continue;
            };
            let id = |c: &Option<Col>| {
                c.as_ref()
                    .and_then(|c| self.rec.cell(c))
                    .map(|v| v.into_owned())
            };
            return Ok(Some(RawRow {
                line: self.rec.line,
                time,
                input,
                output,
                adapter: id(&self.adapter),
                tenant: id(&self.tenant),
            }));
        }
    }
}

impl Iterator for RowReader {
    type Item = Result<RawRow>;
    fn next(&mut self) -> Option<Result<RawRow>> {
        self.next_row().transpose()
    }
}

/// `12`, `-3.25`, `1.7e9` in a unit of `unit_ns` nanoseconds, to integer ns. Plain decimals are converted
/// exactly; exponent notation goes through f64.
pub fn parse_decimal(s: &str, unit_ns: i128) -> Option<i128> {
    let s = s.trim();
    if s.contains(['e', 'E']) {
        let f: f64 = s.parse().ok()?;
        return f.is_finite().then(|| (f * unit_ns as f64).round() as i128);
    }
    let (neg, body) = match s.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|c| c.is_ascii_digit())
        || !frac.bytes().all(|c| c.is_ascii_digit())
        || int.len() > 20
    {
        return None;
    }
    let mut v: i128 = int.bytes().fold(0, |a, c| a * 10 + (c - b'0') as i128) * unit_ns;
    // Digits beyond the ns resolution are dropped (truncated), not rounded.
    let mut scale = unit_ns;
    for c in frac.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        v += (c - b'0') as i128 * scale;
    }
    Some(if neg { -v } else { v })
}

/// The time of the k-th of n requests stamped `t`, spread over `tick` or the gap to the next stamp.
pub fn spread_time(t: i128, k: usize, n: usize, next: Option<i128>, tick: u64) -> i128 {
    let span = next.map_or(tick as i128, |nt| (tick as i128).min(nt - t).max(0));
    t + k as i128 * span / n as i128
}

/// Spreads requests that share a timestamp evenly over `tick` (or the gap to the next timestamp, if
/// shorter), in file order: the k-th of n at time t arrives at t + k·span/n.
pub struct Spread<I> {
    inner: I,
    tick: i128,
    group: Vec<RawRow>,
    out: std::collections::VecDeque<RawRow>,
    done: bool,
}

impl<I: Iterator<Item = Result<RawRow>>> Spread<I> {
    pub fn new(inner: I, tick_ns: u64) -> Self {
        Spread {
            inner,
            tick: tick_ns as i128,
            group: Vec::new(),
            out: Default::default(),
            done: false,
        }
    }

    fn flush(&mut self, next_time: Option<i128>) {
        let n = self.group.len() as i128;
        if n == 0 {
            return;
        }
        let t = self.group[0].time;
        for (k, mut r) in self.group.drain(..).enumerate() {
            r.time = spread_time(t, k, n as usize, next_time, self.tick as u64);
            self.out.push_back(r);
        }
    }
}

impl<I: Iterator<Item = Result<RawRow>>> Iterator for Spread<I> {
    type Item = Result<RawRow>;
    fn next(&mut self) -> Option<Result<RawRow>> {
        if self.tick == 0 {
            return self.inner.next();
        }
        loop {
            if let Some(r) = self.out.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            match self.inner.next() {
                None => {
                    self.done = true;
                    self.flush(None);
                }
                Some(Err(e)) => return Some(Err(e)),
                Some(Ok(r)) => {
                    if self.group.first().is_some_and(|g| g.time != r.time) {
                        self.flush(Some(r.time));
                    }
                    self.group.push(r);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_split_handles_quotes_and_empty_fields() {
        let mut v = Vec::new();
        split_csv(r#"a,"b,c",,"say ""hi""","#, b',', &mut v).unwrap();
        assert_eq!(v, ["a", "b,c", "", "say \"hi\"", ""]);
        split_csv("x", b',', &mut v).unwrap();
        assert_eq!(v, ["x"]);
        assert!(split_csv(r#"a,"b"#, b',', &mut v).is_err());
        assert!(split_csv(r#""a"b,c"#, b',', &mut v).is_err());
    }

    #[test]
    fn streaming_spread_matches_the_documented_times() {
        let row = |time: i128, input: u32| RawRow {
            line: 0,
            time,
            input,
            output: 1,
            adapter: None,
            tenant: None,
        };
        let rows = [
            row(0, 1),
            row(0, 2),
            row(0, 3),
            row(10, 4),
            row(10, 5),
            row(12, 6),
        ];
        let out: Vec<(i128, u32)> = Spread::new(rows.clone().into_iter().map(Ok), 9)
            .map(|r| r.map(|r| (r.time, r.input)).unwrap())
            .collect();
        // Three at 0 over a tick of 9; two at 10 over the gap of 2 to the next stamp; the last over a tick.
        assert_eq!(out, [(0, 1), (3, 2), (6, 3), (10, 4), (11, 5), (12, 6)]);
        let same: Vec<i128> = Spread::new(rows.into_iter().map(Ok), 0)
            .map(|r| r.unwrap().time)
            .collect();
        assert_eq!(same, [0, 0, 0, 10, 10, 12]);
    }

    #[test]
    fn decimals_convert_exactly() {
        assert_eq!(parse_decimal("1.5", 1_000_000_000), Some(1_500_000_000));
        assert_eq!(parse_decimal("12", 1_000_000), Some(12_000_000));
        assert_eq!(parse_decimal("0.0000000019", 1_000_000_000), Some(1));
        assert_eq!(parse_decimal("-2.5", 1_000), Some(-2_500));
        assert_eq!(parse_decimal("1e3", 1_000_000_000), Some(1_000_000_000_000));
        for bad in ["", ".", "1.2.3", "abc", "1,5"] {
            assert_eq!(parse_decimal(bad, 1), None, "{bad}");
        }
    }
}
