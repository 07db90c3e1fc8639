//! The lab around the simulator core (`sim-core`): the `sim` CLI, sweeps, tables and plots, real-execution
//! backends, the fidelity study, trace tools and the benchmark. The core's modules are re-exported here so
//! `sim::engine`, `sim::trace`, ... name the same things in both crates.

pub use sim_core::{
    arrivals, cache, cost, engine, error, metrics, model, policy, predict, sched, spec, time,
    trace, workload,
};

pub mod backend;
pub mod bench;
pub mod experiment;
pub mod fidelity;
pub mod runner;
pub mod tools;

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
