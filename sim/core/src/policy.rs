//! A run's policies from their specs: the one place the scheduler, cache and prefetch registries build what
//! an engine plugs in, for a single run and every fleet replica alike.

use crate::engine::Policies;
use crate::engine::api::PolicyCtx;
use crate::error::Result;
use crate::{cache, prefetch, sched};

/// The policy specs of a run, `Name[k=v,...]` each, as the user gave them.
#[derive(Clone, Copy, Debug)]
pub struct PolicySpecs<'a> {
    pub scheduler: &'a str,
    pub cache: &'a str,
    pub prefetch: &'a str,
}

/// Policies built for one engine, and their full specs (every parameter, defaults included) for the summary.
pub struct BuiltPolicies {
    pub policies: Policies,
    /// Scheduler, cache policy, prefetcher.
    pub specs: [String; 3],
}

impl PolicySpecs<'_> {
    /// Checks the specs against their registries without building (an error names the option).
    pub fn check(&self) -> Result<()> {
        sched::REGISTRY
            .check(self.scheduler)
            .map_err(|e| e.context("--scheduler"))?;
        cache::REGISTRY
            .check(self.cache)
            .map_err(|e| e.context("--cache"))?;
        prefetch::REGISTRY
            .check(self.prefetch)
            .map_err(|e| e.context("--prefetch"))
    }

    /// Builds the policies of one engine.
    pub fn build(&self, ctx: &PolicyCtx<'_>) -> Result<BuiltPolicies> {
        let s = sched::REGISTRY
            .build(self.scheduler, ctx)
            .map_err(|e| e.context("--scheduler"))?;
        let c = cache::REGISTRY
            .build(self.cache, ctx)
            .map_err(|e| e.context("--cache"))?;
        let p = prefetch::REGISTRY
            .build(self.prefetch, ctx)
            .map_err(|e| e.context("--prefetch"))?;
        Ok(BuiltPolicies {
            policies: Policies {
                scheduler: s.made,
                cache: c.made,
                prefetch: p.made,
            },
            specs: [s.spec, c.spec, p.spec],
        })
    }
}
