//! S-LoRA's `--prefetch` (c1ddf48: `RouterManager._step`, `ReqQueue.next_batch`, `InferAdapter.load_adapters`
//! with `prefetch=True`): before the decode steps that follow 5 and 7 decode steps since a merge, the
//! adapters of the FIFO prefix of waiting requests whose prompts fit one prefill's token budget
//! (`batch_max_tokens`), loaded on a side stream (they overlap compute) while free memory lasts. S-LoRA's
//! paper runs leave it off.

use std::fmt;
use std::str::FromStr;

use crate::engine::api::{PolicyCtx, PrefetchView, Prefetcher, Prefetchers};
use crate::error::Result;
use crate::registry::{Entry, Param, Params, Props};
use crate::workload::NO_ADAPTER;

pub const ENTRY: Entry<Prefetchers> = Entry {
    name: "slora",
    about: "S-LoRA's: at decode steps 5 and 7 after a merge, the next FIFO batch's adapters",
    params: &[Param::new(
        "steps",
        "5+7",
        "decode steps since the merge before which to prefetch",
    )],
    props: Props::DEFAULT,
    build,
};

/// Decode-step counts written `5+7`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Steps(pub Vec<u32>);

impl FromStr for Steps {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Steps, String> {
        s.split('+')
            .map(|x| {
                x.trim()
                    .parse()
                    .map_err(|_| format!("'{x}' is not a step count"))
            })
            .collect::<std::result::Result<Vec<u32>, _>>()
            .map(Steps)
    }
}

impl fmt::Display for Steps {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.0.iter().map(u32::to_string).collect();
        f.write_str(&s.join("+"))
    }
}

fn build(p: &mut Params, ctx: &PolicyCtx) -> Result<Box<dyn Prefetcher>> {
    let steps: Steps = p.get("steps")?;
    Ok(Box::new(Slora {
        steps: steps.0,
        budget: ctx.max_prefill_tokens,
    }))
}

struct Slora {
    steps: Vec<u32>,
    budget: u64,
}

impl Prefetcher for Slora {
    fn at_merge(&self) -> bool {
        false
    }

    fn at_step(&self, steps: u32) -> bool {
        self.steps.contains(&steps)
    }

    fn wanted(&mut self, view: &PrefetchView<'_>, want: &mut Vec<u32>) {
        let (w, mut tokens) = (view.workload, 0u64);
        view.scheduler.peek(&mut |id| {
            let r = &w.requests[id as usize];
            tokens += r.input as u64;
            if tokens > self.budget {
                return false;
            }
            if r.adapter != NO_ADAPTER && !want.contains(&r.adapter) {
                want.push(r.adapter);
            }
            true
        });
    }
}
