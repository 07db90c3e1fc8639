//! Experiments: one JSON config per paper figure, a grid over `sim run` options, run in parallel by
//! `sim sweep` into a results table (CSV + Parquet) and drawn by `sim plot`. See docs/experiments.md.
//!
//! A config (`experiments/*.json`):
//!
//! ```json
//! {
//!   "name": "fig11_ttft_vs_rate", "title": "...", "caption": "...",
//!   "base": { "length-scale": 0.31 },                      // options of every run (`sim run` names)
//!   "grid": {                                               // cartesian product, last axis fastest
//!     "system": [ { "label": "S-LoRA", "cache": "none", "scheduler": "fifo" }, ... ],
//!     "rate": [6, 8, 9],                                    // a plain axis: its name is the option
//!     "seed": [0, 1, 2]
//!   },
//!   "throughput": { "lo": 2, "hi": 16, "tol": 0.05, "seeds": [0, 1, 2] },   // optional: bisect the rate
//!   "ci": { "base": {...}, "grid": {...}, "throughput": {...} },            // overrides at --scale ci
//!   "plot": { ... }, "claims": [ ... ]
//! }
//! ```
//!
//! An axis value is a scalar (the option's value; lists are joined with commas) or an object: `label` is
//! what the results table and the plot show, every other key is an option.

pub mod cli;
pub mod glyphs;
pub mod observables;
pub mod plot;
pub mod report;
pub mod stats;
pub mod sweep;
pub mod table;
pub mod throughput;
pub mod timeline_plot;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::runner::{RunArgs, RunConfig};
use sim_core::error::{Error, Result};

/// The keys of a JSON object in file order.
struct Keys(Vec<String>);

impl<'de> Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Keys, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut m: A,
            ) -> std::result::Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some((k, _)) = m.next_entry::<String, serde::de::IgnoredAny>()? {
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

#[derive(Deserialize)]
struct CiOrder {
    grid: Option<Keys>,
}

/// Where the axes are, in file order (everything else is read from the `Value`).
#[derive(Deserialize)]
struct AxisOrder {
    grid: Option<Keys>,
    ci: Option<CiOrder>,
}

/// Full scale (the committed figures) or the reduced CI scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Scale {
    Full,
    Ci,
}

impl Scale {
    pub fn name(self) -> &'static str {
        match self {
            Scale::Full => "full",
            Scale::Ci => "ci",
        }
    }
}

/// Requests per run at `--scale ci` unless the config's `ci.base` says otherwise.
pub const CI_MAX_REQUESTS: u64 = 2000;

#[derive(Clone, Debug)]
pub struct AxisValue {
    /// Shown in the results table and the plots: a number or a string.
    pub label: Value,
    /// `sim run` options (long name without dashes, value).
    pub options: Vec<(String, String)>,
}

#[derive(Clone, Debug)]
pub struct Axis {
    pub name: String,
    pub values: Vec<AxisValue>,
    /// `"member": "ensemble"`: one run per plausible parameter vector of each grid point's cost model
    /// (`crate::ensemble`), expanded when the runs are listed.
    pub ensemble: bool,
}

/// The grid axis over the model's plausible parameter vectors, and the column naming each one's parameters.
pub const MEMBER: &str = "member";
pub const MEMBER_PARAMS: &str = "member_params";

/// Throughput at the SLO: the highest rate whose `metric` (seeds averaged) is at most `slo`.
#[derive(Clone, Debug)]
pub struct ThroughputSpec {
    pub lo: f64,
    pub hi: f64,
    pub max: f64,
    pub tol: f64,
    pub seeds: Vec<u64>,
    pub metric: String,
    /// None: the run's `--ttft-slo`.
    pub slo: Option<f64>,
}

#[derive(Clone, Debug)]
pub struct Experiment {
    pub name: String,
    pub title: String,
    pub caption: String,
    pub path: PathBuf,
    pub scale: Scale,
    pub base: Vec<(String, String)>,
    pub axes: Vec<Axis>,
    pub throughput: Option<ThroughputSpec>,
    /// The effective config (scale overrides applied), as written next to the results.
    pub json: Value,
}

