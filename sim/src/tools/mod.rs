//! Trace tools (`sim trace ...`): statistics, conversion, popularity fits, ServeGen hot sets.

pub mod trace_cli;
pub mod trace_stats;
pub mod zipf;
