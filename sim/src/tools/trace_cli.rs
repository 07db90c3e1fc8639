//! `sim trace ...`: statistics, conversion to the normalised CSV, Zipf fits of id popularity, and the
//! movement of ServeGen tenants' hot sets over a day. Every command streams its input.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;

use clap::Subcommand;

use super::trace_stats::TraceStats;
use crate::tools::zipf as fit;
use sim_core::csv_out::{CsvOut, Opt};
use sim_core::error::{Error, Result};
use sim_core::trace::reader::{self, Records, RowReader, Spread};
use sim_core::workload::tenants::TenantTable;

#[derive(Subcommand, Clone, Debug)]
pub enum TraceCmd {
    /// Rows, span, rate, inter-arrival CV, token mean/p50/p99/max, adapter and tenant popularity (top-1/10/100
    /// share and a Zipf fit), histograms; one streaming pass
    Stats {
        file: PathBuf,
        /// auto | azure | csv[time=COL,input=COL,output=COL,adapter=COL,tenant=COL,unit=s|ms|us|ns|datetime,
        /// spread=SECONDS,sort=true,zeros=error|skip|one,delim=comma|tab|semicolon|pipe] | jsonl[...]
        #[arg(long, default_value = "auto", value_name = "SPEC")]
        format: String,
        /// Print the statistics as JSON
        #[arg(long)]
        json: bool,
    },
    /// Write the normalised CSV (arrival_s from the first request, input_tokens, output_tokens, adapter,
    /// tenant), which `--trace` reads back with no format given
    Convert {
        input: PathBuf,
        /// Output file, or - for stdout
        output: PathBuf,
        #[arg(long, default_value = "auto", value_name = "SPEC")]
        format: String,
    },
    /// Fit a Zipf exponent to how often each id of a column is used, with goodness of fit
    Zipf {
        file: PathBuf,
        /// Column (or JSON key) holding the id [default: the adapter column the format finds]
        #[arg(long)]
        column: Option<String>,
        /// The column holds lists of records; count every value of this key in them (e.g. modelVersionId in
        /// GenTD26's lora_args)
        #[arg(long)]
        key: Option<String>,
        /// Fit only the N most used ids (the head a cache of N adapters sees)
        #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(2)))]
        max_rank: Option<usize>,
        #[arg(long, default_value = "auto", value_name = "SPEC")]
        format: String,
        #[arg(long)]
        json: bool,
    },
    /// How the hot set of ServeGen tenants moves over one day (the data of --adapter-model tenants)
    Tenants {
        /// ServeGen per-client rates CSV (.gz) [default: the embedded m-large day 0]
        #[arg(long, value_name = "FILE")]
        rates: Option<PathBuf>,
        #[arg(long, default_value = "m-large")]
        model: String,
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = crate::options::whole::<u32>(crate::options::Range::AtLeast(0)))]
        day: u32,
        /// Size of the hot set
        #[arg(long, default_value_t = 10, allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
        top: usize,
        /// Seconds per line (a multiple of 600)
        #[arg(long, default_value_t = 3600, allow_negative_numbers = true, value_parser = crate::options::whole::<u64>(crate::options::Range::AtLeast(600)))]
        every: u64,
    },
}

pub fn run(cmd: TraceCmd) -> Result<()> {
    match cmd {
        TraceCmd::Stats { file, format, json } => {
            let spec = reader::ReadSpec::parse(&format)?;
            let (stats, src, mapping) = stats(&file, &spec)?;
            if json {
                let mut m = stats.json();
                m.insert("file".into(), src.into());
                m.insert("read_as".into(), mapping.into());
                println!("{}", serde_json::to_string_pretty(&m).expect("serialises"));
            } else {
                print!("{}", stats.text(&src, &mapping));
            }
            Ok(())
        }
        TraceCmd::Convert {
            input,
            output,
            format,
        } => {
            let spec = reader::ReadSpec::parse(&format)?;
            let n = if output.as_os_str() == "-" {
                convert(&input, &spec, std::io::stdout().lock())?
            } else {
                let f = std::fs::File::create(&output)
                    .map_err(|e| Error::msg(format!("{}: cannot create: {e}", output.display())))?;
                convert(&input, &spec, std::io::BufWriter::new(f))?
            };
            eprintln!("{n} requests written");
            Ok(())
        }
        TraceCmd::Zipf {
            file,
            column,
            key,
            max_rank,
            format,
            json,
        } => {
            let spec = reader::ReadSpec::parse(&format)?;
            let counts = id_counts(&file, &spec, column.as_deref(), key.as_deref())?;
            let mut c: Vec<u64> = counts.values().copied().collect();
            c.sort_unstable_by(|a, b| b.cmp(a));
            if let Some(n) = max_rank {
                c.truncate(n);
            }
            let f = fit::fit_zipf(&c).ok_or_else(|| {
                Error::msg(format!(
                    "{}: fewer than two distinct ids to fit",
                    file.display()
                ))
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&f.json()).expect("serialises")
                );
            } else {
                print!("{}: {}", file.display(), f.text());
            }
            Ok(())
        }
        TraceCmd::Tenants {
            rates,
            model,
            day,
            top,
            every,
        } => {
            let t = TenantTable::load(&rates, &model, day)?;
            print!(
                "{}",
                sim_core::workload::tenants::hotset_text(&t, top, every)?
            );
            Ok(())
        }
    }
}

