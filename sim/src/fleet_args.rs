//! `sim run`'s fleet options (`--tp`, `--interconnect`, `--replicas`, `--router`, `--fleet-threads`,
//! `--sample-s`, `--stream`) resolved into the core's `cost::tp::Tp` and `fleet::FleetConfig`.

use std::sync::Arc;

use crate::runner::{RunArgs, pool_slots};
use sim_core::cost::CostModel;
use sim_core::cost::tp::{Interconnect, Tp};
use sim_core::engine::EngineConfig;
use sim_core::error::{Error, Result};
use sim_core::fleet::{FleetConfig, ReplicaGroup};
use sim_core::model::{GpuSpec, ModelSpec};

/// `--tp N` with `--interconnect` for `gpu`.
pub fn tp(args: &RunArgs, gpu: &GpuSpec, degree: u32) -> Result<Tp> {
    Tp::new(
        degree,
        Interconnect::parse(&args.interconnect, gpu, degree)?,
    )
}

/// `--replicas N | GPU:COUNT[:TP],...`: (gpu, count, tp) per group.
pub fn parse_replicas(
    text: &str,
    gpu: &'static GpuSpec,
    tp: u32,
) -> Result<Vec<(&'static GpuSpec, usize, u32)>> {
    let bad = |why: &str| Error::msg(format!("--replicas '{text}': {why}"));
    if let Ok(n) = text.trim().parse::<usize>() {
        if n == 0 {
            return Err(bad("needs at least one replica"));
        }
        return Ok(vec![(gpu, n, tp)]);
    }
    let mut groups = Vec::new();
    for part in text.split(',').map(str::trim) {
        let f: Vec<&str> = part.split(':').collect();
        if !(2..=3).contains(&f.len()) {
            return Err(bad("expected N or GPU:COUNT[:TP],..."));
        }
        let g = GpuSpec::by_name(f[0]).map_err(|e| e.context("--replicas"))?;
        let count: usize = f[1]
            .parse()
            .ok()
            .filter(|&c| c > 0)
            .ok_or_else(|| bad(&format!("bad count '{}'", f[1])))?;
        let t: u32 = match f.get(2) {
            None => tp,
            Some(t) => t
                .parse()
                .map_err(|_| bad(&format!("bad TP degree '{t}'")))?,
        };
        groups.push((g, count, t));
    }
    Ok(groups)
}

/// The fleet of `--replicas`, or `None`. Each group has its own cost model and pool; the engine settings
/// are the run's, with S-LoRA's prefill budget (max(pool / 6, 3072)) re-derived from each pool unless
/// `--max-prefill-tokens` is set.
pub fn fleet(
    args: &RunArgs,
    model: &'static ModelSpec,
    gpu: &'static GpuSpec,
    engine: &EngineConfig,
    cost: &Arc<dyn CostModel>,
    tp: &Tp,
) -> Result<Option<FleetConfig>> {
    let Some(text) = &args.replicas else {
        if args.stream.is_some() {
            return Err(Error::msg("--stream needs --replicas"));
        }
        return Ok(None);
    };
    if args.fleet_threads == 0 {
        return Err(Error::msg("--fleet-threads must be at least 1"));
    }
    if !(args.sample_s > 0.0 && args.sample_s.is_finite()) {
        return Err(Error::msg(format!(
            "--sample-s must be positive, got {}",
            args.sample_s
        )));
    }
    let mut groups = Vec::new();
    for (g, count, t) in parse_replicas(text, gpu, tp.degree)? {
        if g == gpu && t == tp.degree {
            groups.push(ReplicaGroup {
                gpu: g,
                count,
                tp: tp.clone(),
                cost: cost.clone(),
                engine: engine.clone(),
            });
            continue;
        }
        let gtp = self::tp(args, g, t)?;
        let gcost = crate::runner::cost_model(args, model, g, &gtp)?;
        let pool = pool_slots(
            &RunArgs {
                tp: t,
                gpu_mem_gib: None,
                ..args.clone()
            },
            model,
            g,
        )
        .map_err(|e| e.context(format!("--replicas {}", g.name)))?;
        let mut e = engine.clone();
        e.pool_slots = pool;
        if args.max_prefill_tokens.is_none() {
            e.max_prefill_tokens = EngineConfig::slora(pool, model.layers).max_prefill_tokens;
            if args.no_server_limits {
                e.max_prefill_tokens = e
                    .max_prefill_tokens
                    .max(e.context_tokens.unwrap_or(u64::MAX));
            }
        }
        groups.push(ReplicaGroup {
            gpu: g,
            count,
            tp: gtp,
            cost: gcost,
            engine: e,
        });
    }
    Ok(Some(FleetConfig {
        groups,
        router: args.router.clone(),
        threads: args.fleet_threads,
        sample_ns: (args.sample_s * 1e9).round() as u64,
        stream: args.stream.clone(),
    }))
}
