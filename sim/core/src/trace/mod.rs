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
    let [a, t] = ids;
    Ok(Loaded {
        trace: Trace {
            source,
            rows,
            warnings: Vec::new(),
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

/// `YYYY-MM-DD HH:MM:SS[.f...]` (or with `T`), no time zone, to nanoseconds since 1970-01-01.
pub fn parse_timestamp(s: &str) -> Option<i128> {
    let s = s.trim().as_bytes();
    if s.len() < 19
        || s[4] != b'-'
        || s[7] != b'-'
        || !(s[10] == b' ' || s[10] == b'T')
        || s[13] != b':'
        || s[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = &s[r];
        d.iter()
            .all(u8::is_ascii_digit)
            .then(|| d.iter().fold(0i64, |a, &b| a * 10 + (b - b'0') as i64))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut frac_ns = 0i128;
    if s.len() > 19 {
        let f = &s[20..];
        if s[19] != b'.' || f.is_empty() || f.len() > 9 || !f.iter().all(u8::is_ascii_digit) {
            return None;
        }
        frac_ns = f.iter().fold(0i128, |a, &b| a * 10 + (b - b'0') as i128)
            * 10i128.pow(9 - f.len() as u32);
    }
    // Days from the civil date (Howard Hinnant's algorithm).
    let yy = if mo <= 2 { y - 1 } else { y };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days as i128 * 86_400 + (h * 3600 + mi * 60 + sec) as i128;
    Some(secs * 1_000_000_000 + frac_ns)
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
        ] {
            assert_eq!(parse_timestamp(bad), None, "{bad}");
        }
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
