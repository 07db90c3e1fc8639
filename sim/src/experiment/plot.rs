//! `sim plot`: draws an experiment's results table as the figure its config describes, PNG and SVG, with
//! the CSV of the plotted points. Text uses DejaVu Sans shipped in `sim/assets/` (no system fonts).
//!
//! The config's `plot` section:
//!
//! ```json
//! "plot": {
//!   "kind": "line",                      // line (numeric or categorical x) | bar (grouped bars)
//!   "x": "rate", "x_label": "Request rate (RPS)",
//!   "series": ["system"],                // axes whose labels name a curve (joined with " / ")
//!   "series_label": "{}",                // optional template for the name, e.g. "{} RPS"
//!   "panels": [ { "y": "ttft_p99_s", "label": "P99 TTFT (s)", "scale": 1, "log": true,
//!                 "hline": 5, "hline_label": "SLO 5 s", "err": ["throughput_slo_lo_rps", "throughput_slo_hi_rps"],
//!                 "zero": false } ]    // y from 0: default for bars only
//! }
//! ```
//!
//! Rows with the same x and series (seeds) are averaged; whiskers show their min..max, or the `err`
//! columns (e.g. the throughput bracket) when given.

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

use super::table::Row;
use crate::error::{Error, Result};

static FONT: &[u8] = include_bytes!("../../assets/DejaVuSans.ttf");
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

#[derive(Clone, Debug)]
pub struct Panel {
    pub y: String,
    pub label: String,
    pub scale: f64,
    pub log: bool,
    pub hline: Option<f64>,
    pub hline_label: String,
    pub err: Option<(String, String)>,
    /// Start the y axis at 0 (default: for bars).
    pub zero: Option<bool>,
}

#[derive(Clone, Debug)]
pub struct PlotSpec {
    pub kind: Kind,
    pub x: String,
    pub x_label: String,
    pub series: Vec<String>,
    /// How a series is named: `{}` is replaced by its axis labels (e.g. "{} RPS").
    pub series_label: String,
    pub panels: Vec<Panel>,
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
        let known = ["kind", "x", "x_label", "series", "series_label", "panels"];
        if let Some(k) = m.keys().find(|k| !known.contains(&k.as_str())) {
            return Err(bad(
                path,
                k,
                format!("unknown field; valid: {}", known.join(", ")),
            ));
        }
        let s = |k: &str| m.get(k).and_then(Value::as_str).map(str::to_string);
        let kind = match s("kind").as_deref() {
            None | Some("line") => Kind::Line,
            Some("bar") => Kind::Bar,
            Some(o) => return Err(bad(path, "kind", format!("'{o}': valid: line, bar"))),
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
                log: p.get("log").and_then(Value::as_bool).unwrap_or(false),
                hline: num("hline")?,
                hline_label: p
                    .get("hline_label")
                    .and_then(Value::as_str)
                    .unwrap_or("SLO")
                    .to_string(),
                err,
                zero: p.get("zero").and_then(Value::as_bool),
            });
        }
        let series_label = s("series_label").unwrap_or_else(|| "{}".into());
        Ok(PlotSpec {
            kind,
            x,
            x_label,
            series,
            series_label,
            panels,
        })
    }
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
    pub points: Vec<Point>,
}

#[derive(Clone, Debug)]
pub struct PanelData {
    pub panel: Panel,
    pub series: Vec<Series>,
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

/// Groups and averages the rows (in run order) into the figure's points.
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
                let mean = ys.iter().sum::<f64>() / ys.len() as f64;
                let (mut lo, mut hi) = ys
                    .iter()
                    .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                        (a.min(v), b.max(v))
                    });
                if let Some((cl, ch)) = &p.err {
                    let m = |c: &str| {
                        sel.iter()
                            .filter_map(|r| num(r.get(c)))
                            .map(|v| v * p.scale)
                            .collect::<Vec<_>>()
                    };
                    let (l, h) = (m(cl), m(ch));
                    lo = l.iter().copied().fold(mean, f64::min);
                    // An open bracket (no failing rate found) has no upper whisker.
                    hi = h.iter().copied().fold(mean, f64::max);
                }
                points.push(Point {
                    x: xpos(x),
                    x_label: x.clone(),
                    mean,
                    lo,
                    hi,
                    n: ys.len(),
                });
            }
            if numeric {
                points.sort_by(|a, b| a.x.total_cmp(&b.x));
            }
            let name = if name.is_empty() {
                p.label.clone()
            } else {
                spec.series_label.replace("{}", name)
            };
            series.push(Series { name, points });
        }
        panels.push(PanelData {
            panel: p.clone(),
            series,
        });
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

