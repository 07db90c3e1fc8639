//! Request traces: read (any CSV or JSON-lines file with a column mapping, see `reader`), validated row by
//! row, and transformed (first N, length scale, re-timing by an arrival process, see `arrivals`).

pub mod arrivals;
pub mod format;
pub mod reader;
pub mod records;

use std::collections::HashMap;
use std::io::{BufRead, Cursor};
use std::path::Path;

use crate::error::{Error, Result};
use crate::time::Nanos;
use arrivals::Arrivals;

pub use reader::{Format, Mapping, ReadSpec, TimeUnit};

/// The shipped default: the Azure 2023 conversation trace (CC-BY-4.0, see traces/README.md).
pub const DEFAULT_TRACE: &[u8] =
    include_bytes!("../../../../traces/AzureLLMInferenceTrace_conv.csv");
pub const DEFAULT_TRACE_NAME: &str = "azure-2023-conv (embedded)";

/// `TraceRow::adapter` / `tenant` of a row whose trace has no such id.
pub const NO_ID: u32 = u32::MAX;

/// One request as the trace gives it; arrival is relative to the trace's first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRow {
    pub arrival: Nanos,
    pub input: u32,
    pub output: u32,
    /// The trace's adapter id, numbered 0, 1, ... in order of first appearance; `NO_ID` if none.
    pub adapter: u32,
    /// The trace's tenant id, numbered likewise; `NO_ID` if none.
    pub tenant: u32,
}

impl TraceRow {
    /// A row without adapter or tenant id.
    pub fn new(arrival: Nanos, input: u32, output: u32) -> TraceRow {
        TraceRow {
            arrival,
            input,
            output,
            adapter: NO_ID,
            tenant: NO_ID,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub source: String,
    pub rows: Vec<TraceRow>,
    /// What reading it made doubtful (e.g. the time unit), one line each; shown with a run's results.
    pub warnings: Vec<String>,
    /// Its timestamps are certainly in another unit than they were read in (see `check_time_unit`): an
    /// error when a run keeps them, nothing when it re-times the arrivals.
    pub unit_error: Option<String>,
}

/// A trace with what was learnt reading it.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub trace: Trace,
    pub mapping: Mapping,
    /// Id texts by number (`TraceRow::adapter` indexes `adapter_names`).
    pub adapter_names: Vec<String>,
    pub tenant_names: Vec<String>,
    /// Rows dropped by `zeros=skip`.
    pub skipped: u64,
}

/// How a trace becomes the arrivals the simulator replays.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceOptions {
    /// Keep only the first N requests.
    pub max_requests: Option<usize>,
    /// Multiply input and output lengths (rounded, at least 1 token).
    pub length_scale: f64,
    /// Re-time arrivals at this mean rate (requests/s) by `arrivals`; `None` keeps the trace's timestamps.
    pub poisson_rate: Option<f64>,
    /// The process that re-times arrivals when a rate is given (Poisson by default).
    pub arrivals: Arrivals,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            max_requests: None,
            length_scale: 1.0,
            poisson_rate: None,
            arrivals: Arrivals::Poisson,
        }
    }
}

impl Trace {
    pub fn default_trace() -> Result<Trace> {
        read_azure_bytes(DEFAULT_TRACE, DEFAULT_TRACE_NAME)
    }

    /// Reads a trace file, detecting its format and columns (`ReadSpec::default()`).
    pub fn load(path: Option<&Path>) -> Result<Trace> {
        Self::load_with(path, &ReadSpec::default())
    }

    pub fn load_with(path: Option<&Path>, spec: &ReadSpec) -> Result<Trace> {
        match path {
            None => Self::default_trace(),
            Some(p) => Ok(load_detailed(p, spec)?.trace),
        }
    }

    /// Applies the options; `seed` drives the re-timing.
    pub fn transform(mut self, opts: &TraceOptions, seed: u64) -> Result<Trace> {
        match opts.poisson_rate {
            None => {
                if let Some(e) = &self.unit_error {
                    return Err(Error::msg(e.clone()));
                }
            }
            // Re-timed: the file's timestamps, and any doubt about their unit, no longer matter.
            Some(_) => {
                self.warnings.clear();
                self.unit_error = None;
            }
        }
        if let Some(n) = opts.max_requests {
            self.rows.truncate(n);
        }
        let f = opts.length_scale;
        if !(f > 0.0 && f.is_finite()) {
            return Err(Error::msg(format!(
                "--length-scale must be a positive number, got {f}"
            )));
        }
        if f != 1.0 {
            let scale = |x: u32| ((x as f64 * f).round() as u32).max(1);
            for r in &mut self.rows {
                r.input = scale(r.input);
                r.output = scale(r.output);
            }
        }
        if let Some(rate) = opts.poisson_rate {
            opts.arrivals.retime(&mut self.rows, rate, seed)?;
        }
        Ok(self)
    }

