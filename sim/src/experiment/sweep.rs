//! `sim sweep`: runs an experiment's grid in parallel, one results row per grid point.
//!
//! Every finished run is appended (and flushed) as one JSON line to `DIR/NAME/runs.jsonl` (or
//! `runs.shard-I-of-N.jsonl`), so a killed sweep resumes where it stopped: a run whose line is there with
//! the same options is not run again. When every grid point has a row (across all shards' files), the
//! table is written, sorted by run index: `results.csv` and `results.parquet`, byte-identical whatever the
//! thread count.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{Value, json};

use super::stats;
use super::table::{self, Row};
use super::throughput::{Bracket, bisect};
use super::{Experiment, Run, ThroughputSpec};
use crate::runner::{RunConfig, run};
use sim_core::error::{Error, Result};
use sim_core::trace::{ReadSpec, Trace};
use sim_core::workload::slora::SloraSource;

#[derive(Clone, Debug)]
pub struct SweepOpts {
    /// Results root: the table goes to `out/NAME/`.
    pub out: PathBuf,
    pub threads: usize,
    /// (i, n): run only grid points with index % n == i.
    pub shard: Option<(usize, usize)>,
    /// Forget earlier rows (delete the run logs and tables first).
    pub fresh: bool,
    pub progress: bool,
    /// Only merge the run logs that are there into the table; run nothing.
    pub merge_only: bool,
}

impl SweepOpts {
    pub fn new(out: impl Into<PathBuf>) -> SweepOpts {
        SweepOpts {
            out: out.into(),
            threads: default_threads(),
            shard: None,
            fresh: false,
            progress: false,
            merge_only: false,
        }
    }
}

pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

#[derive(Clone, Debug)]
pub struct Outcome {
    pub dir: PathBuf,
    /// Grid points in the whole experiment.
    pub total: usize,
    /// Runs done by this call.
    pub ran: usize,
    /// Runs of this shard skipped because a log already had them.
    pub skipped: usize,
    /// Rows present over all logs.
    pub present: usize,
    /// Whether the table was written (every grid point has a row).
    pub complete: bool,
    pub wall_s: f64,
}

/// `--shard I/N`, I in 0..N (a Slurm array `--array=0-(N-1)` passes `$SLURM_ARRAY_TASK_ID/N`).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let err = || Error::msg(format!("--shard must be I/N with 0 <= I < N, got '{s}'"));
    let (i, n) = s.split_once('/').ok_or_else(err)?;
    let (i, n): (usize, usize) = (
        i.trim().parse().map_err(|_| err())?,
        n.trim().parse().map_err(|_| err())?,
    );
    if n == 0 || i >= n {
        return Err(err());
    }
    Ok((i, n))
}

/// Indices of the grid points shard (i, n) runs: every n-th, from i (round-robin, so costly corners of a
/// grid spread over the shards).
pub fn shard_indices(total: usize, shard: Option<(usize, usize)>) -> Vec<usize> {
    match shard {
        None => (0..total).collect(),
        Some((i, n)) => (i..total).step_by(n).collect(),
    }
}

/// The commit the results come from: `git rev-parse --short HEAD`, or "unknown".
pub fn git_commit() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::internal(format!("{}: {e}", path.display()))
}

/// What identifies a run's result: its options, plus the search settings for a throughput run.
fn run_key(exp: &Experiment, run: &Run) -> String {
    match &exp.throughput {
        None => run.args_string(),
        Some(t) => format!("{} | throughput {t:?}", run.args_string()),
    }
}

/// The fixed leading columns of the table.
pub fn leading_columns(exp: &Experiment) -> Vec<String> {
    let mut c: Vec<String> = ["run", "experiment", "scale"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    c.extend(exp.axes.iter().map(|a| a.name.clone()));
    if exp.ensemble() {
        c.push(super::MEMBER_PARAMS.into());
    }
    if exp.throughput.is_some() {
        for k in [
            "throughput_slo_rps",
            "throughput_slo_ci_lo",
            "throughput_slo_ci_hi",
            "throughput_slo_per_seed",
            "throughput_slo_lo_rps",
            "throughput_slo_hi_rps",
            "throughput_slo_status",
            "throughput_slo_probes",
            "throughput_slo_metric",
            "throughput_slo_threshold",
            "seeds",
        ] {
            c.push(k.into());
        }
    }
    c.extend(["args".to_string(), "git_commit".to_string()]);
    c
}

fn log_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("runs") && n.ends_with(".jsonl"))
        })
        .collect();
    v.sort();
    v
}

