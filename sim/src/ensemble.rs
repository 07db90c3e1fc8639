//! The model's uncertainty as an axis: the plausible parameter vectors ("members") of a run's cost model.
//!
//! An engine profile of schema v2 stores its plausible set (`members`: the best fit first, then a bootstrap
//! over the measured runs it was fitted to; docs/profile-schema.md), and `--cost profile[member=K]` runs
//! member K. A profile without that set (a version-1 profile, converted), an analytic roofline or a measured
//! table has one member, itself.
//!
//! `sim run --member K` runs one member, `sim run --physics ensemble` runs them all and prints their spread,
//! and a sweep axis `"member": "ensemble"` expands every grid point into one run per member of its physics
//! (docs/experiments.md). Claims then carry an interval over the model beside the one over seeds.

use std::path::PathBuf;

use serde_json::Value;

use crate::runner::{self, RunArgs};
use sim_core::error::{Error, Result};

/// One plausible parameter vector of a run's cost model.
#[derive(Clone, Debug, PartialEq)]
pub struct Member {
    /// 0 is the best fit.
    pub index: usize,
    /// What `--cost profile[...]` gets to run it (nothing for the best fit of a v1 profile).
    pub overrides: Vec<(String, String)>,
    /// Its parameters, by name (for naming what a claim hinges on).
    pub params: Vec<(String, f64)>,
}

impl Member {
    /// `name=value;...` of its parameters (the results table's `member_params`).
    pub fn params_text(&self) -> String {
        self.params
            .iter()
            .map(|(k, v)| format!("{k}={}", sim_core::range::show(*v)))
            .collect::<Vec<_>>()
            .join(";")
    }
}

/// The members of a profile's text (any schema the simulator reads).
pub fn of_profile(text: &str, source: &str) -> Result<Vec<Member>> {
    let v: Value =
        serde_json::from_str(text).map_err(|e| Error::msg(format!("{source}: not JSON: {e}")))?;
    let engine = v.get("schema").and_then(Value::as_str) == Some(sim_core::cost::fitted::SCHEMA);
    let numbers = |o: &Value| -> Vec<(String, f64)> {
        o.as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, x)| Some((k.clone(), x.as_f64()?)))
                    .collect()
            })
            .unwrap_or_default()
    };
    if !engine {
        return Ok(vec![Member {
            index: 0,
            overrides: vec![],
            params: vec![],
        }]);
    }
    let best = numbers(v.get("params").unwrap_or(&Value::Null));
    if let Some(Value::Array(members)) = v.get("members")
        && !members.is_empty()
    {
        return Ok(members
            .iter()
            .enumerate()
            .map(|(k, m)| Member {
                index: k,
                overrides: vec![("member".into(), k.to_string())],
                params: numbers(m),
            })
            .collect());
    }
    // No plausible set stored (a version-1 profile, converted): the best fit alone.
    Ok(vec![Member {
        index: 0,
        overrides: vec![],
        params: best,
    }])
}

/// The profile a run is costed by (`runner::cost_model`'s rule), if any.
fn profile_path(args: &RunArgs) -> Result<Option<PathBuf>> {
    if let Some(p) = &args.profile {
        return Ok(Some(p.clone()));
    }
    if args
        .cost
        .as_deref()
        .is_some_and(|c| !c.trim_start().starts_with("profile"))
    {
        return Ok(None);
    }
    let model = sim_core::model::ModelSpec::resolve(&args.model)?;
    let gpu = sim_core::model::GpuSpec::by_name(&args.gpu)?;
    Ok(runner::default_profile(model, gpu).ok().map(PathBuf::from))
}

/// The plausible parameter vectors of the cost model `args` runs on.
pub fn of_run(args: &RunArgs) -> Result<Vec<Member>> {
    match profile_path(args)? {
        None => Ok(vec![Member {
            index: 0,
            overrides: vec![],
            params: vec![],
        }]),
        Some(p) => {
            let (text, source) = sim_core::cost::read_profile(&p)?;
            of_profile(&text, &source)
        }
    }
}

/// The `--cost` spec that runs `m` on top of the user's own (`profile` or `profile[k=v,...]`); the user's
/// values win where both set a parameter.
pub fn cost_spec(user: Option<&str>, m: &Member) -> Option<String> {
    if m.overrides.is_empty() {
        return user.map(str::to_string);
    }
    let user = user.unwrap_or("profile").trim();
    let (name, body) = match user.split_once('[') {
        Some((n, b)) => (n, b.trim_end().trim_end_matches(']')),
        None => (user, ""),
    };
    let given: Vec<&str> = body
        .split(',')
        .filter_map(|kv| kv.split_once('=').map(|(k, _)| k.trim()))
        .collect();
    let mut parts: Vec<String> = m
        .overrides
        .iter()
        .filter(|(k, _)| !given.contains(&k.as_str()))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    parts.extend(
        body.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
    );
    Some(format!("{name}[{}]", parts.join(",")))
}

/// `args` with its `--member` resolved into its `--cost` spec.
pub fn resolve_member(args: &RunArgs) -> Result<Option<String>> {
    let Some(k) = args.member else {
        return Ok(args.cost.clone());
    };
    let members = of_run(args)?;
    let m = members.get(k).ok_or_else(|| {
        Error::msg(format!(
            "--member {k}: the run's cost model has {} plausible parameter vector{} (0..{})",
            members.len(),
            if members.len() == 1 { "" } else { "s" },
            members.len() - 1
        ))
    })?;
    Ok(cost_spec(args.cost.as_deref(), m))
}