    pub fn span(&self) -> Nanos {
        self.rows.last().map_or(0, |r| r.arrival)
    }
}

/// Reads a whole trace file into rows (24 bytes each; the text is streamed, never held).
pub fn load_detailed(path: &Path, spec: &ReadSpec) -> Result<Loaded> {
    collect(reader::RowReader::open(path, spec)?, spec)
}

fn collect(rr: reader::RowReader, spec: &ReadSpec) -> Result<Loaded> {
    let source = rr.source().to_string();
    let mut ids: [(HashMap<String, u32>, Vec<String>); 2] = Default::default();
    let mut intern = |k: usize, id: Option<String>| -> u32 {
        let Some(id) = id else { return NO_ID };
        let (map, names) = &mut ids[k];
        if let Some(&n) = map.get(&id) {
            return n;
        }
        let n = names.len() as u32;
        names.push(id.clone());
        map.insert(id, n);
        n
    };
    let mut rows: Vec<TraceRow> = Vec::new();
    let mut first_line = 0;
    // Times are kept as offsets from the first row's (24 bytes a row in all); with `sort` they may be
    // negative until sorted, so they wait in `offsets`.
    let mut offsets: Vec<i64> = Vec::new();
    let mut t0: Option<i128> = None;
    let limit = spec.limit.filter(|_| !spec.sort).unwrap_or(usize::MAX);
    let mut rr = rr;
    while rows.len() < limit {
        let Some(r) = rr.next_row()? else { break };
        if rows.len() >= u32::MAX as usize {
            return Err(Error::msg(format!("{source}: more than 2^32 requests")));
        }
        if t0.is_none() {
            first_line = r.line;
        }
        let first = *t0.get_or_insert(r.time);
        let off = i64::try_from(r.time - first).map_err(|_| {
            Error::msg(format!(
                "{source}: line {}: more than 292 years after the first request",
                r.line
            ))
        })?;
        if spec.sort {
            offsets.push(off);
        }
        rows.push(TraceRow {
            arrival: off.max(0) as Nanos,
            input: r.input,
            output: r.output,
            adapter: intern(0, r.adapter),
            tenant: intern(1, r.tenant),
        });
    }
    if rows.is_empty() {
        return Err(Error::msg(format!("{source}: the trace has no requests")));
    }
    if spec.sort {
        let mut pairs: Vec<(i64, TraceRow)> = offsets.into_iter().zip(rows).collect();
        pairs.sort_by_key(|p| p.0); // stable: equal timestamps keep file order
        let base = pairs[0].0;
        rows = pairs
            .into_iter()
            .map(|(o, mut r)| {
                r.arrival = (o - base) as Nanos;
                r
            })
            .collect();
        if let Some(n) = spec.limit {
            rows.truncate(n);
        }
    }
    if spec.spread_ns > 0 {
        let mut i = 0;
        while i < rows.len() {
            let t = rows[i].arrival;
            let n = rows[i..].iter().take_while(|r| r.arrival == t).count();
            let next = rows.get(i + n).map(|r| r.arrival as i128);
            for k in 0..n {
                rows[i + k].arrival =
                    reader::spread_time(t as i128, k, n, next, spec.spread_ns) as Nanos;
            }
            i += n;
        }
    }
    rows.shrink_to_fit();
    let span = rows.last().map_or(0, |r| r.arrival);
    let check = check_time_unit(
        &rr.mapping,
        rows.len() as u64,
        t0.unwrap_or(0),
        span as i128,
        rr.all_integer,
    );
    let at = |why: String| format!("{source}: {why}");
    let at_first = |why: String| {
        let what = if rr.mapping.json { "field" } else { "column" };
        format!(
            "{source}: line {first_line}, {what} {}: {why}",
            rr.mapping.time
        )
    };
    let [a, t] = ids;
    Ok(Loaded {
        trace: Trace {
            rows,
            warnings: check.warning.map(at).into_iter().collect(),
            unit_error: check.error.map(at_first),
            source,
        },
        mapping: rr.mapping.clone(),
        adapter_names: a.1,
        tenant_names: t.1,
        skipped: rr.skipped,
    })
}

