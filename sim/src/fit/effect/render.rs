//! The report's forms: one CSV row per run and metric, the markdown table with its summaries, the figure
//! (measured against predicted effect) and the section of plots/README.md.

use std::fmt::Write as _;
use std::path::Path;

use super::{AIM_POINTS, Client, Row};
use sim_core::error::{Error, Result};

fn pct(x: f64) -> String {
    format!("{x:+.1}%")
}

fn pts(x: f64) -> String {
    format!("{x:+.1}")
}

/// One CSV row per variant run and metric.
pub fn csv(rows: &[Row]) -> String {
    let mut o = String::from(
        "run,scheduler,setting,config,fifo_run,cross_campaign,metric,measured_fifo,measured_variant,\
         simulated_fifo,simulated_variant,measured_effect,predicted_effect,error_points\n",
    );
    for r in rows {
        for (i, (name, _)) in Client::METRICS.iter().enumerate() {
            let f = r.fifo.as_ref();
            let opt = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.6}"));
            let (me, pe) = r.effects(i).unzip();
            let _ = writeln!(
                o,
                "\"{}\",{},{},\"{}\",\"{}\",{},{name},{},{:.6},{:.6},{:.6},{},{},{}",
                r.variant.name(),
                r.variant.scheduler,
                r.variant.setting,
                r.variant.config(),
                f.map_or(String::new(), |f| f.name()),
                r.cross,
                opt(f.map(|f| f.measured.get(i))),
                r.variant.measured.get(i),
                r.sim_fifo.get(i),
                r.sim_variant.get(i),
                opt(me),
                opt(pe),
                opt(r.error(i)),
            );
        }
    }
    o
}

