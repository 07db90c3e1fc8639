//! `sim plot` over results directories, and the `plots/README.md` index: every figure, and a table of the
//! paper's claims (each config's `claims`) next to the numbers in our results.
//!
//! A claim: `{"claim": "...", "paper": "-14.7%", "metric": "ttft_p99_s", "at": {"rate": 6, "system":
//! "Chameleon"}, "vs": {"rate": 6, "system": "S-LoRA"}, "show": "change" | "ratio" | "value", "unit": "s"}`:
//! the metric averaged over the rows matching `at` (and `vs`), shown as both values and their change.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::plot::{self, PlotSpec, fmt_num, label_text};
use super::table::{self, Row};
use crate::error::{Error, Result};

/// One plotted experiment, for the index.
pub struct Plotted {
    pub name: String,
    pub title: String,
    pub caption: String,
    pub notes: String,
    pub source: String,
    pub scale: String,
    pub rows: Vec<Row>,
    pub claims: Vec<Value>,
}

/// Plots one results directory (`DIR/config.json` + `DIR/results.csv`), or one results table inside such
/// a directory, into `out`.
pub fn plot_results(path: &Path, out: &Path) -> Result<Plotted> {
    if !path.exists() {
        return Err(Error::msg(format!(
            "{}: no such results directory or table (write one with `sim sweep CONFIG`)",
            path.display()
        )));
    }
    let (dir, table_path) = if path.is_dir() {
        (path.to_path_buf(), path.join("results.csv"))
    } else {
        (
            path.parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
            path.to_path_buf(),
        )
    };
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| {
        Error::msg(format!(
            "{}: {e} (a results directory written by `sim sweep` holds it)",
            cfg_path.display()
        ))
    })?;
    let cfg: Value = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("{}: {e}", cfg_path.display())))?;
    let s = |k: &str| {
        cfg.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    let name = s("name");
    let spec = PlotSpec::parse(
        &cfg_path,
        cfg.get("plot")
            .ok_or_else(|| Error::msg(format!("{}: plot: missing", cfg_path.display())))?,
    )?;
    if !table_path.exists() {
        return Err(Error::msg(format!(
            "{}: no results table yet (is the sweep complete? `sim sweep CONFIG --merge` merges shards)",
            table_path.display()
        )));
    }
    let rows = table::read(&table_path)?;
    let claims = cfg
        .get("claims")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let mut fig =
        plot::figure(&s("title"), &spec, &rows).map_err(|e| e.context(table_path.display()))?;
    plot::add_claims(&mut fig, &spec, &rows, &claims);
    plot::write_figure(&fig, out, &name)?;
    Ok(Plotted {
        name,
        title: s("title"),
        caption: s("caption"),
        notes: s("notes"),
        source: s("source"),
        scale: rows
            .first()
            .and_then(|r| r.get("scale"))
            .map(label_text)
            .unwrap_or_default(),
        rows,
        claims,
    })
}

/// Every results directory under `results` (those with a `config.json`), sorted by name.
pub fn result_dirs(results: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(results)
        .map_err(|e| Error::msg(format!("{}: {e}", results.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("config.json").exists())
        .collect();
    v.sort();
    Ok(v)
}

fn same(a: &Value, b: &Value) -> bool {
    let n = |v: &Value| match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.parse::<f64>().ok(),
        _ => None,
    };
    match (n(a), n(b)) {
        (Some(x), Some(y)) => (x - y).abs() < 1e-9,
        _ => label_text(a) == label_text(b),
    }
}

fn select<'a>(rows: &'a [Row], cond: Option<&Value>) -> Vec<&'a Row> {
    let cond = cond.and_then(Value::as_object).cloned().unwrap_or_default();
    rows.iter()
        .filter(|r| {
            cond.iter()
                .all(|(k, v)| r.get(k).is_some_and(|x| same(x, v)))
        })
        .collect()
}