/// One grid point.
#[derive(Clone, Debug)]
pub struct Run {
    pub index: usize,
    /// (axis name, label) in axis order.
    pub point: Vec<(String, Value)>,
    /// Every option of the run, base first, later axes overriding earlier ones.
    pub options: Vec<(String, String)>,
    /// The options resolved: what the run executes.
    pub config: RunConfig,
}

impl Run {
    /// The options as one `sim run` command line (also the resume key).
    pub fn args_string(&self) -> String {
        join_options(&self.options)
    }
}

pub fn join_options(opts: &[(String, String)]) -> String {
    opts.iter()
        .map(|(k, v)| format!("--{k} {v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn bad(path: &Path, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::msg(format!("{}: {field}: {msg}", path.display()))
}

/// A JSON scalar or list as an option value.
fn option_value(path: &Path, field: &str, v: &Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        Value::Array(xs) => xs
            .iter()
            .map(|x| match x {
                Value::Array(_) | Value::Object(_) | Value::Null => {
                    Err(bad(path, field, "a list may hold only numbers and strings"))
                }
                x => option_value(path, field, x),
            })
            .collect::<Result<Vec<_>>>()
            .map(|xs| xs.join(",")),
        Value::Null | Value::Object(_) => {
            Err(bad(path, field, "expected a number, string or list"))
        }
    }
}

/// Builds `RunArgs` from options by their `sim run` names (the values as the flags take them).
pub fn run_args(options: &[(String, String)]) -> std::result::Result<RunArgs, String> {
    RunArgs::with_options(
        options
            .iter()
            .map(|(k, v)| (k.as_str(), Value::String(v.clone()))),
    )
}

fn set_option(opts: &mut Vec<(String, String)>, k: &str, v: String) {
    match opts.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v,
        None => opts.push((k.to_string(), v)),
    }
}

