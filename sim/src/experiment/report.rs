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
    /// The operating-point table (an `observables` section), markdown.
    pub observed: Option<String>,
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
    // Over the model's members the figure draws the best fit (member 0), unless it plots the members
    // themselves; the claims table gives the interval over the model.
    let best_only = rows.iter().any(|r| r.contains_key(super::MEMBER))
        && spec.x != super::MEMBER
        && !spec.series.iter().any(|s| s == super::MEMBER);
    let drawn: Vec<Row> = rows
        .iter()
        .filter(|r| !best_only || r.get(super::MEMBER).and_then(Value::as_i64) == Some(0))
        .filter(|r| {
            spec.filter
                .iter()
                .all(|(k, v)| r.get(k).is_some_and(|x| same(x, v)))
        })
        .cloned()
        .collect();
    let observed = match cfg.get("observables") {
        None => None,
        Some(o) => {
            let sec = super::observables::Section::parse(&cfg_path, o)?;
            let (md, csv) = super::observables::table(&sec, &rows);
            let f = out.join(format!("{name}_observables.csv"));
            std::fs::write(&f, csv)
                .map_err(|e| Error::internal(format!("{}: {e}", f.display())))?;
            Some(md)
        }
    };
    let mut fig = match spec.source {
        plot::Source::Results => plot::figure(&s("title"), &spec, &drawn),
        _ => super::timeline_plot::figure(&s("title"), &spec, &drawn, &dir),
    }
    .map_err(|e| e.context(table_path.display()))?;
    plot::add_claims(&mut fig, &spec, &drawn, &claims);
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
        observed,
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

/// A claim measured on one set of rows (one member of the model, or rows without members): the metric's
/// median over seeds, the baseline's, and the median of the paired per-seed changes (or ratios).
struct Measured {
    at: stats::Interval,
    vs: Option<stats::Interval>,
    change: Option<stats::Interval>,
}

/// What is wrong with a claim's rows, as the table shows it.
fn measure(claim: &Map<String, Value>, rows: &[&Row]) -> std::result::Result<Measured, String> {
    let s = |k: &str| claim.get(k).and_then(Value::as_str).unwrap_or_default();
    let metric = s("metric");
    let pick = |cond: Option<&Value>| -> Vec<&Row> {
        let cond = cond.and_then(Value::as_object).cloned().unwrap_or_default();
        rows.iter()
            .copied()
            .filter(|r| {
                cond.iter()
                    .all(|(k, v)| r.get(k).is_some_and(|x| same(x, v)))
            })
            .collect()
    };
    let at = per_seed(&pick(claim.get("at")), metric);
    let Some(a) = stats::median_ci(&at.iter().map(|x| x.1).collect::<Vec<_>>()) else {
        return Err(format!(
            "(no rows match {} with '{metric}')",
            claim.get("at").map_or("{}".into(), Value::to_string)
        ));
    };
    let Some(vs) = claim.get("vs") else {
        return Ok(Measured {
            at: a,
            vs: None,
            change: None,
        });
    };
    let base = per_seed(&pick(Some(vs)), metric);
    let Some(b) = stats::median_ci(&base.iter().map(|x| x.1).collect::<Vec<_>>()) else {
        return Err(format!("(no rows match {vs} with '{metric}')"));
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
        return Err(format!(
            "(no seed of {vs} pairs with one of the claim's rows)"
        ));
    };
    Ok(Measured {
        at: a,
        vs: Some(b),
        change: Some(c),
    })
}

/// A claim's test: `holds` in the config (`">= 1.15"`, `"< 0"`: the change or ratio against a bound), else
/// the direction of the best fit's effect against no effect (0 or 1x). Over seeds it holds when the seed
/// interval is on the right side of the bound.
struct Test {
    above: bool,
    bound: f64,
    strict: bool,
}

