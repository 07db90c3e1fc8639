//! The fit's report: measured vs simulated for every run and metric (CSV, a markdown table, a figure), and
//! the error summary a profile carries.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::{Metrics, Prepared};
use sim_core::error::{Error, Result};
use sim_core::metrics::median;

/// Relative error of a simulated metric: (sim - measured) / measured.
pub fn rel(sim: f64, measured: f64) -> f64 {
    (sim - measured) / measured
}

/// Per metric: the median and the worst absolute relative error over `rows`.
pub fn error_summary(rows: &[(&Prepared, Metrics)]) -> [(f64, f64); 4] {
    std::array::from_fn(|i| {
        let mut e: Vec<f64> = rows
            .iter()
            .map(|(p, s)| rel(s.get(i), p.run.measured.get(i)).abs())
            .collect();
        let worst = e.iter().copied().fold(0.0, f64::max);
        (median(&mut e).unwrap_or(f64::NAN), worst)
    })
}

/// The per-run rows a profile stores.
pub fn runs_json(rows: &[(&Prepared, Metrics)], fitted: bool) -> Value {
    Value::Array(
        rows.iter()
            .map(|(p, s)| {
                let m = &p.run.measured;
                let mut o = serde_json::Map::new();
                o.insert("run".into(), json!(p.run.name()));
                o.insert("fitted".into(), json!(fitted && p.run.setup.fit));
                for (i, name) in Metrics::NAMES.iter().enumerate() {
                    o.insert(
                        (*name).into(),
                        json!({
                            "measured": m.get(i),
                            "simulated": s.get(i),
                            "error": rel(s.get(i), m.get(i)),
                        }),
                    );
                }
                Value::Object(o)
            })
            .collect(),
    )
}

/// One CSV row per run and metric.
pub fn csv(rows: &[(String, &Prepared, Metrics)]) -> String {
    let mut o = String::from("profile,run,in_fit,metric,measured,simulated,rel_error\n");
    for (profile, p, s) in rows {
        for (i, name) in Metrics::NAMES.iter().enumerate() {
            let (m, x) = (p.run.measured.get(i), s.get(i));
            let _ = writeln!(
                o,
                "{profile},\"{}\",{},{name},{m:.6},{x:.6},{:.6}",
                p.run.name(),
                p.run.setup.fit,
                rel(x, m)
            );
        }
    }
    o
}

/// The markdown error table for plots/README.md: per profile, the median and worst error per metric.
pub fn markdown(rows: &[(String, &Prepared, Metrics)]) -> String {
    let mut profiles: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    profiles.dedup();
    let mut o = String::from(
        "| profile | runs (fitted / out of sample) | throughput median / worst | mean latency | mean TTFT | \
         latency per output token |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    let pct = |x: f64| format!("{:.1}%", 100.0 * x);
    for prof in profiles.iter().chain(std::iter::once(&"all")) {
        let sel: Vec<(&Prepared, Metrics)> = rows
            .iter()
            .filter(|r| (*prof == "all" || r.0 == *prof) && r.1.run.setup.fit)
            .map(|r| (r.1, r.2))
            .collect();
        let out = rows
            .iter()
            .filter(|r| (*prof == "all" || r.0 == *prof) && !r.1.run.setup.fit)
            .count();
        if sel.is_empty() {
            continue;
        }
        let e = error_summary(&sel);
        let _ = writeln!(
            o,
            "| {prof} | {} / {out} | {} / {} | {} / {} | {} / {} | {} / {} |",
            sel.len(),
            pct(e[0].0),
            pct(e[0].1),
            pct(e[1].0),
            pct(e[1].1),
            pct(e[2].0),
            pct(e[2].1),
            pct(e[3].0),
            pct(e[3].1)
        );
    }
    o
}

type Rows<'a> = [(String, &'a Prepared, Metrics)];

