//! Drawing a figure with plotters: panels in rows of at most two, the legend under them, PNG (through
//! `glyphs`), SVG and the CSV of the plotted points.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::data::{Figure, PanelData, Whisker, figure_csv};
use super::spec::Kind;
use super::style::{FAMILY, Marker, dash, fmt_num, look, register_font};
use crate::experiment::glyphs::{Glyphs, text_width};
use sim_core::error::{Error, Result};

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
        Marker::Star => Some(
            (0..10)
                .map(|k| {
                    let a = std::f64::consts::PI * (k as f64 / 5.0 - 0.5);
                    let rr = if k % 2 == 0 { 1.35 } else { 0.6 };
                    (rr * a.cos(), rr * a.sin())
                })
                .collect::<Vec<_>>(),
        )
        .map(|pts| poly(&pts)),
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
    } else if fig.time_series {
        // A time series or a distribution of one run: an interval has no meaning here.
        return v;
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
                        [(x + 6, y - 9), (x + 34, y + 9)],
                        c.filled(),
                    ))
                    .map_err(err_text)?;
                    draw_marker(area, m, (x + 20, y), 5, bar_mark(c), false)?;
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

/// Panels in rows of at most two (one when a panel must be wide), so no figure is a strip wider than a
/// laptop's screen: (rows, columns).
fn grid(panels: usize, panel_width: u32) -> (usize, usize) {
    let cols = if panel_width > 800 {
        1
    } else {
        panels.clamp(1, 2)
    };
    (panels.div_ceil(cols).max(1), cols)
}

/// A panel's width: 620 pixels, or what its category labels need side by side.
fn panel_width(fig: &Figure) -> u32 {
    let Some(cats) = &fig.categories else {
        return 620;
    };
    let widest = cats.iter().map(|c| text_width(c, 14.0)).fold(0.0, f64::max);
    ((cats.len() as f64 * (widest + 16.0) + 140.0) as u32).clamp(620, 1400)
}

/// The marker drawn on a bar of colour `c`: white (black only on a light bar, none in the palette), so it is
/// never taken for the paper's black diamond.
fn bar_mark(c: RGBColor) -> RGBColor {
    let luma = 0.299 * c.0 as f64 + 0.587 * c.1 as f64 + 0.114 * c.2 as f64;
    if luma > 190.0 { BLACK } else { WHITE }
}

