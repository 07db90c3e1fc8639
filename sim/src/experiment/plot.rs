//! `sim plot`: draws an experiment's results table as the figure its config describes, PNG and SVG, with
//! the CSV of the plotted points. Text uses DejaVu Sans shipped in `sim/assets/` (no system fonts); the PNG's
//! text goes through `glyphs` (plotters' bitmap text misplaces glyphs).
//!
//! The config's `plot` section:
//!
//! ```json
//! "plot": {
//!   "kind": "line",                      // line (numeric or categorical x) | bar (grouped bars) |
//!                                        // timeline | cdf (per-run files: `timeline_plot`)
//!   "x": "rate", "x_label": "Request rate (RPS)",
//!   "series": ["system"],                // axes whose labels name a curve (joined with " / ")
//!   "series_label": "{}",                // optional template for the name, e.g. "{} RPS"
//!   "panels": [ { "y": "ttft_p99_s", "label": "P99 TTFT (s)", "scale": 1, "log": true,
//!                 "hline": 5, "hline_label": "SLO 5 s", "err": ["throughput_slo_ci_lo", "throughput_slo_ci_hi"],
//!                 "zero": false, "min": 0, "max": 100 } ],
//!   "paper": [ { "series": "S-LoRA", "y": "ttft_p99_s", "points": [[6, 1.9], [8, 4.1]] } ]
//! }
//! ```
//!
//! Rows with the same x and series (seeds) are averaged; the whisker is a 95% percentile-bootstrap interval of
//! that mean over the seeds (none for one seed), or the `err` columns (e.g. the throughput's interval).
//! Every series has its own colour, marker and dash pattern, so overlapping curves stay apart in grey
//! print. `log` defaults to on where a panel's positive values span two decades or more; `zero` (the y axis
//! from 0) defaults to on for bars. A metric that is a fraction (hit rate, attainment, share, utilisation)
//! keeps its axis within [0, 1] x `scale`; `min` / `max` clamp any axis. The paper's own numbers are
//! overlaid: `paper` points (metric units), and the experiment's `claims` whose paper value is a number at
//! a plotted point (filled diamonds), or a change / ratio against a baseline (hollow diamonds: the paper's
//! change applied to this model's baseline).

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use super::glyphs::{Glyphs, text_width};
use super::table::Row;
use crate::error::{Error, Result};
use crate::metrics::{mean, percentile};

pub(super) static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";

/// Registers the shipped font for every style plotters asks for.
pub fn register_font() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for style in [
            FontStyle::Normal,
            FontStyle::Bold,
            FontStyle::Italic,
            FontStyle::Oblique,
        ] {
            for family in [FAMILY, "serif", "monospace"] {
                assert!(
                    plotters::style::register_font(family, style, FONT).is_ok(),
                    "the shipped TTF parses"
                );
            }
        }
    });
}

#[derive(Clone, Debug, PartialEq)]
pub enum Kind {
    Line,
    Bar,
}

/// Where a figure's points come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// The results table (one row per run).
    Results,
    /// Each run's timeline (`kind: timeline`; the sweep records them): y over simulated time.
    Timeline,
    /// Each run's latency CDF (`kind: cdf`): quantile against latency, a panel's `y` naming the metric.
    Cdf,
}

#[derive(Clone, Debug)]
pub struct Panel {
    pub y: String,
    pub label: String,
    pub scale: f64,
    /// Log y axis; `None`: where the positive values span two decades or more.
    pub log: Option<bool>,
    pub hline: Option<f64>,
    pub hline_label: String,
    pub err: Option<(String, String)>,
    /// Start the y axis at 0 (default: for bars and fractions).
    pub zero: Option<bool>,
    /// Clamp the y axis (plotted units).
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Timeline columns drawn as a stack (cumulative curves), one panel per series; `_slots` columns in GiB.
    pub stack: Vec<String>,
}

impl Panel {
    /// A metric whose values lie in [0, 1]: its axis never leaves [0, scale].
    pub fn is_fraction(&self) -> bool {
        let y = self.y.as_str();
        [
            "_hit_rate",
            "_attainment",
            "_fraction",
            "_share",
            "_utilisation",
        ]
        .iter()
        .any(|s| y.ends_with(s))
            || y.starts_with("jain_")
    }
}

/// The paper's reported points for one series of one panel (metric units, before `scale`).
#[derive(Clone, Debug)]
pub struct PaperSpec {
    /// The series name as the series axes' labels joined with " / " (empty: the only series).
    pub series: String,
    pub y: String,
    pub points: Vec<(Value, f64)>,
}

#[derive(Clone, Debug)]
pub struct PlotSpec {
    pub kind: Kind,
    pub source: Source,
    /// Timeline sample interval of the runs (`kind: timeline`), seconds.
    pub interval_s: f64,
    pub x: String,
    pub x_label: String,
    pub series: Vec<String>,
    /// How a series is named: `{}` is replaced by its axis labels (e.g. "{} RPS").
    pub series_label: String,
    pub panels: Vec<Panel>,
    pub paper: Vec<PaperSpec>,
}

fn bad(path: &Path, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::msg(format!("{}: plot.{field}: {msg}", path.display()))
}