fn draw<DB: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    rows: &Rows<'_>,
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    use crate::experiment::plot::{LogAxis, colour, draw_log_grid};
    use plotters::prelude::*;
    root.fill(&WHITE)?;
    let root = root.titled(
        "S-LoRA runs: simulated (fitted engine profiles) vs measured",
        ("sans-serif", 22),
    )?;
    let panels = root.split_evenly((2, 2));
    let units = ["req/s", "s", "s", "s/token"];
    let mut profiles: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
    profiles.dedup();
    for (i, area) in panels.iter().enumerate() {
        let pts: Vec<(f64, f64, usize, bool)> = rows
            .iter()
            .map(|(prof, p, s)| {
                let k = profiles.iter().position(|x| x == prof).unwrap_or(0);
                (p.run.measured.get(i), s.get(i), k, p.run.setup.fit)
            })
            .collect();
        let lo = pts
            .iter()
            .map(|p| p.0.min(p.1))
            .fold(f64::INFINITY, f64::min)
            * 0.8;
        let hi = pts.iter().map(|p| p.0.max(p.1)).fold(0.0, f64::max) * 1.25;
        // Log-log in log10 coordinates, gridded and labelled like every other figure (plotters' own log mesh
        // labels every minor tick and draws them until they merge).
        let (l0, l1) = (lo.log10(), hi.log10());
        let lg = |(x, y): (f64, f64)| (x.log10(), y.log10());
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} ({})", Metrics::NAMES[i].replace('_', " "), units[i]),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(45)
            .y_label_area_size(60)
            .build_cartesian_2d(l0..l1, l0..l1)?;
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(0)
            .y_labels(0)
            .x_desc(format!("measured ({})", units[i]))
            .y_desc(format!("simulated ({})", units[i]))
            .axis_desc_style(("sans-serif", 14))
            .draw()?;
        let (bx, by) = area.get_base_pixel();
        let px = |x: f64, y: f64| {
            let (a, b) = chart.backend_coord(&(x, y));
            (a - bx, b - by)
        };
        for axis in [LogAxis::X, LogAxis::Y] {
            draw_log_grid(area, &px, axis, (l0, l1), (l0, l1), 12.0)?;
        }
        chart.draw_series(LineSeries::new([(l0, l0), (l1, l1)], BLACK.mix(0.5)))?;
        for (k, prof) in profiles.iter().enumerate() {
            let color = colour(k);
            let fitted = pts.iter().filter(|p| p.2 == k && p.3);
            let s = chart.draw_series(
                fitted.map(|&(x, y, _, _)| Circle::new(lg((x, y)), 4, color.filled())),
            )?;
            if i == 0 {
                s.label(format!("{prof} (x: not fitted)"))
                    .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
            }
            let held_out = pts.iter().filter(|p| p.2 == k && !p.3);
            chart.draw_series(
                held_out.map(|&(x, y, _, _)| Cross::new(lg((x, y)), 5, color.stroke_width(2))),
            )?;
        }
        if i == 0 {
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 12))
                .background_style(WHITE.mix(0.9))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// Measured vs simulated, one panel per metric, log-log, the identity line drawn (PNG and SVG).
pub fn plot(rows: &Rows<'_>, path: &Path) -> Result<()> {
    use plotters::prelude::*;
    crate::experiment::plot::register_font();
    let e = |e: Box<dyn std::error::Error>| Error::internal(format!("{}: {e}", path.display()));
    let png = path.with_extension("png");
    draw(
        crate::experiment::glyphs::Glyphs::new(BitMapBackend::new(&png, (1100, 900)))
            .into_drawing_area(),
        rows,
    )
    .map_err(e)?;
    let svg = path.with_extension("svg");
    draw(SVGBackend::new(&svg, (1100, 900)).into_drawing_area(), rows).map_err(e)?;
    Ok(())
}

/// Further sections of the validation report (`plots/fit_validation.md`), each (title, markdown body):
/// another report about the same runs (e.g. a policy's measured against simulated effect) adds one line
/// here.
pub fn extra_sections(_prepared: &[Prepared]) -> Vec<(String, String)> {
    Vec::new()
}