/// Reads an Azure-2023-format CSV from memory. Errors name the source, the line (1 = header) and the column.
pub fn read_azure_bytes(bytes: &[u8], source: &str) -> Result<Trace> {
    let spec = ReadSpec::parse("azure")?;
    let input: Box<dyn BufRead> = Box::new(Cursor::new(bytes.to_vec()));
    let rec = reader::Records::from_reader(input, source, Format::Csv, None, None)?;
    Ok(collect(reader::RowReader::new(rec, &spec)?, &spec)?.trace)
}

/// What a trace's time values say about the unit they were read in.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct UnitCheck {
    /// The unit is certainly wrong (the first time is a date after 2100 in it, but a recent one in another).
    pub error: Option<String>,
    /// The unit is doubtful: the rate is orders of magnitude off for LLM serving.
    pub warning: Option<String>,
}

/// Traces shorter than this are too small to judge a rate by.
const UNIT_CHECK_ROWS: u64 = 100;

/// Checks numeric timestamps against what LLM traffic looks like. An absolute time read as a date past 2100
/// that is a date between 2000 and 2100 in a finer unit (1.7e12 read as seconds: milliseconds since 1970) is
/// an error with the fix. A mean rate under 0.01 req/s (fewer than 36 requests an hour: milliseconds read as
/// seconds turn 3.4 req/s into 0.0034) or over 1000 req/s (more than one server sees) is a warning naming
/// the unit to try. `first_ns` is the first row's time as read, `span_ns` first to last arrival.
pub fn check_time_unit(
    m: &Mapping,
    rows: u64,
    first_ns: i128,
    span_ns: i128,
    all_integer: bool,
) -> UnitCheck {
    const UNITS: [TimeUnit; 4] = [
        TimeUnit::Seconds,
        TimeUnit::Millis,
        TimeUnit::Micros,
        TimeUnit::Nanos,
    ];
    let mut out = UnitCheck::default();
    let Some(at) = UNITS.iter().position(|u| *u == m.unit) else {
        return out; // dates
    };
    let read = format!("read as {}", m.unit_text());
    let year = |s: f64| 1970.0 + s / 31_556_952.0;
    let (y2000, y2100) = (946_684_800.0, 4_102_444_800.0);
    let first_s = first_ns as f64 / 1e9;
    if first_s > y2100 {
        for (j, finer) in UNITS.iter().enumerate().skip(at + 1) {
            let s = first_s / 1000f64.powi((j - at) as i32);
            if (y2000..y2100).contains(&s) {
                let date = chrono::DateTime::from_timestamp(s as i64, 0)
                    .map_or(String::new(), |d| d.format("%Y-%m-%d").to_string());
                out.error = Some(format!(
                    "{} {read} is the year {:.0}; in {} since 1970 it is {date}: add unit={} to --trace-format",
                    first_ns / m.unit.ns(),
                    year(first_s),
                    finer.name(),
                    finer.name()
                ));
                return out;
            }
        }
    }
    let span_s = span_ns as f64 / 1e9;
    if rows < UNIT_CHECK_ROWS || span_s <= 0.0 {
        return out;
    }
    let rate = (rows - 1) as f64 / span_s;
    let ints = if all_integer {
        ", all of them integers"
    } else {
        ""
    };
    let hours = span_s / 3600.0;
    if rate < 0.01
        && let Some(finer) = UNITS.get(at + 1)
    {
        out.warning = Some(format!(
            "{rows} requests over {hours:.1} hours ({rate:.4} req/s) with times {read}{ints}: orders of magnitude \
             below LLM serving traffic; if the times are in {}, add unit={} to --trace-format",
            finer.name(),
            finer.name()
        ));
    } else if rate > 1000.0
        && let Some(coarser) = at.checked_sub(1).map(|i| UNITS[i])
    {
        out.warning = Some(format!(
            "{rows} requests over {span_s:.3} s ({rate:.0} req/s) with times {read}: more than one LLM server \
             sees; if the times are in {}, add unit={} to --trace-format",
            coarser.name(),
            coarser.name()
        ));
    }
    out
}

/// The date-time forms `parse_timestamp` reads, for messages.
pub const DATETIME_FORMS: &str =
    "YYYY-MM-DD HH:MM:SS[.fffffffff] (T allowed between date and time; optional zone Z or +HH:MM)";