/// The markdown report: the effect table (one row per configuration with a FIFO counterpart), the summary
/// per scheduler, the LIFO file's two hypotheses and the runs without a counterpart.
pub fn markdown(rows: &[Row]) -> String {
    let mut o = String::new();
    let paired: Vec<&Row> = rows.iter().filter(|r| r.fifo.is_some()).collect();
    o += "| run (scheduler, setting, configuration) | throughput: measured / predicted effect | mean \
          latency | mean TTFT | aborted: measured / simulated (share) | worst error, points | mean latency \
          against the other campaign's FIFO |\n| --- | --- | --- | --- | --- | --- | --- |\n";
    for r in &paired {
        let e = |i: usize| {
            let (m, p) = r.effects(i).expect("paired");
            format!("{} / {}", pct(m), pct(p))
        };
        let (wi, we) = r.worst().expect("paired");
        let _ = writeln!(
            o,
            "| {}{} | {} | {} | {} | {} / {} ({:.1}% / {:.1}%) | {} ({}) | {} |",
            r.label(),
            if r.cross { " *" } else { "" },
            e(0),
            e(1),
            e(2),
            if r.variant.abort_recorded {
                format!("{}", r.variant.measured.aborted)
            } else {
                "-".into()
            },
            r.sim_variant.aborted,
            100.0 * r.variant.measured.get(3),
            100.0 * r.sim_variant.get(3),
            pts(we),
            Client::METRICS[wi].0,
            r.alt_effect(1).map_or("-".into(), pct),
        );
    }
    o += "\n`*`: FIFO counterpart from the other campaign (no same-campaign FIFO run of that configuration). \
          Effect = variant / FIFO - 1 (aborted: the share of all requests); error = predicted - measured, \
          percentage points. The last column: the measured effect against the same configuration's FIFO run \
          of the other campaign (main or backup), where there is one: the FIFO baseline's own spread.\n\n";
    o += "| scheduler | runs | within 5 points (throughput, mean latency, aborted share) | ... against either \
          campaign's FIFO | median / worst error: throughput | mean latency | mean TTFT | aborted share | worst \
          run |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n";
    // Per scheduler, then per campaign within it (`all` first).
    let mut scheds: Vec<(String, String)> = Vec::new();
    for r in &paired {
        for c in ["all", r.variant.campaign.as_str()] {
            let k = (r.variant.scheduler.clone(), c.to_string());
            if !scheds.contains(&k) {
                scheds.push(k);
            }
        }
    }
    // A scheduler measured in one campaign needs no line per campaign.
    let single: Vec<String> = scheds
        .iter()
        .filter(|(s, c)| {
            c != "all" && scheds.iter().filter(|(t, d)| t == s && d != "all").count() == 1
        })
        .map(|(s, _)| s.clone())
        .collect();
    scheds.retain(|(s, c)| c == "all" || !single.contains(s));
    scheds.sort_by(|a, b| (&a.0, a.1 != "all", &a.1).cmp(&(&b.0, b.1 != "all", &b.1)));
    for (s, camp) in scheds {
        let sel: Vec<&&Row> = paired
            .iter()
            .filter(|r| r.variant.scheduler == s && (camp == "all" || r.variant.campaign == camp))
            .collect();
        let s = if camp == "all" {
            s
        } else {
            format!("... {camp} campaign")
        };
        let ok = sel
            .iter()
            .filter(|r| r.worst().is_some_and(|w| w.1.abs() <= AIM_POINTS))
            .count();
        let either = sel.iter().filter(|r| r.within_either()).count();
        let stat = |i: usize| {
            let mut e: Vec<f64> = sel
                .iter()
                .filter_map(|r| r.error(i))
                .map(f64::abs)
                .collect();
            let worst = e.iter().copied().fold(0.0, f64::max);
            let med = sim_core::metrics::median(&mut e).unwrap_or(f64::NAN);
            format!("{med:.1} / {worst:.1}")
        };
        let worst = sel
            .iter()
            .max_by(|a, b| {
                let k = |r: &Row| r.worst().map_or(0.0, |w| w.1.abs());
                k(a).total_cmp(&k(b))
            })
            .expect("non-empty");
        let (wi, we) = worst.worst().expect("paired");
        let _ = writeln!(
            o,
            "| {s} | {} | {ok} | {either} | {} | {} | {} | {} | {} ({} {}) |",
            sel.len(),
            stat(0),
            stat(1),
            stat(2),
            stat(3),
            worst.label(),
            Client::METRICS[wi].0,
            pts(we)
        );
    }
    // The FIFO baseline's own spread: configurations FIFO ran in both campaigns.
    let mut seen: Vec<(String, String)> = Vec::new();
    let mut spread: [Vec<f64>; 3] = Default::default();
    for r in rows {
        let (Some(a), Some(b)) = (&r.fifo, &r.alt) else {
            continue;
        };
        let key = (r.variant.setting.clone(), r.variant.config());
        if seen.contains(&key) {
            continue;
        }
        seen.push(key);
        for (i, v) in spread.iter_mut().enumerate() {
            // The larger over the smaller: the same number whichever campaign is paired.
            v.push((b.measured.get(i) / a.measured.get(i)).ln().abs().exp() - 1.0);
        }
    }
    if !seen.is_empty() {
        let f = |v: &mut Vec<f64>| {
            let worst = v.iter().copied().fold(0.0, f64::max);
            let med = sim_core::metrics::median(v).unwrap_or(f64::NAN);
            format!("{:.1}% / {:.1}%", 100.0 * med, 100.0 * worst)
        };
        let _ = writeln!(
            o,
            "\nThe FIFO baseline's repeatability: {} configurations ran under FIFO in both campaigns; the two \
             measurements differ by (median / worst) {} in throughput, {} in mean latency, {} in mean TTFT.",
            seen.len(),
            f(&mut spread[0]),
            f(&mut spread[1]),
            f(&mut spread[2])
        );
    }
    // The abort campaigns against the queue with and without its order switch.
    let mut groups: Vec<(String, String)> = rows
        .iter()
        .filter(|r| r.sim_no_switch.is_some())
        .map(|r| (r.variant.campaign.clone(), r.variant.setting.clone()))
        .collect();
    groups.sort();
    groups.dedup();
    if !groups.is_empty() {
        o += "\nThe abort runs' mean TTFT (median over each campaign's runs at 2 req/s and above, s) against the \
              simulated queue of c1ddf48 (newest first when arrivals outpace its batches) and the same queue \
              without that order switch (always oldest first):\n\n\
              | campaign, setting | runs | measured | simulated slora-abort | slora-abort[switch=false] |\n\
              | --- | --- | --- | --- | --- |\n";
        for (c, st) in groups {
            let sel: Vec<&Row> = rows
                .iter()
                .filter(|r| {
                    r.sim_no_switch.is_some()
                        && r.variant.campaign == c
                        && r.variant.setting == st
                        && r.variant.spec.req_rate >= 2.0
                })
                .collect();
            let med = |f: &dyn Fn(&Row) -> f64| {
                let mut v: Vec<f64> = sel.iter().map(|r| f(r)).collect();
                sim_core::metrics::median(&mut v).unwrap_or(f64::NAN)
            };
            let _ = writeln!(
                o,
                "| {c}, {st} | {} | {:.2} | {:.2} | {:.2} |",
                sel.len(),
                med(&|r| r.variant.measured.ttft),
                med(&|r| r.sim_variant.ttft),
                med(&|r| r.sim_no_switch.expect("abort").ttft),
            );
        }
    }
    // The LIFO file: which scheduler's simulation matches it.
    let lifo: Vec<&Row> = rows
        .iter()
        .filter(|r| r.sim_as_launched.is_some())
        .collect();
    if !lifo.is_empty() {
        o += "\nThe file labelled LIFO, launched with the FIFO command line, against both hypotheses \
              (simulated; measured FIFO = the same configuration's FIFO run). Attainment: share of \
              requests with TTFT < 6 s (S-LoRA's metric).\n\n\
              | run | attainment: LIFO file / FIFO run measured | simulated lifo / fifo | mean latency: LIFO \
              file / FIFO run | simulated lifo / fifo |\n| --- | --- | --- | --- | --- |\n";
        for r in lifo {
            let (name, launched) = r.sim_as_launched.as_ref().expect("lifo");
            let f = r.fifo.as_ref().map(|f| f.measured);
            let fa = f.map_or("-".into(), |f| format!("{:.3}", f.attainment));
            let fl = f.map_or("-".into(), |f| format!("{:.1} s", f.latency));
            let _ = writeln!(
                o,
                "| {} | {:.3} / {fa} | {:.3} / {:.3} ({name}) | {:.1} s / {fl} | {:.1} s / {:.1} s |",
                r.variant.config(),
                r.variant.measured.attainment,
                r.sim_variant.attainment,
                launched.attainment,
                r.variant.measured.latency,
                r.sim_variant.latency,
                launched.latency,
            );
        }
    }
    // Each run simulated against measured (the variant itself), per scheduler and campaign.
    o += "\nEach variant run simulated against measured, median / worst relative error (the grid: PETS runs of \
          120 s over adapters x alpha x rate x cv with no FIFO counterpart):\n\n\
          | scheduler (campaign) | runs | throughput | mean latency | mean TTFT | aborted: median / worst \
          difference, requests |\n| --- | --- | --- | --- | --- | --- |\n";
    let mut keys: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.variant.scheduler.clone(), r.variant.campaign.clone()))
        .collect();
    keys.sort();
    keys.dedup();
    for (sc, camp) in keys {
        let sel: Vec<&Row> = rows
            .iter()
            .filter(|r| r.variant.scheduler == sc && r.variant.campaign == camp)
            .collect();
        let stat = |f: &dyn Fn(&Row) -> f64, scale: f64, unit: &str| {
            let mut e: Vec<f64> = sel.iter().map(|r| f(r).abs()).collect();
            let worst = e.iter().copied().fold(0.0, f64::max);
            let med = sim_core::metrics::median(&mut e).unwrap_or(f64::NAN);
            format!("{:.1}{unit} / {:.1}{unit}", scale * med, scale * worst)
        };
        let rel = |i: usize| {
            stat(
                &|r: &Row| r.sim_variant.get(i) / r.variant.measured.get(i) - 1.0,
                100.0,
                "%",
            )
        };
        let _ = writeln!(
            o,
            "| {sc} ({camp}) | {} | {} | {} | {} | {} |",
            sel.len(),
            rel(0),
            rel(1),
            rel(2),
            if sel.iter().all(|r| r.variant.abort_recorded) {
                stat(
                    &|r: &Row| r.sim_variant.aborted - r.variant.measured.aborted,
                    1.0,
                    "",
                )
            } else {
                "- (not recorded)".into()
            }
        );
    }
    o
}

