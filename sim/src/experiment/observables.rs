//! The paper's observables against the settings it leaves open: an experiment's `observables` section scores
//! every setting (a combination of the labels of its `settings` axes) on each observable the paper publishes
//! beyond its headlines (design.md, section 7), and ranks the settings by how many they match at once.
//!
//! ```json
//! "observables": {
//!   "settings": ["length", "popularity", "adapters", "mem-util"],
//!   "show": 12,
//!   "rows": [
//!     { "name": "Chameleon's hit rate, 8 RPS (Fig. 14)", "paper": "75%", "metric": "adapter_hit_rate",
//!       "at": {"probe": "Chameleon 8"}, "target": [0.70, 0.80], "unit": "%" },
//!     { "name": "peak memory / pool", "metric": "mem_total_peak_slots", "per": "pool_slots", ... }
//!   ]
//! }
//! ```
//!
//! An observable's value at a setting is the median over seeds of `metric` (divided by `per`, row by row)
//! over the rows of that setting matching `at`, on the best fit of the model (member 0). It matches when it
//! lies within `target`; otherwise the table says by how much it misses the nearer end.

use std::path::Path;

use serde_json::{Map, Value};

use super::plot::{fmt_num, label_text};
use super::stats;
use super::table::Row;
use sim_core::error::{Error, Result};

/// One observable as configured.
#[derive(Clone, Debug)]
pub struct Observable {
    pub name: String,
    pub paper: String,
    pub metric: String,
    pub per: Option<String>,
    pub at: Map<String, Value>,
    pub lo: f64,
    pub hi: f64,
    pub unit: String,
}

/// An experiment's `observables` section.
#[derive(Clone, Debug)]
pub struct Section {
    pub settings: Vec<String>,
    pub show: usize,
    pub rows: Vec<Observable>,
}

fn bad(path: &Path, field: &str, msg: impl std::fmt::Display) -> Error {
    Error::msg(format!("{}: observables.{field}: {msg}", path.display()))
}

impl Section {
    /// Parses the section (`path` names the config in errors).
    pub fn parse(path: &Path, v: &Value) -> Result<Section> {
        let Value::Object(m) = v else {
            return Err(bad(path, "", "expected an object"));
        };
        for k in m.keys() {
            if !["settings", "show", "rows"].contains(&k.as_str()) {
                return Err(bad(path, k, "unknown field; valid: settings, show, rows"));
            }
        }
        let settings: Vec<String> = match m.get("settings") {
            Some(Value::Array(xs)) if !xs.is_empty() => xs
                .iter()
                .map(|x| {
                    x.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| bad(path, "settings", "expected axis names"))
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(bad(
                    path,
                    "settings",
                    "expected a non-empty list of axis names",
                ));
            }
        };
        let show = match m.get("show") {
            None => 12,
            Some(x) => x
                .as_u64()
                .filter(|&n| n >= 1)
                .ok_or_else(|| bad(path, "show", "expected a whole number >= 1"))?
                as usize,
        };
        let Some(Value::Array(list)) = m.get("rows") else {
            return Err(bad(path, "rows", "expected a list of observables"));
        };
        let mut rows = Vec::new();
        for (i, o) in list.iter().enumerate() {
            let f = |k: &str| format!("rows[{i}].{k}");
            let Value::Object(o) = o else {
                return Err(bad(path, &format!("rows[{i}]"), "expected an object"));
            };
            for k in o.keys() {
                if !["name", "paper", "metric", "per", "at", "target", "unit"].contains(&k.as_str())
                {
                    return Err(bad(
                        path,
                        &f(k),
                        "unknown field; valid: name, paper, metric, per, at, target, unit",
                    ));
                }
            }
            let text = |k: &str, need: bool| -> Result<String> {
                match o.get(k) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    None if !need => Ok(String::new()),
                    _ => Err(bad(path, &f(k), "expected a string")),
                }
            };
            let target = match o.get("target") {
                Some(Value::Array(t)) if t.len() == 2 => match (t[0].as_f64(), t[1].as_f64()) {
                    (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
                    _ => return Err(bad(path, &f("target"), "expected [lo, hi] with lo <= hi")),
                },
                _ => return Err(bad(path, &f("target"), "expected [lo, hi]")),
            };
            let at = match o.get("at") {
                None => Map::new(),
                Some(Value::Object(a)) => a.clone(),
                Some(_) => return Err(bad(path, &f("at"), "expected an object of axis labels")),
            };
            let per = text("per", false)?;
            rows.push(Observable {
                name: text("name", true)?,
                paper: text("paper", false)?,
                metric: text("metric", true)?,
                per: (!per.is_empty()).then_some(per),
                at,
                lo: target.0,
                hi: target.1,
                unit: text("unit", false)?,
            });
        }
        Ok(Section {
            settings,
            show,
            rows,
        })
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => label_text(a) == label_text(b),
    }
}