/// Rows already logged for this grid (matching index and key), by run index.
fn logged_rows(dir: &Path, keys: &[String]) -> Vec<Option<Row>> {
    let mut rows = vec![None; keys.len()];
    for f in log_files(dir) {
        let Ok(text) = std::fs::read_to_string(&f) else {
            continue;
        };
        for line in text.lines() {
            // A line cut short by a kill does not parse and is skipped: that run is simply run again.
            let Ok(Value::Object(mut m)) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let (Some(i), Some(Value::String(key)), Some(Value::Object(row))) = (
                m.get("run").and_then(Value::as_u64),
                m.remove("key"),
                m.remove("row"),
            ) else {
                continue;
            };
            let i = i as usize;
            if i < keys.len() && keys[i] == key {
                rows[i] = Some(row);
            }
        }
    }
    rows
}

struct Ctx<'a> {
    exp: &'a Experiment,
    traces: Vec<(TraceKey, Trace)>,
    commit: String,
    /// Where each run's timeline and CDF go (`timelines/run{i}.csv`, `cdf/run{i}.csv`) when the figure is
    /// drawn from them, and the timeline's interval.
    record: Option<(PathBuf, u64, super::plot::Source)>,
}

/// Runs that read the same file the same way (or generate the same workload) share one loaded trace.
type TraceKey = (
    Option<PathBuf>,
    ReadSpec,
    Option<SloraSource>,
    Option<usize>,
);

fn trace_key(c: &RunConfig) -> TraceKey {
    (
        c.trace.clone(),
        c.trace_format.clone(),
        c.workload.clone(),
        c.transform.max_requests,
    )
}

