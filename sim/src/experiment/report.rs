//! `sim plot` over results directories, and the `plots/README.md` index: every figure, and a table of the
//! paper's claims (each config's `claims`) next to the numbers in our results.
//!
//! A claim: `{"claim": "...", "paper": "-14.7%", "metric": "ttft_p99_s", "at": {"rate": 6, "system":
//! "Chameleon"}, "vs": {"rate": 6, "system": "S-LoRA"}, "show": "change" | "ratio" | "value", "unit": "s"}`:
//! per seed, the metric over the rows matching `at` (and `vs`); the median over seeds with a bootstrap
//! interval, of the values and of the per-seed change.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::plot::{self, PlotSpec, fmt_num, label_text};
use super::stats;
use super::table::{self, Row};
use sim_core::error::{Error, Result};

/// The grid axis that names the cost model (physics) a run used; the claims table has a column per value.
pub const PHYSICS: &str = "physics";
const ANALYTIC: &str = "analytic";

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
    /// The claims-table column of an experiment without a `physics` axis (its config's `physics`, e.g.
    /// "calibrated A40"; default "analytic").
    pub physics: String,
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
    let mut fig = match spec.source {
        plot::Source::Results => plot::figure(&s("title"), &spec, &rows),
        _ => super::timeline_plot::figure(&s("title"), &spec, &rows, &dir),
    }
    .map_err(|e| e.context(table_path.display()))?;
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
        physics: cfg
            .get(PHYSICS)
            .and_then(Value::as_str)
            .unwrap_or(ANALYTIC)
            .to_string(),
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

fn select<'a>(rows: &'a [Row], cond: Option<&Value>, extra: Option<(&str, &str)>) -> Vec<&'a Row> {
    let cond = cond.and_then(Value::as_object).cloned().unwrap_or_default();
    rows.iter()
        .filter(|r| {
            cond.iter()
                .all(|(k, v)| r.get(k).is_some_and(|x| same(x, v)))
                && extra.is_none_or(|(k, v)| r.get(k).is_some_and(|x| label_text(x) == v))
        })
        .collect()
}

/// The metric per seed over `rows` (rows of one seed averaged, e.g. when the selection leaves an axis
/// free). A throughput row carries its per-seed values (`throughput_slo_per_seed`, in `seeds` order).
fn per_seed(rows: &[&Row], metric: &str) -> Vec<(String, f64)> {
    let mut acc: Vec<(String, f64, usize)> = Vec::new();
    let mut add = |seed: String, v: f64| {
        if !v.is_finite() {
            return;
        }
        match acc.iter_mut().find(|(s, _, _)| *s == seed) {
            Some(e) => {
                e.1 += v;
                e.2 += 1;
            }
            None => acc.push((seed, v, 1)),
        }
    };
    for r in rows {
        let listed = (metric == "throughput_slo_rps")
            .then(|| {
                let vals = r.get("throughput_slo_per_seed")?.as_str()?;
                let seeds = r.get("seeds")?.as_str()?;
                Some((vals.to_string(), seeds.to_string()))
            })
            .flatten();
        if let Some((vals, seeds)) = listed {
            for (v, s) in vals.split_whitespace().zip(seeds.split(',')) {
                add(s.to_string(), v.parse().unwrap_or(f64::NAN));
            }
        } else if let Some(v) = r.get(metric).and_then(Value::as_f64) {
            add(r.get("seed").map(label_text).unwrap_or_default(), v);
        }
    }
    acc.into_iter()
        .map(|(s, sum, n)| (s, sum / n as f64))
        .collect()
}

/// Our side of a claim, on the rows whose `axis` column is `label` (all rows if `None`), as text: the
/// median over seeds with its 95% bootstrap interval, and for a comparison the median of the per-seed
/// changes (or ratios) of paired seeds with their interval; an interval across no-effect says so.
pub fn evaluate(claim: &Map<String, Value>, rows: &[Row], only: Option<(&str, &str)>) -> String {
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
    let show_ci = |i: &stats::Interval| {
        if i.n < 2 {
            String::new()
        } else {
            format!(" [{}, {}]", fmt_num(i.lo * k), fmt_num(i.hi * k))
        }
    };
    let seeds = |n: usize| {
        if n == 1 {
            "1 seed".to_string()
        } else {
            format!("{n} seeds")
        }
    };
    let at = per_seed(&select(rows, claim.get("at"), only), metric);
    let Some(a) = stats::median_ci(&at.iter().map(|x| x.1).collect::<Vec<_>>()) else {
        return format!(
            "(no rows match {} with '{metric}')",
            claim.get("at").map_or("{}".into(), Value::to_string)
        );
    };
    let Some(vs) = claim.get("vs") else {
        return format!("{}{} ({})", show_v(a.median), show_ci(&a), seeds(a.n));
    };
    let base = per_seed(&select(rows, Some(vs), only), metric);
    let Some(b) = stats::median_ci(&base.iter().map(|x| x.1).collect::<Vec<_>>()) else {
        return format!("(no rows match {vs} with '{metric}')");
    };
    let ratio = s("show") == "ratio";
    let paired: Vec<f64> = at
        .iter()
        .filter_map(|(seed, x)| {
            let y = base.iter().find(|(s, _)| s == seed)?.1;
            Some(if ratio { x / y } else { x / y - 1.0 })
        })
        .collect();
    let Some(c) = stats::median_ci(&paired) else {
        return format!("(no seed of {vs} pairs with one of the claim's rows)");
    };
    let fmt_c = |x: f64| {
        if ratio {
            format!("{x:.2}x")
        } else {
            format!("{:+.1}%", 100.0 * x)
        }
    };
    let interval = if c.n < 2 {
        String::new()
    } else {
        format!(" [{}, {}]", fmt_c(c.lo), fmt_c(c.hi))
    };
    let null = if ratio { 1.0 } else { 0.0 };
    let verdict = if c.n >= 2 && c.contains(null) {
        if ratio {
            "; the interval holds 1x: no clear effect"
        } else {
            "; the interval crosses 0: no clear effect"
        }
    } else {
        ""
    };
    format!(
        "{} vs {}: **{}**{interval} ({}{verdict})",
        show_v(a.median),
        show_v(b.median),
        fmt_c(c.median),
        seeds(c.n),
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
         ![measured vs simulated](fit_slora.png)\n\n[SVG](fit_slora.svg) | [every run and metric](fit_slora.csv)\n\n{}",
        crate::fit::effect::section(out)
    )
}

