//! Records of a CSV (any delimiter, RFC 4180 quoted fields, which may span lines) or JSON-lines file, plain or
//! gzip, one record at a time. CSV is split by the `csv` crate; `Guard` watches the bytes it reads for what
//! the crate lets pass (a quote left open at the end, text after a closing quote, a record without end).

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
        rdr: Box<csv::Reader<Guard<CsvInput>>>,
        header: Vec<String>,
        fields: csv::StringRecord,
        /// Physical line of the stream's first line (blank lines before the header were read past).
        first_line: u64,
    },
    Jsonl {
        keys: Vec<String>,
        obj: Map<String, Value>,
    },
}

/// The CSV stream: the header line (read to learn the format), then the rest of the file.
type CsvInput = std::io::Chain<std::io::Cursor<Vec<u8>>, Box<dyn BufRead>>;

/// Records of a CSV or JSON-lines file, one at a time, with the physical line number of each.
pub struct Records {
    pub source: String,
    /// The file (JSON lines, and CSV until its header; then the CSV reader owns it).
    input: Option<Box<dyn BufRead>>,
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
            input: Some(input),
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
            let first_line = r.line;
            let head = std::io::Cursor::new(format!("{}\n", r.buf).into_bytes());
            let input = head.chain(r.input.take().expect("the file"));
            let rdr = csv::ReaderBuilder::new()
                .delimiter(delim)
                .has_headers(false)
                .flexible(true)
                .buffer_capacity(1 << 16)
                .from_reader(Guard::new(input, delim, first_line));
            r.kind = Kind::Csv {
                rdr: Box::new(rdr),
                header: Vec::new(),
                fields: csv::StringRecord::new(),
                first_line,
            };
            if !r.next_record()? {
                return Err(Error::msg(format!("{source}: the trace is empty")));
            }
            if let Kind::Csv { header, fields, .. } = &mut r.kind {
                *header = fields.iter().map(|h| h.trim().to_string()).collect();
            }
        }
        Ok(r)
    }

    /// Reads the next non-blank line into `buf` (without its line end); false at the end of the file.
    fn next_line(&mut self) -> Result<bool> {
        loop {
            self.buf.clear();
            // At most one byte past the bound: a file with no line break (`/dev/zero`, a binary) fails
            // here with its line number instead of filling memory.
            let input = self.input.as_mut().expect("a line-read file");
            let n = input
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

    /// Reads the next non-blank CSV record into `fields`, its first physical line into `line`; false at the
    /// end of the file.
    fn next_record(&mut self) -> Result<bool> {
        let Kind::Csv {
            rdr,
            fields,
            first_line,
            ..
        } = &mut self.kind
        else {
            unreachable!("a CSV file")
        };
        loop {
            let got = rdr.read_record(fields).map_err(|e| {
                let at = e
                    .position()
                    .map_or(self.line + 1, |p| *first_line + p.line() - 1);
                let why = match e.into_kind() {
                    csv::ErrorKind::Io(io) => io.to_string(),
                    csv::ErrorKind::Utf8 { err, .. } => {
                        format!("field {} is not UTF-8 text", err.field() + 1)
                    }
                    other => format!("{other:?}"),
                };
                let at = if why.starts_with("line ") {
                    String::new()
                } else {
                    format!("line {at}: ")
                };
                Error::msg(format!("{}: {at}{why}", self.source))
            })?;
            if !got {
                if let Some(pb) = &self.progress {
                    pb.finish_and_clear();
                }
                return Ok(false);
            }
            // The bytes of this record (and of blank lines before it, which the crate counts in): the
            // guard knows the line it starts on, and what it saw there that the crate let pass.
            let pos = fields.position().expect("a read record has a position");
            let span = pos.byte()..rdr.position().byte().max(pos.byte() + 1);
            let guard = rdr.get_mut();
            self.line = guard
                .start_line(&span)
                .unwrap_or(*first_line + pos.line() - 1);
            if let Some((line, why)) = guard.fault(span) {
                return Err(Error::msg(format!("{}: line {line}: {why}", self.source)));
            }
            // A line of blanks is a blank line (the crate skips only empty ones).
            if !(fields.len() == 1 && fields[0].trim().is_empty()) {
                return Ok(true);
            }
        }
    }

    /// Advances to the next record; false at the end.
    pub fn advance(&mut self) -> Result<bool> {
        if self.pending {
            self.pending = false;
            return Ok(true);
        }
        if let Kind::Csv { .. } = self.kind {
            if !self.next_record()? {
                return Ok(false);
            }
            let Kind::Csv { header, fields, .. } = &self.kind else {
                unreachable!()
            };
            if fields.len() != header.len() {
                return Err(Error::msg(format!(
                    "{}: line {}: expected {} fields, found {}",
                    self.source,
                    self.line,
                    header.len(),
                    fields.len()
                )));
            }
            return Ok(true);
        }
        if !self.next_line()? {
            return Ok(false);
        }
        let obj = self.parse_json()?;
        if let Kind::Jsonl { obj: o, .. } = &mut self.kind {
            *o = obj;
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

/// Reads a CSV stream for the `csv` crate and follows its quoting (RFC 4180, as the crate reads it: a quote
/// opens a field only at its start, `""` inside one is a quote) to catch what the crate accepts silently: a
/// quoted field still open at the end of the file (the crate ends it there), text after a closing quote (the
/// crate appends it) and a record longer than `MAX_LINE_BYTES` (the crate would fill memory: `/dev/zero`).
pub struct Guard<R> {
    inner: R,
    delim: u8,
    state: Quoting,
    /// Bytes read so far, and the physical line reached.
    byte: u64,
    line: u64,
    /// Where the record being read began, and where its open quoted field opened.
    record: (u64, u64),
    opened: (u64, u64),
    /// The field of the record being read (0-based).
    field: u32,
    /// The first fault: its byte, line and what it is.
    fault: Option<(u64, u64, Fault)>,
    /// Byte and line where each record read ahead of the crate starts (blank lines are none).
    starts: std::collections::VecDeque<(u64, u64)>,
    between: bool,
    /// Bytes that never end a field or a record, nor open or close a quote.
    plain: [bool; 256],
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Fault {
    Unterminated,
    /// Text after the closing quote of this field (1-based).
    AfterQuote(u32),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::Unterminated => write!(f, "unterminated quoted field"),
            Fault::AfterQuote(k) => write!(f, "text after the closing quote of field {k}"),
        }
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Quoting {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the field's end, or the first half of `""`.
    Quote,
}

impl<R: Read> Guard<R> {
    /// `line`: the physical line the stream starts on.
    pub fn new(inner: R, delim: u8, line: u64) -> Guard<R> {
        Guard {
            inner,
            delim,
            state: Quoting::FieldStart,
            byte: 0,
            line,
            record: (0, line),
            opened: (0, line),
            field: 0,
            fault: None,
            starts: std::collections::VecDeque::new(),
            between: true,
            plain: std::array::from_fn(|c| ![delim, b'"', b'\n', b'\r'].contains(&(c as u8))),
        }
    }

    /// The line the record read in bytes `span` starts on (forgetting the records before it).
    pub fn start_line(&mut self, span: &std::ops::Range<u64>) -> Option<u64> {
        while self.starts.front().is_some_and(|s| s.0 < span.start) {
            self.starts.pop_front();
        }
        self.starts
            .front()
            .filter(|s| span.contains(&s.0))
            .map(|s| s.1)
    }

    /// The fault within bytes `span` of the stream, if any: its line and what it is.
    pub fn fault(&self, span: std::ops::Range<u64>) -> Option<(u64, Fault)> {
        self.fault
            .filter(|f| span.contains(&f.0))
            .map(|(_, line, why)| (line, why))
    }

    /// Follows a chunk byte by byte (skipping the insides of fields).
    fn scan(&mut self, buf: &[u8]) {
        let n = buf.len();
        let mut i = 0;
        while i < n {
            // Inside a field, only a delimiter, quote or line end can change anything: skip to the next.
            if matches!(self.state, Quoting::Unquoted | Quoting::Quoted) && !self.between {
                let plain = &self.plain;
                match buf[i..n].iter().position(|&c| !plain[c as usize]) {
                    Some(p) => {
                        self.byte += p as u64;
                        i += p;
                    }
                    None => {
                        self.byte += (n - i) as u64;
                        break;
                    }
                }
            }
            self.see(buf[i]);
            i += 1;
        }
    }

    /// A chunk without a quote, read outside quotes (most traces, all of their chunks): only its line ends
    /// matter, and where records start (`scan` would follow every delimiter too).
    fn unquoted(&mut self, buf: &[u8]) {
        let Some(&last) = buf.last() else {
            return;
        };
        let end = |c: u8| c == b'\n' || c == b'\r';
        let mut from = 0;
        loop {
            if self.between && from < buf.len() && !end(buf[from]) {
                self.starts.push_back((self.byte + from as u64, self.line));
                self.between = false;
            }
            let Some(p) = buf[from..].iter().position(|&c| end(c)) else {
                break;
            };
            let at = from + p;
            self.line += (buf[at] == b'\n') as u64;
            self.record = (self.byte + at as u64 + 1, self.line);
            self.between = true;
            self.field = 0;
            from = at + 1;
        }
        self.byte += buf.len() as u64;
        self.state = if end(last) || last == self.delim {
            Quoting::FieldStart
        } else {
            Quoting::Unquoted
        };
    }

    fn see(&mut self, c: u8) {
        use Quoting::*;
        let end = c == b'\n' || c == b'\r';
        if self.between && !end {
            self.starts.push_back((self.byte, self.line));
            self.between = false;
        }
        self.state = match (self.state, c) {
            (Quoted, b'"') => Quote,
            (Quoted, _) => Quoted,
            (FieldStart, b'"') => {
                self.opened = (self.byte, self.line);
                Quoted
            }
            (Quote, b'"') => Quoted,
            (_, d) if d == self.delim => {
                self.field += 1;
                FieldStart
            }
            (_, _) if end => {
                self.record = (self.byte + 1, self.line + (c == b'\n') as u64);
                self.between = true;
                self.field = 0;
                FieldStart
            }
            (Quote, _) => {
                if self.fault.is_none() {
                    self.fault = Some((self.byte, self.line, Fault::AfterQuote(self.field + 1)));
                }
                Unquoted
            }
            (_, _) => Unquoted,
        };
        self.byte += 1;
        self.line += (c == b'\n') as u64;
    }
}

impl<R: Read> Read for Guard<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if matches!(self.state, Quoting::FieldStart | Quoting::Unquoted)
            && !buf[..n].contains(&b'"')
        {
            self.unquoted(&buf[..n]);
        } else {
            self.scan(&buf[..n]);
        }
        if n == 0 && self.state == Quoting::Quoted && self.fault.is_none() {
            self.fault = Some((self.opened.0, self.opened.1, Fault::Unterminated));
        }
        if self.byte - self.record.0 > MAX_LINE_BYTES {
            let why = if self.state == Quoting::Quoted {
                format!(
                    "line {}: a quoted field runs on past {} MiB (a closing quote missing?)",
                    self.opened.1,
                    MAX_LINE_BYTES >> 20
                )
            } else {
                format!(
                    "line {}: longer than {} MiB without a line break (one line is one request; is this a \
                     trace?)",
                    self.record.1,
                    MAX_LINE_BYTES >> 20
                )
            };
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        }
        Ok(n)
    }
}