fn mean(rows: &[&Row], metric: &str) -> Option<f64> {
    let v: Vec<f64> = rows
        .iter()
        .filter_map(|r| r.get(metric).and_then(Value::as_f64))
        .collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

/// Our side of a claim, as text.
pub fn evaluate(claim: &Map<String, Value>, rows: &[Row]) -> String {
    let s = |k: &str| claim.get(k).and_then(Value::as_str).unwrap_or_default();
    let metric = s("metric");
    let unit = s("unit");
    let k = match unit {
        "ms" => 1e3,
        "%" => 1e2,
        _ => 1.0,
    };
    let show_v = |v: f64| {
        if unit.is_empty() {
            fmt_num(v * k)
        } else {
            format!("{} {unit}", fmt_num(v * k))
        }
    };
    let at = select(rows, claim.get("at"));
    let Some(a) = mean(&at, metric) else {
        return format!(
            "(no rows match {} with '{metric}')",
            claim.get("at").map_or("{}".into(), Value::to_string)
        );
    };
    // A single throughput row: show the search bracket too.
    let bracket = |sel: &[&Row]| -> String {
        match sel {
            [r] if metric == "throughput_slo_rps" => {
                let hi = r
                    .get("throughput_slo_hi_rps")
                    .and_then(Value::as_f64)
                    .map_or("open".into(), fmt_num);
                let lo = r
                    .get("throughput_slo_lo_rps")
                    .and_then(Value::as_f64)
                    .map_or("-".into(), fmt_num);
                format!(" [{lo}, {hi}]")
            }
            _ => String::new(),
        }
    };
    let Some(vs) = claim.get("vs") else {
        return format!("{}{}", show_v(a), bracket(&at));
    };
    let base_rows = select(rows, Some(vs));
    let Some(b) = mean(&base_rows, metric) else {
        return format!("(no rows match {vs} with '{metric}')");
    };
    let show = match s("show") {
        "" => "change",
        x => x,
    };
    let rel = match show {
        "ratio" => format!("{:.2}x", a / b),
        _ => format!("{:+.1}%", 100.0 * (a / b - 1.0)),
    };
    format!(
        "{}{} vs {}{}: **{rel}**",
        show_v(a),
        bracket(&at),
        show_v(b),
        bracket(&base_rows)
    )
}

/// The engine-fidelity section of plots/README.md, from `sim fit`'s error table (`fit_slora.md` in the
/// plots folder), if it is there.
pub fn fit_section(out: &Path) -> String {
    let Ok(table) = std::fs::read_to_string(out.join("fit_slora.md")) else {
        return String::new();
    };
    format!(
        "## Engine fidelity: S-LoRA's measured runs\n\n\
         The cost model of each GPU x model is fitted (`sim fit`) to S-LoRA's own end-to-end benchmark runs \
         (github.com/S-LoRA/S-LoRA c1ddf48, `calibrate/data/slora`), each run replayed with its exact requests on \
         the simulator's S-LoRA engine. Relative error of the simulated metric against the measured one, median and \
         worst over the runs of each profile (the profiles are `calibrate/profiles/slora-*.json`; runs marked out \
         of sample were not fitted). Regenerate: `sim fit` (fits and writes the profiles, about a minute) or `sim fit \
         report` (simulates with the committed profiles).\n\n{table}\n\
         ![measured vs simulated](fit_slora.png)\n\n[SVG](fit_slora.svg) | [every run and metric](fit_slora.csv)\n\n"
    )
}

/// `plots/README.md`: the claims table, the engine's fidelity, then every figure.
pub fn readme(plotted: &[Plotted], fit: &str) -> String {
    let scale = plotted.first().map_or("full", |p| p.scale.as_str());
    let mut o = String::from("# Figures\n\n");
    o += &format!(
        "Generated by `sim plot --all` from the results tables of `sim sweep` (scale: {scale}); do not edit by \
         hand. Each figure has a PNG, an SVG and the CSV of its plotted points (mean over seeds, with a 95% \
         bootstrap interval of that mean, or the throughput search bracket). The experiments and their commands are in \
         [docs/experiments.md](../docs/experiments.md); the setup is the paper's (Llama-7B on an A40, 100 \
         adapters of ranks 8-128, Poisson arrivals, P99 TTFT SLO 5 s) with `--length-scale 0.31`, the one open fit \
         (chosen so that S-LoRA saturates near the paper's 8.6 RPS).\n\n"
    );
    o += "## The paper's claims and this model\n\n";
    o += "Each number is computed from the results table by the `claims` of the experiment's config: the \
          metric averaged over seeds, and its change or ratio against the baseline. A throughput is followed \
          by its search bracket [highest passing, lowest failing rate].\n\n";
    o += "| claim | paper | this model | figure |\n| --- | --- | --- | --- |\n";
    for p in plotted {
        for c in &p.claims {
            let Some(c) = c.as_object() else { continue };
            let s = |k: &str| {
                c.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            o += &format!(
                "| {} | {} | {} | [{}](#{}) |\n",
                s("claim"),
                s("paper"),
                evaluate(c, &p.rows),
                p.name,
                p.name
            );
        }
    }
    o += "\n";
    o += fit;
    o += "## Figures\n\n";
    for p in plotted {
        o += &format!("<a id=\"{}\"></a>\n### {}\n\n", p.name, p.title);
        if !p.caption.is_empty() {
            o += &format!("{}\n\n", p.caption);
        }
        o += &format!("![{}]({}.png)\n\n", p.title, p.name);
        o += &format!("[SVG]({0}.svg) | [plotted data]({0}.csv)", p.name);
        if !p.source.is_empty() {
            o += &format!(
                " | config [`{0}`](../{0}) | regenerate: `sim sweep {0} && sim plot results/{1}`",
                p.source, p.name
            );
        }
        o += "\n\n";
        if !p.notes.is_empty() {
            o += &format!("{}\n\n", p.notes);
        }
    }
    o
}