/// One setting's score.
struct Scored {
    setting: Vec<String>,
    /// Per observable: its value, and how far outside the target (0 inside), relative to the nearer end.
    cells: Vec<Option<(f64, f64)>>,
    matched: usize,
    miss: f64,
}

impl Observable {
    /// The median over seeds at the rows given, on the best fit.
    fn value(&self, rows: &[&Row]) -> Option<f64> {
        let mut by_seed: Vec<(String, f64, usize)> = Vec::new();
        for r in rows {
            if r.get(super::MEMBER)
                .and_then(Value::as_i64)
                .is_some_and(|m| m != 0)
            {
                continue;
            }
            if !self
                .at
                .iter()
                .all(|(k, v)| r.get(k).is_some_and(|x| same(x, v)))
            {
                continue;
            }
            let Some(mut x) = r.get(&self.metric).and_then(Value::as_f64) else {
                continue;
            };
            if let Some(p) = &self.per {
                match r.get(p).and_then(Value::as_f64) {
                    Some(d) if d != 0.0 => x /= d,
                    _ => continue,
                }
            }
            let seed = r.get("seed").map(label_text).unwrap_or_default();
            match by_seed.iter_mut().find(|s| s.0 == seed) {
                Some(s) => {
                    s.1 += x;
                    s.2 += 1;
                }
                None => by_seed.push((seed, x, 1)),
            }
        }
        let v: Vec<f64> = by_seed.iter().map(|s| s.1 / s.2 as f64).collect();
        stats::median_ci(&v).map(|i| i.median)
    }

    fn miss(&self, v: f64) -> f64 {
        if v < self.lo {
            if self.lo != 0.0 {
                v / self.lo - 1.0
            } else {
                v - self.lo
            }
        } else if v > self.hi {
            if self.hi != 0.0 {
                v / self.hi - 1.0
            } else {
                v - self.hi
            }
        } else {
            0.0
        }
    }

    fn show(&self, v: f64) -> String {
        match self.unit.as_str() {
            "%" => format!("{}%", fmt_num(100.0 * v)),
            "ms" => format!("{} ms", fmt_num(1e3 * v)),
            "" => fmt_num(v),
            u => format!("{} {u}", fmt_num(v)),
        }
    }
}

