//! The simulator's core: one GPU serving a base LLM with many LoRA adapters, as a deterministic
//! discrete-event simulation. No CLI, no plotting, no dataframes: a policy author builds and tests this crate
//! alone.
//!
//! The request's path, in module order: `trace` (read, validate, re-time with `arrivals`) -> `workload`
//! (adapters, popularity; `predict` output lengths) -> `engine` (event loop, batching, memory pool, adapter
//! loads; `engine::api` is the plug-in contract) -> `sched` and `cache` (policies, one file each, found by
//! name in a `registry`) -> `cost` (how long an iteration or a load takes) -> `metrics` (records, summary)
//! -> `run` (one run from a typed `config`, and its outputs).

pub mod cache;
pub mod calibrate;
pub mod cost;
pub mod csv_out;
pub mod engine;
pub mod error;
pub mod fleet;
pub mod json;
pub mod length;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod predict;
pub mod prefetch;
pub mod range;
pub mod record;
pub mod refusals;
pub mod registry;
pub mod report;
pub mod run;
pub mod sched;
pub mod slo;
pub mod spec;
pub mod summary;
pub mod time;
pub mod trace;
pub mod workload;