impl PlotSpec {
    pub fn parse(path: &Path, v: &Value) -> Result<PlotSpec> {
        let Value::Object(m) = v else {
            return Err(Error::msg(format!(
                "{}: plot: expected an object",
                path.display()
            )));
        };
        let known = [
            "kind",
            "x",
            "x_label",
            "series",
            "series_label",
            "panels",
            "paper",
            "interval_s",
        ];
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(
                path,
                k,
                format!("unknown field; valid: {}", known.join(", ")),
            ));
        }
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let (kind, source) = match s("kind").as_deref() {
            None | Some("line") => (Kind::Line, Source::Results),
            Some("bar") => (Kind::Bar, Source::Results),
            Some("timeline") => (Kind::Line, Source::Timeline),
            Some("cdf") => (Kind::Line, Source::Cdf),
            Some(o) => {
                return Err(bad(
                    path,
                    "kind",
                    format!("'{o}': valid: line, bar, timeline, cdf"),
                ));
            }
        };
        let interval_s = match m.get("interval_s") {
            None => 1.0,
            Some(v) => v
                .as_f64()
                .filter(|x| *x > 0.0 && x.is_finite())
                .ok_or_else(|| bad(path, "interval_s", "expected a positive number"))?,
        };
        let x = s("x").ok_or_else(|| bad(path, "x", "expected the name of a grid axis"))?;
        let x_label = s("x_label").unwrap_or_else(|| x.clone());
        let series = match m.get("series") {
            None => Vec::new(),
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(xs)) => xs
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(path, "series", "expected axis names"))
                })
                .collect::<Result<_>>()?,
            Some(_) => {
                return Err(bad(
                    path,
                    "series",
                    "expected an axis name or a list of them",
                ));
            }
        };
        let Some(Value::Array(ps)) = m.get("panels") else {
            return Err(bad(path, "panels", "expected a list of panels"));
        };
        if ps.is_empty() {
            return Err(bad(path, "panels", "empty list"));
        }
        let mut panels = Vec::new();
        for (i, p) in ps.iter().enumerate() {
            let f = |k: &str| format!("panels[{i}].{k}");
            let Value::Object(p) = p else {
                return Err(bad(path, &f(""), "expected an object"));
            };
            let known = [
                "y",
                "label",
                "scale",
                "log",
                "hline",
                "hline_label",
                "err",
                "zero",
                "min",
                "max",
                "stack",
            ];
            if let Some(k) = p.keys().find(|k| !known.contains(&k.as_str())) {
                return Err(bad(
                    path,
                    &f(k),
                    format!("unknown field; valid: {}", known.join(", ")),
                ));
            }
            let y = p
                .get("y")
                .and_then(Value::as_str)
                .ok_or_else(|| bad(path, &f("y"), "expected a metric name"))?;
            let num = |k: &str| match p.get(k) {
                None => Ok(None),
                Some(v) => v
                    .as_f64()
                    .map(Some)
                    .ok_or_else(|| bad(path, &f(k), "expected a number")),
            };
            let err = match p.get("err") {
                None => None,
                Some(Value::Array(xs)) if xs.len() == 2 && xs.iter().all(Value::is_string) => {
                    Some((
                        xs[0].as_str().unwrap_or_default().to_string(),
                        xs[1].as_str().unwrap_or_default().to_string(),
                    ))
                }
                Some(_) => return Err(bad(path, &f("err"), "expected [low column, high column]")),
            };
            panels.push(Panel {
                y: y.to_string(),
                label: p
                    .get("label")
                    .and_then(Value::as_str)
                    .unwrap_or(y)
                    .to_string(),
                scale: num("scale")?.unwrap_or(1.0),
                log: p.get("log").and_then(Value::as_bool),
                hline: num("hline")?,
                hline_label: p
                    .get("hline_label")
                    .and_then(Value::as_str)
                    .unwrap_or("SLO")
                    .to_string(),
                err,
                zero: p.get("zero").and_then(Value::as_bool),
                min: num("min")?,
                max: num("max")?,
                stack: match p.get("stack") {
                    None => Vec::new(),
                    Some(Value::Array(xs))
                        if xs.iter().all(Value::is_string) && source == Source::Timeline =>
                    {
                        xs.iter()
                            .map(|x| x.as_str().unwrap_or_default().to_string())
                            .collect()
                    }
                    Some(_) => {
                        return Err(bad(
                            path,
                            &f("stack"),
                            "expected a list of timeline columns (kind: timeline)",
                        ));
                    }
                },
            });
        }
        let series_label = s("series_label").unwrap_or_else(|| "{}".into());
        let paper = match m.get("paper") {
            None => Vec::new(),
            Some(Value::Array(xs)) => xs
                .iter()
                .enumerate()
                .map(|(i, v)| PaperSpec::parse(path, i, v))
                .collect::<Result<_>>()?,
            Some(_) => return Err(bad(path, "paper", "expected a list")),
        };
        Ok(PlotSpec {
            kind,
            source,
            interval_s,
            x,
            x_label,
            series,
            series_label,
            panels,
            paper,
        })
    }
}

impl PaperSpec {
    fn parse(path: &Path, i: usize, v: &Value) -> Result<PaperSpec> {
        let f = |k: &str| format!("paper[{i}].{k}");
        let Value::Object(m) = v else {
            return Err(bad(path, &f(""), "expected {series, y, points}"));
        };
        if let Some(k) = m
            .keys()
            .find(|k| !["series", "y", "points"].contains(&k.as_str()))
        {
            return Err(bad(path, &f(k), "unknown field; valid: series, y, points"));
        }
        let y = m
            .get("y")
            .and_then(Value::as_str)
            .ok_or_else(|| bad(path, &f("y"), "expected a metric name"))?;
        let points = match m.get("points") {
            Some(Value::Array(ps)) => ps
                .iter()
                .map(|p| match p.as_array().map(Vec::as_slice) {
                    Some([x, y]) if y.is_number() => {
                        Ok((x.clone(), y.as_f64().unwrap_or(f64::NAN)))
                    }
                    _ => Err(bad(path, &f("points"), "expected [[x, y], ...]")),
                })
                .collect::<Result<_>>()?,
            _ => return Err(bad(path, &f("points"), "expected [[x, y], ...]")),
        };
        Ok(PaperSpec {
            series: m.get("series").map(label_text).unwrap_or_default(),
            y: y.to_string(),
            points,
        })
    }
}

/// What a whisker shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Whisker {
    /// One row per point: nothing to show.
    None,
    /// A 95% percentile-bootstrap interval of the mean over seeds.
    Bootstrap,
    /// The panel's `err` columns (e.g. the bootstrap interval of the median per-seed throughput).
    Columns,
}

impl Whisker {
    pub fn name(self) -> &'static str {
        match self {
            Whisker::None => "none",
            Whisker::Bootstrap => "bootstrap95_mean",
            Whisker::Columns => "err_columns",
        }
    }
}

/// Bootstrap resamples per interval; the seed is fixed so a figure is reproducible.
const RESAMPLES: usize = 2000;

/// The 95% percentile-bootstrap interval of the mean of `ys` (n >= 2).
pub fn bootstrap_ci(ys: &[f64]) -> (f64, f64) {
    let mut rng = StdRng::seed_from_u64(0xB007_57A9);
    let n = ys.len();
    let mut means: Vec<f64> = (0..RESAMPLES)
        .map(|_| (0..n).map(|_| ys[rng.random_range(0..n)]).sum::<f64>() / n as f64)
        .collect();
    means.sort_by(f64::total_cmp);
    (percentile(&means, 0.025), percentile(&means, 0.975))
}

