//! `sim run`'s options for seeing inside a run (timeline, Chrome trace, CDF percentiles) and its run
//! config file (`--config`, `--print-config`). See docs/timeline.md.

use std::path::{Path, PathBuf};

use clap::{ArgMatches, Args};
use serde_json::{Map, Value};
use sim_core::record::{RecordOptions, Recorder};

use crate::runner::{Report, RunArgs};
use sim_core::error::{Error, Result};

#[derive(Args, Clone, Debug, Default)]
pub struct InsideArgs {
    /// Write DIR/timeline.csv (and timeline.parquet in a build with --features parquet): the engine's
    /// state per iteration or per
    /// --timeline-interval-ms (docs/timeline.md)
    #[arg(long, value_name = "DIR")]
    pub timeline: Option<PathBuf>,
    /// Timeline sample interval, ms of simulated time: a row at the first iteration at or after each
    /// multiple; 0 = every iteration
    #[arg(long, default_value_t = 0.0, value_name = "MS", value_parser = crate::options::real(crate::options::Range::NonNegative(1e9)), allow_negative_numbers = true)]
    pub timeline_interval_ms: f64,
    /// Write a Chrome / Perfetto trace (trace-event JSON; open in ui.perfetto.dev or chrome://tracing)
    #[arg(long, value_name = "FILE")]
    pub chrome_trace: Option<PathBuf>,
    /// Trace only START_S..END_S of simulated time (requests: those arriving in it)
    #[arg(long, value_name = "START_S,END_S", value_parser = window)]
    pub trace_window: Option<(f64, f64)>,
    /// Extra quantiles in --out's cdf.csv, as percentiles (e.g. 50,90,95,99,99.9)
    #[arg(long, value_delimiter = ',', value_name = "P,...", value_parser = crate::options::real(crate::options::Range::Positive(100.0)), allow_negative_numbers = true)]
    pub percentiles: Vec<f64>,
    /// Read the run's options from a JSON file (keys: `sim run`'s flag names, as --print-config writes
    /// them; a sweep's `base` takes the same); flags given too override it
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the resolved options as JSON (a --config file) and exit
    #[arg(long)]
    pub print_config: bool,
}

fn window(s: &str) -> std::result::Result<(f64, f64), String> {
    let bad = || format!("expected START_S,END_S with 0 <= START_S < END_S, got '{s}'");
    let (a, b) = s.split_once(',').ok_or_else(bad)?;
    let (a, b): (f64, f64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a.is_finite() && b.is_finite() && 0.0 <= a && a < b {
        Ok((a, b))
    } else {
        Err(bad())
    }
}

impl InsideArgs {
    pub fn recording(&self) -> bool {
        self.timeline.is_some() || self.chrome_trace.is_some()
    }

    /// Fractions for `cdf.csv` from `--percentiles`.
    pub fn quantiles(&self) -> Vec<f64> {
        self.percentiles.iter().map(|p| p / 100.0).collect()
    }

    pub fn record_options(&self, slot_bytes: u64) -> RecordOptions {
        let ns = |s: f64| (s * 1e9).round() as u64;
        RecordOptions {
            timeline: self.timeline.is_some(),
            interval_ns: (self.timeline_interval_ms * 1e6).round() as u64,
            trace: self.chrome_trace.is_some(),
            window: self
                .trace_window
                .map_or((0, u64::MAX), |(a, b)| (ns(a), ns(b))),
            ..RecordOptions::new(slot_bytes)
        }
    }

    /// Checks the output paths before the run.
    pub fn check(&self) -> Result<()> {
        if let Some(d) = &self.timeline {
            sim_core::report::check_out_dir(d, "--timeline")?;
        }
        if let Some(f) = &self.chrome_trace {
            let dir = f.parent().filter(|p| !p.as_os_str().is_empty());
            sim_core::report::check_out_dir(dir.unwrap_or(Path::new(".")), "--chrome-trace")?;
            if f.is_dir() {
                return Err(Error::msg(format!(
                    "--chrome-trace {}: is a directory",
                    f.display()
                )));
            }
        }
        Ok(())
    }

    /// Writes what `rec` kept.
    pub fn write(&self, rec: &Recorder, report: &Report) -> Result<()> {
        if let Some(d) = &self.timeline {
            let io = |e: std::io::Error| Error::msg(format!("--timeline {}: {e}", d.display()));
            std::fs::create_dir_all(d).map_err(io)?;
            let path = d.join("timeline.csv");
            let mut f = std::io::BufWriter::with_capacity(
                1 << 20,
                std::fs::File::create(&path).map_err(io)?,
            );
            rec.write_timeline_csv(&mut f).map_err(io)?;
            std::io::Write::flush(&mut f).map_err(io)?;
            drop(f);
            #[cfg(feature = "parquet")]
            timeline_parquet(rec, &d.join("timeline.parquet"))
                .map_err(|e| Error::msg(format!("--timeline {}: {e}", d.display())))?;
        }
        if let Some(p) = &self.chrome_trace {
            let io = |e: std::io::Error| Error::msg(format!("--chrome-trace {}: {e}", p.display()));
            let mut f =
                std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(p).map_err(io)?);
            rec.write_chrome_trace(&mut f, &report.workload)
                .map_err(io)?;
            std::io::Write::flush(&mut f).map_err(io)?;
        }
        Ok(())
    }
}

