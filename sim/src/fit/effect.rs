//! Does the simulator predict a scheduler's measured effect? S-LoRA's repository measured its real engine
//! under other schedulers (early abort, PETS, and a file labelled LIFO) on the very workloads of its FIFO
//! runs (`calibrate/data/slora-schedulers`, never fitted on). Each run is replayed with its exact requests
//! under the same scheduler in the simulator, on the committed engine profile (fitted to FIFO runs only),
//! and so is its FIFO counterpart: the effect (variant against FIFO) the simulator predicts is set against
//! the one S-LoRA measured.
//!
//! The metrics are S-LoRA's benchmark client's (`benchmarks/run_exp.py: get_res_stats`): an aborted request
//! is one whose stream carried `"finished": -1`. It counts in `num_abort` and nowhere else: throughput is
//! the finished requests over the wall time to the last response (an aborted one's included), latencies
//! are means over finished requests, attainment (TTFT < 6 s, `slora/utils/metric.py`) is over all requests
//! with an aborted one scoring 0. The server answers an aborted request late: the HTTP handler waits on its
//! request's event with a 5 s timeout and only then notices the request is gone
//! (`slora/server/httpserver/manager.py`), so the client sees the abort at the first 5 s tick after it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::runner::{RunArgs, RunConfig};
use sim_core::engine::{Outcome, RunOutput, Simulated};
use sim_core::error::{Error, Result};
use sim_core::time::{Nanos, secs};
use sim_core::workload::Workload;
use sim_core::workload::slora::{SloraSource, SloraWorkloadSpec};

/// Where the runs and their manifest are.
pub const DATA: &str = "calibrate/data/slora-schedulers";

/// S-LoRA's objective on TTFT for attainment (`slora/utils/metric.py: attainment_func`, response_ub).
const ATTAIN_NS: Nanos = 6_000_000_000;
/// The HTTP handler's wait between looks at an aborted request (`asyncio.wait_for(..., timeout=5)`).
const ABORT_TICK_NS: Nanos = 5_000_000_000;
/// The aim: a predicted effect within this many percentage points of the measured one.
pub const AIM_POINTS: f64 = 5.0;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[allow(dead_code)]
    source: String,
    #[allow(dead_code)]
    how: String,
    #[allow(dead_code)]
    campaigns: String,
    #[serde(rename = "use")]
    #[allow(dead_code)]
    use_: String,
    #[serde(default)]
    #[allow(dead_code)]
    held_out: Option<String>,
    settings: BTreeMap<String, Setting>,
    files: Vec<FileDef>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Setting {
    gpu: String,
    model: String,
    ranks: Vec<u32>,
    pool: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileDef {
    file: String,
    setting: String,
    /// The scheduler spec the runs are simulated with.
    scheduler: String,
    campaign: String,
    /// FIFO files, in order of preference, holding the counterpart of each run.
    #[serde(default)]
    fifo: Vec<String>,
    /// The scheduler its launch command names, when it differs (the LIFO file: `fifo`).
    #[serde(default)]
    launched_as: Option<String>,
}

/// S-LoRA's client metrics of one run (`get_res_stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Client {
    /// Finished requests per second of wall time to the last response.
    pub throughput: f64,
    /// Means over finished requests, s.
    pub latency: f64,
    pub ttft: f64,
    /// Aborted requests.
    pub aborted: f64,
    /// Share of all requests with TTFT < 6 s (aborted: 0).
    pub attainment: f64,
    pub requests: f64,
}

