//! `RunArgs::resolve`: the options into the typed configuration the core runs, every value checked once.

use super::{RunArgs, RunConfig, cost_model, pool_slots};
use sim_core::engine::{EngineConfig, LoadPath, Reserve};
use sim_core::error::{Error, Result};
use sim_core::model::{GpuSpec, LoraTargets, ModelSpec};
use sim_core::slo::Slo;
use sim_core::spec::Spec;
use sim_core::trace::arrivals::Arrivals;
use sim_core::trace::{ReadSpec, TraceOptions};
use sim_core::workload::slora::SloraSource;
use sim_core::workload::{AdapterModel, AdapterOptions};

/// `--adapter-load`: `slora` | `once[per_layer=true,pinned=true]`.
fn parse_load_path(text: &str, model: &ModelSpec) -> Result<LoadPath> {
    let mut s = Spec::parse(text).map_err(|e| e.context("--adapter-load"))?;
    let path = match s.name.as_str() {
        "slora" => LoadPath::slora(model.layers),
        "once" => {
            let per_layer: bool = s.get("per_layer", true)?;
            LoadPath {
                passes: 1,
                copies_per_pass: if per_layer { 8 * model.layers } else { 1 },
                pinned: s.get("pinned", true)?,
            }
        }
        other => {
            return Err(Error::msg(format!(
                "--adapter-load: unknown load path '{other}'; valid: slora, once[per_layer=..,pinned=..]"
            )));
        }
    };
    s.finish(&["per_layer", "pinned"])
        .map_err(|e| e.context("--adapter-load"))?;
    Ok(path)
}

/// `e` naming `flag` first (unless it already does): every bad value is reported against its option.
pub(super) fn flagged(flag: &'static str) -> impl Fn(Error) -> Error {
    move |e| {
        if e.to_string().starts_with(flag) {
            e
        } else {
            e.context(flag)
        }
    }
}

