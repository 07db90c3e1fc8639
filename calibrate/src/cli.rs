//! Command line: measure (the default, no subcommand), `predict`, `transfer`, `report`, `check`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "calibrate",
    version,
    about = "Measure GPU costs of many-LoRA serving and write a cost profile (schema v1)",
    long_about = "Without a subcommand: measure prefill, decode, LoRA and adapter-load costs on this machine's \
                  GPU and write a cost profile. Subcommands work on existing profiles and need no GPU.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub measure: MeasureArgs,
}

#[derive(Args, Debug, Clone)]
pub struct MeasureArgs {
    #[arg(long, default_value = "llama-7b", value_name = "NAME|FILE", help = sim_core::model::models_help())]
    pub model: String,
    /// Element type of weights, activations and KV cache: fp16 or bf16.
    #[arg(long, default_value = "fp16")]
    pub dtype: String,
    /// CUDA device ordinal.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = sim_core::range::whole::<usize>(sim_core::range::Range::AtLeast(0)))]
    pub device: usize,
    /// Use at most this much GPU memory (GiB); it bounds the KV cache and so the decode points measured.
    #[arg(long, allow_negative_numbers = true,
          value_parser = sim_core::range::real(sim_core::range::Range::Positive(4096.0)))]
    pub mem_limit_gib: Option<f64>,
    /// A small grid and few repeats: a few minutes.
    #[arg(long)]
    pub quick: bool,
    /// Skip the GPU-vs-CPU-reference check of every kernel before timing.
    #[arg(long)]
    pub skip_check: bool,
    /// Where to write the profile; the fit report goes next to it as FILE.fit.txt.
    #[arg(long, default_value = "cost-profile.json")]
    pub out: PathBuf,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the single-request TTFT the simulator predicts from a profile (Chameleon Fig. 2).
    Predict {
        #[arg(long)]
        profile: PathBuf,
        /// Input (prompt) length of the request.
        #[arg(long, default_value_t = 512, allow_negative_numbers = true, value_parser = sim_core::range::whole::<u64>(sim_core::range::Range::AtLeast(1)))]
        input_tokens: u64,
        /// Adapter ranks, comma-separated.
        #[arg(long, default_value = "8,16,32,64,128", value_delimiter = ',',
              allow_negative_numbers = true, value_parser = sim_core::range::whole::<u32>(sim_core::range::Range::Between(1, 65_536)))]
        ranks: Vec<u32>,
        /// How adapters are copied: per_layer_pinned, per_layer_pageable, contiguous_pinned, contiguous_pageable.
        #[arg(long, default_value = "per_layer_pinned")]
        load: String,
    },
    /// Scale a profile measured on one GPU to another by datasheet ratios (flagged as transferred).
    Transfer {
        /// The measured profile.
        #[arg(long)]
        from: PathBuf,
        #[arg(long, help = format!("The GPU it was measured on; {}", sim_core::model::gpus_help()))]
        from_gpu: String,
        #[arg(long, help = format!("The GPU to transfer it to; {}", sim_core::model::gpus_help()))]
        to_gpu: String,
        #[arg(long)]
        out: PathBuf,
    },
    /// Run every GPU kernel on small inputs and compare with its CPU reference (needs a GPU; no timing).
    Check {
        /// fp16 or bf16.
        #[arg(long, default_value = "fp16")]
        dtype: String,
        /// CUDA device ordinal.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true, value_parser = sim_core::range::whole::<usize>(sim_core::range::Range::AtLeast(0)))]
        device: usize,
    },
    /// Print the fit report of a profile: per table, model form, R^2, worst relative error.
    Report {
        #[arg(long)]
        profile: PathBuf,
        #[arg(long, default_value = "per_layer_pinned")]
        load: String,
    },
}
