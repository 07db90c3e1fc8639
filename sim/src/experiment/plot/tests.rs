//! The figure's data, style and axes.

use std::path::Path;

use serde_json::{Value, json};

use super::Whisker;
use super::data::{add_claims, bootstrap_ci, figure, figure_csv, paper_number};
use super::render::y_range;
use super::spec::PlotSpec;
use super::style::{dash, look};
use crate::experiment::table::Row;

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

#[test]
fn spec_errors_name_the_field_by_its_path() {
    for (v, expect) in [
        (
            json!({"x": "rate", "panels": [{}]}),
            "c.json: plot.panels[0].y: missing field `y`",
        ),
        (
            json!({"x": "rate", "panels": [{"y": "a", "colour": 1}]}),
            "c.json: plot.panels[0].colour: unknown field `colour`",
        ),
        (
            json!({"x": "rate", "panels": [{"y": "a", "log": 3}]}),
            "c.json: plot.panels[0].log: invalid type: integer `3`, expected a boolean",
        ),
        (
            json!({"x": "rate", "panels": [{"y": "a"}], "paper": [{"y": "a", "points": [[1, "b"]]}]}),
            "c.json: plot.paper[0].points[0][1]: invalid type",
        ),
    ] {
        let e = PlotSpec::parse(Path::new("c.json"), &v)
            .unwrap_err()
            .to_string();
        assert!(e.starts_with(expect), "{e}");
    }
    let s = PlotSpec::parse(
        Path::new("c.json"),
        &json!({"x": "rate", "series": "system", "panels": [{"y": "a"}], "paper": [{"series": 8, "y": "a", "points": [[1, 2]]}]}),
    )
    .unwrap();
    assert_eq!(
        (
            s.x_label.as_str(),
            s.panels[0].label.as_str(),
            s.panels[0].scale
        ),
        ("rate", "a", 1.0)
    );
    assert_eq!(
        (s.panels[0].hline_label.as_str(), s.paper[0].series.as_str()),
        ("SLO", "8")
    );
}
