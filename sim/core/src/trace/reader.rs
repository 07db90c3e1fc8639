//! Streaming trace readers: CSV (any delimiter, quoted fields) or JSON lines, plain or gzip, with a column
//! mapping from the file's names to the facts the simulator needs (arrival, input and output tokens, and
//! optionally an adapter and a tenant id). Rows are read one line at a time, so a 10-million-row file costs
//! the memory of one line plus what the consumer keeps.

use crate::error::{Error, Result};
use std::path::Path;

pub use super::format::*;
pub use super::records::*;

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
    /// How `unit` was decided: "given" (unit=), "column name", "values are dates" or "assumed" (numbers
    /// with no unit anywhere: seconds).
    pub unit_from: &'static str,
    pub input: String,
    pub output: String,
    pub adapter: Option<String>,
    pub tenant: Option<String>,
    pub json: bool,
}

impl Mapping {
    /// The time unit and how it was decided, e.g. "[s] (assumed: no unit= given, ...)".
    pub fn unit_text(&self) -> String {
        match self.unit_from {
            "assumed" => format!(
                "[{}] (assumed: no unit= given, none in the column name, not dates)",
                self.unit.name()
            ),
            from => format!("[{}] ({from})", self.unit.name()),
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "{}; time={} {}, input={}, output={}, adapter={}, tenant={}",
            if self.json { "jsonl" } else { "csv" },
            self.time,
            self.unit_text(),
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
    /// Every time value so far was a plain integer (a hint at its unit: see `check_time_unit`).
    pub all_integer: bool,
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
                "{}: missing {} '{name}' for {role} (found: {})",
                rec.source,
                if rec.is_json() { "field" } else { "column" },
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
                let (what, fmt, name) = if rec.is_json() {
                    ("field", "jsonl", "FIELD")
                } else {
                    ("column", "csv", "COLUMN")
                };
                Err(Error::msg(format!(
                    "{}: missing {what} '{}' (or any of {}) for {role} (found: {}); name it with --trace-format {fmt}[{role}={name}]",
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
        let mut unit_from = "given";
        if unit == TimeUnit::Auto {
            let lower = time.1.to_ascii_lowercase();
            unit_from = "column name";
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
            unit_from,
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
            all_integer: true,
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
            // A column of dates is read as dates (a bad one is then reported as a bad date); else seconds.
            (self.mapping.unit, self.mapping.unit_from) = if super::looks_like_date(&v) {
                (TimeUnit::Datetime, "values are dates")
            } else {
                (TimeUnit::Seconds, "assumed")
            };
        }
        let t = match self.mapping.unit {
            TimeUnit::Datetime => super::parse_timestamp(&v),
            u => {
                self.all_integer &= v.bytes().all(|c| c.is_ascii_digit() || c == b'-');
                parse_decimal(&v, u.ns())
            }
        };
        t.ok_or_else(|| {
            let want = match self.mapping.unit {
                TimeUnit::Datetime => format!("a timestamp {}", super::DATETIME_FORMS),
                u if super::looks_like_date(&v) => format!(
                    "a number of {} (it looks like a date: unit=datetime in --trace-format)",
                    u.name()
                ),
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
            n if n > 0 => Err(self.rec.err(
                name,
                format!("token count {n} is too large (at most {})", u32::MAX),
            )),
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
                // Reuse the previous row's text buffer: no allocation per row.
                let (p, text) = self.prev.get_or_insert_with(|| (0, String::new()));
                *p = time;
                text.clear();
                if let Some(c) = self.rec.cell(&self.cols[0]) {
                    text.push_str(&c);
                }
            }
            let input = self.tokens(1, &self.mapping.input)?;
            let output = self.tokens(2, &self.mapping.output)?;
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

    fn records(text: &str) -> Result<Records> {
        Records::from_reader(
            Box::new(std::io::Cursor::new(text.as_bytes().to_vec())),
            "t.csv",
            super::super::format::Format::Csv,
            None,
            None,
        )
    }

    /// The same file read one byte at a time (every chunk boundary the reader may meet).
    fn records_bytewise(text: &str) -> Result<Records> {
        Records::from_reader(
            Box::new(std::io::BufReader::with_capacity(
                1,
                std::io::Cursor::new(text.as_bytes().to_vec()),
            )),
            "t.csv",
            super::super::format::Format::Csv,
            None,
            None,
        )
    }

    /// Every record's line and cells, or the error that stops the file.
    fn read_all(r: Result<Records>) -> (Vec<(u64, Vec<String>)>, Option<String>) {
        let mut r = match r {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Some(e.to_string())),
        };
        let mut got = Vec::new();
        loop {
            match r.advance() {
                Ok(true) => got.push((r.line, cells(&r))),
                Ok(false) => return (got, None),
                Err(e) => return (got, Some(e.to_string())),
            }
        }
    }

    #[test]
    fn csv_records_are_the_same_whatever_the_chunks() {
        for text in [
            "p,q\n\n1,2\r\n  \n3,4\n",
            "p,q\n1,\"a\nb\"\n\n3,4",
            "p,q\n1,2\n\"x\"y,3\n",
            "p,q\n1,\"2\n3,4\n",
            "p,q\r\n1,2\r\n3,4,5\r\n",
        ] {
            assert_eq!(
                read_all(records(text)),
                read_all(records_bytewise(text)),
                "{text:?}"
            );
        }
        let (rows, err) = read_all(records("p,q\n\n1,2\r\n  \n3,4\n"));
        assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), [3, 5]);
        assert_eq!(err, None);
    }

    fn cells(r: &Records) -> Vec<String> {
        (0..r.names().len())
            .map(|i| r.cell(&Col::Index(i)).unwrap_or_default().into_owned())
            .collect()
    }

    #[test]
    fn csv_records_handle_quotes_empty_fields_and_fields_spanning_lines() {
        let r = records("a,\"b,c\",,\"say \"\"hi\"\"\",\n").unwrap();
        assert_eq!(r.names(), ["a", "b,c", "", "say \"hi\"", ""]);
        assert_eq!(records("x\n").unwrap().names(), ["x"]);
        // A quoted field may hold line breaks; each record keeps the physical line it starts on.
        let mut r = records("p,q\n\n1,\"two\nlines\"\r\n  \n3,\"x\"\"y\"\n").unwrap();
        assert!(r.advance().unwrap());
        assert_eq!(
            (r.line, cells(&r)),
            (3, vec!["1".into(), "two\nlines".into()])
        );
        assert!(r.advance().unwrap());
        assert_eq!((r.line, cells(&r)), (6, vec!["3".into(), "x\"y".into()]));
        assert!(!r.advance().unwrap());
        // What the crate would let pass is an error naming the line.
        let e = |t: &str| {
            let mut r = match records(t) {
                Ok(r) => r,
                Err(e) => return e.to_string(),
            };
            loop {
                match r.advance() {
                    Ok(true) => {}
                    Ok(false) => return "no error".into(),
                    Err(e) => return e.to_string(),
                }
            }
        };
        assert_eq!(e("a,\"b"), "t.csv: line 1: unterminated quoted field");
        assert_eq!(
            e("a,b\n1,2\n\"a\"b,c\n"),
            "t.csv: line 3: text after the closing quote of field 1"
        );
        assert_eq!(
            e("a,b\n1,\"2\n3,4\n5,6\n"),
            "t.csv: line 2: unterminated quoted field"
        );
        assert_eq!(
            e("a,b\n1,2,3\n"),
            "t.csv: line 2: expected 2 fields, found 3"
        );
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
