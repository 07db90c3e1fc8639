//! S-LoRA's synthetic workload (`benchmarks/trace.py: generate_requests`, github.com/S-LoRA/S-LoRA c1ddf48),
//! reproduced draw for draw on a fresh legacy numpy stream, so a simulated run replays exactly the requests
//! of S-LoRA's published runs: `int(rate * duration)` requests; adapter `int(power(alpha) * n)` (alpha = 1 is
//! uniform over adapters); input and output lengths uniform in [lo, hi); gamma inter-arrival gaps with
//! shape 1/cv^2 and scale cv^2/rate (cv = 1: Poisson), the first request arriving after the first gap.
//! S-LoRA's server gives adapter k the rank `ranks[k % len(ranks)]`, as `--ranks` does.

use super::numpy::LegacyRandomState;
use crate::error::{Error, Result as SimResult};
use crate::spec::Spec;
use crate::trace::{NO_ID, Trace, TraceRow};

/// Parameters of `generate_requests`, in trace.py's argument order.
#[derive(Clone, Debug, PartialEq)]
pub struct SloraWorkloadSpec {
    /// Number of adapters; request adapter indices fall in `0..num_adapters`.
    pub num_adapters: u32,
    /// Power-law exponent for adapter popularity (`np.random.power(alpha)`);
    /// 1 is uniform, < 1 favours low indices, > 1 favours high indices.
    pub alpha: f64,
    /// Mean request rate, requests per second.
    pub req_rate: f64,
    /// Coefficient of variation of inter-arrival gaps (1 = Poisson).
    pub cv: f64,
    /// Trace length in seconds; only used to size the trace (`int(rate * duration)`).
    pub duration: f64,
    /// Prompt lengths, uniform on `[lo, hi)` (numpy `randint` upper bound is exclusive).
    pub input_range: (u32, u32),
    /// Output lengths, uniform on `[lo, hi)`.
    pub output_range: (u32, u32),
    /// `np.random.seed` value; the published runs use 42.
    pub seed: u32,
}

/// One generated request (trace.py's `Request`, minus prompt text and dirs).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SloraRequest {
    /// Send time in seconds from benchmark start: the running sum of gaps,
    /// so request 0 arrives at `intervals[0]`, not at 0.
    pub arrival_s: f64,
    /// Index into the adapter list (`adapter_dirs[ind[i]]` in trace.py).
    pub adapter: u32,
    /// Prompt length in tokens (`"Hello " * input`).
    pub input: u32,
    /// `max_new_tokens`; the client sets `ignore_eos`, so exactly this many are generated.
    pub output: u32,
}

impl SloraWorkloadSpec {
    /// The paper suites' shape: lengths in [8, 512) for both, seed 42.
    pub fn paper(num_adapters: u32, alpha: f64, req_rate: f64, cv: f64, duration: f64) -> Self {
        SloraWorkloadSpec {
            num_adapters,
            alpha,
            req_rate,
            cv,
            duration,
            input_range: (8, 512),
            output_range: (8, 512),
            seed: 42,
        }
    }

    /// Rejects specs for which trace.py would fail, hang or return nonsense.
    /// The error is one line naming the offending field.
    pub fn validate(&self) -> Result<(), String> {
        fn pos(name: &str, v: f64) -> Result<(), String> {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(format!("{name} must be finite and > 0, got {v}"))
            }
        }
        pos("alpha", self.alpha)?;
        pos("req_rate", self.req_rate)?;
        pos("cv", self.cv)?;
        pos("duration", self.duration)?;
        // The gamma parameters themselves must be usable: a NaN/inf/0 shape
        // would hang or degenerate numpy's rejection loop as well.
        let (shape, scale) = self.gamma_params();
        if !(shape.is_finite() && shape > 0.0 && scale.is_finite() && scale > 0.0) {
            return Err(format!(
                "cv out of range: gamma shape 1/cv^2 = {shape}, scale cv^2/req_rate = {scale}"
            ));
        }
        // Both factors are finite here, but the product can still overflow to inf.
        let n = self.req_rate * self.duration;
        if n >= 4_294_967_296.0 {
            return Err(format!("req_rate * duration too large: {n} requests"));
        }
        for (name, (lo, hi)) in [
            ("input_range", self.input_range),
            ("output_range", self.output_range),
        ] {
            if lo >= hi {
                return Err(format!("{name} must have lo < hi, got [{lo}, {hi})"));
            }
        }
        Ok(())
    }

    /// `int(req_rate * duration)`: float product, truncated (0.29 * 100 -> 28).
    pub fn num_requests(&self) -> usize {
        (self.req_rate * self.duration) as usize
    }

    /// trace.py's `shape = 1 / (cv * cv)`, `scale = cv * cv / req_rate`,
    /// computed with the same double operations.
    fn gamma_params(&self) -> (f64, f64) {
        let cv2 = self.cv * self.cv;
        (1.0 / cv2, cv2 / self.req_rate)
    }
}

