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
    /// Later launches appended to the same file with other pools: a line with at least `from_adapters`
    /// adapters ran with the last such entry's `pool` (the sweeps ascend in adapters).
    #[serde(default)]
    pub pools: Vec<PoolFrom>,
    /// The server flags that changed the engine.
    #[serde(default)]
    pub engine: Variant,
    /// The sweep this file belongs to (files measuring the same sweep share it; leave-one-suite-out holds
    /// a suite out whole); default: the file name.
    #[serde(default)]
    pub suite: Option<String>,
    /// False: kept out of the fit (reported out of sample), for the reason `why`.
    #[serde(default = "yes")]
    pub fit: bool,
    #[serde(default)]
    pub why: Option<String>,
}

fn yes() -> bool {
    true
}

/// A pool that later lines of a file ran with.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolFrom {
    pub from_adapters: u32,
    pub pool: u64,
}

/// S-LoRA's engine flags a run used (`slora/server/api_server.py`).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, Hash)]
#[serde(deny_unknown_fields, default)]
pub struct Variant {
    /// False: `--no-lora-compute` (adapters loaded, no LoRA kernel runs).
    pub lora_compute: bool,
    /// `--bmm`: padded batched-GEMM LoRA (`models/bmm/lora_bmm_infer.py`).
    pub bmm: bool,
    /// False: `--no-mem-pool` (adapters outside the unified pool, `naive_infer_adapter.py`).
    pub mem_pool: bool,
}

impl Default for Variant {
    fn default() -> Variant {
        Variant {
            lora_compute: true,
            bmm: false,
            mem_pool: true,
        }
    }
}

impl Variant {
    /// The LoRA kernels the variant runs.
    pub fn kernels(&self) -> sim_core::cost::LoraKernels {
        use sim_core::cost::LoraKernels;
        if !self.lora_compute {
            LoraKernels::Off
        } else if self.bmm {
            LoraKernels::Bmm
        } else {
            LoraKernels::Slora
        }
    }

    /// `base`, or the flags: `no-lora-compute`, `bmm`, `no-mem-pool`, joined by `+`.
    pub fn name(&self) -> String {
        let mut v = Vec::new();
        if !self.lora_compute {
            v.push("no-lora-compute");
        }
        if self.bmm {
            v.push("bmm");
        }
        if !self.mem_pool {
            v.push("no-mem-pool");
        }
        if v.is_empty() {
            "base".into()
        } else {
            v.join("+")
        }
    }
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
    /// The pool this line ran with (`Setup::pool`, or a later launch's).
    pub pool: u64,
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
            self.file
                .rsplit('/')
                .next()
                .unwrap_or("")
                .trim_end_matches(".jsonl"),
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

    /// The sweep this run belongs to.
    pub fn suite(&self) -> String {
        self.setup
            .suite
            .clone()
            .unwrap_or_else(|| self.file.trim_end_matches(".jsonl").to_string())
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
    // Some files (the ablations, the breakdowns) have no num_abort field: none aborted.
    let aborted = if v["result"].get("num_abort").is_some() {
        res("num_abort")?
    } else {
        0.0
    };
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
    let pool = setup
        .pools
        .iter()
        .filter(|p| spec.num_adapters >= p.from_adapters)
        .map(|p| p.pool)
        .next_back()
        .unwrap_or(setup.pool);
    Ok(MeasuredRun {
        file: file.to_string(),
        pool,
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
            pools: vec![PoolFrom {
                from_adapters: 50,
                pool: 9000,
            }],
            engine: Variant::default(),
            suite: None,
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
        assert_eq!(r.pool, 14500);
        let r = parse_run(
            &good.replace("\"num_adapters\": 20", "\"num_adapters\": 50"),
            "f.jsonl",
            3,
            &setup(),
        )
        .unwrap();
        assert_eq!(r.pool, 9000, "a later launch's pool from 50 adapters on");
        let r = parse_run(
            &good.replace(", \"num_abort\": 0", ""),
            "f.jsonl",
            3,
            &setup(),
        )
        .unwrap();
        assert_eq!(
            r.measured.throughput, 1.8,
            "no num_abort field: none aborted"
        );
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