impl Test {
    fn of(claim: &Map<String, Value>, best: f64, ratio: bool) -> std::result::Result<Test, String> {
        let null = if ratio { 1.0 } else { 0.0 };
        let Some(text) = claim.get("holds").and_then(Value::as_str) else {
            return Ok(Test {
                above: best > null,
                bound: null,
                strict: true,
            });
        };
        let t = text.trim();
        let (op, rest) = [">=", "<=", ">", "<"]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|r| (*op, r)))
            .ok_or_else(|| {
                format!("(claim 'holds' must be >=, <=, > or < a number, got '{text}')")
            })?;
        let rest = rest.trim();
        let bound: f64 = match rest.strip_suffix('%') {
            Some(p) => p.trim().parse::<f64>().map(|x| x / 100.0),
            None => rest.trim_end_matches('x').trim().parse(),
        }
        .map_err(|_| format!("(claim 'holds': '{rest}' is not a number)"))?;
        Ok(Test {
            above: op.starts_with('>'),
            bound,
            strict: op.len() == 1,
        })
    }

    fn passes(&self, i: &stats::Interval) -> bool {
        match (self.above, self.strict) {
            (true, true) => i.lo > self.bound,
            (true, false) => i.lo >= self.bound,
            (false, true) => i.hi < self.bound,
            (false, false) => i.hi <= self.bound,
        }
    }
}

/// Spearman's rank correlation of two equally long lists (ties get their mean rank); `None` when either
/// does not vary.
fn spearman(x: &[f64], y: &[f64]) -> Option<f64> {
    let rank = |v: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
        let mut r = vec![0.0; v.len()];
        let mut i = 0;
        while i < idx.len() {
            let mut j = i;
            while j + 1 < idx.len() && v[idx[j + 1]] == v[idx[i]] {
                j += 1;
            }
            for &k in &idx[i..=j] {
                r[k] = (i + j) as f64 / 2.0;
            }
            i = j + 1;
        }
        r
    };
    let (rx, ry) = (rank(x), rank(y));
    let n = x.len() as f64;
    let (mx, my) = (rx.iter().sum::<f64>() / n, ry.iter().sum::<f64>() / n);
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    (vx > 0.0 && vy > 0.0).then(|| cov / (vx * vy).sqrt())
}

/// The parameter the members' effects follow most closely (largest |Spearman's rho| between the parameter's
/// value and the effect), with rho.
fn hinge(members: &[(String, f64)]) -> Option<(String, f64)> {
    let parsed: Vec<Vec<(String, f64)>> = members
        .iter()
        .map(|(p, _)| {
            p.split(';')
                .filter_map(|kv| {
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.parse().ok()?))
                })
                .collect()
        })
        .collect();
    let y: Vec<f64> = members.iter().map(|m| m.1).collect();
    let names: Vec<String> = parsed.first()?.iter().map(|p| p.0.clone()).collect();
    names
        .into_iter()
        .filter_map(|name| {
            let x: Vec<f64> = parsed
                .iter()
                .map(|ps| ps.iter().find(|p| p.0 == name).map_or(f64::NAN, |p| p.1))
                .collect();
            if x.iter().any(|v| !v.is_finite()) {
                return None;
            }
            Some((name, spearman(&x, &y)?))
        })
        .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
}

