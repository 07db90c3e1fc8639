use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use sim::runner::{self, RunArgs};

#[derive(Parser)]
#[command(
    name = "sim",
    version,
    about = "Simulate one GPU serving a base LLM with many LoRA adapters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay a trace and print a summary. Default: the paper's medium load (the embedded Azure conversation
    /// trace at 8 req/s, lengths at knee[rate=8.6]) on Llama-7B, A40, 100 adapters, S-LoRA's fifo scheduler and
    /// no cache. Every run is costed by the engine profile shipped for its GPU x model (else the analytic
    /// model, with a warning) unless --cost or --profile says otherwise
    Run {
        #[command(flatten)]
        args: Box<RunArgs>,
        /// Also write DIR/summary.json, DIR/requests.csv and DIR/adapters.csv (README.md, "Outputs")
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print the summary as JSON instead of a table
        #[arg(long)]
        json: bool,
        /// best: the cost model's best fit (or --member K); ensemble: once per plausible parameter vector of
        /// the profile (its members), a line each and their spread
        #[arg(long, default_value = "best", value_name = "WHICH", value_parser = ["best", "ensemble"])]
        physics: String,
        #[command(flatten)]
        inside: sim::inside::InsideArgs,
    },
    /// List every scheduler and cache policy with its parameters
    Policies,
    /// Trace tools: stats, convert, zipf (fit adapter popularity), tenants (ServeGen hot sets over a day)
    Trace {
        #[command(subcommand)]
        cmd: sim::tools::trace_cli::TraceCmd,
    },
    /// Run a trace for real on a backend (same options and outputs as `run`; see docs/real-execution.md)
    Real {
        #[command(flatten)]
        args: Box<RunArgs>,
        /// Backend: cpu[layers=..,hidden=..,heads=..,kv_heads=..,intermediate=..,vocab=..,page=..,seed=..] |
        /// cuda[device=0,dtype=fp16,page=16,adapter_gib=G,seed=0]
        #[arg(long, default_value = "cpu", value_name = "SPEC")]
        backend: String,
        /// Also write DIR/summary.json, DIR/requests.csv and DIR/adapters.csv
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print the summary as JSON instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Run a trace both simulated (profile measured on the backend) and for real; report the simulator's error
    Fidelity {
        #[command(flatten)]
        args: Box<sim::fidelity::FidelityArgs>,
    },
    /// Fit engine profiles to a real engine's measured runs (S-LoRA's, calibrate/data/slora); `sim fit report`
    /// simulates every run with the committed profiles and writes the report
    Fit(Box<sim::fit::cli::FitCmd>),
    /// Run an experiment's grid (experiments/*.json) in parallel into a results table (CSV + Parquet);
    /// resumes where a killed sweep stopped
    Sweep(sim::experiment::cli::SweepCmd),
    /// Draw figures (PNG + SVG + CSV) from sweep results; --all also writes plots/README.md
    Plot(sim::experiment::cli::PlotCmd),
    /// Measure simulator speed on the conversation trace and a synthetic trace
    Bench(sim::bench::BenchArgs),
}

/// Checks `--out` before a run so a bad directory fails at once and leaves nothing behind.
fn out_ok(out: Option<&Path>) -> sim_core::error::Result<()> {
    out.map_or(Ok(()), |d| sim_core::report::check_out_dir(d, "--out"))
}

/// `sim run`: options (from a config file too), then the run and what it was asked to write.
fn run(
    args: RunArgs,
    out: Option<&Path>,
    json: bool,
    ensemble: bool,
    inside: &sim::inside::InsideArgs,
    matches: &clap::ArgMatches,
) -> sim_core::error::Result<()> {
    let args = match &inside.config {
        Some(file) => sim::inside::resolve_config(&args, file, matches)?,
        None => args,
    };
    if inside.print_config {
        println!("{}", sim::inside::config_json(&args));
        return Ok(());
    }
    out_ok(out)?;
    inside.check()?;
    if ensemble {
        if inside.recording() {
            return Err(sim_core::error::Error::msg(
                "--physics ensemble records no timeline or trace: run one member (--member K) to record it",
            ));
        }
        return sim::ensemble::run_all(&args, out, json);
    }
    let report = if inside.recording() {
        let cfg = args.resolve()?;
        let trace = cfg.load_trace()?;
        let mut rec =
            sim_core::record::Recorder::new(inside.record_options(cfg.model.kv_slot_bytes()));
        let report = runner::run::run_observed(&cfg, trace, None, Some(&mut rec))?;
        inside.write(&rec, &report)?;
        report
    } else {
        runner::execute(&args)?
    };
    report.finish_with(out, json, &inside.quantiles())
}

fn main() -> ExitCode {
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (mut cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) => match sim::clap_error_line(&e) {
            None => {
                print!("{e}");
                return ExitCode::SUCCESS;
            }
            Some(line) => {
                eprintln!("error: {line}");
                return ExitCode::from(2);
            }
        },
    };
    let mut note = None;
    // A config file holds the whole run: the default setup fills only a command line's gaps.
    if let Cmd::Run { args, inside, .. } = &mut cli.cmd
        && inside.config.is_none()
    {
        let run = matches.subcommand_matches("run");
        let given = |id: &str| {
            run.and_then(|m| m.value_source(id))
                .is_some_and(|s| s != ValueSource::DefaultValue)
        };
        note = runner::default_setup(args, &given);
    }
    let res = match cli.cmd {
        Cmd::Run {
            args,
            out,
            json,
            physics,
            inside,
        } => {
            let sub = matches
                .subcommand_matches("run")
                .expect("the run subcommand");
            run(
                *args,
                out.as_deref(),
                json,
                physics == "ensemble",
                &inside,
                sub,
            )
        }
        Cmd::Policies => {
            print!("{}", sim::policies_text());
            Ok(())
        }
        Cmd::Real {
            args,
            backend,
            out,
            json,
        } => out_ok(out.as_deref())
            .and_then(|_| sim::backend::run(&args, &backend))
            .and_then(|r| r.finish(out.as_deref(), json)),
        Cmd::Fidelity { args } => sim::fidelity::run(&args),
        Cmd::Fit(cmd) => sim::fit::cli::run(*cmd),
        Cmd::Sweep(cmd) => sim::experiment::cli::sweep(cmd),
        Cmd::Plot(cmd) => sim::experiment::cli::plot(cmd),
        Cmd::Bench(b) => sim::bench::main(&b),
        Cmd::Trace { cmd } => sim::tools::trace_cli::run(cmd),
    };
    match res {
        Ok(()) => {
            // After the table, with the warnings: what the defaults chose.
            if let Some(n) = note {
                eprintln!("note: {n}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            let chosen = match &note {
                Some(_) if e.to_string().starts_with("--length-scale") => {
                    " (the default setup's length rule: give --length-scale F)"
                }
                _ => "",
            };
            eprintln!("error: {e}{chosen}");
            ExitCode::from(e.code as u8)
        }
    }
}
