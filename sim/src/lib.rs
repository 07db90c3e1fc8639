//! Discrete-event simulator of one GPU serving a base LLM with many LoRA adapters.
//!
//! Layout: `trace` (load, validate, re-time), `workload` (adapters, popularity), `cost` (cost models),
//! `engine` (event loop, batching, memory pool, adapter loads), `sched` and `cache` (policies, one file each,
//! resolved from `Name[k=v,...]` specs by a registry), `metrics` (records and summary).

pub mod backend;
pub mod bench;
pub mod cache;
pub mod cost;
pub mod engine;
pub mod error;
pub mod fidelity;
pub mod metrics;
pub mod model;
pub mod runner;
pub mod sched;
pub mod spec;
pub mod trace;
pub mod workload;

/// `sim policies`: every registered scheduler and cache policy with its parameters and defaults.
pub fn policies_text() -> String {
    let mut o = String::from("schedulers (--scheduler NAME[k=v,...]):\n");
    let params = |ps: &[(&str, &str)]| {
        ps.iter()
            .map(|(k, d)| format!("      {k} = {d}\n"))
            .collect::<String>()
    };
    for e in sched::REGISTRY {
        o += &format!("  {:<12}{}\n{}", e.name, e.about, params(e.params));
    }
    o += "cache policies (--cache NAME[k=v,...]):\n";
    for e in cache::REGISTRY {
        o += &format!("  {:<12}{}\n{}", e.name, e.about, params(e.params));
    }
    o
}
pub mod arrivals;
pub mod experiment;
pub mod fit;
pub mod policy;
pub mod predict;