impl Client {
    /// The metrics an effect is taken on: (name, ratio (else a difference of shares), value).
    pub const METRICS: [(&'static str, bool); 5] = [
        ("throughput", true),
        ("mean latency", true),
        ("mean TTFT", true),
        ("aborted share", false),
        ("attainment", false),
    ];

    pub fn get(&self, i: usize) -> f64 {
        match i {
            0 => self.throughput,
            1 => self.latency,
            2 => self.ttft,
            3 => self.aborted / self.requests.max(1.0),
            _ => self.attainment,
        }
    }
}

/// S-LoRA's client metrics of a simulated run (time 0 = the benchmark's start).
pub fn client(w: &Workload, out: &RunOutput) -> Client {
    let (mut done, mut end, mut lat, mut ttft, mut aborted, mut ok) = (0.0, 0, 0.0, 0.0, 0.0, 0.0);
    for (r, rec) in w.requests.iter().zip(&out.records) {
        match rec.outcome {
            Outcome::Finished => {
                done += 1.0;
                end = end.max(rec.finished);
                lat += secs(rec.finished - r.arrival);
                let t = rec.first_token - r.arrival;
                ttft += secs(t);
                ok += f64::from(u8::from(t < ATTAIN_NS));
            }
            Outcome::Aborted(_) => {
                aborted += 1.0;
                let waited = rec.finished - r.arrival;
                end = end.max(r.arrival + waited.div_ceil(ABORT_TICK_NS).max(1) * ABORT_TICK_NS);
            }
            Outcome::Rejected(_) | Outcome::Waiting => {}
        }
    }
    let n = w.requests.len() as f64;
    let d = if done > 0.0 { done } else { 1.0 };
    Client {
        throughput: done / secs(end.max(1)),
        latency: lat / d,
        ttft: ttft / d,
        aborted,
        attainment: ok / n.max(1.0),
        requests: n,
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct Run {
    pub file: String,
    pub line: usize,
    pub setting: String,
    pub scheduler: String,
    pub campaign: String,
    pub spec: SloraWorkloadSpec,
    pub measured: Client,
    /// The file records `num_abort` (older runs do not; a PETS run aborts nothing either way).
    pub abort_recorded: bool,
}

impl Run {
    pub fn config(&self) -> String {
        let s = &self.spec;
        let mut o = format!(
            "n={} alpha={} rate={} cv={}",
            s.num_adapters, s.alpha, s.req_rate, s.cv
        );
        if s.duration != 300.0 {
            let _ = write!(o, " {}s", s.duration);
        }
        o
    }

    /// The benchmark suite the run belongs to (exp_suite.py's a10g-<suite>), from its file name.
    pub fn suite(&self) -> &str {
        let f = &self.file[self
            .file
            .rfind("synthetic_")
            .map_or(0, |i| i + "synthetic_".len())..];
        match f.find("_a10g") {
            Some(0) | None => "grid",
            Some(k) => &f[..k],
        }
    }

    pub fn name(&self) -> String {
        format!(
            "{}:{}",
            self.file
                .trim_start_matches("../slora/")
                .trim_end_matches(".jsonl"),
            self.line
        )
    }
}

fn num(v: &Value, path: &[&str], at: &dyn Fn(&str) -> Error) -> Result<Option<f64>> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return Ok(None),
        }
    }
    cur.as_f64()
        .filter(|x| x.is_finite())
        .map(Some)
        .ok_or_else(|| at(&format!("{} (not a number)", path.join("."))))
}

fn parse(text: &str, def: &FileDef, line: usize) -> Result<Run> {
    let at = |f: &str| {
        Error::msg(format!(
            "{}: line {line}: missing or bad field {f}",
            def.file
        ))
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::msg(format!("{}: line {line}: not JSON: {e}", def.file)))?;
    let need = |path: &[&str]| num(&v, path, &at)?.ok_or_else(|| at(&path.join(".")));
    let range = |k: &str| -> Result<(u32, u32)> {
        let r = v["config"][k]
            .as_array()
            .filter(|a| a.len() == 2 && a.iter().all(|x| x.as_u64().is_some()))
            .ok_or_else(|| at(&format!("config.{k} (not [lo, hi])")))?;
        Ok((
            r[0].as_u64().unwrap_or(0) as u32,
            r[1].as_u64().unwrap_or(0) as u32,
        ))
    };
    let spec = SloraWorkloadSpec {
        num_adapters: need(&["config", "num_adapters"])? as u32,
        alpha: need(&["config", "alpha"])?,
        req_rate: need(&["config", "req_rate"])?,
        cv: need(&["config", "cv"])?,
        duration: need(&["config", "duration"])?,
        input_range: range("input_range")?,
        output_range: range("output_range")?,
        seed: 42,
    };
    spec.validate()
        .map_err(|e| Error::msg(format!("{}: line {line}: config: {e}", def.file)))?;
    let aborted = num(&v, &["result", "num_abort"], &at)?;
    let measured = Client {
        throughput: need(&["result", "throughput"])?,
        latency: need(&["result", "avg_latency"])?,
        ttft: need(&["result", "avg_first_token_latency"])?,
        aborted: aborted.unwrap_or(0.0),
        attainment: need(&["result", "avg_attainment"])?,
        requests: spec.num_requests() as f64,
    };
    Ok(Run {
        file: def.file.clone(),
        line,
        setting: def.setting.clone(),
        scheduler: def.scheduler.clone(),
        campaign: def.campaign.clone(),
        spec,
        measured,
        abort_recorded: aborted.is_some(),
    })
}

/// The manifest and every run of the files it lists.
struct Data {
    settings: BTreeMap<String, Setting>,
    files: Vec<FileDef>,
    /// Per file (manifest order), its runs.
    runs: Vec<Vec<Run>>,
}