/// Streams `file` into statistics; returns them with the source and the column mapping used.
pub fn stats(
    file: &std::path::Path,
    spec: &reader::ReadSpec,
) -> Result<(TraceStats, String, String)> {
    let mut rr = RowReader::open(file, spec)?;
    let mut st = TraceStats::default();
    if spec.sort {
        // Times alone (16 bytes a row) are kept to sort them; everything else streams.
        let mut times = Vec::new();
        for r in &mut rr {
            let r = r?;
            st.add_lengths(&r);
            times.push(r.time);
        }
        times.sort_unstable();
        let mut i = 0;
        while i < times.len() {
            let n = times[i..].iter().take_while(|&&t| t == times[i]).count();
            let next = times.get(i + n).copied();
            for k in 0..n {
                let t = reader::spread_time(times[i], k, n, next, spec.spread_ns);
                st.add_time(t);
            }
            i += n;
        }
    } else {
        for r in Spread::new(&mut rr, spec.spread_ns) {
            st.add(&r?);
        }
    }
    if st.rows == 0 {
        return Err(Error::msg(format!(
            "{}: the trace has no requests",
            rr.source()
        )));
    }
    let check = sim_core::trace::check_time_unit(
        &rr.mapping,
        st.rows,
        st.first_time(),
        st.span_ns(),
        rr.all_integer,
    );
    st.warnings
        .extend(check.error.into_iter().chain(check.warning));
    let mapping = rr.mapping.describe();
    Ok((st, rr.source().to_string(), mapping))
}

/// Streams `input` to the normalised CSV; returns the number of rows.
pub fn convert(
    input: &std::path::Path,
    spec: &reader::ReadSpec,
    mut out: impl Write,
) -> Result<u64> {
    if spec.sort {
        return Err(Error::msg(
            "sim trace convert streams its input, so it cannot sort: sort the file first (e.g. sort -t, -k1,1 -s)",
        ));
    }
    let mut rr = RowReader::open(input, spec)?;
    let io = |e: std::io::Error| Error::internal(format!("writing the converted trace: {e}"));
    let mut t = CsvOut::new(
        &mut out,
        &[
            "arrival_s",
            "input_tokens",
            "output_tokens",
            "adapter",
            "tenant",
        ],
    )
    .map_err(io)?;
    let mut first = None;
    let mut n = 0u64;
    for r in Spread::new(&mut rr, spec.spread_ns) {
        let r = r?;
        let t0 = *first.get_or_insert(r.time);
        let dt = r.time - t0;
        t.record(&[
            &format_args!("{}.{:09}", dt / 1_000_000_000, dt % 1_000_000_000),
            &r.input,
            &r.output,
            &Opt(r.adapter.as_deref()),
            &Opt(r.tenant.as_deref()),
        ])
        .map_err(io)?;
        n += 1;
    }
    t.finish().map_err(io)?;
    out.flush().map_err(io)?;
    if n == 0 {
        return Err(Error::msg(format!(
            "{}: the trace has no requests",
            input.display()
        )));
    }
    Ok(n)
}

/// Values of `key` inside a cell such as `[{'modelVersionId': 'abc', 'scale': 1.0}, ...]` (Python or JSON
/// quoting).
pub fn keyed_values<'a>(cell: &'a str, key: &str) -> Vec<&'a str> {
    let mut out = Vec::new();
    let mut rest = cell;
    while let Some(p) = rest.find(key) {
        rest = &rest[p + key.len()..];
        // The key must be a whole quoted name followed by a colon.
        let after = rest.trim_start_matches(['\'', '"']).trim_start();
        let Some(after) = after.strip_prefix(':') else {
            continue;
        };
        let after = after.trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '\'' || *c == '"') else {
            continue;
        };
        let body = &after[1..];
        if let Some(end) = body.find(q) {
            out.push(&body[..end]);
            rest = &body[end + 1..];
        }
    }
    out
}

/// How often each id appears in `column` (or, with `key`, each value of that key inside the column's lists).
pub fn id_counts(
    file: &std::path::Path,
    spec: &reader::ReadSpec,
    column: Option<&str>,
    key: Option<&str>,
) -> Result<HashMap<String, u64>> {
    let mut rec = Records::open(file, spec)?;
    let name = match column.or(spec.adapter.as_deref()) {
        Some(c) => c.to_string(),
        None => ["adapter", "adapter_id", "lora", "lora_id", "model_id"]
            .into_iter()
            .find(|g| rec.find(g).is_some())
            .ok_or_else(|| {
                Error::msg(format!(
                    "{}: no adapter column found (found: {}); name it with --column",
                    rec.source,
                    rec.names().join(", ")
                ))
            })?
            .to_string(),
    };
    let col = rec.find(&name).ok_or_else(|| {
        Error::msg(format!(
            "{}: missing column '{name}' (found: {})",
            rec.source,
            rec.names().join(", ")
        ))
    })?;
    let mut counts: HashMap<String, u64> = HashMap::new();
    while rec.advance()? {
        let Some(cell) = rec.cell(&col) else { continue };
        match key {
            None => *counts.entry(cell.into_owned()).or_default() += 1,
            Some(k) => {
                for v in keyed_values(&cell, k) {
                    *counts.entry(v.to_string()).or_default() += 1;
                }
            }
        }
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyed_values_read_python_and_json_lists() {
        let py =
            "[{'modelVersionId': 'abc', 'scale': 1.0}, {'modelVersionId': 'd e', 'scale': 0.5}]";
        assert_eq!(keyed_values(py, "modelVersionId"), ["abc", "d e"]);
        let js = r#"[{"modelVersionId": "x"}]"#;
        assert_eq!(keyed_values(js, "modelVersionId"), ["x"]);
        assert!(keyed_values("[]", "modelVersionId").is_empty());
        assert!(keyed_values("{'modelVersionIdX': 'a'}", "modelVersionId").is_empty());
    }
}
