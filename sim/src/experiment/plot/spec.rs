//! The `plot` section of an experiment config (the format is in `plot`'s docs), parsed by serde: an unknown
//! field is refused and an error names its path (`file: plot.panels[0].y: ...`).

use std::path::Path;

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::data::label_text;
use sim_core::error::{Error, Result};

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

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a panel object")]
pub struct Panel {
    pub y: String,
    /// The axis label (default: `y`).
    #[serde(default)]
    pub label: String,
    #[serde(default = "one")]
    pub scale: f64,
    /// Log y axis; `None`: where the positive values span two decades or more.
    pub log: Option<bool>,
    pub hline: Option<f64>,
    #[serde(default = "slo")]
    pub hline_label: String,
    /// Whisker columns: [low column, high column].
    pub err: Option<(String, String)>,
    /// Start the y axis at 0 (default: for bars and fractions).
    pub zero: Option<bool>,
    /// Clamp the y axis (plotted units).
    pub min: Option<f64>,
    pub max: Option<f64>,
    /// Timeline columns drawn as a stack (cumulative curves), one panel per series; `_slots` columns in GiB
    /// (`kind: timeline` only).
    #[serde(default)]
    pub stack: Vec<String>,
    /// The panel's title when it differs from the axis label (a stack's series); not read from configs.
    #[serde(skip)]
    pub caption: Option<String>,
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
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "{series, y, points}")]
pub struct PaperSpec {
    /// The series name as the series axes' labels joined with " / " (empty: the only series).
    #[serde(default, deserialize_with = "label")]
    pub series: String,
    pub y: String,
    /// [[x, y], ...].
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
    /// Only the rows whose columns have these labels (e.g. one probe of an operating-point search).
    pub filter: serde_json::Map<String, Value>,
}

/// The `plot` object as written; `PlotSpec::parse` checks it and fills the defaults.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "the plot object")]
struct Written {
    kind: Option<String>,
    x: String,
    x_label: Option<String>,
    #[serde(default, deserialize_with = "names")]
    series: Vec<String>,
    series_label: Option<String>,
    panels: Vec<Panel>,
    #[serde(default)]
    paper: Vec<PaperSpec>,
    interval_s: Option<f64>,
    #[serde(default, rename = "where")]
    filter: serde_json::Map<String, Value>,
}

fn one() -> f64 {
    1.0
}

fn slo() -> String {
    "SLO".into()
}

/// Any JSON value as a series label (a rate 8 names the series "8").
fn label<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<String, D::Error> {
    Ok(label_text(&Value::deserialize(d)?))
}

/// An axis name or a list of them.
fn names<'de, D: Deserializer<'de>>(d: D) -> std::result::Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(a) => Ok(vec![a]),
        Value::Array(xs) => xs
            .into_iter()
            .map(|x| match x {
                Value::String(s) => Ok(s),
                _ => Err(D::Error::custom("expected axis names")),
            })
            .collect(),
        _ => Err(D::Error::custom("expected an axis name or a list of them")),
    }
}

fn bad(path: &Path, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::msg(format!("{}: plot.{field}: {msg}", path.display()))
}

impl PlotSpec {
    /// Parses a config's `plot` value (`path` names the config in errors).
    pub fn parse(path: &Path, v: &Value) -> Result<PlotSpec> {
        let w: Written = serde_path_to_error::deserialize(v).map_err(|e| {
            let what = e.inner().to_string();
            let mut at = e.path().to_string();
            if at == "." {
                at.clear();
            }
            // serde names a missing field in its message, not its path.
            if let Some(f) = what
                .strip_prefix("missing field `")
                .and_then(|r| r.split('`').next())
            {
                at = if at.is_empty() {
                    f.into()
                } else {
                    format!("{at}.{f}")
                };
            }
            let at = if at.is_empty() { at } else { format!(".{at}") };
            Error::msg(format!("{}: plot{at}: {what}", path.display()))
        })?;
        let (kind, source) = match w.kind.as_deref() {
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
        let interval_s = match w.interval_s {
            None => 1.0,
            Some(x) if x > 0.0 && x.is_finite() => x,
            Some(_) => return Err(bad(path, "interval_s", "expected a positive number")),
        };
        if w.panels.is_empty() {
            return Err(bad(path, "panels", "empty list"));
        }
        let mut panels = w.panels;
        for (i, p) in panels.iter_mut().enumerate() {
            if p.label.is_empty() {
                p.label = p.y.clone();
            }
            if !p.stack.is_empty() && source != Source::Timeline {
                return Err(bad(
                    path,
                    &format!("panels[{i}].stack"),
                    "expected a list of timeline columns (kind: timeline)",
                ));
            }
        }
        Ok(PlotSpec {
            kind,
            source,
            interval_s,
            x_label: w.x_label.unwrap_or_else(|| w.x.clone()),
            x: w.x,
            series: w.series,
            series_label: w.series_label.unwrap_or_else(|| "{}".into()),
            panels,
            paper: w.paper,
            filter: w.filter,
        })
    }
}