/// A paper number drawn on a panel (plotted units).
#[derive(Clone, Debug)]
pub struct PaperMark {
    /// Index into the panel's series.
    pub series: usize,
    pub x: f64,
    pub y: f64,
    /// The paper's change or ratio applied to this model's baseline, not a number the paper reports.
    pub relative: bool,
}

/// One plotted point: the mean of the rows at (series, x) and its whisker.
#[derive(Clone, Debug)]
pub struct Point {
    pub x: f64,
    pub x_label: String,
    pub mean: f64,
    pub lo: f64,
    pub hi: f64,
    pub n: usize,
}

#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    /// The series axes' labels joined with " / " (what `paper` and claims name).
    pub key: String,
    pub points: Vec<Point>,
}

#[derive(Clone, Debug)]
pub struct PanelData {
    pub panel: Panel,
    pub series: Vec<Series>,
    pub whisker: Whisker,
    pub paper: Vec<PaperMark>,
}

#[derive(Clone, Debug)]
pub struct Figure {
    pub title: String,
    pub kind: Kind,
    pub x_label: String,
    /// Category names when x is not numeric (or for bars).
    pub categories: Option<Vec<String>>,
    pub panels: Vec<PanelData>,
    /// No series axis: one curve per panel, named after the panel (no legend needed).
    pub series_unnamed: bool,
}

pub fn label_text(v: &Value) -> String {
    v.as_str().map_or_else(|| v.to_string(), str::to_string)
}

fn num(v: Option<&Value>) -> Option<f64> {
    match v? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Groups and averages the rows (in run order) into the figure's points, with their whiskers and the
/// config's `paper` points.
pub fn figure(title: &str, spec: &PlotSpec, rows: &[Row]) -> Result<Figure> {
    let need = |c: &str| -> Result<()> {
        if rows.first().is_some_and(|r| !r.contains_key(c)) {
            return Err(Error::msg(format!(
                "results have no column '{c}' (named in the plot spec)"
            )));
        }
        Ok(())
    };
    need(&spec.x)?;
    for s in &spec.series {
        need(s)?;
    }
    let x_of = |r: &Row| r.get(&spec.x).map(label_text).unwrap_or_default();
    let mut xs: Vec<String> = Vec::new();
    for r in rows {
        let x = x_of(r);
        if !xs.contains(&x) {
            xs.push(x);
        }
    }
    let numeric = spec.kind == Kind::Line && rows.iter().all(|r| num(r.get(&spec.x)).is_some());
    let xpos = |x: &str| -> f64 {
        if numeric {
            x.parse().unwrap_or(f64::NAN)
        } else {
            xs.iter().position(|c| c == x).unwrap_or(0) as f64
        }
    };
    let series_of = |r: &Row| -> String {
        spec.series
            .iter()
            .map(|s| r.get(s).map(label_text).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" / ")
    };
    let mut names: Vec<String> = Vec::new();
    for r in rows {
        let s = series_of(r);
        if !names.contains(&s) {
            names.push(s);
        }
    }
    let mut panels = Vec::new();
    for p in &spec.panels {
        need(&p.y)?;
        let mut series = Vec::new();
        let mut whisker = Whisker::None;
        for name in &names {
            let mut points = Vec::new();
            for x in &xs {
                let sel: Vec<&Row> = rows
                    .iter()
                    .filter(|r| series_of(r) == *name && x_of(r) == *x)
                    .collect();
                let ys: Vec<f64> = sel
                    .iter()
                    .filter_map(|r| num(r.get(&p.y)))
                    .filter(|v| v.is_finite())
                    .map(|v| v * p.scale)
                    .collect();
                if ys.is_empty() {
                    continue;
                }
                let m = mean(&ys);
                let (mut lo, mut hi) = (m, m);
                if let Some((cl, ch)) = &p.err {
                    let col = |c: &str| {
                        sel.iter()
                            .filter_map(|r| num(r.get(c)))
                            .map(|v| v * p.scale)
                            .collect::<Vec<_>>()
                    };
                    // An open bracket (no failing rate found) has no upper whisker.
                    lo = col(cl).into_iter().fold(m, f64::min);
                    hi = col(ch).into_iter().fold(m, f64::max);
                    whisker = Whisker::Columns;
                } else if ys.len() > 1 {
                    (lo, hi) = bootstrap_ci(&ys);
                    whisker = Whisker::Bootstrap;
                }
                points.push(Point {
                    x: xpos(x),
                    x_label: x.clone(),
                    mean: m,
                    lo,
                    hi,
                    n: ys.len(),
                });
            }
            if numeric {
                points.sort_by(|a, b| a.x.total_cmp(&b.x));
            }
            let display = if name.is_empty() {
                p.label.clone()
            } else {
                spec.series_label.replace("{}", name)
            };
            series.push(Series {
                name: display,
                key: name.clone(),
                points,
            });
        }
        let mut pd = PanelData {
            panel: p.clone(),
            series,
            whisker,
            paper: Vec::new(),
        };
        for ps in spec.paper.iter().filter(|ps| ps.y == p.y) {
            for (x, y) in &ps.points {
                let x = label_text(x);
                pd.mark(&ps.series, xpos(&x), y * p.scale, false);
            }
        }
        panels.push(pd);
    }
    Ok(Figure {
        title: title.to_string(),
        kind: spec.kind.clone(),
        x_label: spec.x_label.clone(),
        categories: if numeric { None } else { Some(xs) },
        panels,
        series_unnamed: spec.series.is_empty(),
    })
}

impl PanelData {
    /// Adds a paper mark on the series keyed `key` (or the only series) at (x, y), if both exist.
    fn mark(&mut self, key: &str, x: f64, y: f64, relative: bool) {
        let i = match self.series.iter().position(|s| s.key == key) {
            Some(i) => i,
            None if self.series.len() == 1 => 0,
            None => return,
        };
        if x.is_finite() && y.is_finite() {
            self.paper.push(PaperMark {
                series: i,
                x,
                y,
                relative,
            });
        }
    }
}

/// Whether two table values name the same thing: numerically when both are numbers (8 and 8.0 alike).
fn same(a: &Value, b: &Value) -> bool {
    match (num(Some(a)), num(Some(b))) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => label_text(a) == label_text(b),
    }
}

/// A number at the start of a claim's paper text: "74 ms", "8.6 RPS", "-14.7%", "1.5x" -> (value, unit).
fn paper_number(token: &str) -> Option<(f64, String)> {
    let t = token.trim();
    let end = t
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_digit() || c == '.' || (i == 0 && (c == '-' || c == '+'))))
        .map_or(t.len(), |(i, _)| i);
    let v: f64 = t[..end].parse().ok()?;
    Some((v, t[end..].trim().to_string()))
}

