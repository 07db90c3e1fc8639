//! How to read a trace file (`--trace-format`): the format, the column mapping, the time unit and the
//! row policies, parsed from `auto | azure | csv[k=v,...] | jsonl[k=v,...]`.

use crate::error::{Error, Result};
use crate::spec::Spec;

/// Column-name guesses, tried in order, case-insensitively. The first of each list is the Azure 2023 name, so a
/// file missing it is reported in the Azure vocabulary the default trace uses.
pub(crate) const TIME_NAMES: &[&str] = &[
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
pub(crate) const INPUT_NAMES: &[&str] = &[
    "ContextTokens",
    "input_tokens",
    "input_len",
    "input_length",
    "prompt_tokens",
    "prompt_len",
    "request_tokens",
    "input",
];
pub(crate) const OUTPUT_NAMES: &[&str] = &[
    "GeneratedTokens",
    "output_tokens",
    "output_len",
    "output_length",
    "completion_tokens",
    "response_tokens",
    "generated_tokens",
    "output",
];
pub(crate) const ADAPTER_NAMES: &[&str] = &["adapter", "adapter_id", "lora", "lora_id", "model_id"];
pub(crate) const TENANT_NAMES: &[&str] =
    &["tenant", "tenant_id", "client_id", "user_id", "groupId"];

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
    pub(crate) fn ns(self) -> i128 {
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
