//! Measured end-to-end runs of a serving engine in S-LoRA's format (`benchmarks/run_exp.py` writes one JSON
//! object per line: `{"config": {...}, "result": {...}}`) and the setups they ran on (`setups.json` beside
//! them: GPU, model, adapter ranks, pool per file).

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use sim_core::error::{Error, Result};
use sim_core::workload::slora::{SloraSource, SloraWorkloadSpec};

/// What one file's runs ran on.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Setup {
    pub file: String,
    pub gpu: String,
    pub model: String,
    pub ranks: Vec<u32>,
    /// The unified KV + adapter pool, token slots (`--max_total_token_num`).
    pub pool: u64,
    /// False: kept out of the fit (reported out of sample), for the reason `why`.
    #[serde(default = "yes")]
    pub fit: bool,
    #[serde(default)]
    pub why: Option<String>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Setups {
    #[serde(default)]
    #[allow(dead_code)]
    source: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    settings: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    pools: Option<String>,
    files: Vec<Setup>,
}

/// S-LoRA's benchmark metrics (`run_exp.get_res_stats`): requests / wall time to the last response, mean
/// end-to-end latency, mean time to the first streamed token, mean of latency / output tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Metrics {
    pub throughput: f64,
    pub latency: f64,
    pub ttft: f64,
    pub per_output_token: f64,
}

impl Metrics {
    pub const NAMES: [&'static str; 4] = ["throughput", "latency", "ttft", "per_output_token"];

    pub fn get(&self, i: usize) -> f64 {
        [
            self.throughput,
            self.latency,
            self.ttft,
            self.per_output_token,
        ][i]
    }
}

/// One measured run.
#[derive(Clone, Debug)]
pub struct MeasuredRun {
    pub file: String,
    /// 1-based line in its file.
    pub line: usize,
    pub setup: Setup,
    pub workload: SloraSource,
    pub measured: Metrics,
}

impl MeasuredRun {
    /// A short name: file stem, line, and what varies (adapters, rate, cv).
    pub fn name(&self) -> String {
        let s = &self.workload.spec;
        format!(
            "{}:{} n={} rate={} cv={}",
            self.file.trim_end_matches(".jsonl"),
            self.line,
            s.num_adapters,
            s.req_rate,
            s.cv
        )
    }

    /// The (GPU, model) group whose profile this run informs.
    pub fn group(&self) -> (String, String) {
        (self.setup.gpu.clone(), self.setup.model.clone())
    }
}

fn field<'a>(v: &'a Value, path: &[&str], at: &dyn Fn(&str) -> Error) -> Result<&'a Value> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p).ok_or_else(|| at(&path.join(".")))?;
    }
    Ok(cur)
}

fn num(v: &Value, path: &[&str], at: &dyn Fn(&str) -> Error) -> Result<f64> {
    field(v, path, at)?
        .as_f64()
        .filter(|x| x.is_finite())
        .ok_or_else(|| at(&format!("{} (not a number)", path.join("."))))
}

fn range(v: &Value, path: &[&str], at: &dyn Fn(&str) -> Error) -> Result<(u32, u32)> {
    let r = field(v, path, at)?
        .as_array()
        .filter(|a| a.len() == 2)
        .ok_or_else(|| at(&format!("{} (not [lo, hi])", path.join("."))))?;
    let n = |x: &Value| {
        x.as_u64()
            .filter(|&x| x <= u32::MAX as u64)
            .ok_or_else(|| at(&path.join(".")))
    };
    Ok((n(&r[0])? as u32, n(&r[1])? as u32))
}

/// Parses one line of a run file.
fn parse_run(text: &str, file: &str, line: usize, setup: &Setup) -> Result<MeasuredRun> {
    let at = |f: &str| Error::msg(format!("{file}: line {line}: missing or bad field {f}"));
    let v: Value = serde_json::from_str(text)
        .map_err(|e| Error::msg(format!("{file}: line {line}: not JSON: {e}")))?;
    let spec = SloraWorkloadSpec {
        num_adapters: num(&v, &["config", "num_adapters"], &at)? as u32,
        alpha: num(&v, &["config", "alpha"], &at)?,
        req_rate: num(&v, &["config", "req_rate"], &at)?,
        cv: num(&v, &["config", "cv"], &at)?,
        duration: num(&v, &["config", "duration"], &at)?,
        input_range: range(&v, &["config", "input_range"], &at)?,
        output_range: range(&v, &["config", "output_range"], &at)?,
        seed: 42,
    };
    spec.validate()
        .map_err(|e| Error::msg(format!("{file}: line {line}: config: {e}")))?;
    let res = |k: &str| num(&v, &["result", k], &at);
    let aborted = res("num_abort")?;
    if aborted != 0.0 {
        return Err(Error::msg(format!(
            "{file}: line {line}: {aborted} aborted requests (the fit models runs without aborts)"
        )));
    }
    let measured = Metrics {
        throughput: res("throughput")?,
        latency: res("avg_latency")?,
        ttft: res("avg_first_token_latency")?,
        per_output_token: res("avg_per_output_token_latency")?,
    };
    if !(0..4).all(|i| measured.get(i) > 0.0) {
        return Err(Error::msg(format!(
            "{file}: line {line}: every measured metric must be positive"
        )));
    }
    Ok(MeasuredRun {
        file: file.to_string(),
        line,
        setup: setup.clone(),
        workload: SloraSource {
            spec,
            prompt_extra: 2,
        },
        measured,
    })
}

/// Reads `dir/setups.json` and every run of the files it lists.
pub fn load(dir: &Path) -> Result<Vec<MeasuredRun>> {
    let setups_path: PathBuf = dir.join("setups.json");
    let text = std::fs::read_to_string(&setups_path)
        .map_err(|e| Error::msg(format!("{}: {e}", setups_path.display())))?;
    let setups: Setups = serde_json::from_str(&text)
        .map_err(|e| Error::msg(format!("{}: {e}", setups_path.display())))?;
    let mut runs = Vec::new();
    for s in &setups.files {
        let path = dir.join(&s.file);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        for (i, line) in text.lines().enumerate() {
            if !line.trim().is_empty() {
                runs.push(parse_run(line, &s.file, i + 1, s)?);
            }
        }
    }
    Ok(runs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> Setup {
        Setup {
            file: "f.jsonl".into(),
            gpu: "a10g".into(),
            model: "llama-7b".into(),
            ranks: vec![8],
            pool: 14500,
            fit: true,
            why: None,
        }
    }

    #[test]
    fn runs_parse_and_bad_lines_name_file_line_and_field() {
        let good = r#"{"config": {"num_adapters": 20, "alpha": 1, "req_rate": 2, "cv": 1, "duration": 300, "input_range": [8, 512], "output_range": [8, 512]}, "result": {"throughput": 1.8, "avg_latency": 19.0, "avg_first_token_latency": 4.3, "avg_per_output_token_latency": 0.094, "num_abort": 0}}"#;
        let r = parse_run(good, "f.jsonl", 3, &setup()).unwrap();
        assert_eq!(r.workload.spec.num_adapters, 20);
        assert_eq!(r.measured.ttft, 4.3);
        let e = parse_run(&good.replace("\"cv\": 1, ", ""), "f.jsonl", 3, &setup())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "f.jsonl: line 3: missing or bad field config.cv");
        let e = parse_run(
            &good.replace("\"num_abort\": 0", "\"num_abort\": 2"),
            "f.jsonl",
            3,
            &setup(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("aborted"), "{e}");
    }
}