impl Ctx<'_> {
    fn trace(&self, c: &RunConfig) -> &Trace {
        let k = trace_key(c);
        &self
            .traces
            .iter()
            .find(|(t, _)| *t == k)
            .expect("every trace loaded up front")
            .1
    }

    fn row(&self, run: &Run, bar: &ProgressBar) -> Result<Row> {
        let mut row = Row::new();
        row.insert("run".into(), json!(run.index));
        row.insert("experiment".into(), json!(self.exp.name));
        row.insert("scale".into(), json!(self.exp.scale.name()));
        for (k, v) in &run.point {
            row.insert(k.clone(), v.clone());
        }
        row.insert("args".into(), json!(run.args_string()));
        row.insert("git_commit".into(), json!(self.commit));
        let summary = match &self.exp.throughput {
            None if self.record.is_some() => self.recorded(run)?,
            None => run::run(&run.config, self.trace(&run.config).clone(), None)?.row(),
            Some(t) => self.throughput(t, run, bar, &mut row)?,
        };
        for (k, v) in summary {
            row.entry(k).or_insert(v);
        }
        Ok(row)
    }

    /// A run that keeps its timeline and CDF next to the results.
    fn recorded(&self, run: &Run) -> Result<Row> {
        let (dir, interval_ns, source) = self.record.as_ref().expect("recording");
        let c = &run.config;
        let mut rec = sim_core::record::Recorder::new(sim_core::record::RecordOptions {
            timeline: true,
            interval_ns: *interval_ns,
            ..sim_core::record::RecordOptions::new(c.model.kv_slot_bytes())
        });
        let report = run::run_observed(c, self.trace(c).clone(), None, Some(&mut rec))?;
        let put = |sub: &str, fill: &dyn Fn(&mut Vec<u8>) -> std::io::Result<()>| -> Result<()> {
            let d = dir.join(sub);
            std::fs::create_dir_all(&d).map_err(io_err(&d))?;
            let mut buf = Vec::new();
            fill(&mut buf).map_err(io_err(&d))?;
            let f = d.join(format!("run{}.csv", run.index));
            std::fs::write(&f, buf).map_err(io_err(&f))
        };
        if *source == super::plot::Source::Timeline {
            put("timelines", &|b| rec.write_timeline_csv(b))?;
        } else {
            let grid = sim_core::record::cdf_grid(&[]);
            put("cdf", &|b| {
                sim_core::record::write_cdf_csv(b, &report.workload, &report.output, &grid)
            })?;
        }
        Ok(report.row())
    }

    fn throughput(
        &self,
        t: &ThroughputSpec,
        run: &Run,
        bar: &ProgressBar,
        row: &mut Row,
    ) -> Result<Row> {
        let threshold = t.slo.unwrap_or(run.config.slo.ttft_ns as f64 / 1e9);
        // One bisection per seed: the claim is the median of per-seed throughputs with a bootstrap
        // interval (averaging P99s over seeds would let one seed's tail decide).
        let mut per_seed: Vec<(Bracket, Row)> = Vec::with_capacity(t.seeds.len());
        for &seed in &t.seeds {
            let mut probed: Vec<(f64, Row)> = Vec::new();
            let b = bisect(t.lo, t.hi, t.max, t.tol, |rate| {
                bar.set_message(format!(
                    "{} | seed {seed} probe {} at {rate:.3} RPS",
                    point_label(run),
                    probed.len() + 1
                ));
                let mut c = run.config.clone();
                c.transform.poisson_rate = Some(rate);
                c.seed = seed;
                let sum = run::run(&c, self.trace(&c).clone(), None)?.row();
                let m = sum.get(&t.metric).and_then(Value::as_f64).ok_or_else(|| {
                    Error::msg(format!(
                        "{}: throughput.metric: '{}' is not a numeric metric of a run",
                        self.exp.path.display(),
                        t.metric
                    ))
                })?;
                probed.push((rate, sum));
                Ok(m <= threshold)
            })?;
            let at = b.pass.unwrap_or(t.lo);
            let summary = probed
                .into_iter()
                .find(|(r, _)| *r == at)
                .map(|(_, s)| s)
                .unwrap_or_default();
            per_seed.push((b, summary));
        }
        let tputs: Vec<f64> = per_seed.iter().map(|(b, _)| b.throughput()).collect();
        let ci = stats::median_ci(&tputs).expect("at least one seed");
        // The run shown beside the throughput: the median seed's (the lower middle for an even count).
        let mut order: Vec<usize> = (0..tputs.len()).collect();
        order.sort_by(|&a, &b| tputs[a].total_cmp(&tputs[b]));
        let mid = order[(order.len() - 1) / 2];
        let summary = per_seed[mid].1.clone();
        let worst = |f: fn(&Bracket) -> Option<f64>, max: bool| {
            let v = per_seed.iter().filter_map(|(b, _)| f(b));
            if max {
                v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            } else {
                v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))))
            }
        };
        let status = per_seed
            .iter()
            .map(|(b, _)| b.status())
            .find(|s| *s != "bracketed")
            .unwrap_or("bracketed");
        row.insert("throughput_slo_rps".into(), json!(ci.median));
        row.insert("throughput_slo_ci_lo".into(), json!(ci.lo));
        row.insert("throughput_slo_ci_hi".into(), json!(ci.hi));
        let list: Vec<String> = tputs.iter().map(|x| format!("{x}")).collect();
        row.insert("throughput_slo_per_seed".into(), json!(list.join(" ")));
        row.insert(
            "throughput_slo_lo_rps".into(),
            json!(worst(|b| b.pass, false).unwrap_or(0.0)),
        );
        row.insert(
            "throughput_slo_hi_rps".into(),
            worst(|b| b.fail, true).map_or(Value::Null, |x| json!(x)),
        );
        row.insert("throughput_slo_status".into(), json!(status));
        row.insert(
            "throughput_slo_probes".into(),
            json!(per_seed.iter().map(|(b, _)| b.probes).sum::<usize>()),
        );
        row.insert("throughput_slo_metric".into(), json!(t.metric));
        row.insert("throughput_slo_threshold".into(), json!(threshold));
        let seeds: Vec<String> = t.seeds.iter().map(u64::to_string).collect();
        row.insert("seeds".into(), json!(seeds.join(",")));
        Ok(summary)
    }
}

fn point_label(run: &Run) -> String {
    let p: Vec<String> = run
        .point
        .iter()
        .map(|(k, v)| {
            format!(
                "{k}={}",
                v.as_str().map_or_else(|| v.to_string(), str::to_string)
            )
        })
        .collect();
    format!("#{} {}", run.index, p.join(" "))
}