/// Adds the paper's numbers that the experiment's `claims` state at a plotted point: a value in the
/// claim's unit at `at` (filled diamond), or a change ("-14.7%") or ratio ("1.5x") against `vs`, drawn at
/// this model's `vs` value times the paper's factor (hollow diamond). Claims that name no plotted x and
/// series, or whose paper text is not such a number, are left out.
pub fn add_claims(fig: &mut Figure, spec: &PlotSpec, rows: &[Row], claims: &[Value]) {
    for c in claims.iter().filter_map(Value::as_object) {
        let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
        let (metric, unit, paper) = (s("metric"), s("unit"), s("paper"));
        let Some(at) = c.get("at").and_then(Value::as_object) else {
            continue;
        };
        let Some(x) = at.get(&spec.x) else {
            continue;
        };
        // The series the claim names, as the rows spell it (8 may be written 8.0).
        let Some(row) = rows.iter().find(|r| {
            r.get(&spec.x).is_some_and(|v| same(v, x))
                && spec
                    .series
                    .iter()
                    .all(|a| matches!((r.get(a), at.get(a)), (Some(v), Some(w)) if same(v, w)))
        }) else {
            continue;
        };
        let key = spec
            .series
            .iter()
            .map(|a| row.get(a).map(label_text).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" / ");
        let xpos = match &fig.categories {
            Some(cats) => match cats.iter().position(|c| *c == label_text(&row[&spec.x])) {
                Some(i) => i as f64,
                None => continue,
            },
            None => match num(Some(x)) {
                Some(v) => v,
                None => continue,
            },
        };
        let to_metric = |v: f64| match unit {
            "ms" => v / 1e3,
            "%" => v / 1e2,
            _ => v,
        };
        let tokens: Vec<(f64, String)> = paper.split([',', ';']).filter_map(paper_number).collect();
        let absolute = tokens
            .iter()
            .find(|(_, u)| *u == unit && !unit.is_empty())
            .map(|(v, _)| to_metric(*v));
        let relative = c.get("vs").and_then(Value::as_object).and_then(|vs| {
            let factor = tokens.iter().find_map(|(v, u)| match u.as_str() {
                "x" => Some(*v),
                "%" if unit != "%" || c.contains_key("vs") => Some(1.0 + v / 100.0),
                _ => None,
            })?;
            let base: Vec<f64> = rows
                .iter()
                .filter(|r| vs.iter().all(|(k, v)| r.get(k).is_some_and(|x| same(x, v))))
                .filter_map(|r| num(r.get(metric)))
                .filter(|v| v.is_finite())
                .collect();
            (!base.is_empty()).then(|| mean(&base) * factor)
        });
        for pd in fig.panels.iter_mut().filter(|pd| pd.panel.y == metric) {
            let k = pd.panel.scale;
            match (absolute, relative) {
                (Some(v), _) => pd.mark(&key, xpos, v * k, false),
                (None, Some(v)) => pd.mark(&key, xpos, v * k, true),
                _ => {}
            }
        }
    }
}