/// Our side of a claim, on the rows whose `axis` column is `label` (all rows if `None`), as text: the
/// median over seeds with its 95% bootstrap interval, and for a comparison the median of the per-seed
/// changes (or ratios) of paired seeds with their interval; an interval across no-effect says so. Rows of
/// several members of the model (a `member` column) add the interval over the model (the members' medians)
/// and the verdict: the claim holds only when it holds over the seeds of every member, else the parameter
/// it hinges on.
pub fn evaluate(claim: &Map<String, Value>, rows: &[Row], only: Option<(&str, &str)>) -> String {
    let s = |k: &str| claim.get(k).and_then(Value::as_str).unwrap_or_default();
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
    let ratio = s("show") == "ratio";
    let fmt_c = |x: f64| {
        if ratio {
            format!("{x:.2}x")
        } else {
            format!("{:+.1}%", 100.0 * x)
        }
    };
    let mine: Vec<&Row> = rows
        .iter()
        .filter(|r| only.is_none_or(|(k, v)| r.get(k).is_some_and(|x| label_text(x) == v)))
        .collect();
    // The members of the model present (rows without a member column are one parameter vector).
    let mut members: Vec<(i64, String)> = Vec::new();
    for r in &mine {
        if let Some(m) = r.get(super::MEMBER).and_then(Value::as_i64)
            && !members.iter().any(|x| x.0 == m)
        {
            let p = r
                .get(super::MEMBER_PARAMS)
                .map(label_text)
                .unwrap_or_default();
            members.push((m, p));
        }
    }
    members.sort();
    let of_member = |m: i64| -> Vec<&Row> {
        mine.iter()
            .copied()
            .filter(|r| r.get(super::MEMBER).and_then(Value::as_i64) == Some(m))
            .collect()
    };
    let best_rows = if members.is_empty() {
        mine.clone()
    } else {
        of_member(members[0].0)
    };
    let best = match measure(claim, &best_rows) {
        Ok(m) => m,
        Err(e) => return e,
    };
    let a = best.at;
    let (Some(b), Some(c)) = (best.vs, best.change) else {
        let mut out = format!("{}{} ({})", show_v(a.median), show_ci(&a), seeds(a.n));
        if members.len() > 1 {
            let vals: Vec<f64> = members
                .iter()
                .filter_map(|m| measure(claim, &of_member(m.0)).ok().map(|x| x.at.median))
                .collect();
            let lo = vals.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = vals.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            out += &format!(
                "; over the model {}-{} ({} members)",
                fmt_num(lo * k),
                fmt_num(hi * k),
                vals.len()
            );
        }
        return out;
    };
    let interval = if c.n < 2 {
        String::new()
    } else {
        format!(" [{}, {}]", fmt_c(c.lo), fmt_c(c.hi))
    };
    let null = if ratio { 1.0 } else { 0.0 };
    let head = format!(
        "{} vs {}: **{}**{interval} ({}",
        show_v(a.median),
        show_v(b.median),
        fmt_c(c.median),
        seeds(c.n),
    );
    if members.len() <= 1 {
        let verdict = if c.n >= 2 && c.contains(null) {
            if ratio {
                "; the interval holds 1x: no clear effect"
            } else {
                "; the interval crosses 0: no clear effect"
            }
        } else {
            ""
        };
        return format!("{head}{verdict})");
    }
    let test = match Test::of(claim, c.median, ratio) {
        Ok(t) => t,
        Err(e) => return e,
    };
    // Without a stated bound the claim is the best fit's direction; with none there, nothing to hold.
    let undirected =
        claim.get("holds").is_none() && (c.median == null || c.n >= 2 && c.contains(null));
    // Per member: its median change and whether its seed interval passes.
    let per: Vec<(String, f64, bool)> = members
        .iter()
        .filter_map(|(m, p)| {
            let x = measure(claim, &of_member(*m)).ok()?.change?;
            Some((p.clone(), x.median, test.passes(&x)))
        })
        .collect();
    let lo = per.iter().map(|x| x.1).fold(f64::INFINITY, f64::min);
    let hi = per.iter().map(|x| x.1).fold(f64::NEG_INFINITY, f64::max);
    let failing = per.iter().filter(|x| !x.2).count();
    let over_model = format!(
        "; over the model [{}, {}] ({} members)",
        fmt_c(lo),
        fmt_c(hi),
        per.len()
    );
    let bound = if ratio {
        format!("{:.2}x", test.bound)
    } else {
        format!("{:+.1}%", 100.0 * test.bound)
    };
    let side = match (test.above, test.strict) {
        (true, true) => ">",
        (true, false) => ">=",
        (false, true) => "<",
        (false, false) => "<=",
    };
    let verdict = if undirected {
        format!(
            ": no clear effect (the best fit's seed interval holds {})",
            fmt_c(null)
        )
    } else if failing == 0 {
        format!(": **holds** ({side} {bound} over seeds at every member)")
    } else {
        let on: Vec<(String, f64)> = per.iter().map(|x| (x.0.clone(), x.1)).collect();
        let why = match hinge(&on) {
            Some((p, rho)) => format!("; hinges on {p} (Spearman {rho:+.2})"),
            None => String::new(),
        };
        format!(
            ": does not hold ({side} {bound} fails at {failing} of {} members{why})",
            per.len()
        )
    };
    format!("{head}{over_model}){verdict}")
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
          per value; the others ran on one (their config's `physics`, else the analytic model). Where an \
          experiment ran every plausible parameter vector of its profile (`\"member\": \"ensemble\"`), the \
          numbers are the best fit's and the cell adds the interval over the model (the range of the members' \
          medians) and a verdict: a comparison **holds** only when, at every member, its interval over seeds \
          lies on the claim's side of its bound (its stated goal, else no effect); otherwise the cell says at \
          how many members it fails and names the parameter it hinges on (largest |Spearman's rho| between \
          the parameter and the effect across members). A cell without an interval over the model rests on one \
          parameter vector: the analytic roofline's assumed efficiencies.\n\n";
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
        if let Some(t) = &p.observed {
            o += &format!(
                "The paper's observables at each setting (median over seeds, best fit of the model; **ok**: within \
                 the target, else by how much it misses the nearer end), best-matching settings first; every \
                 setting: [{}_observables.csv]({}_observables.csv).\n\n{t}\n",
                p.name, p.name
            );
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Rows of two systems over three seeds and three members; ours / theirs = `ratio[member]` at every
    /// seed (times a seed wobble of +-1%).
    fn rows(ratio: [f64; 3]) -> Vec<Row> {
        let mut v = Vec::new();
        for (m, r) in ratio.iter().enumerate() {
            for seed in 0..3 {
                let wobble = 1.0 + 0.01 * (seed as f64 - 1.0);
                for (sys, x) in [("ours", 10.0 * r * wobble), ("theirs", 10.0)] {
                    let row = json!({"member": m, "member_params": format!("x={};y=1", m), "seed": seed,
                                     "system": sys, "tput": x});
                    v.push(row.as_object().unwrap().clone());
                }
            }
        }
        v
    }

    fn claim(holds: Option<&str>) -> Map<String, Value> {
        let mut c = json!({"claim": "c", "metric": "tput", "show": "ratio",
                           "at": {"system": "ours"}, "vs": {"system": "theirs"}});
        if let Some(h) = holds {
            c["holds"] = json!(h);
        }
        c.as_object().unwrap().clone()
    }

    #[test]
    fn a_claim_holds_only_over_seeds_at_every_member() {
        let all = evaluate(&claim(Some(">= 1.15")), &rows([1.5, 1.3, 1.2]), None);
        assert!(all.contains("**1.50x**"), "{all}");
        assert!(
            all.contains("over the model [1.20x, 1.50x] (3 members)"),
            "{all}"
        );
        assert!(all.contains("**holds** (>= 1.15x"), "{all}");
        // Member 2 at 1.10x fails the bound; the members' effects fall as x rises.
        let one = evaluate(&claim(Some(">= 1.15")), &rows([1.5, 1.3, 1.1]), None);
        assert!(
            one.contains(
                "does not hold (>= 1.15x fails at 1 of 3 members; hinges on x (Spearman -1.00))"
            ),
            "{one}"
        );
        // Without a bound: the best fit's direction (> 1x), which member 2 (0.9x) breaks.
        let dir = evaluate(&claim(None), &rows([1.5, 1.3, 0.9]), None);
        assert!(
            dir.contains("does not hold (> 1.00x fails at 1 of 3 members"),
            "{dir}"
        );
    }
}