/// The options of `sim run` with a config file: the file's options, then every flag given on the command
/// line over them. `matches` are the `run` subcommand's.
pub fn resolve_config(args: &RunArgs, file: &Path, matches: &ArgMatches) -> Result<RunArgs> {
    let bad = |msg: String| Error::msg(format!("{}: {msg}", file.display()));
    let text = sim_core::json::read_text(file).map_err(|e| bad(e.to_string()))?;
    let json: Value = sim_core::json::parse(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(opts) = json else {
        return Err(bad(
            "expected an object of options (`sim run --print-config` writes one)".into(),
        ));
    };
    let given = serde_json::to_value(args).expect("options serialise");
    let given = given.as_object().expect("an object");
    let mut merged: Vec<(String, Value)> = opts.into_iter().collect();
    for id in matches.ids() {
        let key = id.as_str().replace('_', "-");
        if matches.value_source(id.as_str()) == Some(clap::parser::ValueSource::CommandLine)
            && let Some(v) = given.get(&key)
        {
            merged.push((key, v.clone()));
        }
    }
    let args =
        RunArgs::with_options(merged.iter().map(|(k, v)| (k.as_str(), v.clone()))).map_err(bad)?;
    args.check().map_err(|e| bad(e.to_string()))?;
    Ok(args)
}

/// The options as a config file: every option by its flag name, unset optional ones left out (so the
/// object is also a valid sweep `base`).
pub fn config_json(args: &RunArgs) -> String {
    let v = serde_json::to_value(args).expect("options serialise");
    let m: Map<String, Value> = v
        .as_object()
        .expect("an object")
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::to_string_pretty(&Value::Object(m)).expect("serialises")
}

#[cfg(feature = "parquet")]
/// `timeline.parquet`: the CSV's columns, typed (times in seconds as floats, counts as integers, empty cells
/// as nulls), built from the rows directly.
fn timeline_parquet(rec: &Recorder, path: &Path) -> std::result::Result<(), String> {
    use polars::prelude::*;
    use sim_core::record::{Get, TIMELINE};
    let rows = &rec.rows;
    let secs = |ns: u64| ns as f64 / 1e9;
    let mut cols: Vec<Column> = TIMELINE
        .iter()
        .map(|&(name, get)| match get {
            Get::Secs(g) => Column::new(
                name.into(),
                rows.iter().map(|r| secs(g(r))).collect::<Vec<f64>>(),
            ),
            Get::Count(g) => Column::new(
                name.into(),
                rows.iter().map(|r| g(r) as i64).collect::<Vec<i64>>(),
            ),
            Get::Word(g) => Column::new(name.into(), rows.iter().map(g).collect::<Vec<&str>>()),
            Get::Real(g) => Column::new(
                name.into(),
                rows.iter()
                    .map(|r| Some(g(r)).filter(|x| x.is_finite()))
                    .collect::<Vec<Option<f64>>>(),
            ),
        })
        .collect();
    for q in 0..rec.max_queues() {
        let each = |g: &dyn Fn(&sim_core::engine::QueueInfo) -> Option<u64>| {
            rows.iter()
                .map(|r| rec.row_queues(r).get(q).and_then(g).map(|v| v as i64))
                .collect::<Vec<Option<i64>>>()
        };
        let n = q + 1;
        cols.push(Column::new(
            format!("q{n}_waiting").into(),
            each(&|x| Some(x.waiting)),
        ));
        cols.push(Column::new(
            format!("q{n}_quota").into(),
            each(&|x| x.quota),
        ));
        cols.push(Column::new(format!("q{n}_used").into(), each(&|x| x.used)));
    }
    let mut df = DataFrame::new(rows.len(), cols).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("parquet.tmp");
    let file = std::fs::File::create(&tmp).map_err(|e| e.to_string())?;
    ParquetWriter::new(file)
        .finish(&mut df)
        .map_err(|e| e.to_string())?;
    std::fs::rename(&tmp, path).map_err(|e| e.to_string())
}
