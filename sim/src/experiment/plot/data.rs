//! A figure's data: the results rows grouped and averaged into points with their whiskers, the paper's
//! numbers placed on them, and the plotted points as CSV.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::Value;

use super::spec::{Kind, Panel, PlotSpec};
use super::style::fmt_num;
use crate::experiment::table::Row;
use sim_core::error::{Error, Result};
use sim_core::metrics::{mean, percentile};

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
    /// Curves over time or distributions of single runs (`timeline_plot`): no whisker, and no note saying so.
    pub time_series: bool,
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
        time_series: false,
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
pub(super) fn paper_number(token: &str) -> Option<(f64, String)> {
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
    let cols = [
        "metric", "label", "series", "x", "mean", "low", "high", "interval", "n",
    ];
    sim_core::csv_out::to_string(&cols, |t| figure_rows(fig, t))
}

fn figure_rows(fig: &Figure, t: &mut sim_core::csv_out::CsvOut<Vec<u8>>) -> std::io::Result<()> {
    for p in &fig.panels {
        // A stack's panels share their axis label: the caption (the series) tells them apart.
        let panel_name = match &p.panel.caption {
            Some(c) => format!("{c}: {}", p.panel.label),
            None => p.panel.label.clone(),
        };
        for s in &p.series {
            for pt in &s.points {
                let w = if pt.n > 1 || p.whisker == Whisker::Columns {
                    p.whisker
                } else {
                    Whisker::None
                };
                t.record(&[
                    &p.panel.y,
                    &panel_name,
                    &s.name,
                    &pt.x_label,
                    &pt.mean,
                    &pt.lo,
                    &pt.hi,
                    &w.name(),
                    &pt.n,
                ])?;
            }
        }
        for m in &p.paper {
            let x = match &fig.categories {
                Some(c) => c.get(m.x as usize).cloned().unwrap_or_default(),
                None => fmt_num(m.x),
            };
            t.record(&[
                &p.panel.y,
                &panel_name,
                &p.series[m.series].name,
                &x,
                &m.y,
                &"",
                &"",
                &if m.relative {
                    "paper_relative"
                } else {
                    "paper"
                },
                &0,
            ])?;
        }
    }
    Ok(())
}