fn load(dir: &Path) -> Result<Data> {
    let path = dir.join("runs.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let mut runs = Vec::new();
    for f in &m.files {
        if !m.settings.contains_key(&f.setting) {
            return Err(Error::msg(format!(
                "{}: file {}: unknown setting '{}'",
                path.display(),
                f.file,
                f.setting
            )));
        }
        for x in &f.fifo {
            if !m
                .files
                .iter()
                .any(|g| &g.file == x && g.scheduler == "fifo")
            {
                return Err(Error::msg(format!(
                    "{}: file {}: its FIFO file {x} is not listed as a fifo file",
                    path.display(),
                    f.file
                )));
            }
        }
        let p = dir.join(&f.file);
        let text =
            std::fs::read_to_string(&p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                v.push(parse(line, f, i + 1)?);
            }
        }
        runs.push(v);
    }
    Ok(Data {
        settings: m.settings,
        files: m.files,
        runs,
    })
}

/// A variant run with its FIFO counterpart (if any), measured and simulated.
pub struct Row {
    pub variant: Run,
    pub fifo: Option<Run>,
    /// The counterpart is from another campaign than the variant.
    pub cross: bool,
    /// The same configuration's FIFO run in the other campaign, if any: the measured effect against it shows
    /// how much of an effect the FIFO baseline's own campaign-to-campaign spread carries.
    pub alt: Option<Run>,
    pub sim_variant: Client,
    pub sim_fifo: Client,
    /// The LIFO file: the run simulated under the scheduler its launch command names.
    pub sim_as_launched: Option<(String, Client)>,
    /// An abort run: simulated without the queue's order switch (always oldest first), a diagnosis of the
    /// campaigns (never the prediction).
    pub sim_no_switch: Option<Client>,
    pub profile: String,
}

impl Row {
    /// Effect of metric `i`, in percent: the change of a ratio metric, the change of a share in points.
    fn effect(ratio: bool, var: f64, fifo: f64) -> f64 {
        if ratio {
            100.0 * (var / fifo - 1.0)
        } else {
            100.0 * (var - fifo)
        }
    }

    /// (measured, predicted) effect of metric `i`; `None` without a FIFO counterpart.
    pub fn effects(&self, i: usize) -> Option<(f64, f64)> {
        let f = self.fifo.as_ref()?;
        let ratio = Client::METRICS[i].1;
        Some((
            Self::effect(ratio, self.variant.measured.get(i), f.measured.get(i)),
            Self::effect(ratio, self.sim_variant.get(i), self.sim_fifo.get(i)),
        ))
    }

    /// Predicted minus measured effect, points.
    pub fn error(&self, i: usize) -> Option<f64> {
        self.effects(i).map(|(m, p)| p - m)
    }

    /// The measured effect of metric `i` against the other campaign's FIFO run.
    pub fn alt_effect(&self, i: usize) -> Option<f64> {
        let f = self.alt.as_ref()?;
        let ratio = Client::METRICS[i].1;
        Some(Self::effect(
            ratio,
            self.variant.measured.get(i),
            f.measured.get(i),
        ))
    }

    /// Whether the predicted effect of every aimed metric is within the aim of the effect measured against
    /// one of the campaigns' FIFO runs (the same one for all metrics).
    pub fn within_either(&self) -> bool {
        let within = |alt: bool| {
            [0, 1, 3].into_iter().all(|i| {
                let m = if alt {
                    self.alt_effect(i)
                } else {
                    self.effects(i).map(|e| e.0)
                };
                match (m, self.effects(i)) {
                    (Some(m), Some((_, p))) => (p - m).abs() <= AIM_POINTS,
                    _ => false,
                }
            })
        };
        within(false) || within(true)
    }

    /// The largest error, in points, over the aimed metrics (throughput, mean latency, aborted share).
    pub fn worst(&self) -> Option<(usize, f64)> {
        [0, 1, 3]
            .into_iter()
            .filter_map(|i| self.error(i).map(|e| (i, e)))
            .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
    }

    pub fn label(&self) -> String {
        let s = match self.variant.scheduler.as_str() {
            "slora-abort" => "abort",
            "slora-pets" => "PETS",
            x => x,
        };
        let v = &self.variant;
        format!(
            "{s} {} ({} {}) {}",
            v.setting,
            v.suite().replace('_', " "),
            v.campaign,
            v.config()
        )
    }
}

fn profile_path(dir: &Path, s: &Setting) -> PathBuf {
    dir.join(format!("slora-{}-{}.json", s.gpu, s.model))
}

/// The configuration and workload of one run of `setting` (the scheduler is set per simulation).
fn prepare(s: &Setting, spec: &SloraWorkloadSpec, profile: &Path) -> Result<(RunConfig, Workload)> {
    let mut a = RunArgs::defaults();
    a.workload = Some(
        SloraSource {
            spec: spec.clone(),
            prompt_extra: 2,
        }
        .describe(),
    );
    a.gpu = s.gpu.clone();
    a.model = s.model.clone();
    a.ranks = s.ranks.clone();
    a.pool_tokens = Some(s.pool);
    a.profile = Some(profile.to_path_buf());
    let cfg = a.resolve()?;
    let trace = cfg.load_trace()?;
    let (_, w) = sim_core::run::workload(&cfg, trace)?;
    Ok((cfg, w))
}