/// The plotted points as CSV: panel metric, series, x, mean, whisker (and what it is), number of rows
/// averaged; then the paper marks (`interval` = paper or paper_relative).
pub fn figure_csv(fig: &Figure) -> String {
    let q = |s: &str| {
        if s.contains([',', '"']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut o = String::from("metric,label,series,x,mean,low,high,interval,n\n");
    for p in &fig.panels {
        for s in &p.series {
            for pt in &s.points {
                let w = if pt.n > 1 || p.whisker == Whisker::Columns {
                    p.whisker
                } else {
                    Whisker::None
                };
                o += &format!(
                    "{},{},{},{},{},{},{},{},{}\n",
                    q(&p.panel.y),
                    q(&p.panel.label),
                    q(&s.name),
                    q(&pt.x_label),
                    pt.mean,
                    pt.lo,
                    pt.hi,
                    w.name(),
                    pt.n
                );
            }
        }
        for m in &p.paper {
            let x = match &fig.categories {
                Some(c) => c.get(m.x as usize).cloned().unwrap_or_default(),
                None => fmt_num(m.x),
            };
            o += &format!(
                "{},{},{},{},{},,,{},0\n",
                q(&p.panel.y),
                q(&p.panel.label),
                q(&p.series[m.series].name),
                q(&x),
                m.y,
                if m.relative {
                    "paper_relative"
                } else {
                    "paper"
                }
            );
        }
    }
    o
}

/// Okabe-Ito's colour-blind-safe palette (yellow left out: too light on white), then grey.
const PALETTE: [RGBColor; 8] = [
    RGBColor(0, 114, 178),
    RGBColor(213, 94, 0),
    RGBColor(0, 158, 115),
    RGBColor(204, 121, 167),
    RGBColor(86, 180, 233),
    RGBColor(230, 159, 0),
    RGBColor(0, 0, 0),
    RGBColor(120, 120, 120),
];

/// Dash patterns (on, off, ... pixels): solid, dashed, dotted, dash-dot, long dash, dash-dot-dot.
const DASHES: [&[f64]; 6] = [
    &[],
    &[9.0, 5.0],
    &[2.0, 4.0],
    &[10.0, 4.0, 2.0, 4.0],
    &[18.0, 5.0],
    &[10.0, 3.0, 2.0, 3.0, 2.0, 3.0],
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Marker {
    Circle,
    Square,
    TriangleUp,
    Diamond,
    TriangleDown,
    Cross,
    Plus,
}

const MARKERS: [Marker; 7] = [
    Marker::Circle,
    Marker::Square,
    Marker::TriangleUp,
    Marker::Diamond,
    Marker::TriangleDown,
    Marker::Cross,
    Marker::Plus,
];

/// Series i's colour, marker and dash pattern.
fn look(i: usize) -> (RGBColor, Marker, &'static [f64]) {
    (
        PALETTE[i % PALETTE.len()],
        MARKERS[i % MARKERS.len()],
        DASHES[i % DASHES.len()],
    )
}

pub fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    let a = v.abs();
    let s = if a >= 100.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

type DrawResult = std::result::Result<(), String>;

fn err_text<E: std::error::Error + Send + Sync>(e: DrawingAreaErrorKind<E>) -> String {
    e.to_string()
}

/// Draws a marker centred on pixel (x, y) of `area`; `hollow` draws its outline only.
fn draw_marker<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    m: Marker,
    (x, y): (i32, i32),
    r: i32,
    color: RGBColor,
    hollow: bool,
) -> DrawResult {
    let fill = if hollow {
        color.stroke_width(2)
    } else {
        color.filled()
    };
    let rf = r as f64;
    let poly = |pts: &[(f64, f64)]| -> Vec<(i32, i32)> {
        pts.iter()
            .map(|&(dx, dy)| (x + (dx * rf).round() as i32, y + (dy * rf).round() as i32))
            .collect()
    };
    let shape: Option<Vec<(i32, i32)>> = match m {
        Marker::Circle => {
            return area.draw(&Circle::new((x, y), r, fill)).map_err(err_text);
        }
        Marker::Square => Some(poly(&[(-0.9, -0.9), (0.9, -0.9), (0.9, 0.9), (-0.9, 0.9)])),
        Marker::TriangleUp => Some(poly(&[(0.0, -1.25), (1.15, 0.85), (-1.15, 0.85)])),
        Marker::TriangleDown => Some(poly(&[(0.0, 1.25), (1.15, -0.85), (-1.15, -0.85)])),
        Marker::Diamond => Some(poly(&[
            (0.0, -1.35),
            (1.05, 0.0),
            (0.0, 1.35),
            (-1.05, 0.0),
        ])),
        Marker::Cross | Marker::Plus => None,
    };
    match shape {
        Some(pts) if hollow => {
            let mut closed = pts.clone();
            closed.push(pts[0]);
            area.draw(&PathElement::new(closed, color.stroke_width(2)))
                .map_err(err_text)
        }
        Some(pts) => area.draw(&Polygon::new(pts, fill)).map_err(err_text),
        None => {
            let arms: [[(f64, f64); 2]; 2] = if m == Marker::Cross {
                [[(-1.0, -1.0), (1.0, 1.0)], [(-1.0, 1.0), (1.0, -1.0)]]
            } else {
                [[(-1.2, 0.0), (1.2, 0.0)], [(0.0, -1.2), (0.0, 1.2)]]
            };
            for a in arms {
                area.draw(&PathElement::new(poly(&a), color.stroke_width(3)))
                    .map_err(err_text)?;
            }
            Ok(())
        }
    }
}

/// The pieces of a polyline (pixels) that a dash pattern draws.
pub fn dash(points: &[(i32, i32)], pattern: &[f64]) -> Vec<Vec<(i32, i32)>> {
    if pattern.is_empty() || points.len() < 2 {
        return vec![points.to_vec()];
    }
    let mut out = Vec::new();
    let mut cur: Vec<(i32, i32)> = vec![points[0]];
    let (mut k, mut left, mut on) = (0, pattern[0], true);
    for w in points.windows(2) {
        let (a, b) = (
            (w[0].0 as f64, w[0].1 as f64),
            (w[1].0 as f64, w[1].1 as f64),
        );
        let len = ((b.0 - a.0).powi(2) + (b.1 - a.1).powi(2)).sqrt();
        let mut at = 0.0;
        while len - at > left {
            at += left;
            let p = (
                (a.0 + (b.0 - a.0) * at / len).round() as i32,
                (a.1 + (b.1 - a.1) * at / len).round() as i32,
            );
            if on {
                cur.push(p);
                out.push(std::mem::take(&mut cur));
            } else {
                cur = vec![p];
            }
            on = !on;
            k = (k + 1) % pattern.len();
            left = pattern[k];
        }
        left -= len - at;
        if on {
            cur.push(w[1]);
        }
    }
    if on && cur.len() > 1 {
        out.push(cur);
    }
    out
}

/// What the legend lists.
enum Entry {
    Series(usize, String),
    Hline(String),
    Paper { relative: bool },
    Note(String),
}

fn legend_entries(fig: &Figure) -> Vec<Entry> {
    let mut v = Vec::new();
    let first = &fig.panels[0];
    let named = first.series.len() > 1 || !fig.series_unnamed;
    if named {
        for (i, s) in first.series.iter().enumerate() {
            v.push(Entry::Series(i, s.name.clone()));
        }
    }
    let mut hlines: Vec<String> = Vec::new();
    for p in &fig.panels {
        if p.panel.hline.is_some() && !hlines.contains(&p.panel.hline_label) {
            hlines.push(p.panel.hline_label.clone());
        }
    }
    v.extend(hlines.into_iter().map(Entry::Hline));
    let marks = || fig.panels.iter().flat_map(|p| p.paper.iter());
    if marks().any(|m| !m.relative) {
        v.push(Entry::Paper { relative: false });
    }
    if marks().any(|m| m.relative) {
        v.push(Entry::Paper { relative: true });
    }
    let seeds = fig
        .panels
        .iter()
        .flat_map(|p| p.series.iter().flat_map(|s| s.points.iter().map(|q| q.n)))
        .max()
        .unwrap_or(1);
    let columns = fig
        .panels
        .iter()
        .filter(|p| p.whisker == Whisker::Columns)
        .find_map(|p| p.panel.err.as_ref());
    let note = if let Some((lo, hi)) = columns {
        if lo.ends_with("_ci_lo") {
            "throughput: median of the per-seed searches; whiskers: its 95% bootstrap interval"
                .to_string()
        } else {
            format!("whiskers: the columns {lo} .. {hi}")
        }
    } else if fig.panels.iter().any(|p| p.whisker == Whisker::Bootstrap) {
        format!("points: mean over {seeds} seeds; whiskers: 95% bootstrap interval of the mean")
    } else {
        "one run per point: no interval".to_string()
    };
    v.push(Entry::Note(note));
    v
}

const LEGEND_FONT: f64 = 15.0;
const LEGEND_ROW: i32 = 24;
const SAMPLE_W: i32 = 40;

/// Lays the entries out in rows of at most `width` pixels: (entry index, x, row).
fn legend_layout(entries: &[Entry], width: i32) -> (Vec<(usize, i32, i32)>, i32) {
    let mut out = Vec::new();
    let (mut x, mut row) = (20, 0);
    for (i, e) in entries.iter().enumerate() {
        let text = match e {
            Entry::Series(_, t) | Entry::Hline(t) | Entry::Note(t) => t.clone(),
            Entry::Paper { relative: false } => "paper's number".into(),
            Entry::Paper { relative: true } => "paper's change on this model's baseline".into(),
        };
        let sample = if matches!(e, Entry::Note(_)) {
            0
        } else {
            SAMPLE_W + 8
        };
        let w = sample + text_width(&text, LEGEND_FONT) as i32 + 26;
        if x + w > width && x > 20 {
            (x, row) = (20, row + 1);
        }
        out.push((i, x, row));
        x += w;
    }
    let rows = out.last().map_or(0, |l| l.2 + 1);
    (out, rows)
}

fn draw_legend<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    entries: &[Entry],
) -> DrawResult {
    let (w, _) = area.dim_in_pixel();
    let (layout, _) = legend_layout(entries, w as i32);
    let style =
        TextStyle::from((FAMILY, LEGEND_FONT).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    let bar = fig.kind == Kind::Bar;
    for (i, x, row) in layout {
        let y = 8 + row * LEGEND_ROW + LEGEND_ROW / 2;
        let text_x = x + SAMPLE_W + 8;
        match &entries[i] {
            Entry::Series(si, name) => {
                let (c, m, d) = look(*si);
                if bar {
                    area.draw(&Rectangle::new(
                        [(x + 8, y - 7), (x + 30, y + 7)],
                        c.filled(),
                    ))
                    .map_err(err_text)?;
                } else {
                    for seg in dash(&[(x, y), (x + SAMPLE_W, y)], d) {
                        area.draw(&PathElement::new(seg, c.stroke_width(2)))
                            .map_err(err_text)?;
                    }
                    draw_marker(area, m, (x + SAMPLE_W / 2, y), 5, c, false)?;
                }
                area.draw_text(name, &style, (text_x, y))
                    .map_err(err_text)?;
            }
            Entry::Hline(label) => {
                area.draw(&PathElement::new(
                    vec![(x, y), (x + SAMPLE_W, y)],
                    RGBColor(200, 0, 0).stroke_width(1),
                ))
                .map_err(err_text)?;
                area.draw_text(label, &style, (text_x, y))
                    .map_err(err_text)?;
            }
            Entry::Paper { relative } => {
                draw_marker(
                    area,
                    Marker::Diamond,
                    (x + SAMPLE_W / 2, y),
                    6,
                    BLACK,
                    *relative,
                )?;
                let t = if *relative {
                    "paper's change on this model's baseline"
                } else {
                    "paper's number"
                };
                area.draw_text(t, &style, (text_x, y)).map_err(err_text)?;
            }
            Entry::Note(t) => {
                let grey = style.color(&RGBColor(90, 90, 90));
                area.draw_text(t, &grey, (x, y)).map_err(err_text)?;
            }
        }
    }
    Ok(())
}

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err_text)?;
    let root = root.titled(&fig.title, (FAMILY, 26)).map_err(err_text)?;
    let entries = legend_entries(fig);
    let (w, h) = root.dim_in_pixel();
    let (_, rows) = legend_layout(&entries, w as i32);
    let legend_h = 16 + rows * LEGEND_ROW;
    let (plots, legend) = root.split_vertically(h as i32 - legend_h);
    let areas = plots.split_evenly((1, fig.panels.len()));
    for (area, pd) in areas.iter().zip(&fig.panels) {
        let (x0, x1) = x_range(fig, pd);
        let (y0, y1, log) = y_range(fig, pd);
        draw_panel(area, fig, pd, (x0, x1), (y0, y1), log)?;
    }
    draw_legend(&legend, fig, &entries)?;
    root.present().map_err(err_text)?;
    Ok(())
}