/// The figure: measured effect against predicted effect, one point per configuration, per metric, with the
/// identity line and the +-5 point band.
fn draw<DB: plotters::prelude::DrawingBackend>(
    root: plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    rows: &[&Row],
) -> std::result::Result<(), Box<dyn std::error::Error>>
where
    DB::ErrorType: 'static,
{
    use plotters::prelude::*;
    root.fill(&WHITE)?;
    let root = root.titled(
        "S-LoRA's schedulers: measured effect vs predicted (variant / FIFO, profiles fitted to FIFO runs only)",
        ("sans-serif", 20),
    )?;
    let panels = root.split_evenly((2, 2));
    let groups: Vec<(String, RGBAColor)> = {
        let mut g: Vec<String> = rows
            .iter()
            .map(|r| format!("{} {}", r.variant.scheduler, r.variant.setting))
            .collect();
        g.sort();
        g.dedup();
        g.into_iter()
            .enumerate()
            // The figures' palette: no pale yellow on white.
            .map(|(k, n)| (n, crate::experiment::plot::colour(k).to_rgba()))
            .collect()
    };
    for (pi, (area, &mi)) in panels.iter().zip(&[0usize, 1, 2, 3]).enumerate() {
        let pts: Vec<(f64, f64, usize, bool)> = rows
            .iter()
            .filter_map(|r| {
                let (m, p) = r.effects(mi)?;
                let g = format!("{} {}", r.variant.scheduler, r.variant.setting);
                let k = groups.iter().position(|x| x.0 == g).unwrap_or(0);
                Some((m, p, k, r.cross))
            })
            .collect();
        let lo = pts.iter().map(|p| p.0.min(p.1)).fold(0.0, f64::min) - 6.0;
        let hi = pts.iter().map(|p| p.0.max(p.1)).fold(0.0, f64::max) + 6.0;
        let unit = if Client::METRICS[mi].1 { "%" } else { "points" };
        let mut chart = ChartBuilder::on(area)
            .caption(
                format!("{} ({unit})", Client::METRICS[mi].0),
                ("sans-serif", 16),
            )
            .margin(10)
            .x_label_area_size(35)
            .y_label_area_size(45)
            .build_cartesian_2d(lo..hi, lo..hi)?;
        chart
            .configure_mesh()
            .x_desc("measured effect")
            .y_desc("predicted effect")
            .max_light_lines(1)
            .label_style(("sans-serif", 11))
            .draw()?;
        chart.draw_series(std::iter::once(Polygon::new(
            vec![
                (lo, lo - AIM_POINTS),
                (hi, hi - AIM_POINTS),
                (hi, hi + AIM_POINTS),
                (lo, lo + AIM_POINTS),
            ],
            BLACK.mix(0.08).filled(),
        )))?;
        chart.draw_series(LineSeries::new([(lo, lo), (hi, hi)], BLACK.mix(0.5)))?;
        for (k, (name, color)) in groups.iter().enumerate() {
            let c = *color;
            let s = chart.draw_series(
                pts.iter()
                    .filter(|p| p.2 == k && !p.3)
                    .map(|&(x, y, _, _)| Circle::new((x, y), 4, c.filled())),
            )?;
            if pi == 0 {
                s.label(name.clone())
                    .legend(move |(x, y)| Circle::new((x, y), 4, c.filled()));
            }
            chart.draw_series(
                pts.iter()
                    .filter(|p| p.2 == k && p.3)
                    .map(|&(x, y, _, _)| Cross::new((x, y), 5, c.stroke_width(2))),
            )?;
        }
        if pi == 0 {
            chart
                .draw_series(std::iter::empty::<Cross<(f64, f64), i32>>())?
                .label("x: FIFO run from the other campaign")
                .legend(|(x, y)| Cross::new((x, y), 5, BLACK.stroke_width(2)));
            chart
                .draw_series(std::iter::empty::<Circle<(f64, f64), i32>>())?
                .label("band: within 5 points")
                .legend(|(x, y)| {
                    Rectangle::new([(x - 5, y - 4), (x + 5, y + 4)], BLACK.mix(0.08).filled())
                });
            chart
                .configure_series_labels()
                .label_font(("sans-serif", 11))
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }
    }
    root.present()?;
    Ok(())
}