/// The plotted points as CSV: panel metric, series, x, mean, whisker, number of rows averaged.
pub fn figure_csv(fig: &Figure) -> String {
    let q = |s: &str| {
        if s.contains([',', '"']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s.to_string()
        }
    };
    let mut o = String::from("metric,label,series,x,mean,low,high,n\n");
    for p in &fig.panels {
        for s in &p.series {
            for pt in &s.points {
                o += &format!(
                    "{},{},{},{},{},{},{},{}\n",
                    q(&p.panel.y),
                    q(&p.panel.label),
                    q(&s.name),
                    q(&pt.x_label),
                    pt.mean,
                    pt.lo,
                    pt.hi,
                    pt.n
                );
            }
        }
    }
    o
}

const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

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

fn render<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    fig: &Figure,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(e)?;
    let root = root.titled(&fig.title, (FAMILY, 26)).map_err(e)?;
    let areas = root.split_evenly((1, fig.panels.len()));
    for (pi, (area, pd)) in areas.iter().zip(&fig.panels).enumerate() {
        let p = &pd.panel;
        let ty = |v: f64| if p.log { v.max(1e-9).log10() } else { v };
        let pts = || pd.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1) = match &fig.categories {
            Some(c) => (-0.5, c.len() as f64 - 0.5),
            None => pts().fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), q| {
                (a.min(q.x), b.max(q.x))
            }),
        };
        if !(x0.is_finite() && x1.is_finite()) {
            (x0, x1) = (0.0, 1.0);
        }
        if fig.categories.is_none() {
            let pad = ((x1 - x0) * 0.04).max(0.5 * x0.abs().max(1.0) * 0.04);
            (x0, x1) = (x0 - pad, x1 + pad);
        }
        let mut ys: Vec<f64> = pts()
            .flat_map(|q| [q.mean, q.lo, q.hi])
            .filter(|v| v.is_finite())
            .collect();
        ys.extend(p.hline);
        let (lo, hi) = ys
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), &v| {
                (a.min(v), b.max(v))
            });
        let (mut y0, mut y1) = if lo.is_finite() {
            (ty(lo), ty(hi))
        } else {
            (0.0, 1.0)
        };
        let zero = p.zero.unwrap_or(fig.kind == Kind::Bar);
        if !p.log && y0 >= 0.0 && zero {
            y0 = 0.0;
        }
        let span = (y1 - y0).max(if p.log { 0.5 } else { y1.abs().max(1e-9) * 0.1 });
        if p.log || !zero {
            y0 -= 0.05 * span;
        }
        // Headroom for the legend.
        y1 = y0 + span * (1.0 + 0.08 * (pd.series.len() + 2) as f64);
        let base = if p.log { y0 } else { 0.0 };
        draw_panel(area, fig, pd, pi, (x0, x1), (y0, y1), base)?;
    }
    root.present().map_err(e)?;
    Ok(())
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