/// `YYYY-MM-DD HH:MM:SS[.f]` (or `T` between), optionally zoned (`Z`, `+HH:MM`, `+HHMM`), to nanoseconds since
/// 1970-01-01 UTC; a time without a zone is taken as UTC. chrono checks the calendar (2023-02-31 is no date).
pub fn parse_timestamp(s: &str) -> Option<i128> {
    use chrono::{DateTime, NaiveDateTime};
    let s = s.trim();
    let ns = |secs: i64, sub: u32| secs as i128 * 1_000_000_000 + sub as i128;
    if !looks_like_date(s) {
        return None;
    }
    // One chrono call per value (a trace has millions): the separator and a zone suffix pick the format.
    let t = s.as_bytes().get(10) == Some(&b'T');
    let zoned = s.len() > 19 && (s.ends_with(['Z', 'z']) || s[19..].contains(['+', '-']));
    let utc = if zoned {
        DateTime::parse_from_rfc3339(s)
            .or_else(|_| {
                let f = if t {
                    "%Y-%m-%dT%H:%M:%S%.f%z"
                } else {
                    "%Y-%m-%d %H:%M:%S%.f%z"
                };
                DateTime::parse_from_str(s, f)
            })
            .ok()?
            .to_utc()
    } else {
        let f = if t {
            "%Y-%m-%dT%H:%M:%S%.f"
        } else {
            "%Y-%m-%d %H:%M:%S%.f"
        };
        NaiveDateTime::parse_from_str(s, f).ok()?.and_utc()
    };
    Some(ns(utc.timestamp(), utc.timestamp_subsec_nanos()))
}

/// Starts like a date (`YYYY-MM-DD`): a time column holding these is read as date-times, and a value that
/// then fails is reported as a bad date, not as a bad number.
pub fn looks_like_date(s: &str) -> bool {
    let b = s.trim().as_bytes();
    b.len() >= 10
        && b[4] == b'-'
        && b[7] == b'-'
        && [0, 1, 2, 3, 5, 6, 8, 9]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_to_exact_nanoseconds() {
        assert_eq!(parse_timestamp("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp("1970-01-02 00:00:01.5"),
            Some(86_401_500_000_000)
        );
        let a = parse_timestamp("2023-11-16 18:15:46.6805900").unwrap();
        let b = parse_timestamp("2023-11-16 18:15:47.0000001").unwrap();
        assert_eq!(b - a, 319_410_100);
        assert_eq!(
            parse_timestamp("2023-11-16 18:15:46"),
            Some(1_700_158_546 * 1_000_000_000)
        );
        for bad in [
            "2023-13-01 00:00:00",
            "2023-11-16",
            "2023-11-16 18:15:46.",
            "x023-11-16 18:15:46",
            // Not a day of February: the hand-written parser read it as 2023-03-03.
            "2023-02-31 00:00:00",
            "2023-04-31 12:00:00",
            "2023-11-16 24:00:00",
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
        assert!(
            parse_timestamp("2024-02-29 00:00:00").is_some(),
            "a leap day"
        );
        // Zoned times are converted to UTC.
        let utc = parse_timestamp("2023-11-16 18:15:46").unwrap();
        for zoned in [
            "2023-11-16T18:15:46Z",
            "2023-11-16 18:15:46Z",
            "2023-11-16T19:15:46+01:00",
            "2023-11-16 19:15:46+0100",
            "2023-11-16T13:15:46-05:00",
        ] {
            assert_eq!(parse_timestamp(zoned), Some(utc), "{zoned}");
        }
        assert_eq!(
            parse_timestamp("2023-11-16T18:15:46.25Z"),
            Some(utc + 250_000_000)
        );
    }

    #[test]
    fn default_trace_matches_its_published_statistics() {
        let t = Trace::default_trace().unwrap();
        assert_eq!(t.rows.len(), 19_366);
        assert_eq!(t.rows[0].arrival, 0);
        let span = t.span() as f64 / 1e9;
        assert!((span - 3501.7).abs() < 0.1, "{span}");
        let mean_in = t.rows.iter().map(|r| r.input as f64).sum::<f64>() / t.rows.len() as f64;
        assert!((mean_in - 1154.7).abs() < 0.1, "{mean_in}");
    }

    #[test]
    fn transforms_truncate_scale_and_retime() {
        let t = Trace::default_trace().unwrap();
        let opts = TraceOptions {
            max_requests: Some(1000),
            length_scale: 0.5,
            poisson_rate: Some(10.0),
            ..Default::default()
        };
        let a = t.clone().transform(&opts, 7).unwrap();
        assert_eq!(a.rows.len(), 1000);
        assert_eq!(
            a.rows[0].input,
            ((t.rows[0].input as f64) * 0.5).round() as u32
        );
        let rate = 999.0 / (a.span() as f64 / 1e9);
        assert!((rate - 10.0).abs() < 1.0, "{rate}");
        assert_eq!(
            a.rows,
            t.clone().transform(&opts, 7).unwrap().rows,
            "same seed, same arrivals"
        );
        assert_ne!(a.rows, t.transform(&opts, 8).unwrap().rows);
    }
}