/// PNG and SVG of the figure (`path` without extension).
pub fn plot(rows: &[Row], path: &Path) -> Result<()> {
    use plotters::prelude::*;
    crate::experiment::plot::register_font();
    let paired: Vec<&Row> = rows.iter().filter(|r| r.fifo.is_some()).collect();
    let e = |e: Box<dyn std::error::Error>| Error::internal(format!("{}: {e}", path.display()));
    let png = path.with_extension("png");
    draw(
        crate::experiment::glyphs::Glyphs::new(BitMapBackend::new(&png, (1100, 950)))
            .into_drawing_area(),
        &paired,
    )
    .map_err(e)?;
    let svg = path.with_extension("svg");
    draw(
        SVGBackend::new(&svg, (1100, 950)).into_drawing_area(),
        &paired,
    )
    .map_err(e)?;
    Ok(())
}

/// The policy-effect section of plots/README.md, from `effect_slora.md` in the plots folder, if it is there.
pub fn section(out: &Path) -> String {
    let Ok(table) = std::fs::read_to_string(out.join("effect_slora.md")) else {
        return String::new();
    };
    format!(
        "## Policy effect: S-LoRA's other schedulers, predicted and measured\n\n\
         S-LoRA's repository measured its real engine under its early-abort queue (`slora-abort`), its PETS \
         queue (`slora-pets`) and a file labelled LIFO on the workloads of its FIFO runs (A10G, S1 and S2; \
         `calibrate/data/slora-schedulers`, never fitted on). Each run and its FIFO counterpart are replayed \
         with their exact requests on the committed profile (`calibrate/profiles/slora-a10g-llama-7b.json`, \
         fitted to FIFO runs only); the metrics are S-LoRA's benchmark client's (an aborted request counts only \
         in the aborted share). The effect is variant / FIFO - 1, measured and predicted, per configuration; \
         the aim is a predicted effect within 5 percentage points of the measured one on throughput, mean \
         latency and the aborted share. See [docs/fidelity.md](../docs/fidelity.md). Regenerate: `sim fit \
         report`.\n\n{table}\n\
         ![measured vs predicted effect](effect_slora.png)\n\n[SVG](effect_slora.svg) | [every run and \
         metric](effect_slora.csv)\n\n"
    )
}
