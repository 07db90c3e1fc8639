//! The manifest of the measured runs (`runs.json`) and every run of the files it lists.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::Client;
use sim_core::error::{Error, Result};
use sim_core::workload::slora::SloraWorkloadSpec;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    #[allow(dead_code)]
    source: String,
    #[allow(dead_code)]
    how: String,
    #[allow(dead_code)]
    campaigns: String,
    #[serde(rename = "use")]
    #[allow(dead_code)]
    use_: String,
    #[serde(default)]
    #[allow(dead_code)]
    held_out: Option<String>,
    settings: BTreeMap<String, Setting>,
    files: Vec<FileDef>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Setting {
    pub(super) gpu: String,
    pub(super) model: String,
    pub(super) ranks: Vec<u32>,
    pub(super) pool: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileDef {
    pub(super) file: String,
    pub(super) setting: String,
    /// The scheduler spec the runs are simulated with.
    pub(super) scheduler: String,
    pub(super) campaign: String,
    /// FIFO files, in order of preference, holding the counterpart of each run.
    #[serde(default)]
    pub(super) fifo: Vec<String>,
    /// The scheduler its launch command names, when it differs (the LIFO file: `fifo`).
    #[serde(default)]
    pub(super) launched_as: Option<String>,
}

#[derive(Clone, Debug)]
pub struct Run {
    pub file: String,
    pub line: usize,
    pub setting: String,
    pub scheduler: String,
    pub campaign: String,
    pub spec: SloraWorkloadSpec,
    pub measured: Client,
    /// The file records `num_abort` (older runs do not; a PETS run aborts nothing either way).
    pub abort_recorded: bool,
}

impl Run {
    pub fn config(&self) -> String {
        let s = &self.spec;
        let mut o = format!(
            "n={} alpha={} rate={} cv={}",
            s.num_adapters, s.alpha, s.req_rate, s.cv
        );
        if s.duration != 300.0 {
            let _ = write!(o, " {}s", s.duration);
        }
        o
    }

    /// The benchmark suite the run belongs to (exp_suite.py's a10g-<suite>), from its file name.
    pub fn suite(&self) -> &str {
        let f = &self.file[self
            .file
            .rfind("synthetic_")
            .map_or(0, |i| i + "synthetic_".len())..];
        match f.find("_a10g") {
            Some(0) | None => "grid",
            Some(k) => &f[..k],
        }
    }

    pub fn name(&self) -> String {
        format!(
            "{}:{}",
            self.file
                .trim_start_matches("../slora/")
                .trim_end_matches(".jsonl"),
            self.line
        )
    }
}

fn num(v: &Value, path: &[&str], at: &dyn Fn(&str) -> Error) -> Result<Option<f64>> {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return Ok(None),
        }
    }
    cur.as_f64()
        .filter(|x| x.is_finite())
        .map(Some)
        .ok_or_else(|| at(&format!("{} (not a number)", path.join("."))))
}

fn parse(text: &str, def: &FileDef, line: usize) -> Result<Run> {
    let at = |f: &str| {
        Error::msg(format!(
            "{}: line {line}: missing or bad field {f}",
            def.file
        ))
    };
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::msg(format!("{}: line {line}: not JSON: {e}", def.file)))?;
    let need = |path: &[&str]| num(&v, path, &at)?.ok_or_else(|| at(&path.join(".")));
    let range = |k: &str| -> Result<(u32, u32)> {
        let r = v["config"][k]
            .as_array()
            .filter(|a| a.len() == 2 && a.iter().all(|x| x.as_u64().is_some()))
            .ok_or_else(|| at(&format!("config.{k} (not [lo, hi])")))?;
        Ok((
            r[0].as_u64().unwrap_or(0) as u32,
            r[1].as_u64().unwrap_or(0) as u32,
        ))
    };
    let spec = SloraWorkloadSpec {
        num_adapters: need(&["config", "num_adapters"])? as u32,
        alpha: need(&["config", "alpha"])?,
        req_rate: need(&["config", "req_rate"])?,
        cv: need(&["config", "cv"])?,
        duration: need(&["config", "duration"])?,
        input_range: range("input_range")?,
        output_range: range("output_range")?,
        seed: 42,
    };
    spec.validate()
        .map_err(|e| Error::msg(format!("{}: line {line}: config: {e}", def.file)))?;
    let aborted = num(&v, &["result", "num_abort"], &at)?;
    let measured = Client {
        throughput: need(&["result", "throughput"])?,
        latency: need(&["result", "avg_latency"])?,
        ttft: need(&["result", "avg_first_token_latency"])?,
        aborted: aborted.unwrap_or(0.0),
        attainment: need(&["result", "avg_attainment"])?,
        requests: spec.num_requests() as f64,
    };
    Ok(Run {
        file: def.file.clone(),
        line,
        setting: def.setting.clone(),
        scheduler: def.scheduler.clone(),
        campaign: def.campaign.clone(),
        spec,
        measured,
        abort_recorded: aborted.is_some(),
    })
}

/// The manifest and every run of the files it lists.
pub(super) struct Data {
    pub(super) settings: BTreeMap<String, Setting>,
    pub(super) files: Vec<FileDef>,
    /// Per file (manifest order), its runs.
    pub(super) runs: Vec<Vec<Run>>,
}

pub(super) fn load(dir: &Path) -> Result<Data> {
    let path = dir.join("runs.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
    let mut runs = Vec::new();
    for f in &m.files {
        if !m.settings.contains_key(&f.setting) {
            return Err(Error::msg(format!(
                "{}: file {}: unknown setting '{}'",
                path.display(),
                f.file,
                f.setting
            )));
        }
        for x in &f.fifo {
            if !m
                .files
                .iter()
                .any(|g| &g.file == x && g.scheduler == "fifo")
            {
                return Err(Error::msg(format!(
                    "{}: file {}: its FIFO file {x} is not listed as a fifo file",
                    path.display(),
                    f.file
                )));
            }
        }
        let p = dir.join(&f.file);
        let text =
            std::fs::read_to_string(&p).map_err(|e| Error::msg(format!("{}: {e}", p.display())))?;
        let mut v = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                v.push(parse(line, f, i + 1)?);
            }
        }
        runs.push(v);
    }
    Ok(Data {
        settings: m.settings,
        files: m.files,
        runs,
    })
}

#[cfg(test)]
mod tests {
    use super::super::DATA;
    use super::*;

    #[test]
    fn every_committed_variant_run_parses_and_pairs_with_its_fifo_run() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(DATA);
        let d = load(&dir).unwrap();
        let (mut paired, mut lone, mut cross) = (0, 0, 0);
        for (f, runs) in d.files.iter().zip(&d.runs) {
            if f.scheduler == "fifo" {
                continue;
            }
            for r in runs {
                let pair = f.fifo.iter().find_map(|x| {
                    let k = d.files.iter().position(|g| &g.file == x).unwrap();
                    d.runs[k].iter().find(|q| q.spec == r.spec)
                });
                match pair {
                    Some(q) => {
                        paired += 1;
                        cross += usize::from(q.campaign != r.campaign);
                    }
                    None => lone += 1,
                }
            }
        }
        // 38 abort, 38 PETS and 5 LIFO runs with a FIFO run of the same configuration (PETS alpha and the
        // 0-adapter runs from the other campaign); the 480 runs of the PETS grid have none.
        assert_eq!((paired, cross, lone), (81, 10, 480));
    }
}
