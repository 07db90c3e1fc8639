//! Figures over time and over the latency distribution (`kind: timeline`, `kind: cdf`): drawn from the
//! per-run files a sweep keeps next to its results (`timelines/run{i}.csv`, `cdf/run{i}.csv`), one curve per
//! series (the first run of each, i.e. its first seed), with the same renderer as every other figure.

use std::path::Path;

use serde_json::Value;

use super::plot::{Figure, Kind, PanelData, PlotSpec, Point, Series, Source, Whisker, label_text};
use super::table::{self, Row};
use sim_core::error::{Error, Result};

fn num(v: Option<&Value>) -> Option<f64> {
    v.and_then(Value::as_f64)
}

/// A readable name for a timeline column: `kv_held_slots` -> `kv held`.
fn pretty(col: &str) -> String {
    col.trim_end_matches("_slots")
        .trim_end_matches("_s")
        .replace('_', " ")
}

fn point(x: f64, y: f64) -> Point {
    Point {
        x,
        x_label: super::plot::fmt_num(x),
        mean: y,
        lo: y,
        hi: y,
        n: 1,
    }
}

pub fn figure(title: &str, spec: &PlotSpec, rows: &[Row], dir: &Path) -> Result<Figure> {
    // The first run of each series, in table order.
    let mut groups: Vec<(String, &Row)> = Vec::new();
    for r in rows {
        let key = spec
            .series
            .iter()
            .map(|a| r.get(a).map(label_text).unwrap_or_default())
            .collect::<Vec<_>>()
            .join(" / ");
        if !groups.iter().any(|(k, _)| *k == key) {
            groups.push((key, r));
        }
    }
    let file = |sub: &str, r: &Row| -> Result<Vec<Row>> {
        let run = r.get("run").and_then(Value::as_u64).unwrap_or(0);
        let path = dir.join(sub).join(format!("run{run}.csv"));
        if !path.exists() {
            return Err(Error::msg(format!(
                "{}: missing (re-run the sweep: a {sub} figure needs each run's file)",
                path.display()
            )));
        }
        table::read(&path)
    };
    let name = |k: &str| spec.series_label.replace("{}", k);
    let mut panels = Vec::new();
    match spec.source {
        Source::Timeline => {
            let data: Vec<(String, Vec<Row>, f64)> = groups
                .iter()
                .map(|(k, r)| {
                    // GiB per slot: the pool's size in both units.
                    let gib = match (num(r.get("pool_gib")), num(r.get("pool_slots"))) {
                        (Some(g), Some(s)) if s > 0.0 => g / s,
                        _ => f64::NAN,
                    };
                    Ok((k.clone(), file("timelines", r)?, gib))
                })
                .collect::<Result<_>>()?;
            for p in &spec.panels {
                let col = |t: &Row, c: &str, gib: f64| {
                    let v = num(t.get(c)).unwrap_or(0.0);
                    if c.ends_with("_slots") { v * gib } else { v }
                };
                if p.stack.is_empty() {
                    let series = data
                        .iter()
                        .map(|(k, t, gib)| Series {
                            name: name(k),
                            key: k.clone(),
                            points: t
                                .iter()
                                .filter_map(|row| {
                                    let x = num(row.get("t_s"))?;
                                    // Empty cells (no TTFT in the window yet) leave a gap.
                                    row.get(&p.y).and_then(Value::as_f64)?;
                                    Some(point(x, col(row, &p.y, *gib) * p.scale))
                                })
                                .collect(),
                        })
                        .collect();
                    panels.push(PanelData {
                        panel: p.clone(),
                        series,
                        whisker: Whisker::None,
                        paper: Vec::new(),
                    });
                    continue;
                }
                // A stack: one panel per series, each layer the running sum of the columns up to it.
                for (k, t, gib) in &data {
                    let series = (0..p.stack.len())
                        .map(|j| Series {
                            name: if j == 0 {
                                pretty(&p.stack[0])
                            } else {
                                format!("+ {}", pretty(&p.stack[j]))
                            },
                            key: p.stack[j].clone(),
                            points: t
                                .iter()
                                .filter_map(|row| {
                                    let x = num(row.get("t_s"))?;
                                    let y: f64 =
                                        p.stack[..=j].iter().map(|c| col(row, c, *gib)).sum();
                                    Some(point(x, y * p.scale))
                                })
                                .collect(),
                        })
                        .collect();
                    // The series above the panel, what the axis shows beside it.
                    let mut panel = p.clone();
                    panel.caption = Some(name(k));
                    panels.push(PanelData {
                        panel,
                        series,
                        whisker: Whisker::None,
                        paper: Vec::new(),
                    });
                }
            }
        }
        Source::Cdf => {
            let data: Vec<(String, Vec<Row>)> = groups
                .iter()
                .map(|(k, r)| Ok((k.clone(), file("cdf", r)?)))
                .collect::<Result<_>>()?;
            for p in &spec.panels {
                let series = data
                    .iter()
                    .map(|(k, t)| Series {
                        name: name(k),
                        key: k.clone(),
                        points: t
                            .iter()
                            .filter(|row| row.get("metric").and_then(Value::as_str) == Some(&p.y))
                            .filter_map(|row| {
                                let q = num(row.get("quantile"))?;
                                Some(point(num(row.get("value_s"))? * p.scale, q))
                            })
                            .collect(),
                    })
                    .collect();
                let mut panel = p.clone();
                panel.zero = Some(true);
                panel.min = Some(0.0);
                panel.max = Some(1.0);
                panel.log = Some(false);
                panels.push(PanelData {
                    panel,
                    series,
                    whisker: Whisker::None,
                    paper: Vec::new(),
                });
            }
        }
        Source::Results => unreachable!("drawn by plot::figure"),
    }
    if panels
        .iter()
        .all(|p| p.series.iter().all(|s| s.points.is_empty()))
    {
        return Err(Error::msg(
            "the plot's columns are in none of the runs' files (see docs/timeline.md)",
        ));
    }
    Ok(Figure {
        title: title.to_string(),
        kind: Kind::Line,
        x_label: spec.x_label.clone(),
        categories: None,
        panels,
        series_unnamed: false,
        time_series: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stacks_are_cumulative_in_gib_and_cdfs_plot_quantile_against_value() {
        let dir = std::env::temp_dir().join(format!("sim-tlplot-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("timelines")).unwrap();
        std::fs::create_dir_all(dir.join("cdf")).unwrap();
        std::fs::write(
            dir.join("timelines/run0.csv"),
            "t_s,kv_held_slots,kv_reserved_slots,waiting\n0,10,4,3\n1.5,20,0,1\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("cdf/run0.csv"),
            "metric,quantile,value_s\nttft,0,0.5\nttft,1,2\ne2e,0,1\n",
        )
        .unwrap();
        let mut row = Row::new();
        for (k, v) in [
            ("run", json!(0)),
            ("system", json!("A")),
            ("pool_gib", json!(2.0)),
            ("pool_slots", json!(100)),
        ] {
            row.insert(k.into(), v);
        }
        let spec = |kind: &str, panel: Value| {
            PlotSpec::parse(
                Path::new("c.json"),
                &json!({"kind": kind, "x": "t_s", "series": ["system"], "panels": [panel]}),
            )
            .unwrap()
        };
        let s = spec(
            "timeline",
            json!({"y": "kv_held_slots", "stack": ["kv_held_slots", "kv_reserved_slots"]}),
        );
        let f = figure("t", &s, std::slice::from_ref(&row), &dir).unwrap();
        let layers = &f.panels[0].series;
        let ys = |i: usize| {
            layers[i]
                .points
                .iter()
                .map(|p| (p.x, p.mean))
                .collect::<Vec<_>>()
        };
        // 0.02 GiB per slot.
        assert_eq!(ys(0), vec![(0.0, 0.2), (1.5, 0.4)]);
        assert_eq!(ys(1), vec![(0.0, 0.28), (1.5, 0.4)]);
        let w = figure(
            "t",
            &spec("timeline", json!({"y": "waiting"})),
            &[row.clone()],
            &dir,
        )
        .unwrap();
        assert_eq!(w.panels[0].series[0].points[1].mean, 1.0);
        let c = figure("t", &spec("cdf", json!({"y": "ttft"})), &[row], &dir).unwrap();
        let pts: Vec<_> = c.panels[0].series[0]
            .points
            .iter()
            .map(|p| (p.x, p.mean))
            .collect();
        assert_eq!(pts, vec![(0.5, 0.0), (2.0, 1.0)]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