/// Applies `--scale ci`: the default reductions, then the config's own `ci` section (key-wise merge of
/// `base`, `grid`, `throughput`).
fn apply_scale(mut root: Map<String, Value>, scale: Scale) -> Map<String, Value> {
    let ci = root.remove("ci");
    if scale == Scale::Full {
        if let Some(ci) = ci {
            root.insert("ci".into(), ci);
        }
        return root;
    }
    let obj = |root: &mut Map<String, Value>, k: &str| -> Option<Map<String, Value>> {
        match root.get(k) {
            Some(Value::Object(m)) => Some(m.clone()),
            None => Some(Map::new()),
            Some(_) => None,
        }
    };
    if let Some(mut base) = obj(&mut root, "base") {
        base.entry("max-requests")
            .or_insert(Value::from(CI_MAX_REQUESTS));
        root.insert("base".into(), Value::Object(base));
    }
    if let Some(Value::Object(grid)) = root.get_mut("grid")
        && let Some(Value::Array(seeds)) = grid.get_mut("seed")
    {
        seeds.truncate(1);
    }
    // A length rule solved over seeds (`knee[...,seeds=N]`) keeps its first, as the seed axes do.
    let one_seed = |v: &mut Value| {
        if let Value::String(s) = v
            && let Some(i) = s.find("seeds=")
        {
            let end = s[i + 6..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(s.len(), |j| i + 6 + j);
            s.replace_range(i..end, "seeds=1");
        }
    };
    if let Some(Value::Object(base)) = root.get_mut("base")
        && let Some(v) = base.get_mut("length-scale")
    {
        one_seed(v);
    }
    if let Some(Value::Object(grid)) = root.get_mut("grid") {
        for axis in grid.values_mut() {
            if let Value::Array(vals) = axis {
                for v in vals {
                    match v {
                        Value::Object(o) => {
                            if let Some(x) = o.get_mut("length-scale") {
                                one_seed(x);
                            }
                        }
                        v => one_seed(v),
                    }
                }
            }
        }
    }
    if let Some(Value::Object(t)) = root.get_mut("throughput") {
        if let Some(Value::Array(seeds)) = t.get_mut("seeds") {
            seeds.truncate(1);
        }
        let tol = t.get("tol").and_then(Value::as_f64).unwrap_or(0.05);
        t.insert("tol".into(), Value::from(tol.max(0.5)));
    }
    if let Some(Value::Object(ci)) = ci {
        for (section, v) in ci {
            match (root.get_mut(&section), v) {
                (Some(Value::Object(dst)), Value::Object(src)) => dst.extend(src),
                (_, v) => {
                    root.insert(section, v);
                }
            }
        }
    }
    root
}

impl Experiment {
    pub fn load(path: &Path, scale: Scale) -> Result<Experiment> {
        let text = sim_core::json::read_text(path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let json: Value = sim_core::json::parse(&text).map_err(|e| bad(path, "JSON", e))?;
        // serde_json's map sorts keys; the grid's axis order (which axis varies fastest) is the file's.
        // (A grid that is not an object is reported by `build`.)
        let order: AxisOrder = serde_json::from_str(&text).unwrap_or(AxisOrder {
            grid: None,
            ci: None,
        });
        let mut axes: Vec<String> = order.grid.map(|g| g.0).unwrap_or_default();
        let ci = order
            .ci
            .and_then(|c| c.grid)
            .map(|g| g.0)
            .unwrap_or_default();
        if scale == Scale::Ci {
            axes.extend(
                ci.into_iter()
                    .filter(|a| !axes.contains(a))
                    .collect::<Vec<_>>(),
            );
        }
        Self::build(path, json, scale, &axes)
    }

    /// From parsed JSON; axes in the order of `json`'s keys (sorted).
    pub fn from_json(path: &Path, json: Value, scale: Scale) -> Result<Experiment> {
        Self::build(path, json, scale, &[])
    }

    fn build(path: &Path, json: Value, scale: Scale, axis_order: &[String]) -> Result<Experiment> {
        let Value::Object(root) = json else {
            return Err(bad(path, "top level", "expected a JSON object"));
        };
        let root = apply_scale(root, scale);
        let known = [
            "name",
            "title",
            "caption",
            "base",
            "grid",
            "throughput",
            "ci",
            "plot",
            "claims",
            "notes",
            "physics",
            "observables",
        ];
        if let Some(k) = root.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(
                path,
                k,
                format!("unknown field; valid: {}", known.join(", ")),
            ));
        }
        let text = |k: &str, required: bool| -> Result<String> {
            match root.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                None if !required => Ok(String::new()),
                _ => Err(bad(path, k, "expected a string")),
            }
        };
        let name = text("name", true)?;
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(bad(
                path,
                "name",
                "must be non-empty letters, digits, '_' or '-'",
            ));
        }
        let title = text("title", true)?;
        let caption = text("caption", false)?;

        let mut base = Vec::new();
        match root.get("base") {
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    base.push((k.clone(), option_value(path, &format!("base.{k}"), v)?));
                }
            }
            None => {}
            Some(_) => return Err(bad(path, "base", "expected an object of options")),
        }
        let Some(Value::Object(grid)) = root.get("grid") else {
            return Err(bad(
                path,
                "grid",
                "expected an object of axes (option -> list of values)",
            ));
        };
        let mut names: Vec<&String> = axis_order
            .iter()
            .filter(|a| grid.contains_key(*a))
            .collect();
        names.extend(grid.keys().filter(|k| !axis_order.contains(k)));
        let mut axes = Vec::new();
        for name in names {
            let vals = &grid[name];
            let field = format!("grid.{name}");
            if name == MEMBER && vals.as_str() == Some("ensemble") {
                axes.push(Axis {
                    name: name.clone(),
                    values: vec![AxisValue {
                        label: Value::from(0),
                        options: vec![],
                    }],
                    ensemble: true,
                });
                continue;
            }
            let Value::Array(vals) = vals else {
                return Err(bad(
                    path,
                    &field,
                    if name == MEMBER {
                        "expected a list of members or \"ensemble\" (every plausible parameter vector)"
                    } else {
                        "expected a list of values"
                    },
                ));
            };
            if vals.is_empty() {
                return Err(bad(path, &field, "empty list"));
            }
            let mut values = Vec::new();
            for (i, v) in vals.iter().enumerate() {
                let field = format!("{field}[{i}]");
                values.push(match v {
                    Value::Object(m) => {
                        let label = match m.get("label") {
                            Some(l @ (Value::String(_) | Value::Number(_))) => l.clone(),
                            _ => {
                                return Err(bad(
                                    path,
                                    &field,
                                    "an object value needs a 'label' (string or number)",
                                ));
                            }
                        };
                        let mut options = Vec::new();
                        for (k, v) in m.iter().filter(|(k, _)| *k != "label") {
                            options
                                .push((k.clone(), option_value(path, &format!("{field}.{k}"), v)?));
                        }
                        AxisValue { label, options }
                    }
                    v => AxisValue {
                        label: v.clone(),
                        options: vec![(name.clone(), option_value(path, &field, v)?)],
                    },
                });
            }
            axes.push(Axis {
                name: name.clone(),
                values,
                ensemble: false,
            });
        }
        if axes.is_empty() {
            return Err(bad(
                path,
                "grid",
                "no axes: give at least one option with a list of values",
            ));
        }
        let throughput = match root.get("throughput") {
            None => None,
            Some(Value::Object(t)) => Some(Self::throughput(path, t)?),
            Some(_) => return Err(bad(path, "throughput", "expected an object")),
        };
        if throughput.is_some() && axes.iter().any(|a| a.name == "rate") {
            return Err(bad(
                path,
                "grid.rate",
                "a throughput experiment searches the rate; remove the rate axis",
            ));
        }
        if throughput.is_some() && axes.iter().any(|a| a.name == "seed") {
            return Err(bad(
                path,
                "grid.seed",
                "a throughput experiment averages throughput.seeds; remove the seed axis",
            ));
        }
        let exp = Experiment {
            name,
            title,
            caption,
            path: path.to_path_buf(),
            scale,
            base,
            axes,
            throughput,
            json: Value::Object(root),
        };
        // Validate every run's options now: a typo fails before anything runs.
        exp.runs()?;
        if let Some(p) = exp.json.get("plot") {
            let spec = plot::PlotSpec::parse(path, p)?;
            for (i, p) in spec.panels.iter().enumerate() {
                if spec.source != plot::Source::Results {
                    // Timeline columns and CDF metrics: checked when the figure is drawn.
                    continue;
                }
                exp.check_column(&format!("plot.panels[{i}].y"), &p.y)?;
                if let Some((lo, hi)) = &p.err {
                    exp.check_column(&format!("plot.panels[{i}].err"), lo)?;
                    exp.check_column(&format!("plot.panels[{i}].err"), hi)?;
                }
            }
        }
        if let Some(o) = exp.json.get("observables") {
            let sec = observables::Section::parse(path, o)?;
            for (i, r) in sec.rows.iter().enumerate() {
                exp.check_column(&format!("observables.rows[{i}].metric"), &r.metric)?;
                if let Some(p) = &r.per {
                    exp.check_column(&format!("observables.rows[{i}].per"), p)?;
                }
            }
            for a in &sec.settings {
                if !exp.axes.iter().any(|x| &x.name == a) {
                    return Err(bad(
                        path,
                        "observables.settings",
                        format!("'{a}' is not a grid axis"),
                    ));
                }
            }
        }
        if let Some(Value::Array(claims)) = exp.json.get("claims") {
            for (i, c) in claims.iter().enumerate() {
                if let Some(m) = c.get("metric").and_then(Value::as_str) {
                    exp.check_column(&format!("claims[{i}].metric"), m)?;
                }
            }
        }
        Ok(exp)
    }

    fn throughput(path: &Path, t: &Map<String, Value>) -> Result<ThroughputSpec> {
        let known = ["lo", "hi", "max", "tol", "seeds", "metric", "slo"];
        if let Some(k) = t.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(
                path,
                &format!("throughput.{k}"),
                format!("unknown field; valid: {}", known.join(", ")),
            ));
        }
        let num = |k: &str, d: f64| -> Result<f64> {
            match t.get(k) {
                None => Ok(d),
                Some(v) => v
                    .as_f64()
                    .filter(|x| *x > 0.0 && x.is_finite())
                    .ok_or_else(|| {
                        bad(
                            path,
                            &format!("throughput.{k}"),
                            "expected a positive number",
                        )
                    }),
            }
        };
        let lo = num("lo", 1.0)?;
        let hi = num("hi", 16.0)?;
        let max = num("max", 4.0 * hi)?;
        let tol = num("tol", 0.05)?;
        if !(lo < hi && hi <= max) {
            return Err(bad(path, "throughput", "need lo < hi <= max"));
        }
        let seeds = match t.get("seeds") {
            None => vec![0],
            Some(Value::Array(xs)) if !xs.is_empty() => xs
                .iter()
                .map(|x| {
                    x.as_u64().ok_or_else(|| {
                        bad(path, "throughput.seeds", "expected non-negative integers")
                    })
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(bad(
                    path,
                    "throughput.seeds",
                    "expected a non-empty list of seeds",
                ));
            }
        };
        let metric = match t.get("metric") {
            None => "ttft_p99_s".to_string(),
            Some(Value::String(s)) => s.clone(),
            Some(_) => return Err(bad(path, "throughput.metric", "expected a metric name")),
        };
        let slo = match t.get("slo") {
            None => None,
            Some(_) => Some(num("slo", 1.0)?),
        };
        Ok(ThroughputSpec {
            lo,
            hi,
            max,
            tol,
            seeds,
            metric,
            slo,
        })
    }

    /// Every grid point in order (last axis fastest), with its options validated.
    pub fn runs(&self) -> Result<Vec<Run>> {
        // The base's own values against their ranges, so a bad one is reported against `base`.
        run_args(&self.base)
            .and_then(|a| a.check().map_err(|e| e.to_string()))
            .map_err(|e| bad(&self.path, "base", e))?;
        let total: usize = self.axes.iter().map(|a| a.values.len()).product();
        let mut runs = Vec::with_capacity(total);
        for index in 0..total {
            let mut rem = index;
            let mut picks = vec![0; self.axes.len()];
            for (i, a) in self.axes.iter().enumerate().rev() {
                picks[i] = rem % a.values.len();
                rem /= a.values.len();
            }
            let mut options = self.base.clone();
            let mut point = Vec::new();
            for (a, &p) in self.axes.iter().zip(&picks) {
                let v = &a.values[p];
                for (k, val) in &v.options {
                    set_option(&mut options, k, val.clone());
                }
                point.push((a.name.clone(), v.label.clone()));
            }
            let at = |point: &[(String, Value)]| {
                let at = point
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if at.is_empty() {
                    "base".to_string()
                } else {
                    format!("grid point {at}")
                }
            };
            // The model's plausible parameter vectors at this grid point: one run each.
            let members: Vec<Option<crate::ensemble::Member>> = if self.ensemble() {
                let args = run_args(&options).map_err(|e| bad(&self.path, &at(&point), e))?;
                crate::ensemble::of_run(&args)
                    .map_err(|e| bad(&self.path, &at(&point), e))?
                    .into_iter()
                    .map(Some)
                    .collect()
            } else {
                vec![None]
            };
            for m in members {
                let (mut options, mut point) = (options.clone(), point.clone());
                if let Some(m) = &m {
                    set_option(&mut options, MEMBER, m.index.to_string());
                    if let Some(p) = point.iter_mut().find(|(k, _)| k == MEMBER) {
                        p.1 = Value::from(m.index);
                    }
                    point.push((MEMBER_PARAMS.into(), Value::from(m.params_text())));
                }
                let config = run_args(&options)
                    .and_then(|a| a.resolve().map_err(|e| e.to_string()))
                    .map_err(|e| bad(&self.path, &at(&point), e))?;
                runs.push(Run {
                    index: runs.len(),
                    point,
                    options,
                    config,
                });
            }
        }
        Ok(runs)
    }

    /// Whether a grid axis runs every member of the model's plausible set.
    pub fn ensemble(&self) -> bool {
        self.axes.iter().any(|a| a.ensemble)
    }

    /// `name` must be a column of this experiment's results: a summary key (`Summary` or a fleet's, so a
    /// renamed metric fails here, not as an empty figure) or one of the table's own columns.
    fn check_column(&self, field: &str, name: &str) -> Result<()> {
        if sim_core::metrics::Summary::is_key(name)
            || sim_core::fleet::SUMMARY_KEYS.contains(&name)
            || sweep::leading_columns(self).iter().any(|c| c == name)
        {
            return Ok(());
        }
        Err(bad(
            &self.path,
            field,
            format!("'{name}' is not a column of the results (a summary key or a grid axis)"),
        ))
    }

    /// Every `experiments/*.json` in `dir`, sorted by file name.
    pub fn load_dir(dir: &Path, scale: Scale) -> Result<Vec<Experiment>> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::msg(format!("{}: {e}", dir.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        paths.sort();
        paths.iter().map(|p| Experiment::load(p, scale)).collect()
    }
}