fn simulate(cfg: &mut RunConfig, w: &Workload, scheduler: &str) -> Result<Client> {
    cfg.scheduler = scheduler.to_string();
    let cost = cfg.cost.clone();
    let mut clock = Simulated(cost.as_ref());
    let ex = sim_core::run::execute(cfg, w, &mut clock)?;
    Ok(client(w, &ex.output))
}

/// Simulates every variant run, its FIFO counterpart and (the LIFO file) its launched scheduler, on the
/// profiles in `profiles`, on `threads` threads.
pub fn rows(data_dir: &Path, profiles: &Path, threads: usize) -> Result<Vec<Row>> {
    let d = load(data_dir)?;
    type Job = (Run, Option<Run>, bool, Option<Run>, Option<String>);
    let mut jobs: Vec<Job> = Vec::new();
    for (f, runs) in d.files.iter().zip(&d.runs) {
        if f.scheduler == "fifo" {
            continue;
        }
        for r in runs {
            let mut pair = None;
            for x in &f.fifo {
                let k = d.files.iter().position(|g| &g.file == x).expect("checked");
                if let Some(q) = d.runs[k].iter().find(|q| q.spec == r.spec) {
                    pair = Some(q.clone());
                    break;
                }
            }
            let cross = pair.as_ref().is_some_and(|q| q.campaign != r.campaign);
            let alt = pair.as_ref().and_then(|p| {
                d.files
                    .iter()
                    .zip(&d.runs)
                    .filter(|(g, _)| {
                        g.scheduler == "fifo" && g.setting == r.setting && g.campaign != p.campaign
                    })
                    .find_map(|(_, rs)| rs.iter().find(|q| q.spec == r.spec).cloned())
            });
            jobs.push((r.clone(), pair, cross, alt, f.launched_as.clone()));
        }
    }
    let threads = threads.clamp(1, jobs.len().max(1));
    let chunk = jobs.len().div_ceil(threads).max(1);
    let settings = &d.settings;
    std::thread::scope(|sc| {
        let handles: Vec<_> = jobs
            .chunks(chunk)
            .map(|c| {
                sc.spawn(move || -> Result<Vec<Row>> {
                    c.iter()
                        .map(|(r, pair, cross, alt, launched)| {
                            let s = &settings[&r.setting];
                            let path = profile_path(profiles, s);
                            let (mut cfg, w) =
                                prepare(s, &r.spec, &path).map_err(|e| e.context(r.name()))?;
                            let sim_variant = simulate(&mut cfg, &w, &r.scheduler)?;
                            let sim_fifo = simulate(&mut cfg, &w, "fifo")?;
                            let sim_as_launched = match launched {
                                Some(x) if x == "fifo" => Some((x.clone(), sim_fifo)),
                                Some(x) => Some((x.clone(), simulate(&mut cfg, &w, x)?)),
                                None => None,
                            };
                            let sim_no_switch = if r.scheduler == "slora-abort" {
                                Some(simulate(&mut cfg, &w, "slora-abort[switch=false]")?)
                            } else {
                                None
                            };
                            Ok(Row {
                                variant: r.clone(),
                                fifo: pair.clone(),
                                cross: *cross,
                                alt: alt.clone(),
                                sim_variant,
                                sim_fifo,
                                sim_as_launched,
                                sim_no_switch,
                                profile: path.display().to_string(),
                            })
                        })
                        .collect()
                })
            })
            .collect();
        let mut out = Vec::new();
        for h in handles {
            out.extend(h.join().expect("an effect simulation thread panicked")?);
        }
        Ok(out)
    })
}

fn pct(x: f64) -> String {
    format!("{x:+.1}%")
}

fn pts(x: f64) -> String {
    format!("{x:+.1}")
}

/// One CSV row per variant run and metric.
pub fn csv(rows: &[Row]) -> String {
    let mut o = String::from(
        "run,scheduler,setting,config,fifo_run,cross_campaign,metric,measured_fifo,measured_variant,\
         simulated_fifo,simulated_variant,measured_effect,predicted_effect,error_points\n",
    );
    for r in rows {
        for (i, (name, _)) in Client::METRICS.iter().enumerate() {
            let f = r.fifo.as_ref();
            let opt = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.6}"));
            let (me, pe) = r.effects(i).unzip();
            let _ = writeln!(
                o,
                "\"{}\",{},{},\"{}\",\"{}\",{},{name},{},{:.6},{:.6},{:.6},{},{},{}",
                r.variant.name(),
                r.variant.scheduler,
                r.variant.setting,
                r.variant.config(),
                f.map_or(String::new(), |f| f.name()),
                r.cross,
                opt(f.map(|f| f.measured.get(i))),
                r.variant.measured.get(i),
                r.sim_fifo.get(i),
                r.sim_variant.get(i),
                opt(me),
                opt(pe),
                opt(r.error(i)),
            );
        }
    }
    o
}