/// The section's table (markdown: the best `show` settings, most observables matched first, then the
/// smallest total miss) and every setting as CSV.
pub fn table(section: &Section, rows: &[Row]) -> (String, String) {
    let mut settings: Vec<Vec<String>> = Vec::new();
    for r in rows {
        let s: Vec<String> = section
            .settings
            .iter()
            .map(|a| r.get(a).map(label_text).unwrap_or_default())
            .collect();
        if !settings.contains(&s) {
            settings.push(s);
        }
    }
    let mut scored: Vec<Scored> =
        settings
            .into_iter()
            .map(|setting| {
                let mine: Vec<&Row> =
                    rows.iter()
                        .filter(|r| {
                            section.settings.iter().zip(&setting).all(|(a, l)| {
                                r.get(a).map(label_text).as_deref() == Some(l.as_str())
                            })
                        })
                        .collect();
                let cells: Vec<Option<(f64, f64)>> = section
                    .rows
                    .iter()
                    .map(|o| o.value(&mine).map(|v| (v, o.miss(v))))
                    .collect();
                let matched = cells.iter().flatten().filter(|c| c.1 == 0.0).count();
                let miss = cells.iter().flatten().map(|c| c.1.abs().min(10.0)).sum();
                Scored {
                    setting,
                    cells,
                    matched,
                    miss,
                }
            })
            .collect();
    scored.sort_by(|a, b| b.matched.cmp(&a.matched).then(a.miss.total_cmp(&b.miss)));
    let n = section.rows.len();
    let mut md = format!(
        "| {} | {} | matched |\n| {}--- |\n",
        section.settings.join(" | "),
        section
            .rows
            .iter()
            .map(|o| {
                if o.paper.is_empty() {
                    o.name.clone()
                } else {
                    format!("{} (paper: {})", o.name, o.paper)
                }
            })
            .collect::<Vec<_>>()
            .join(" | "),
        "--- | ".repeat(section.settings.len() + n)
    );
    for s in scored.iter().take(section.show) {
        let cells: Vec<String> = s
            .cells
            .iter()
            .zip(&section.rows)
            .map(|(c, o)| match c {
                None => "-".into(),
                Some((v, m)) if *m == 0.0 => format!("**{}** ok", o.show(*v)),
                Some((v, m)) => format!("{} ({:+.0}%)", o.show(*v), 100.0 * m),
            })
            .collect();
        md += &format!(
            "| {} | {} | {} of {n} |\n",
            s.setting.join(" | "),
            cells.join(" | "),
            s.matched
        );
    }
    let q = |t: &str| {
        if t.contains([',', '"']) {
            format!("\"{}\"", t.replace('"', "\"\""))
        } else {
            t.to_string()
        }
    };
    let mut csv = section
        .settings
        .iter()
        .map(|s| q(s))
        .chain(
            section
                .rows
                .iter()
                .flat_map(|o| [q(&o.name), q(&format!("{} miss", o.name))]),
        )
        .chain(["matched".to_string()])
        .collect::<Vec<_>>()
        .join(",")
        + "\n";
    for s in &scored {
        let mut f: Vec<String> = s.setting.iter().map(|x| q(x)).collect();
        for c in &s.cells {
            match c {
                Some((v, m)) => {
                    f.push(format!("{v}"));
                    f.push(format!("{m}"));
                }
                None => f.extend(["".into(), "".into()]),
            }
        }
        f.push(s.matched.to_string());
        csv += &(f.join(",") + "\n");
    }
    (md, csv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_are_ranked_by_the_observables_they_match() {
        let sec = Section::parse(
            Path::new("x.json"),
            &json!({"settings": ["a"], "rows": [
                {"name": "hit", "metric": "h", "at": {"p": "C"}, "target": [0.7, 0.8], "unit": "%"},
                {"name": "mem", "metric": "m", "per": "pool", "target": [0.9, 1.0]}
            ]}),
        )
        .unwrap();
        let row = |a: &str, p: &str, seed: u64, h: f64, m: f64| {
            json!({"a": a, "p": p, "seed": seed, "h": h, "m": m, "pool": 10.0})
                .as_object()
                .unwrap()
                .clone()
        };
        let rows = vec![
            // Setting x: hit 0.75 (median of 0.7, 0.75, 0.9), memory 5 / 10.
            row("x", "C", 0, 0.7, 5.0),
            row("x", "C", 1, 0.75, 5.0),
            row("x", "C", 2, 0.9, 5.0),
            // Setting y: both in.
            row("y", "C", 0, 0.72, 9.5),
            row("y", "S", 0, 0.1, 9.5),
        ];
        let (md, csv) = table(&sec, &rows);
        let lines: Vec<&str> = md.lines().collect();
        assert!(
            lines[2].starts_with("| y | **72%** ok | **0.95** ok | 2 of 2 |"),
            "{md}"
        );
        assert!(
            lines[3].starts_with("| x | **75%** ok | 0.5 (-44%) | 1 of 2 |"),
            "{md}"
        );
        assert_eq!(csv.lines().count(), 3);
        assert!(Section::parse(Path::new("x"), &json!({"settings": ["a"], "rows": [{"name": "n", "metric": "m", "target": [2, 1]}]})).is_err());
    }
}