/// Runs (the rest of) an experiment's grid and writes its table when complete.
pub fn sweep(exp: &Experiment, opts: &SweepOpts) -> Result<Outcome> {
    let start = Instant::now();
    let runs = exp.runs()?;
    let keys: Vec<String> = runs.iter().map(|r| run_key(exp, r)).collect();
    let dir = opts.out.join(&exp.name);
    std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    if opts.fresh {
        for f in log_files(&dir) {
            std::fs::remove_file(&f).map_err(io_err(&f))?;
        }
        for f in ["results.csv", "results.parquet"] {
            let _ = std::fs::remove_file(dir.join(f));
        }
    }
    let cfg = dir.join("config.json");
    let mut json = exp.json.clone();
    if let Value::Object(m) = &mut json {
        m.insert("source".into(), json!(exp.path.display().to_string()));
        m.insert("scale".into(), json!(exp.scale.name()));
    }
    let text = serde_json::to_string_pretty(&json).expect("config serialises") + "\n";
    std::fs::write(&cfg, text).map_err(io_err(&cfg))?;

    let rows = logged_rows(&dir, &keys);
    let mine = shard_indices(runs.len(), opts.shard);
    let todo: Vec<usize> = if opts.merge_only {
        Vec::new()
    } else {
        mine.iter()
            .copied()
            .filter(|&i| rows[i].is_none())
            .collect()
    };
    let skipped = mine.len() - todo.len();

    if !todo.is_empty() {
        let log = dir.join(match opts.shard {
            None => "runs.jsonl".to_string(),
            Some((i, n)) => format!("runs.shard-{i}-of-{n}.jsonl"),
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&log)
            .map_err(io_err(&log))?;
        // A kill may have left half a line: start on a fresh one.
        let text = std::fs::read(&log).map_err(io_err(&log))?;
        if text.last().is_some_and(|&c| c != b'\n') {
            f.write_all(b"\n").map_err(io_err(&log))?;
        }
        let mut traces: Vec<(TraceKey, Trace)> = Vec::new();
        for &i in &todo {
            let c = &runs[i].config;
            let k = trace_key(c);
            if !traces.iter().any(|(t, _)| *t == k) {
                traces.push((k, c.load_trace()?));
            }
        }
        let record = exp
            .json
            .get("plot")
            .and_then(|p| super::plot::PlotSpec::parse(&exp.path, p).ok())
            .filter(|p| p.source != super::plot::Source::Results)
            .map(|p| (dir.clone(), (p.interval_s * 1e9).round() as u64, p.source));
        let ctx = Ctx {
            exp,
            traces,
            commit: git_commit(),
            record,
        };
        let threads = opts.threads.max(1).min(todo.len());
        let mp = MultiProgress::new();
        if !opts.progress {
            mp.set_draw_target(ProgressDrawTarget::hidden());
        }
        let overall = mp.add(ProgressBar::new(todo.len() as u64));
        overall.set_style(
            ProgressStyle::with_template(
                "{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} runs, ETA {eta}",
            )
            .expect("template"),
        );
        overall.set_prefix(exp.name.clone());
        let next = AtomicUsize::new(0);
        let stop = AtomicBool::new(false);
        let (tx, rx) = mpsc::channel::<(usize, Result<Row>)>();
        let mut failure: Option<Error> = None;
        std::thread::scope(|s| {
            for w in 0..threads {
                let (tx, next, stop, todo, runs, ctx) =
                    (tx.clone(), &next, &stop, &todo, &runs, &ctx);
                let bar = mp.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("  {spinner} {prefix} {msg} ({elapsed})")
                        .expect("template"),
                );
                bar.set_prefix(format!("thread {w}:"));
                bar.enable_steady_tick(Duration::from_millis(200));
                s.spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        let j = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&i) = todo.get(j) else { break };
                        bar.set_message(point_label(&runs[i]));
                        bar.reset_elapsed();
                        let r = ctx.row(&runs[i], &bar);
                        if tx.send((i, r)).is_err() {
                            break;
                        }
                    }
                    bar.finish_and_clear();
                });
            }
            drop(tx);
            for (i, r) in rx {
                match r {
                    Ok(row) => {
                        let line = json!({"run": i, "key": keys[i], "row": row});
                        let res = writeln!(f, "{line}").and_then(|_| f.flush());
                        if let Err(e) = res {
                            stop.store(true, Ordering::Relaxed);
                            failure.get_or_insert(io_err(&log)(e));
                        }
                        overall.inc(1);
                    }
                    Err(e) => {
                        stop.store(true, Ordering::Relaxed);
                        let args = runs[i].args_string();
                        failure.get_or_insert(
                            e.context(format!("{}: run {i} ({args})", exp.path.display())),
                        );
                    }
                }
            }
        });
        overall.finish_and_clear();
        if let Some(e) = failure {
            return Err(e);
        }
    }

    // Every shard's log counts: the last shard to finish writes the merged table. The table is always
    // built from the logged text, so a resumed sweep writes the same bytes as an uninterrupted one.
    let rows = logged_rows(&dir, &keys);
    let present = rows.iter().filter(|r| r.is_some()).count();
    let complete = present == runs.len();
    if complete {
        let rows: Vec<Row> = rows.into_iter().flatten().collect();
        table::write(&rows, &leading_columns(exp), &dir, "results")?;
    }
    Ok(Outcome {
        dir,
        total: runs.len(),
        ran: todo.len(),
        skipped,
        present,
        complete,
        wall_s: start.elapsed().as_secs_f64(),
    })
}