/// Reproduces `generate_requests(...)` bit for bit (x86_64 Linux/glibc; see
/// crate docs). Draw order, all on one stream seeded once: every power draw,
/// then every input length, then every output length, then every gap. Each
/// is a whole array in numpy, so the blocks are not interleaved per request.
pub fn generate(spec: &SloraWorkloadSpec) -> Result<Vec<SloraRequest>, String> {
    spec.validate()?;
    let n = spec.num_requests();
    let mut rs = LegacyRandomState::new(spec.seed);

    // probs * num_adapters, then astype(int) truncates toward zero.
    let adapters: Vec<u32> = (0..n)
        .map(|_| {
            let idx = (rs.legacy_power(spec.alpha) * spec.num_adapters as f64) as u32;
            // power() can round to exactly 1.0 for alpha > 1 (probability ~2^-53);
            // trace.py would then raise IndexError. Clamp instead of failing. With no adapters (the base
            // model alone) the draw is still made, as trace.py makes it.
            idx.min(spec.num_adapters.saturating_sub(1))
        })
        .collect();
    let (ilo, ihi) = spec.input_range;
    let inputs = rs.randint(ilo as i64, ihi as i64, n);
    let (olo, ohi) = spec.output_range;
    let outputs = rs.randint(olo as i64, ohi as i64, n);

    let (shape, scale) = spec.gamma_params();
    // `tic += intervals[i]`: sequential float64 sum, starting from 0.
    let mut tic = 0.0f64;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        tic += rs.legacy_gamma(shape, scale);
        out.push(SloraRequest {
            arrival_s: tic,
            adapter: adapters[i],
            input: inputs[i] as u32,
            output: outputs[i] as u32,
        });
    }
    Ok(out)
}

/// `--workload slora[...]`: S-LoRA's generator and how its prompts reach the server.
#[derive(Clone, Debug, PartialEq)]
pub struct SloraSource {
    pub spec: SloraWorkloadSpec,
    /// Tokens the server sees beyond the prompt's word count: the prompt is `"Hello " * n`, which the LLaMA
    /// tokenizer turns into BOS, n `▁Hello` and a trailing `▁` (n + 2).
    pub prompt_extra: u32,
}

pub const PARAMS: &[&str] = &[
    "adapters",
    "alpha",
    "rate",
    "cv",
    "duration",
    "input",
    "output",
    "seed",
    "prompt_extra",
];

/// `LO:HI`, half-open.
fn range(s: &mut Spec, key: &str, default: (u32, u32)) -> SimResult<(u32, u32)> {
    let Some(v) = s.take_str(key) else {
        return Ok(default);
    };
    let bad = || Error::msg(format!("--workload slora: {key} must be LO:HI, got '{v}'"));
    let (lo, hi) = v.split_once(':').ok_or_else(bad)?;
    Ok((
        lo.trim().parse().map_err(|_| bad())?,
        hi.trim().parse().map_err(|_| bad())?,
    ))
}

impl SloraSource {
    /// `slora[adapters=N,alpha=A,rate=R,cv=C,duration=S,input=LO:HI,output=LO:HI,seed=42,prompt_extra=2]`
    /// (defaults: S-LoRA's paper suites: 100 adapters, alpha 1, 2 req/s, cv 1, 300 s, [8, 512), seed 42).
    pub fn parse(text: &str) -> SimResult<SloraSource> {
        let mut s = Spec::parse(text).map_err(|e| e.context("--workload"))?;
        if s.name != "slora" {
            return Err(Error::msg(format!(
                "--workload: unknown workload '{}'; valid: slora[...]",
                s.name
            )));
        }
        let ctx = |e: Error| e.context("--workload");
        let spec = SloraWorkloadSpec {
            num_adapters: s.get("adapters", 100).map_err(ctx)?,
            alpha: s.get("alpha", 1.0).map_err(ctx)?,
            req_rate: s.get("rate", 2.0).map_err(ctx)?,
            cv: s.get("cv", 1.0).map_err(ctx)?,
            duration: s.get("duration", 300.0).map_err(ctx)?,
            input_range: range(&mut s, "input", (8, 512))?,
            output_range: range(&mut s, "output", (8, 512))?,
            seed: s.get("seed", 42).map_err(ctx)?,
        };
        let prompt_extra = s.get("prompt_extra", 2).map_err(ctx)?;
        s.finish(PARAMS).map_err(ctx)?;
        spec.validate()
            .map_err(|e| Error::msg(format!("--workload slora: {e}")))?;
        Ok(SloraSource { spec, prompt_extra })
    }

    pub fn describe(&self) -> String {
        let s = &self.spec;
        format!(
            "slora[adapters={},alpha={},rate={},cv={},duration={},input={}:{},output={}:{},seed={},prompt_extra={}]",
            s.num_adapters,
            s.alpha,
            s.req_rate,
            s.cv,
            s.duration,
            s.input_range.0,
            s.input_range.1,
            s.output_range.0,
            s.output_range.1,
            s.seed,
            self.prompt_extra
        )
    }

    /// The requests as a trace: arrivals in ns from the benchmark's start (the first after its gap),
    /// prompt tokens as the server counts them, the adapter index as the row's adapter id (none when the
    /// workload has no adapters).
    pub fn trace(&self) -> SimResult<Trace> {
        let reqs =
            generate(&self.spec).map_err(|e| Error::msg(format!("--workload slora: {e}")))?;
        let rows = reqs
            .iter()
            .map(|r| {
                let mut row = TraceRow::new(
                    (r.arrival_s * 1e9).round() as u64,
                    r.input + self.prompt_extra,
                    r.output,
                );
                row.adapter = if self.spec.num_adapters == 0 {
                    NO_ID
                } else {
                    r.adapter
                };
                row
            })
            .collect();
        Ok(Trace {
            source: self.describe(),
            rows,
            ..Default::default()
        })
    }
}
