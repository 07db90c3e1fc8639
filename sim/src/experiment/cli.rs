//! The `sim sweep` and `sim plot` subcommands.

use std::path::PathBuf;

use super::report::{self, Plotted};
use super::sweep::{self, SweepOpts};
use super::{Experiment, Scale};
use sim_core::error::{Error, Result};

#[derive(clap::Args, Debug)]
pub struct SweepCmd {
    /// Experiment configs (JSON, see docs/experiments.md)
    #[arg(value_name = "CONFIG")]
    pub configs: Vec<PathBuf>,
    /// Every *.json in --experiments
    #[arg(long)]
    pub all: bool,
    /// Where --all finds the configs
    #[arg(long, default_value = "experiments", value_name = "DIR")]
    pub experiments: PathBuf,
    /// full (the committed figures) or ci (2000 requests, one seed, the config's `ci` overrides)
    #[arg(long, value_enum, default_value = "full")]
    pub scale: Scale,
    /// Results root: each experiment's table goes to DIR/NAME/results.{csv,parquet}
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub out: PathBuf,
    /// Worker threads [default: all cores]
    #[arg(long, value_name = "N", allow_negative_numbers = true, value_parser = crate::options::whole::<usize>(crate::options::Range::AtLeast(1)))]
    pub threads: Option<usize>,
    /// Run only grid points with index % N == I (0 <= I < N), e.g. $SLURM_ARRAY_TASK_ID/N; the last shard
    /// to finish writes the merged table
    #[arg(long, value_name = "I/N")]
    pub shard: Option<String>,
    /// Discard earlier runs instead of resuming
    #[arg(long)]
    pub fresh: bool,
    /// Run nothing: merge the run logs (of all shards) into the table
    #[arg(long)]
    pub merge: bool,
    /// No progress bars
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(clap::Args, Debug)]
pub struct PlotCmd {
    /// Results directories written by `sim sweep` (or a results.csv / results.parquet inside one)
    #[arg(value_name = "RESULTS")]
    pub results: Vec<PathBuf>,
    /// Every results directory under --results-dir, and the index OUT/README.md
    #[arg(long)]
    pub all: bool,
    /// Where --all finds the results
    #[arg(long, default_value = "results", value_name = "DIR")]
    pub results_dir: PathBuf,
    /// Where the figures (NAME.png, NAME.svg, NAME.csv) go
    #[arg(long, default_value = "plots", value_name = "DIR")]
    pub out: PathBuf,
}

pub fn sweep(cmd: SweepCmd) -> Result<()> {
    // The options first: a bad one fails before any config is read.
    let shard = cmd.shard.as_deref().map(sweep::parse_shard).transpose()?;
    let mut exps = Vec::new();
    if cmd.all {
        exps.extend(Experiment::load_dir(&cmd.experiments, cmd.scale)?);
    }
    for c in &cmd.configs {
        exps.push(Experiment::load(c, cmd.scale)?);
    }
    if exps.is_empty() {
        return Err(Error::msg("sim sweep: name a CONFIG or pass --all"));
    }
    sim_core::report::check_out_dir(&cmd.out, "--out")?;
    let mut opts = SweepOpts::new(&cmd.out);
    opts.threads = cmd.threads.unwrap_or_else(sweep::default_threads).max(1);
    opts.shard = shard;
    opts.fresh = cmd.fresh;
    opts.merge_only = cmd.merge;
    opts.progress = !cmd.quiet;
    for exp in &exps {
        let o = sweep::sweep(exp, &opts)?;
        let table = if o.complete {
            format!("-> {}", o.dir.join("results.csv").display())
        } else {
            format!(
                "{} of {} rows so far; the table is written when all shards are done",
                o.present, o.total
            )
        };
        println!(
            "{}: {} runs done ({} already logged) in {:.2} s on {} threads {table}",
            exp.name, o.ran, o.skipped, o.wall_s, opts.threads
        );
    }
    Ok(())
}

pub fn plot(cmd: PlotCmd) -> Result<()> {
    let mut dirs = cmd.results.clone();
    if cmd.all {
        dirs.extend(report::result_dirs(&cmd.results_dir)?);
    }
    if dirs.is_empty() {
        return Err(Error::msg(
            "sim plot: name a RESULTS directory or pass --all",
        ));
    }
    sim_core::report::check_out_dir(&cmd.out, "--out")?;
    let mut done: Vec<Plotted> = Vec::new();
    for d in &dirs {
        let p = report::plot_results(d, &cmd.out)?;
        println!(
            "{}: {} rows -> {}",
            p.name,
            p.rows.len(),
            cmd.out.join(format!("{}.png", p.name)).display()
        );
        done.push(p);
    }
    if cmd.all {
        let path = cmd.out.join("README.md");
        std::fs::write(&path, report::readme(&done, &report::fit_section(&cmd.out)))
            .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
        println!("index -> {}", path.display());
    }
    Ok(())
}