fn x_range(fig: &Figure, pd: &PanelData) -> (f64, f64) {
    if let Some(c) = &fig.categories {
        return (-0.5, c.len() as f64 - 0.5);
    }
    let (x0, x1) = pd
        .series
        .iter()
        .flat_map(|s| s.points.iter().map(|q| q.x))
        .chain(pd.paper.iter().map(|m| m.x))
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), x| {
            (a.min(x), b.max(x))
        });
    if !(x0.is_finite() && x1.is_finite()) {
        return (0.0, 1.0);
    }
    let pad = ((x1 - x0) * 0.04).max(0.5 * x0.abs().max(1.0) * 0.04);
    (x0 - pad, x1 + pad)
}

/// The y axis: (y0, y1, log); a log axis is in log10 of the values.
fn y_range(fig: &Figure, pd: &PanelData) -> (f64, f64, bool) {
    let p = &pd.panel;
    let fraction = p.is_fraction();
    let mut ys: Vec<f64> = pd
        .series
        .iter()
        .flat_map(|s| s.points.iter().flat_map(|q| [q.mean, q.lo, q.hi]))
        .chain(pd.paper.iter().map(|m| m.y))
        .filter(|v| v.is_finite())
        .collect();
    ys.extend(p.hline);
    let (lo, hi) = ys
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0, false);
    }
    let log = p.log.unwrap_or(!fraction && lo > 0.0 && hi / lo >= 100.0) && lo > 0.0;
    if log {
        let (a, b) = (lo.log10(), hi.log10());
        let span = (b - a).max(0.5);
        return (a - 0.06 * span, b + 0.08 * span, true);
    }
    let zero = p.zero.unwrap_or(fig.kind == Kind::Bar || fraction);
    let span = (hi - lo).max(hi.abs().max(1e-9) * 0.1);
    let mut y0 = if zero && lo >= 0.0 {
        0.0
    } else {
        lo - 0.05 * span
    };
    // Room above the highest point for a bar's value label.
    let mut y1 = hi + if fig.kind == Kind::Bar { 0.1 } else { 0.05 } * span;
    if fraction {
        y0 = y0.max(0.0);
        y1 = y1.min(p.scale);
    }
    if let Some(m) = p.min {
        y0 = m;
    }
    if let Some(m) = p.max {
        y1 = m;
    }
    if y1 <= y0 {
        y1 = y0 + 1.0;
    }
    (y0, y1, false)
}

/// Grid lines of a log10 axis from y0 to y1 (log10 values), labelled at 1-2-5 (or at decades when the axis
/// spans more than 2.5 of them).
pub fn log_ticks(y0: f64, y1: f64) -> Vec<(f64, Option<String>)> {
    let labelled: &[f64] = if y1 - y0 > 2.5 {
        &[1.0]
    } else {
        &[1.0, 2.0, 5.0]
    };
    let mut out = Vec::new();
    for d in (y0.floor() as i32)..=(y1.ceil() as i32) {
        for m in 1..10 {
            let v = m as f64 * 10f64.powi(d);
            let t = v.log10();
            if t >= y0 && t <= y1 {
                out.push((t, labelled.contains(&(m as f64)).then(|| fmt_num(v))));
            }
        }
    }
    out
}