/// `plots/README.md`: the claims table, the engine's fidelity, then every figure.
pub fn readme(plotted: &[Plotted], fit: &str) -> String {
    let scale = plotted.first().map_or("full", |p| p.scale.as_str());
    let mut o = String::from("# Figures\n\n");
    o += &format!(
        "Generated by `sim plot --all` from the results tables of `sim sweep` (scale: {scale}); do not edit by \
         hand. Each figure has a PNG, an SVG and the CSV of its plotted points (mean over seeds, with a 95% \
         bootstrap interval of that mean, or the throughput search bracket). The experiments and their commands \
         are in [docs/experiments.md](../docs/experiments.md). The setup is the paper's (Llama-7B on an A40, \
         100 adapters of ranks 8-128, Poisson arrivals, P99 TTFT SLO 5 s) on S-LoRA's engine mechanics \
         ([docs/fidelity.md](../docs/fidelity.md)). Two physics: the analytic roofline (datasheet figures, \
         assumed efficiencies) and the calibrated A40 engine profile (Vidur's measured A40 operator times, \
         S-LoRA's terms fitted to its measured runs). The trace's lengths are scaled by the rule \
         `knee[rate=8.6]` (S-LoRA's P99 TTFT meets the SLO at the paper's 8.6 RPS knee), resolved per physics \
         (each row's `length_scale`); a few experiments use a fixed factor, named in their caption.\n\n"
    );
    o += "## The paper's claims and this model\n\n";
    o += "Each number is computed from the results table by the `claims` of the experiment's config: the \
          median over seeds of the metric, and for a comparison the median over seeds of the per-seed change \
          (or ratio) against the baseline run on the same seed, each with its 95% bootstrap interval [lo, hi] \
          and the number of seeds. A throughput is found per seed (bisection over the rate). When an \
          interval holds no effect (0% or 1x) the row says so: that claim is not supported at this seed \
          count. A column per cost model (physics): an experiment with a `physics` axis is evaluated once \
          per value; the others ran on one (their config's `physics`, else the analytic model).\n\n";
    let mut columns: Vec<String> = vec![ANALYTIC.to_string()];
    for p in plotted {
        let labels = p.rows.iter().filter_map(|r| r.get(PHYSICS).map(label_text));
        for v in labels.chain(std::iter::once(p.physics.clone())) {
            if !columns.contains(&v) {
                columns.push(v);
            }
        }
    }
    o += &format!(
        "| claim | paper | {} | figure |\n| --- | --- |{} --- |\n",
        columns.join(" | "),
        " --- |".repeat(columns.len())
    );
    for p in plotted {
        for c in p.claims.iter().filter_map(Value::as_object) {
            if !own_table(c) {
                o += &claim_row(p, c, &columns, true);
            }
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
        let own: Vec<&Map<String, Value>> = p
            .claims
            .iter()
            .filter_map(Value::as_object)
            .filter(|c| own_table(c))
            .collect();
        if !own.is_empty() {
            o += &format!(
                "| | paper | {} |\n| --- | --- |{}\n",
                columns.join(" | "),
                " --- |".repeat(columns.len())
            );
            for c in own {
                o += &claim_row(p, c, &columns, false);
            }
            o += "\n";
        }
        if !p.notes.is_empty() {
            o += &format!("{}\n\n", p.notes);
        }
    }
    o
}

/// A claim shown in its experiment's section (`"table": "own"`), e.g. the cells of a matrix.
fn own_table(c: &Map<String, Value>) -> bool {
    c.get("table").and_then(Value::as_str) == Some("own")
}

/// One claims-table row: the claim, the paper's number, one cell per physics column, and (in the main
/// table) a link to its figure.
fn claim_row(p: &Plotted, c: &Map<String, Value>, columns: &[String], link: bool) -> String {
    let has_axis = p.rows.iter().any(|r| r.contains_key(PHYSICS));
    let s = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or_default();
    let cells: Vec<String> = columns
        .iter()
        .map(|col| {
            if has_axis {
                evaluate(c, &p.rows, Some((PHYSICS, col)))
            } else if *col == p.physics {
                evaluate(c, &p.rows, None)
            } else {
                "-".into()
            }
        })
        .collect();
    let figure = if link {
        format!(" [{0}](#{0}) |", p.name)
    } else {
        String::new()
    };
    format!(
        "| {} | {} | {} |{figure}\n",
        s("claim"),
        s("paper"),
        cells.join(" | ")
    )
}
