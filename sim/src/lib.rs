//! The lab around the simulator core (`sim-core`): the `sim` CLI, sweeps, tables and plots, real-execution
//! backends, the fidelity study, trace tools and the benchmark. The lab names the core's modules as
//! `sim_core::...`: what is the core's and what is the lab's reads from every import.

use sim_core::{cache, fleet, length, predict, prefetch, sched, trace, workload};

pub mod backend;
pub mod bench;
pub mod ensemble;
pub mod experiment;
pub mod fidelity;
pub mod fit;
pub mod fleet_args;
pub mod inside;
pub mod options;
pub mod runner;
pub mod tools;

/// `sim policies`: every registered option kind with its entries' parameters and defaults: the plug-ins, and
/// the run's other named choices.
pub fn policies_text() -> String {
    format!(
        "schedulers (--scheduler NAME[k=v,...]):\n{}cache policies (--cache NAME[k=v,...]):\n{}\
         prefetchers (--prefetch NAME[k=v,...]):\n{}output-length predictors (--predictor NAME[k=v,...]):\n{}\
         routers (--router NAME[k=v,...], with --replicas):\n{}\
         arrival processes (--arrivals NAME[k=v,...], with --rate):\n{}\
         adapter models (--adapter-model NAME[k=v,...]):\n{}\
         length rules (--length-scale F or NAME[k=v,...]):\n{}\
         real-execution backends (sim real --backend NAME[k=v,...]):\n{}\
         cost models (--cost NAME[k=v,...]; profile reads --profile NAME|FILE):\n{}",
        sched::REGISTRY.help(),
        cache::REGISTRY.help(),
        prefetch::REGISTRY.help(),
        predict::REGISTRY.help(),
        fleet::router::REGISTRY.help(),
        trace::arrivals::REGISTRY.help(),
        workload::ADAPTER_MODELS.help(),
        length::RULES.help(),
        backend::REGISTRY.help(),
        sim_core::cost::REGISTRY.help(),
    )
}

/// A clap parse error as one line: the message and its tip, without the usage block; "unexpected argument
/// '-1'" style messages keep naming the flag. Help and version requests are not errors: `None`.
pub fn clap_error_line(e: &clap::Error) -> Option<String> {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => return None,
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand | ErrorKind::MissingSubcommand => {
            return Some("a subcommand is required (see --help)".into());
        }
        _ => {}
    }
    Some(format!(
        "{} (see --help)",
        sim_core::error::one_line(&e.to_string())
    ))
}