impl RunArgs {
    /// Resolves the options into the typed configuration the core runs (every value checked once, here).
    pub fn resolve(&self) -> Result<RunConfig> {
        self.check()?;
        let model = ModelSpec::resolve(&self.model)
            .map_err(flagged("--model"))?
            .with_lora_targets(LoraTargets::parse(&self.lora_targets)?);
        let gpu = GpuSpec::by_name(&self.gpu).map_err(flagged("--gpu"))?;
        let workload = match &self.workload {
            None => None,
            Some(text) => {
                if self.trace.is_some() {
                    return Err(Error::msg("--workload and --trace exclude each other"));
                }
                if self.rate.is_some() {
                    return Err(Error::msg(
                        "--workload sets its own arrivals: give its rate as slora[rate=R], not --rate",
                    ));
                }
                Some(SloraSource::parse(text).map_err(flagged("--workload"))?)
            }
        };
        let transform = TraceOptions {
            max_requests: self.max_requests,
            length_scale: 1.0,
            poisson_rate: self.rate,
            arrivals: Arrivals::parse(&self.arrivals).map_err(flagged("--arrivals"))?,
        };
        let adapters = match &workload {
            // S-LoRA's generator numbers its adapters; adapter k has rank ranks[k % len].
            Some(w) => AdapterOptions {
                count: w.spec.num_adapters,
                ranks: self.ranks.clone(),
                popularity_alpha: self.popularity,
                model: AdapterModel::Trace {
                    tenant: false,
                    index: true,
                },
            },
            None => AdapterOptions {
                count: self.adapters,
                ranks: self.ranks.clone(),
                popularity_alpha: self.popularity,
                model: AdapterModel::parse(&self.adapter_model)
                    .map_err(flagged("--adapter-model"))?,
            },
        };
        let tp = crate::fleet_args::tp(self, gpu, self.tp)?;
        let cost = cost_model(self, model, gpu, &tp)?;
        let mut engine = EngineConfig::slora(pool_slots(self, model, gpu)?, model.layers);
        // An adapter larger than the pool could never load: say so here, not as a length rule that fails.
        if adapters.count > 0
            && let Some(&r) = adapters
                .ranks
                .iter()
                .find(|&&r| model.adapter_slots(r) > engine.pool_slots)
        {
            return Err(Error::msg(format!(
                "--ranks: an adapter of rank {r} takes {} pool slots ({:.2} GiB on {}), more than the whole \
                 pool of {} slots; no request using it could run",
                model.adapter_slots(r),
                model.adapter_bytes(r) as f64 / (1u64 << 30) as f64,
                model.name,
                engine.pool_slots
            )));
        }
        engine.max_wait_tokens = self.max_wait_tokens;
        engine.policy_cadence = self.merge_cadence == "policy";
        engine.max_batch = self.max_batch;
        if let Some(n) = self.max_prefill_tokens {
            engine.max_prefill_tokens = n;
        }
        let limit = |n: u64| (n > 0).then_some(n);
        engine.max_input_tokens = limit(self.max_input_tokens);
        engine.max_total_tokens = limit(self.max_total_tokens);
        engine.context_tokens = limit(self.context_tokens.unwrap_or(model.context_tokens));
        if self.no_server_limits {
            let d = RunArgs::default();
            for (flag, v, default) in [
                (
                    "--max-input-tokens",
                    self.max_input_tokens,
                    d.max_input_tokens,
                ),
                (
                    "--max-total-tokens",
                    self.max_total_tokens,
                    d.max_total_tokens,
                ),
            ] {
                if v != default && v != 0 {
                    return Err(Error::msg(format!(
                        "--no-server-limits and {flag} {v} exclude each other"
                    )));
                }
            }
            engine.max_input_tokens = None;
            engine.max_total_tokens = None;
            if self.max_prefill_tokens.is_none() {
                engine.max_prefill_tokens = engine
                    .max_prefill_tokens
                    .max(engine.context_tokens.unwrap_or(u64::MAX));
            }
        }
        engine.load_path =
            parse_load_path(&self.adapter_load, model).map_err(flagged("--adapter-load"))?;
        // --bmm loads each adapter's eight tensors per layer once (`load_to_gpu(bmm=True)`).
        if self.bmm && self.adapter_load == "slora" {
            engine.load_path = parse_load_path("once[per_layer=true]", model)?;
        }
        if self.no_mem_pool && self.prefetch != "none" {
            return Err(Error::msg(format!(
                "--no-mem-pool and --prefetch {} exclude each other (S-LoRA's NaiveInferAdapter asserts no \
                 prefetch)",
                self.prefetch
            )));
        }
        if self.no_lora_compute && self.bmm {
            return Err(Error::msg(
                "--no-lora-compute and --bmm exclude each other (no LoRA kernel runs at all)",
            ));
        }
        if !(self.idle_poll_ms >= 0.0 && self.idle_poll_ms.is_finite()) {
            return Err(Error::msg(format!(
                "--idle-poll-ms must be >= 0, got {}",
                self.idle_poll_ms
            )));
        }
        engine.idle_poll_ns = (self.idle_poll_ms * 1e6).round() as u64;
        engine.reserve = Reserve::parse(&self.reserve).map_err(flagged("--reserve"))?;
        for (name, v) in [("--ttft-slo", self.ttft_slo), ("--tbt-slo", self.tbt_slo)] {
            if !(v > 0.0 && v.is_finite()) {
                return Err(Error::msg(format!(
                    "{name} must be a positive number of seconds, got {v}"
                )));
            }
        }
        let fleet = crate::fleet_args::fleet(self, model, gpu, &engine, &cost, &tp)?;
        let cfg = RunConfig {
            trace: self.trace.clone(),
            workload,
            trace_format: ReadSpec::parse(&self.trace_format).map_err(flagged("--trace-format"))?,
            length: self.length_scale,
            transform,
            seed: self.seed,
            model,
            gpu,
            adapters,
            cost,
            engine,
            scheduler: self.scheduler.clone(),
            cache: self.cache.clone(),
            prefetch: self.prefetch.clone(),
            predictor: self.predictor.clone(),
            slo: Slo {
                ttft_ns: (self.ttft_slo * 1e9).round() as u64,
                tbt_ns: (self.tbt_slo * 1e9).round() as u64,
            },
            tp,
            fleet,
        };
        cfg.validate()?;
        Ok(cfg)
    }
}