/// The markdown report: the effect table (one row per configuration with a FIFO counterpart), the summary
/// per scheduler, the LIFO file's two hypotheses and the runs without a counterpart.
pub fn markdown(rows: &[Row]) -> String {
    let mut o = String::new();
    let paired: Vec<&Row> = rows.iter().filter(|r| r.fifo.is_some()).collect();
    o += "| run (scheduler, setting, configuration) | throughput: measured / predicted effect | mean \
          latency | mean TTFT | aborted: measured / simulated (share) | worst error, points | mean latency \
          against the other campaign's FIFO |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    for r in &paired {
        let e = |i: usize| {
            let (m, p) = r.effects(i).expect("paired");
            format!("{} / {}", pct(m), pct(p))
        };
        let (wi, we) = r.worst().expect("paired");
        let _ = writeln!(
            o,
            "| {}{} | {} | {} | {} | {} / {} ({:.1}% / {:.1}%) | {} ({}) | {} |",
            r.label(),
            if r.cross { " *" } else { "" },
            e(0),
            e(1),
            e(2),
            if r.variant.abort_recorded {
                format!("{}", r.variant.measured.aborted)
            } else {
                "-".into()
            },
            r.sim_variant.aborted,
            100.0 * r.variant.measured.get(3),
            100.0 * r.sim_variant.get(3),
            pts(we),
            Client::METRICS[wi].0,
            r.alt_effect(1).map_or("-".into(), pct),
        );
    }
    o += "\n`*`: FIFO counterpart from the other campaign (no same-campaign FIFO run of that configuration). \
          Effect = variant / FIFO - 1 (aborted: the share of all requests); error = predicted - measured, \
          percentage points. The last column: the measured effect against the same configuration's FIFO run \
          of the other campaign (main or backup), where there is one: the FIFO baseline's own spread.\n\n";
    o += "| scheduler | runs | within 5 points (throughput, mean latency, aborted share) | ... against either \
          campaign's FIFO | median / worst error: throughput | mean latency | mean TTFT | aborted share | worst \
          run |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    // Per scheduler, then per campaign within it (`all` first).
    let mut scheds: Vec<(String, String)> = Vec::new();
    for r in &paired {
        for c in ["all", r.variant.campaign.as_str()] {
            let k = (r.variant.scheduler.clone(), c.to_string());
            if !scheds.contains(&k) {
                scheds.push(k);
            }
        }
    }
    // A scheduler measured in one campaign needs no line per campaign.
    let single: Vec<String> = scheds
        .iter()
        .filter(|(s, c)| {
            c != "all" && scheds.iter().filter(|(t, d)| t == s && d != "all").count() == 1
        })
        .map(|(s, _)| s.clone())
        .collect();
    scheds.retain(|(s, c)| c == "all" || !single.contains(s));
    scheds.sort_by(|a, b| (&a.0, a.1 != "all", &a.1).cmp(&(&b.0, b.1 != "all", &b.1)));
    for (s, camp) in scheds {
        let sel: Vec<&&Row> = paired
            .iter()
            .filter(|r| r.variant.scheduler == s && (camp == "all" || r.variant.campaign == camp))
            .collect();
        let s = if camp == "all" {
            s
        } else {
            format!("... {camp} campaign")
        };
        let ok = sel
            .iter()
            .filter(|r| r.worst().is_some_and(|w| w.1.abs() <= AIM_POINTS))
            .count();
        let either = sel.iter().filter(|r| r.within_either()).count();
        let stat = |i: usize| {
            let mut e: Vec<f64> = sel
                .iter()
                .filter_map(|r| r.error(i))
                .map(f64::abs)
                .collect();
            let worst = e.iter().copied().fold(0.0, f64::max);
            let med = sim_core::metrics::median(&mut e).unwrap_or(f64::NAN);
            format!("{med:.1} / {worst:.1}")
        };
        let worst = sel
            .iter()
            .max_by(|a, b| {
                let k = |r: &Row| r.worst().map_or(0.0, |w| w.1.abs());
                k(a).total_cmp(&k(b))
            })
            .expect("non-empty");
        let (wi, we) = worst.worst().expect("paired");
        let _ = writeln!(
            o,
            "| {s} | {} | {ok} | {either} | {} | {} | {} | {} | {} ({} {}) |",
            sel.len(),
            stat(0),
            stat(1),
            stat(2),
            stat(3),
            worst.label(),
            Client::METRICS[wi].0,
            pts(we)
        );
    }
    // The FIFO baseline's own spread: configurations FIFO ran in both campaigns.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut spread: [Vec<f64>; 3] = Default::default();
    for r in rows {
        let (Some(a), Some(b)) = (&r.fifo, &r.alt) else {
            continue;
        };
        let key = (r.variant.setting.clone(), r.variant.config());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        for (i, v) in spread.iter_mut().enumerate() {
            // The larger over the smaller: the same number whichever campaign is paired.
            v.push((b.measured.get(i) / a.measured.get(i)).ln().abs().exp() - 1.0);
        }
    }
    if !seen.is_empty() {
        let f = |v: &mut Vec<f64>| {
            let worst = v.iter().copied().fold(0.0, f64::max);
            let med = sim_core::metrics::median(v).unwrap_or(f64::NAN);
            format!("{:.1}% / {:.1}%", 100.0 * med, 100.0 * worst)
        };
        let _ = writeln!(
            o,
            "\nThe FIFO baseline's repeatability: {} configurations ran under FIFO in both campaigns; the two \
             measurements differ by (median / worst) {} in throughput, {} in mean latency, {} in mean TTFT.",
            seen.len(),
            f(&mut spread[0]),
            f(&mut spread[1]),
            f(&mut spread[2])
        );
    }
    // The abort campaigns against the queue with and without its order switch.
    let mut groups: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.sim_no_switch.is_some())
        .map(|r| (r.variant.campaign.clone(), r.variant.setting.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    if !groups.is_empty() {
        o += "\nThe abort runs' mean TTFT (median over each campaign's runs at 2 req/s and above, s) against the \
              simulated queue of c1ddf48 (newest first when arrivals outpace its batches) and the same queue \
              without that order switch (always oldest first):\n\n\
              | campaign, setting | runs | measured | simulated slora-abort | slora-abort[switch=false] |\n\
              | --- | --- | --- | --- | --- |\n";
        for (c, st) in groups {
            let sel: Vec<&Row> = rows
                .iter()
                .filter(|r| {
                    r.sim_no_switch.is_some()
                        && r.variant.campaign == c
                        && r.variant.setting == st
                        && r.variant.spec.req_rate >= 2.0
                })
                .collect();
            let med = |f: &dyn Fn(&Row) -> f64| {
                let mut v: Vec<f64> = sel.iter().map(|r| f(r)).collect();
                sim_core::metrics::median(&mut v).unwrap_or(f64::NAN)
            };
            let _ = writeln!(
                o,
                "| {c}, {st} | {} | {:.2} | {:.2} | {:.2} |",
                sel.len(),
                med(&|r| r.variant.measured.ttft),
                med(&|r| r.sim_variant.ttft),
                med(&|r| r.sim_no_switch.expect("abort").ttft),
            );
        }
    }
    // The LIFO file: which scheduler's simulation matches it.
    let lifo: Vec<&Row> = rows
        .iter()
        .filter(|r| r.sim_as_launched.is_some())
        .collect();
    if !lifo.is_empty() {
        o += "\nThe file labelled LIFO, launched with the FIFO command line, against both hypotheses \
              (simulated; measured FIFO = the same configuration's FIFO run). Attainment: share of \
              requests with TTFT < 6 s (S-LoRA's metric).\n\n\
              | run | attainment: LIFO file / FIFO run measured | simulated lifo / fifo | mean latency: LIFO \
              file / FIFO run | simulated lifo / fifo |\n| --- | --- | --- | --- | --- |\n";
        for r in lifo {
            let (name, launched) = r.sim_as_launched.as_ref().expect("lifo");
            let f = r.fifo.as_ref().map(|f| f.measured);
            let fa = f.map_or("-".into(), |f| format!("{:.3}", f.attainment));
            let fl = f.map_or("-".into(), |f| format!("{:.1} s", f.latency));
            let _ = writeln!(
                o,
                "| {} | {:.3} / {fa} | {:.3} / {:.3} ({name}) | {:.1} s / {fl} | {:.1} s / {:.1} s |",
                r.variant.config(),
                r.variant.measured.attainment,
                r.sim_variant.attainment,
                launched.attainment,
                r.variant.measured.latency,
                r.sim_variant.latency,
                launched.latency,
            );
        }
    }
    // Each run simulated against measured (the variant itself), per scheduler and campaign.
    o += "\nEach variant run simulated against measured, median / worst relative error (the grid: PETS runs of \
          120 s over adapters x alpha x rate x cv with no FIFO counterpart):\n\n\
          | scheduler (campaign) | runs | throughput | mean latency | mean TTFT | aborted: median / worst \
          difference, requests |\n| --- | --- | --- | --- | --- | --- |\n";
    let mut keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.variant.scheduler.clone(), r.variant.campaign.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    for (sc, camp) in keys {
        let sel: Vec<&Row> = rows
            .iter()
            .filter(|r| r.variant.scheduler == sc && r.variant.campaign == camp)
            .collect();
        let stat = |f: &dyn Fn(&Row) -> f64, scale: f64, unit: &str| {
            let mut e: Vec<f64> = sel.iter().map(|r| f(r).abs()).collect();
            let worst = e.iter().copied().fold(0.0, f64::max);
            let med = sim_core::metrics::median(&mut e).unwrap_or(f64::NAN);
            format!("{:.1}{unit} / {:.1}{unit}", scale * med, scale * worst)
        };
        let rel = |i: usize| {
            stat(
                &|r: &Row| r.sim_variant.get(i) / r.variant.measured.get(i) - 1.0,
                100.0,
                "%",
            )
        };
        let _ = writeln!(
            o,
            "| {sc} ({camp}) | {} | {} | {} | {} | {} |",
            sel.len(),
            rel(0),
            rel(1),
            rel(2),
            if sel.iter().all(|r| r.variant.abort_recorded) {
                stat(
                    &|r: &Row| r.sim_variant.aborted - r.variant.measured.aborted,
                    1.0,
                    "",
                )
            } else {
                "- (not recorded)".into()
            }
        );
    }
    o
}

/// The figure: measured effect against predicted effect, one point per configuration, per metric, with the
/// identity line and the +-5 point band.
fn draw<DB: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    rows: &[&Row],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    root.fill(&WHITE)?;
    let root = root.titled(
        "S-LoRA's schedulers: measured effect vs predicted (variant / FIFO, profiles fitted to FIFO runs only)",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 2));
    let groups: Vec<(String, RGBAColor)> = {
        let mut g: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}", r.variant.scheduler, r.variant.setting))
            .collect();
        g.sort();
        g.dedup();
        g.into_iter()
            .enumerate()
            // The figures' palette: no pale yellow on white.
            .map(|(k, n)| (n, crate::experiment::plot::colour(k).to_rgba()))
            .collect()
    };
    for (pi, (area, &mi)) in panels.iter().zip(&[0usize, 1, 2, 3]).enumerate() {
        let pts: Vec<(f64, f64, usize, bool)> = rows
            .iter()
            .filter_map(|r| {
                let (m, p) = r.effects(mi)?;
                let g = format!("{} {}", r.variant.scheduler, r.variant.setting);
                let k = groups.iter().position(|x| x.0 == g).unwrap_or(0);
                Some((m, p, k, r.cross))
            })
            .collect();
        let lo = pts.iter().map(|p| p.0.min(p.1)).fold(0.0, f64::min) - 6.0;
        let hi = pts.iter().map(|p| p.0.max(p.1)).fold(0.0, f64::max) + 6.0;
        let unit = if Client::METRICS[mi].1 { "%" } else { "points" };
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} ({unit})", Client::METRICS[mi].0),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("measured effect")
            .y_desc("predicted effect")
            .max_light_lines(1)
            .label_style(("sans-serif", 11))
            .draw()?;
        chart.draw_series(std::iter::once(Polygon::new(
            vec![
                (lo, lo - AIM_POINTS),
                (hi, hi - AIM_POINTS),
                (hi, hi + AIM_POINTS),
                (lo, lo + AIM_POINTS),
            ],
            BLACK.mix(0.08).filled(),
        )))?;
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5)))?;
        for (k, (name, color)) in groups.iter().enumerate() {
            let c = *color;
            let s = chart.draw_series(
                pts.iter()
                    .filter(|p| p.2 == k && !p.3)
                    .map(|&(x, y, _, _)| Circle::new((x, y), 4, c.filled())),
            )?;
            if pi == 0 {
                s.label(name.clone())
                    .legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
            }
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.2 == k && p.3)
                    .map(|&(x, y, _, _)| Cross::new((x, y), 5, c.stroke_width(2))),
            )?;
        }
        if pi == 0 {
            chart
                .draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())?
                .label("x: FIFO run from the other campaign")
                .legend(|(x, y)| Cross::new((x, y), 5, BLACK.stroke_width(2)));
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label("band: within 5 points")
                .legend(|(x, y)| {
                    Rectangle::new([(x - 5, y - 4), (x + 5, y + 4)], BLACK.mix(0.08).filled())
                });
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 11))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// PNG and SVG of the figure (`path` without extension).
pub fn plot(rows: &[Row], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    crate::experiment::plot::register_font();
    let paired: Vec<&Row> = rows.iter().filter(|r| r.fifo.is_some()).collect();
    let e = |e: Box<dyn std::error::Error>| Error::internal(format!("{}: {e}", path.display()));
    let png = path.with_extension("png");
    draw(
        crate::experiment::glyphs::Glyphs::new(BitMapBackend::new(&png, (1100, 950)))
            .into_drawing_area(),
        &paired,
    )
    .map_err(e)?;
    let svg = path.with_extension("svg");
    draw(
        SVGBackend::new(&svg, (1100, 950)).into_drawing_area(),
        &paired,
    )
    .map_err(e)?;
    Ok(())
}