/// `sim run --physics ensemble`: the run once per member of its cost model, a line each and the spread
/// over them; `--json` prints the summaries (each with `member` and `member_params`), `--out DIR` writes
/// each member's outputs to `DIR/member{K}/`.
pub fn run_all(args: &RunArgs, out: Option<&std::path::Path>, json: bool) -> Result<()> {
    if args.member.is_some() {
        return Err(Error::msg(
            "--physics ensemble runs every member: drop --member K (or drop --physics ensemble)",
        ));
    }
    let members = of_run(args)?;
    let mut rows = Vec::with_capacity(members.len());
    for m in &members {
        let mut a = args.clone();
        a.member = Some(m.index);
        let report = runner::execute(&a)?;
        if let Some(dir) = out {
            report.finish(Some(&dir.join(format!("member{}", m.index))), false)?;
        }
        let mut row = report.row();
        row.insert("member".into(), Value::from(m.index));
        row.insert("member_params".into(), Value::from(m.params_text()));
        rows.push((m, report.summary.clone(), row));
    }
    if json {
        let list: Vec<Value> = rows.into_iter().map(|r| Value::Object(r.2)).collect();
        println!(
            "{}",
            serde_json::to_string_pretty(&list).expect("serialises")
        );
        return Ok(());
    }
    print!(
        "{}",
        table(&rows.iter().map(|r| (r.0, &r.1)).collect::<Vec<_>>())
    );
    Ok(())
}

/// The per-member lines and the spread of each metric over the members.
fn table(rows: &[(&Member, &sim_core::metrics::Summary)]) -> String {
    type Get = fn(&sim_core::metrics::Summary) -> Option<f64>;
    let cols: [(&str, Get); 7] = [
        ("scale", |s| Some(s.length_scale)),
        ("tput rps", |s| s.throughput_rps),
        ("TTFT p50", |s| s.ttft_p50_s),
        ("TTFT p99", |s| s.ttft_p99_s),
        ("hit rate", |s| s.adapter_hit_rate),
        ("stall s", |s| Some(s.load_stall_s)),
        ("SLO att", |s| Some(s.slo_attainment)),
    ];
    let mut o = String::new();
    if let Some((_, s)) = rows.first() {
        o += &format!(
            "cost model  {} (member 0, the best fit)
",
            s.cost_model
        );
    }
    o += &format!(
        "model uncertainty: {} plausible parameter vector{} (the profile's members: its best fit, then a \
         bootstrap over the runs it was fitted to)\n\n",
        rows.len(),
        if rows.len() == 1 { "" } else { "s" }
    );
    o += &format!("{:<7}", "member");
    for (c, _) in &cols {
        o += &format!("{c:>10}");
    }
    o += "  furthest from the best fit\n";
    let cell = |v: Option<f64>| v.map_or("-".to_string(), |x| format!("{:.4}", x));
    for (m, s) in rows {
        o += &format!("{:<7}", m.index);
        for (_, get) in &cols {
            o += &format!("{:>10}", cell(get(s)));
        }
        // The three parameters furthest (in ratio) from the best fit's.
        let best = &rows[0].0.params;
        let mut far: Vec<(f64, String)> = m
            .params
            .iter()
            .zip(best)
            .filter(|(a, b)| a.1 != b.1 && a.1 > 0.0 && b.1 > 0.0)
            .map(|(a, b)| ((a.1 / b.1).ln().abs(), format!("{} x{:.2}", a.0, a.1 / b.1)))
            .collect();
        far.sort_by(|a, b| b.0.total_cmp(&a.0));
        let diff: Vec<String> = far.into_iter().take(3).map(|f| f.1).collect();
        o += &format!(
            "  {}\n",
            if diff.is_empty() {
                "-".into()
            } else {
                diff.join(", ")
            }
        );
    }
    for (name, hi) in [("min", false), ("max", true)] {
        o += &format!("{name:<7}");
        for (_, get) in &cols {
            let v = rows.iter().filter_map(|(_, s)| get(s));
            let x = if hi {
                v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
            } else {
                v.fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.min(x))))
            };
            o += &format!("{:>10}", cell(x));
        }
        o += "\n";
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_joins_the_users_own_overrides() {
        let m = Member {
            index: 1,
            overrides: vec![("lora_eff".into(), "0.2".into())],
            params: vec![],
        };
        assert_eq!(cost_spec(None, &m).unwrap(), "profile[lora_eff=0.2]");
        assert_eq!(
            cost_spec(Some("profile[lora_kernels=exact]"), &m).unwrap(),
            "profile[lora_eff=0.2,lora_kernels=exact]"
        );
        // The user's value wins.
        assert_eq!(
            cost_spec(Some("profile[lora_eff=0.01]"), &m).unwrap(),
            "profile[lora_eff=0.01]"
        );
        let best = Member {
            index: 0,
            overrides: vec![],
            params: vec![],
        };
        assert_eq!(cost_spec(None, &best), None);
    }

    #[test]
    fn a_v2_profile_has_its_members_and_a_v1_one() {
        let v1 = r#"{"schema": "lora-serving-engine-profile", "version": 1,
                     "params": {"lora_eff": 0.02, "per_seq_us": 0.0}}"#;
        let m = of_profile(v1, "v1").unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].overrides, vec![]);
        let v2 = r#"{"schema": "lora-serving-engine-profile", "version": 2, "params": {"a": 1},
                     "members": [{"a": 1}, {"a": 2}, {"a": 3}]}"#;
        let m = of_profile(v2, "v2").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[2].overrides, vec![("member".into(), "2".into())]);
        assert_eq!(m[2].params_text(), "a=3");
        let measured = r#"{"schema": "lora-serving-cost-profile", "version": 1}"#;
        assert_eq!(of_profile(measured, "t").unwrap().len(), 1);
    }
}