fn render<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, fig: &Figure) -> DrawResult
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE).map_err(err_text)?;
    // The title fits the figure's width: a long one is set smaller, never cut off.
    let size = (26.0 * 0.96 * root.dim_in_pixel().0 as f64 / text_width(&fig.title, 26.0))
        .clamp(14.0, 26.0);
    let root = root.titled(&fig.title, (FAMILY, size)).map_err(err_text)?;
    let entries = legend_entries(fig);
    let (w, h) = root.dim_in_pixel();
    let (_, rows) = legend_layout(&entries, w as i32);
    let legend_h = 16 + rows * LEGEND_ROW;
    let (plots, legend) = root.split_vertically(h as i32 - legend_h);
    let (rows, cols) = grid(fig.panels.len(), panel_width(fig));
    let areas = plots.split_evenly((rows, cols));
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
pub(super) fn y_range(fig: &Figure, pd: &PanelData) -> (f64, f64, bool) {
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
        // Bars keep room above 100% for their value labels.
        let top = if fig.kind == Kind::Bar { 1.08 } else { 1.0 };
        y1 = y1.min(p.scale * top);
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

/// Which axis `draw_log_grid` draws.
#[derive(Clone, Copy, PartialEq)]
pub enum LogAxis {
    X,
    Y,
}

/// The grid and labels of a log axis on a chart built in log10 coordinates: `axis` spans `a0..a1` (log10),
/// the other axis `o0..o1`; `px` maps chart coordinates (x, y) to pixels of `area`. Lines at 1..9 x 10^k:
/// decades darkest, labelled at 1-2-5 where a label fits between 1 and 2 (else at decades only); the
/// unlabelled minor lines only where a decade spans 60 pixels or more, so they never merge into grey bands.
pub fn draw_log_grid<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    px: &dyn Fn(f64, f64) -> (i32, i32),
    axis: LogAxis,
    (a0, a1): (f64, f64),
    (o0, o1): (f64, f64),
    font: f64,
) -> DrawResult {
    let at = |t: f64, o: f64| match axis {
        LogAxis::X => px(t, o),
        LogAxis::Y => px(o, t),
    };
    let decade_px = {
        let (p, q) = (at(0.0, o0), at(1.0, o0));
        ((q.0 - p.0).abs() + (q.1 - p.1).abs()) as f64
    };
    let ticks = log_ticks(a0, a1);
    let is_decade = |t: f64| (t - t.round()).abs() < 1e-9;
    let widest = ticks
        .iter()
        .filter_map(|(_, l)| l.as_ref())
        .map(|l| text_width(l, font))
        .fold(0.0, f64::max);
    // Between 1 and 2 lies 0.3 of a decade: room for a label there, or decades only.
    let room = match axis {
        LogAxis::X => 0.3 * decade_px > widest + 10.0,
        LogAxis::Y => 0.3 * decade_px > 1.8 * font,
    } || !ticks.iter().any(|(t, _)| is_decade(*t));
    let minor = decade_px >= 60.0;
    let pos = match axis {
        LogAxis::X => Pos::new(HPos::Center, VPos::Top),
        LogAxis::Y => Pos::new(HPos::Right, VPos::Center),
    };
    let style = TextStyle::from((FAMILY, font).into_font()).pos(pos);
    for (t, label) in ticks {
        let decade = is_decade(t);
        let label = label.filter(|_| decade || room);
        if !(decade || minor || label.is_some()) {
            continue;
        }
        let shade = if decade {
            RGBColor(185, 185, 185)
        } else if label.is_some() {
            RGBColor(215, 215, 215)
        } else {
            RGBColor(238, 238, 238)
        };
        area.draw(&PathElement::new(
            vec![at(t, o0), at(t, o1)],
            shade.stroke_width(1),
        ))
        .map_err(err_text)?;
        if let Some(l) = label {
            let (x, y) = at(t, o0);
            let (tick, text_at) = match axis {
                LogAxis::X => (vec![(x, y), (x, y + 5)], (x, y + 8)),
                LogAxis::Y => (vec![(x - 5, y), (x, y)], (x - 8, y)),
            };
            area.draw(&PathElement::new(tick, BLACK.stroke_width(1)))
                .map_err(err_text)?;
            area.draw_text(&l, &style, text_at).map_err(err_text)?;
        }
    }
    Ok(())
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
        .caption(p.caption.as_deref().unwrap_or(&p.label), (FAMILY, 20))
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
        .light_line_style(RGBColor(243, 243, 243));
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
        draw_log_grid(area, &px, LogAxis::Y, (y0, y1), (x0, x1), 14.0)?;
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
                    // The series' marker near the bar's foot: bars stay apart without colour.
                    let (l, b) = corners[0];
                    let (r, t) = corners[1];
                    let mr = ((r - l) / 2 - 2).min(5);
                    if mr >= 3 && b - t >= 2 * mr + 6 {
                        draw_marker(
                            area,
                            marker,
                            ((l + r) / 2, b - mr - 4),
                            mr,
                            bar_mark(color),
                            false,
                        )?;
                    }
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
    let pw = panel_width(fig);
    let (grid_rows, cols) = grid(fig.panels.len(), pw);
    let width = (pw * cols as u32).max(960);
    let (_, rows) = legend_layout(&legend_entries(fig), width as i32);
    let size = (
        width,
        20 + 500 * grid_rows as u32 + rows as u32 * LEGEND_ROW as u32,
    );
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
