//! Request traces: the Azure LLM inference trace 2023 format (`TIMESTAMP,ContextTokens,GeneratedTokens`),
//! read with polars, validated row by row, and transformed (first N, length scale, Poisson re-timing).

use std::io::Cursor;
use std::path::Path;

use polars::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Exp};

use crate::cost::Nanos;
use crate::error::{Error, Result};

/// The shipped default: the Azure 2023 conversation trace (CC-BY-4.0, see traces/README.md).
pub const DEFAULT_TRACE: &[u8] = include_bytes!("../../traces/AzureLLMInferenceTrace_conv.csv");
pub const DEFAULT_TRACE_NAME: &str = "azure-2023-conv (embedded)";

const COLUMNS: [&str; 3] = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"];

/// One request as the trace gives it; arrival is relative to the trace's first request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceRow {
    pub arrival: Nanos,
    pub input: u32,
    pub output: u32,
}

#[derive(Clone, Debug)]
pub struct Trace {
    pub source: String,
    pub rows: Vec<TraceRow>,
}

/// How a trace becomes the arrivals the simulator replays.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceOptions {
    /// Keep only the first N requests.
    pub max_requests: Option<usize>,
    /// Multiply input and output lengths (rounded, at least 1 token).
    pub length_scale: f64,
    /// Replace the trace's timestamps by Poisson arrivals at this rate (requests/s).
    pub poisson_rate: Option<f64>,
}

impl Default for TraceOptions {
    fn default() -> Self {
        TraceOptions {
            max_requests: None,
            length_scale: 1.0,
            poisson_rate: None,
        }
    }
}

impl Trace {
    pub fn default_trace() -> Result<Trace> {
        read_azure_bytes(DEFAULT_TRACE, DEFAULT_TRACE_NAME)
    }

    pub fn load(path: Option<&Path>) -> Result<Trace> {
        match path {
            None => Self::default_trace(),
            Some(p) => {
                let bytes = std::fs::read(p)
                    .map_err(|e| Error::msg(format!("{}: cannot read trace: {e}", p.display())))?;
                read_azure_bytes(&bytes, &p.display().to_string())
            }
        }
    }

    /// Applies the options; `seed` drives the Poisson re-timing.
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
            if !(rate > 0.0 && rate.is_finite()) {
                return Err(Error::msg(format!(
                    "--rate must be a positive number, got {rate}"
                )));
            }
            let mut rng = StdRng::seed_from_u64(seed ^ 0xA11C_E5ED_0000_0001);
            let gap = Exp::new(rate).expect("positive rate");
            // Accumulate in f64 seconds, round each arrival once: no drift from per-gap rounding.
            let mut t = 0.0f64;
            for (i, r) in self.rows.iter_mut().enumerate() {
                if i > 0 {
                    t += gap.sample(&mut rng);
                }
                r.arrival = (t * 1e9).round() as Nanos;
            }
        }
        Ok(self)
    }

    pub fn span(&self) -> Nanos {
        self.rows.last().map_or(0, |r| r.arrival)
    }
}

/// Reads an Azure-2023-format CSV. Errors name the source, the line (1 = header) and the column.
pub fn read_azure_bytes(bytes: &[u8], source: &str) -> Result<Trace> {
    let df = CsvReadOptions::default()
        .with_has_header(true)
        .with_infer_schema_length(Some(0)) // every column as text: we parse and report errors ourselves
        .into_reader_with_file_handle(Cursor::new(bytes))
        .finish()
        .map_err(|e| polars_error(bytes, source, e))?;
    let names: Vec<String> = df
        .get_column_names()
        .iter()
        .map(|s| s.to_string())
        .collect();
    let col = |name: &str| -> Result<&StringChunked> {
        let c = df.column(name).map_err(|_| {
            Error::msg(format!(
                "{source}: missing column '{name}' (found: {})",
                names.join(", ")
            ))
        })?;
        c.str()
            .map_err(|e| Error::msg(format!("{source}: column '{name}': {e}")))
    };
    let (ts, inp, out) = (col(COLUMNS[0])?, col(COLUMNS[1])?, col(COLUMNS[2])?);
    let mut rows = Vec::with_capacity(df.height());
    let mut first: Option<i128> = None;
    let mut prev: Option<(i128, &str)> = None;
    for i in 0..df.height() {
        let at = |column: &str, why: String| {
            Error::msg(format!(
                "{source}: line {}, column {column}: {why}",
                data_line(bytes, i)
            ))
        };
        let t_text = ts.get(i).ok_or_else(|| at(COLUMNS[0], "empty".into()))?;
        let t = parse_timestamp(t_text).ok_or_else(|| {
            at(
                COLUMNS[0],
                format!("'{t_text}' is not a timestamp YYYY-MM-DD HH:MM:SS[.fffffff]"),
            )
        })?;
        if let Some((p, p_text)) = prev
            && t < p
        {
            return Err(at(
                COLUMNS[0],
                format!("timestamps go backwards ('{t_text}' after '{p_text}')"),
            ));
        }
        prev = Some((t, t_text));
        let t0 = *first.get_or_insert(t);
        let tokens = |c: &StringChunked, name: &str| -> Result<u32> {
            let v = c.get(i).ok_or_else(|| at(name, "empty".into()))?;
            match v.trim().parse::<i64>() {
                Ok(n) if n > 0 && n <= u32::MAX as i64 => Ok(n as u32),
                Ok(n) => Err(at(name, format!("token count must be positive, got {n}"))),
                Err(_) => Err(at(name, format!("'{v}' is not an integer"))),
            }
        };
        rows.push(TraceRow {
            arrival: (t - t0) as Nanos,
            input: tokens(inp, COLUMNS[1])?,
            output: tokens(out, COLUMNS[2])?,
        });
    }
    if rows.is_empty() {
        return Err(Error::msg(format!("{source}: the trace has no requests")));
    }
    Ok(Trace {
        source: source.to_string(),
        rows,
    })
}

/// Polars reports ragged rows without a line number; find the first line whose field count differs.
fn polars_error(bytes: &[u8], source: &str, e: PolarsError) -> Error {
    let text = String::from_utf8_lossy(bytes);
    let mut lines = text
        .split('\n')
        .enumerate()
        .filter(|(_, l)| !l.trim_end_matches('\r').is_empty());
    if let Some((_, header)) = lines.next() {
        let want = header.split(',').count();
        for (i, l) in lines {
            let got = l.trim_end_matches('\r').split(',').count();
            if got != want {
                return Error::msg(format!(
                    "{source}: line {}: expected {want} fields, found {got}",
                    i + 1
                ));
            }
        }
    }
    Error::msg(format!("{source}: cannot parse as CSV: {e}"))
}

/// The 1-based line of data row `row` (polars skips blank lines, so count only non-blank ones).
fn data_line(bytes: &[u8], row: usize) -> usize {
    let mut seen = 0usize;
    for (i, l) in bytes.split(|&b| b == b'\n').enumerate() {
        if l.iter().all(|b| b.is_ascii_whitespace()) {
            continue;
        }
        if seen == row + 1 {
            return i + 1;
        }
        seen += 1;
    }
    row + 2
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