/// One panel; y0..y1 is the y axis (log10 of the values for a log panel).
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    pd: &PanelData,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    log: bool,
) -> DrawResult
where
    DB::ErrorType: 'static,
{
    let p = &pd.panel;
    let ty = |v: f64| {
        let v = if log { v.max(1e-12).log10() } else { v };
        v.clamp(y0, y1)
    };
    let ncat = fig.categories.as_ref().map_or(0, Vec::len);
    let xcats = fig.categories.clone();
    let xfmt = move |v: &f64| match &xcats {
        Some(c) => {
            let i = v.round();
            if (v - i).abs() < 1e-6 && i >= 0.0 {
                c.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        }
        None => fmt_num(*v),
    };
    let yfmt = |v: &f64| fmt_num(*v);
    let chart = ChartBuilder::on(area)
        .caption(&p.label, (FAMILY, 20))
        .margin(14)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err_text)?;
    let mut chart = chart;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(fig.x_label.as_str())
        .y_desc(p.label.as_str())
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(RGBColor(235, 235, 235));
    if ncat > 0 {
        mesh.x_labels(ncat).disable_x_mesh();
    }
    if log {
        mesh.y_labels(0).disable_y_mesh();
    }
    mesh.draw().map_err(err_text)?;
    let (bx, by) = area.get_base_pixel();
    // Pixel coordinates inside `area` of a data point.
    let px = |x: f64, y: f64| {
        let (a, b) = chart.backend_coord(&(x, y));
        (a - bx, b - by)
    };
    if log {
        let style =
            TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (t, label) in log_ticks(y0, y1) {
            let shade = if label.is_some() {
                RGBColor(200, 200, 200)
            } else {
                RGBColor(235, 235, 235)
            };
            area.draw(&PathElement::new(
                vec![px(x0, t), px(x1, t)],
                shade.stroke_width(1),
            ))
            .map_err(err_text)?;
            if let Some(l) = label {
                let (x, y) = px(x0, t);
                area.draw_text(&l, &style, (x - 8, y)).map_err(err_text)?;
                area.draw(&PathElement::new(
                    vec![(x - 5, y), (x, y)],
                    BLACK.stroke_width(1),
                ))
                .map_err(err_text)?;
            }
        }
    }
    if let Some(h) = p.hline {
        area.draw(&PathElement::new(
            vec![px(x0, ty(h)), px(x1, ty(h))],
            RGBColor(200, 0, 0).stroke_width(1),
        ))
        .map_err(err_text)?;
    }
    let nser = pd.series.len().max(1);
    let bar_w = 0.8 / nser as f64;
    let bar_x = |si: usize, x: f64| x - 0.4 + bar_w * (si as f64 + 0.5);
    let whisker = |x: f64, lo: f64, hi: f64, cap: i32, color: RGBColor| -> DrawResult {
        let (a, b) = (px(x, ty(lo)), px(x, ty(hi)));
        area.draw(&PathElement::new(vec![a, b], color.stroke_width(1)))
            .map_err(err_text)?;
        for (cx, cy) in [a, b] {
            area.draw(&PathElement::new(
                vec![(cx - cap, cy), (cx + cap, cy)],
                color.stroke_width(1),
            ))
            .map_err(err_text)?;
        }
        Ok(())
    };
    let base = if log { y0 } else { 0f64.clamp(y0, y1) };
    for (si, s) in pd.series.iter().enumerate() {
        let (color, marker, pattern) = look(si);
        match fig.kind {
            Kind::Line => {
                let pts: Vec<(i32, i32)> = s.points.iter().map(|q| px(q.x, ty(q.mean))).collect();
                for seg in dash(&pts, pattern) {
                    area.draw(&PathElement::new(seg, color.stroke_width(2)))
                        .map_err(err_text)?;
                }
                for q in s.points.iter().filter(|q| q.hi > q.lo) {
                    whisker(q.x, q.lo, q.hi, 4, color)?;
                }
                // Later series draw smaller markers: coinciding points show as nested shapes.
                let r = 7 - si.min(3) as i32;
                // A dense curve (a timeline, a CDF) keeps a dozen markers: enough to tell it apart.
                for &pt in pts.iter().step_by((pts.len() / 12).max(1)) {
                    draw_marker(area, marker, pt, r, color, false)?;
                }
            }
            Kind::Bar => {
                for q in &s.points {
                    let c = bar_x(si, q.x);
                    let corners = [px(c - 0.45 * bar_w, base), px(c + 0.45 * bar_w, ty(q.mean))];
                    area.draw(&Rectangle::new(corners, color.filled()))
                        .map_err(err_text)?;
                }
                for q in s.points.iter().filter(|q| q.hi > q.lo) {
                    whisker(bar_x(si, q.x), q.lo, q.hi, 4, BLACK)?;
                }
                // The value above each bar (when there is room for it).
                if nser * ncat <= 16 {
                    let style = TextStyle::from((FAMILY, 12).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom));
                    for q in &s.points {
                        let (x, y) = px(bar_x(si, q.x), ty(q.hi.max(q.mean)));
                        area.draw_text(&fmt_num(q.mean), &style, (x, y - 2))
                            .map_err(err_text)?;
                    }
                }
            }
        }
    }
    for m in &pd.paper {
        let (color, _, _) = look(m.series);
        let x = match fig.kind {
            Kind::Bar => bar_x(m.series, m.x),
            Kind::Line => m.x,
        };
        let at = px(x, ty(m.y));
        // A white halo keeps a mark visible on a bar or a curve of its own colour.
        draw_marker(area, Marker::Diamond, at, 10, WHITE, false)?;
        if m.relative {
            draw_marker(area, Marker::Diamond, at, 7, color, true)?;
        } else {
            draw_marker(area, Marker::Diamond, at, 8, BLACK, false)?;
            draw_marker(area, Marker::Diamond, at, 5, color, false)?;
        }
    }
    Ok(())
}