/// The policy-effect section of plots/README.md, from `effect_slora.md` in the plots folder, if it is there.
pub fn section(out: &Path) -> String {
    let Ok(table) = std::fs::read_to_string(out.join("effect_slora.md")) else {
        return String::new();
    };
    format!(
        "## Policy effect: S-LoRA's other schedulers, predicted and measured\n\n\
         S-LoRA's repository measured its real engine under its early-abort queue (`slora-abort`), its PETS \
         queue (`slora-pets`) and a file labelled LIFO on the workloads of its FIFO runs (A10G, S1 and S2; \
         `calibrate/data/slora-schedulers`, never fitted on). Each run and its FIFO counterpart are replayed \
         with their exact requests on the committed profile (`calibrate/profiles/slora-a10g-llama-7b.json`, \
         fitted to FIFO runs only); the metrics are S-LoRA's benchmark client's (an aborted request counts only \
         in the aborted share). The effect is variant / FIFO - 1, measured and predicted, per configuration; \
         the aim is a predicted effect within 5 percentage points of the measured one on throughput, mean \
         latency and the aborted share. See [docs/fidelity.md](../docs/fidelity.md). Regenerate: `sim fit \
         report`.\n\n{table}\n\
         ![measured vs predicted effect](effect_slora.png)\n\n[SVG](effect_slora.svg) | [every run and \
         metric](effect_slora.csv)\n\n"
    )
}