/// One panel; y0..y1 is the y axis (log10 of the values for a log panel), `base` where bars start.
#[allow(clippy::too_many_arguments)]
fn draw_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    fig: &Figure,
    pd: &PanelData,
    pi: usize,
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    base: f64,
) -> std::result::Result<(), String>
where
    DB::ErrorType: 'static,
{
    let e = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    let p = &pd.panel;
    // A log axis is drawn as log10 of the values on a linear axis, with 1-2-5 labels of our own.
    let ty = |v: f64| if p.log { v.max(1e-12).log10() } else { v };
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
    let mut chart = ChartBuilder::on(area)
        .caption(&p.label, (FAMILY, 20))
        .margin(14)
        .x_label_area_size(55)
        .y_label_area_size(70)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(e)?;
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
    if p.log {
        mesh.y_labels(0).disable_y_mesh();
    }
    mesh.draw().map_err(e)?;
    if p.log {
        let (bx, by) = area.get_base_pixel();
        let style =
            TextStyle::from((FAMILY, 14).into_font()).pos(Pos::new(HPos::Right, VPos::Center));
        for (t, label) in log_ticks(y0, y1) {
            let shade = if label.is_some() {
                RGBColor(200, 200, 200)
            } else {
                RGBColor(235, 235, 235)
            };
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x0, t), (x1, t)],
                    shade.stroke_width(1),
                )))
                .map_err(e)?;
            if let Some(l) = label {
                let (px, py) = chart.backend_coord(&(x0, t));
                area.draw_text(&l, &style, (px - bx - 8, py - by))
                    .map_err(e)?;
                let tick = PathElement::new(
                    vec![(px - bx - 5, py - by), (px - bx, py - by)],
                    BLACK.stroke_width(1),
                );
                area.draw(&tick).map_err(e)?;
            }
        }
    }
    let nser = pd.series.len().max(1);
    for (si, s) in pd.series.iter().enumerate() {
        let color = PALETTE[si % PALETTE.len()];
        match fig.kind {
            Kind::Line => {
                chart
                    .draw_series(LineSeries::new(
                        s.points.iter().map(|q| (q.x, ty(q.mean))),
                        color.stroke_width(2),
                    ))
                    .map_err(e)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 22, y)], color.stroke_width(3))
                    });
                chart
                    .draw_series(
                        s.points
                            .iter()
                            .map(|q| Circle::new((q.x, ty(q.mean)), 4, color.filled())),
                    )
                    .map_err(e)?;
                chart
                    .draw_series(s.points.iter().filter(|q| q.hi > q.lo).map(|q| {
                        PathElement::new(
                            vec![(q.x, ty(q.lo)), (q.x, ty(q.hi))],
                            color.stroke_width(1),
                        )
                    }))
                    .map_err(e)?;
            }
            Kind::Bar => {
                let w = 0.8 / nser as f64;
                let off = |q: &Point| q.x - 0.4 + w * (si as f64 + 0.5);
                chart
                    .draw_series(s.points.iter().map(|q| {
                        let c = off(q);
                        Rectangle::new(
                            [(c - 0.45 * w, base), (c + 0.45 * w, ty(q.mean))],
                            color.filled(),
                        )
                    }))
                    .map_err(e)?
                    .label(s.name.as_str())
                    .legend(move |(x, y)| {
                        Rectangle::new([(x, y - 6), (x + 14, y + 6)], color.filled())
                    });
                // The value on top of each bar (when there is room for it).
                if nser * ncat <= 16 {
                    let style = TextStyle::from((FAMILY, 12).into_font())
                        .pos(Pos::new(HPos::Center, VPos::Bottom));
                    chart
                        .draw_series(s.points.iter().map(|q| {
                            Text::new(
                                fmt_num(q.mean),
                                (off(q), ty(q.hi.max(q.mean))),
                                style.clone(),
                            )
                        }))
                        .map_err(e)?;
                }
                chart
                    .draw_series(s.points.iter().filter(|q| q.hi > q.lo).flat_map(|q| {
                        let c = off(q);
                        let cap = 0.15 * w;
                        [
                            PathElement::new(
                                vec![(c, ty(q.lo)), (c, ty(q.hi))],
                                BLACK.stroke_width(1),
                            ),
                            PathElement::new(
                                vec![(c - cap, ty(q.hi)), (c + cap, ty(q.hi))],
                                BLACK.stroke_width(1),
                            ),
                            PathElement::new(
                                vec![(c - cap, ty(q.lo)), (c + cap, ty(q.lo))],
                                BLACK.stroke_width(1),
                            ),
                        ]
                    }))
                    .map_err(e)?;
            }
        }
    }
    if let Some(h) = p.hline {
        let red = RGBColor(200, 0, 0);
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(x0, ty(h)), (x1, ty(h))],
                red.stroke_width(1),
            )))
            .map_err(e)?
            .label(p.hline_label.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 22, y)], red.stroke_width(1)));
    }
    let named = pd.series.len() > 1 || !fig.series_unnamed;
    if (pi == 0 && named) || p.hline.is_some() {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font((FAMILY, 14))
            .draw()
            .map_err(e)?;
    }
    Ok(())
}

/// Writes `dir/name.png`, `dir/name.svg` and `dir/name.csv`.
pub fn write_figure(fig: &Figure, dir: &Path, name: &str) -> Result<()> {
    register_font();
    std::fs::create_dir_all(dir).map_err(|e| Error::internal(format!("{}: {e}", dir.display())))?;
    let size = ((620 * fig.panels.len() as u32).max(960), 520);
    let png = dir.join(format!("{name}.png"));
    render(BitMapBackend::new(&png, size).into_drawing_area(), fig)
        .map_err(|e| Error::internal(format!("{}: {e}", png.display())))?;
    let svg = dir.join(format!("{name}.svg"));
    render(SVGBackend::new(&svg, size).into_drawing_area(), fig)
        .map_err(|e| Error::internal(format!("{}: {e}", svg.display())))?;
    let csv = dir.join(format!("{name}.csv"));
    std::fs::write(&csv, figure_csv(fig))
        .map_err(|e| Error::internal(format!("{}: {e}", csv.display())))?;
    Ok(())
}
