//! What an engine is configured with: its limits, the output its admission reserves for, the adapters' load
//! path and the idle poll.

use crate::cost::LoadShape;
use crate::error::{Error, Result};
use crate::time::Nanos;
use crate::workload::Request;

/// How much output a request's admission reserves memory for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    /// The request's true output length (S-LoRA with max_new_tokens set to the trace's length: an oracle).
    Oracle,
    /// A fixed output budget for every request, like a max_new_tokens of N (at least the true length).
    Max(u32),
}

impl Reserve {
    /// `oracle` or `max:N`.
    pub fn parse(s: &str) -> Result<Reserve> {
        match s.split_once(':') {
            None if s == "oracle" => Ok(Reserve::Oracle),
            Some(("max", n)) => n
                .parse()
                .ok()
                .filter(|&n: &u32| n > 0)
                .map(Reserve::Max)
                .ok_or_else(|| {
                    Error::msg(format!("--reserve max:N needs a positive N, got '{n}'"))
                }),
            _ => Err(Error::msg(format!(
                "--reserve must be 'oracle' or 'max:N', got '{s}'"
            ))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Reserve::Oracle => "oracle".into(),
            Reserve::Max(n) => format!("max:{n}"),
        }
    }
}

/// How an adapter crosses the host-device link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPath {
    /// Times the adapter's bytes cross the link: S-LoRA's `load_lora_A` and `load_lora_B` each copy every
    /// layer's combined A+B block (`load_to_gpu`, then `offload_from_gpu`), so 2.
    pub passes: u64,
    /// Copy calls per pass (S-LoRA: one per layer).
    pub copies_per_pass: u64,
    /// From pinned host memory (S-LoRA pins every adapter at start-up, `--swap`).
    pub pinned: bool,
}

impl LoadPath {
    /// S-LoRA's path for a model of `layers` layers.
    pub fn slora(layers: u64) -> LoadPath {
        LoadPath {
            passes: 2,
            copies_per_pass: layers,
            pinned: true,
        }
    }

    pub fn shape(&self, adapter_bytes: u64) -> LoadShape {
        LoadShape {
            bytes: adapter_bytes * self.passes,
            copies: self.passes * self.copies_per_pass,
            pinned: self.pinned,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EngineConfig {
    /// KV slots in the unified pool (KV cache + adapters).
    pub pool_slots: u64,
    /// S-LoRA: decode steps between merges of new requests.
    pub max_wait_tokens: u32,
    /// Merge at each scheduler's own cadence where it declares one (`Scheduler::merge_every`: Chameleon
    /// assembles its batch at every iteration), else every `max_wait_tokens` steps (`--merge-cadence`).
    pub policy_cadence: bool,
    /// Most requests in the running batch (S-LoRA's `running_max_req_size`).
    pub max_batch: u32,
    /// Most prompt tokens in one prefill iteration (S-LoRA's `batch_max_tokens`); a longer prompt is rejected.
    pub max_prefill_tokens: u64,
    /// A prompt longer than this is rejected (S-LoRA's API server: `max_req_input_len`).
    pub max_input_tokens: Option<u64>,
    /// A request whose prompt + output exceeds this is rejected (S-LoRA: `max_req_total_len`).
    pub max_total_tokens: Option<u64>,
    /// The model's context window: a request whose prompt + output exceeds it cannot be computed at all.
    pub context_tokens: Option<u64>,
    pub reserve: Reserve,
    pub load_path: LoadPath,
    /// When the batch is empty the server polls its queue at this interval (S-LoRA's router sleeps 10 ms);
    /// 0 = admit on arrival.
    pub idle_poll_ns: Nanos,
}

impl EngineConfig {
    /// The output budget admission reserves for `r`.
    pub fn budget(&self, r: &Request) -> u32 {
        match self.reserve {
            Reserve::Oracle => r.output,
            Reserve::Max(n) => n.max(r.output),
        }
    }

    /// A plain engine: no length limits, no idle polling, one copy per adapter (the hand-computed scenarios
    /// and property tests use it; `sim run` resolves S-LoRA's defaults, see `slora`).
    pub fn new(pool_slots: u64) -> EngineConfig {
        EngineConfig {
            pool_slots,
            max_wait_tokens: 10,
            policy_cadence: false,
            max_batch: 1000,
            max_prefill_tokens: 16_384,
            max_input_tokens: None,
            max_total_tokens: None,
            context_tokens: None,
            reserve: Reserve::Oracle,
            load_path: LoadPath {
                passes: 1,
                copies_per_pass: 1,
                pinned: true,
            },
            idle_poll_ns: 0,
        }
    }

    /// S-LoRA's server defaults (c1ddf48, `api_server.py`) for a pool of `pool_slots` and a model of
    /// `layers` layers: `batch_max_tokens = max(pool / 6, max_req_total_len)`, prompts over 2048 tokens or
    /// prompt + output over 3072 rejected, 1000 running requests at most, merges every 10 decode steps, the
    /// double-copy load path, a 10 ms idle poll.
    pub fn slora(pool_slots: u64, layers: u64) -> EngineConfig {
        EngineConfig {
            max_prefill_tokens: (pool_slots / 6).max(3072),
            max_input_tokens: Some(2048),
            max_total_tokens: Some(3072),
            load_path: LoadPath::slora(layers),
            idle_poll_ns: 10_000_000,
            ..EngineConfig::new(pool_slots)
        }
    }
}