/// Writes `dir/name.png`, `dir/name.svg` and `dir/name.csv`.
pub fn write_figure(fig: &Figure, dir: &Path, name: &str) -> Result<()> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let width = (620 * fig.panels.len() as u32).max(960);
    let (_, rows) = legend_layout(&legend_entries(fig), width as i32);
    let size = (width, 520 + rows as u32 * LEGEND_ROW as u32);
    let png = dir.join(format!("{name}.png"));
    render(
        Glyphs::new(BitMapBackend::new(&png, size)).into_drawing_area(),
        fig,
    )
    .map_err(|e| Error::internal(format!("{}: {e}", png.display())))?;
    let svg = dir.join(format!("{name}.svg"));
    render(SVGBackend::new(&svg, size).into_drawing_area(), fig)
        .map_err(|e| Error::internal(format!("{}: {e}", svg.display())))?;
    let csv = dir.join(format!("{name}.csv"));
    std::fs::write(&csv, figure_csv(fig))
        .map_err(|e| Error::internal(format!("{}: {e}", csv.display())))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rows(v: &[(f64, &str, f64)], y: &str) -> Vec<Row> {
        v.iter()
            .map(|&(x, s, m)| {
                json!({"rate": x, "system": s, y: m})
                    .as_object()
                    .unwrap()
                    .clone()
            })
            .collect()
    }

    fn spec(panel: Value) -> PlotSpec {
        PlotSpec::parse(
            Path::new("x.json"),
            &json!({"x": "rate", "series": "system", "panels": [panel]}),
        )
        .unwrap()
    }

    #[test]
    fn fraction_axes_stay_in_their_domain_and_decades_go_log() {
        let r = rows(&[(1.0, "a", 0.9), (2.0, "a", 1.0)], "adapter_hit_rate");
        let s = spec(json!({"y": "adapter_hit_rate", "scale": 100}));
        let f = figure("t", &s, &r).unwrap();
        let (y0, y1, log) = y_range(&f, &f.panels[0]);
        assert_eq!(
            (y0, y1, log),
            (0.0, 100.0, false),
            "a hit rate's axis ends at 100%, not 120%"
        );
        let r = rows(&[(1.0, "a", 0.1), (2.0, "a", 50.0)], "ttft_p99_s");
        let f = figure("t", &spec(json!({"y": "ttft_p99_s"})), &r).unwrap();
        assert!(y_range(&f, &f.panels[0]).2, "2.7 decades: log");
        let f = figure("t", &spec(json!({"y": "ttft_p99_s", "log": false})), &r).unwrap();
        assert!(
            !y_range(&f, &f.panels[0]).2,
            "unless the config says linear"
        );
        let r = rows(&[(1.0, "a", 1.0), (2.0, "a", 5.0)], "ttft_p99_s");
        let f = figure("t", &spec(json!({"y": "ttft_p99_s"})), &r).unwrap();
        assert!(!y_range(&f, &f.panels[0]).2, "under two decades: linear");
    }

    #[test]
    fn whiskers_are_a_bootstrap_interval_of_the_mean_not_min_max() {
        let ys = [1.0, 2.0, 3.0, 4.0, 10.0];
        let (lo, hi) = bootstrap_ci(&ys);
        assert!(
            lo > 1.0 && hi < 10.0 && lo < 4.0 && hi > 4.0,
            "({lo}, {hi})"
        );
        assert_eq!(
            bootstrap_ci(&ys),
            (lo, hi),
            "seeded: the same figure every time"
        );
        let r = rows(&[(1.0, "a", 3.0), (1.0, "a", 5.0), (2.0, "a", 4.0)], "m");
        let f = figure("t", &spec(json!({"y": "m"})), &r).unwrap();
        let p = &f.panels[0].series[0].points;
        assert_eq!(f.panels[0].whisker, Whisker::Bootstrap);
        assert_eq!((p[0].mean, p[0].lo, p[0].hi, p[0].n), (4.0, 3.0, 5.0, 2));
        assert_eq!((p[1].lo, p[1].hi), (4.0, 4.0), "one seed: no interval");
    }

    #[test]
    fn series_differ_by_marker_and_dash_not_only_colour() {
        for i in 0..6 {
            for j in 0..i {
                let (a, b) = (look(i), look(j));
                assert!(a.1 != b.1 && a.2 != b.2 && a.0 != b.0, "{i} vs {j}");
            }
        }
        // A dashed 30-pixel line: on 9, off 5, on 9, off 5, on 2.
        let segs = dash(&[(0, 0), (30, 0)], &[9.0, 5.0]);
        let spans: Vec<(i32, i32)> = segs.iter().map(|s| (s[0].0, s[s.len() - 1].0)).collect();
        assert_eq!(spans, [(0, 9), (14, 23), (28, 30)]);
        assert_eq!(dash(&[(0, 0), (5, 5)], &[]), [vec![(0, 0), (5, 5)]]);
    }

    #[test]
    fn the_papers_numbers_are_drawn_where_a_claim_puts_them() {
        assert_eq!(paper_number("74 ms"), Some((74.0, "ms".into())));
        assert_eq!(paper_number(" -14.7%"), Some((-14.7, "%".into())));
        assert_eq!(paper_number("1.5x"), Some((1.5, "x".into())));
        assert_eq!(paper_number("(part of -24.6%)"), None);
        let r = rows(
            &[(8.0, "S-LoRA", 4.0), (8.0, "Chameleon", 3.5)],
            "ttft_p99_s",
        );
        let s = spec(json!({"y": "ttft_p99_s", "scale": 1000}));
        let mut f = figure("t", &s, &r).unwrap();
        let claims = [
            json!({"paper": "-25%", "metric": "ttft_p99_s", "unit": "s",
                   "at": {"rate": 8, "system": "Chameleon"}, "vs": {"rate": 8, "system": "S-LoRA"}}),
            json!({"paper": "3.1 s", "metric": "ttft_p99_s", "unit": "s", "at": {"rate": 8, "system": "S-LoRA"}}),
            json!({"paper": "about half", "metric": "ttft_p99_s", "unit": "s", "at": {"rate": 8, "system": "S-LoRA"}}),
            json!({"paper": "9 s", "metric": "ttft_p99_s", "unit": "s", "at": {"rate": 9, "system": "S-LoRA"}}),
        ];
        add_claims(&mut f, &s, &r, &claims);
        let m = &f.panels[0].paper;
        assert_eq!(m.len(), 2, "{m:?}");
        // 25% below this model's S-LoRA (4 s), in ms; and the paper's own 3.1 s.
        assert_eq!((m[0].series, m[0].y, m[0].relative), (1, 3000.0, true));
        assert_eq!((m[1].series, m[1].y, m[1].relative), (0, 3100.0, false));
        assert!(figure_csv(&f).contains("ttft_p99_s,ttft_p99_s,S-LoRA,8,3100,,,paper,0"));
    }
}