/// Simulates every run and writes `effect_slora.{csv,md,png,svg}` into `dir`; returns the markdown.
pub fn report(data_dir: &Path, profiles: &Path, dir: &Path, threads: usize) -> Result<String> {
    let rows = rows(data_dir, profiles, threads)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).map_err(|e| Error::internal(format!("{}: {e}", p.display())))
    };
    write("effect_slora.csv", &csv(&rows))?;
    let md = markdown(&rows);
    write("effect_slora.md", &md)?;
    plot(&rows, &dir.join("effect_slora"))?;
    Ok(md)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sim_core::engine::{Abort, RequestRecord};
    use sim_core::workload::Request;

    fn rec(outcome: Outcome, first: Nanos, end: Nanos) -> RequestRecord {
        RequestRecord {
            outcome,
            admitted: 0,
            first_token: first,
            finished: end,
            load_wait: 0,
            max_gap: 0,
            squashes: 0,
            adapter_hit: true,
        }
    }

    #[test]
    fn every_committed_variant_run_parses_and_pairs_with_its_fifo_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DATA);
        let d = load(&dir).unwrap();
        let (mut paired, mut lone, mut cross) = (0, 0, 0);
        for (f, runs) in d.files.iter().zip(&d.runs) {
            if f.scheduler == "fifo" {
                continue;
            }
            for r in runs {
                let pair = f.fifo.iter().find_map(|x| {
                    let k = d.files.iter().position(|g| &g.file == x).unwrap();
                    d.runs[k].iter().find(|q| q.spec == r.spec)
                });
                match pair {
                    Some(q) => {
                        paired += 1;
                        cross += usize::from(q.campaign != r.campaign);
                    }
                    None => lone += 1,
                }
            }
        }
        // 38 abort, 38 PETS and 5 LIFO runs with a FIFO run of the same configuration (PETS alpha and the
        // 0-adapter runs from the other campaign); the 480 runs of the PETS grid have none.
        assert_eq!((paired, cross, lone), (81, 10, 480));
    }

    #[test]
    fn client_metrics_count_an_aborted_request_as_slora_s_benchmark_does() {
        const S: Nanos = 1_000_000_000;
        let req = |id: u32, at: Nanos| Request {
            id,
            arrival: at,
            input: 10,
            output: 10,
            adapter: 0,
        };
        let w = Workload {
            adapters: vec![],
            requests: vec![req(0, 0), req(1, S), req(2, 2 * S)],
        };
        // Request 0: TTFT 1 s, done at 10 s. Request 1: TTFT 7 s (misses 6 s), done at 20 s. Request 2:
        // aborted by the router at 8 s (waited 6 s): the client hears of it at the 5 s tick after, 12 s.
        let out = RunOutput {
            aborted: None,
            records: vec![
                rec(Outcome::Finished, S, 10 * S),
                rec(Outcome::Finished, 8 * S, 20 * S),
                rec(
                    Outcome::Aborted(Abort::Deadline {
                        waited: 6 * S,
                        limit: 5_500_000_000,
                    }),
                    0,
                    8 * S,
                ),
            ],
            stats: Default::default(),
        };
        let c = client(&w, &out);
        assert_eq!(c.throughput, 2.0 / 20.0);
        assert_eq!(c.latency, (10.0 + 19.0) / 2.0);
        assert_eq!(c.ttft, (1.0 + 7.0) / 2.0);
        assert_eq!((c.aborted, c.attainment), (1.0, 1.0 / 3.0));
        // Had the abort been the last response, it would end the benchmark at its tick: 2 + 10 s.
        let mut late = out;
        late.records[2].finished = 25 * S;
        assert_eq!(client(&w, &late).throughput, 2.0 / 27.0);
    }
}
