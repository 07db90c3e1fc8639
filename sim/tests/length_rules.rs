//! The length-scale rules (`--length-scale peak|knee`): each resolves to a factor that meets its definition
//! and is at the edge of it (10% more breaks it), is the same for every seed and policy of a setup, and is
//! written into the summary.

use sim::runner::{RunArgs, run};
use sim_core::engine::{Outcome, Simulated};
use sim_core::length::LengthRule;

/// 2,000 requests of the embedded trace on the default A40 setup, with a pool small enough to bind.
fn args(rule: &str) -> RunArgs {
    let mut a = RunArgs::defaults();
    a.max_requests = Some(2000);
    a.length_scale = rule.parse().unwrap();
    a.pool_tokens = Some(20_000);
    a
}

/// S-LoRA (FIFO, no cache) at `scale` on an engine whose pool never binds (its other limits kept): the
/// most KV slots held at once.
fn unbounded_peak(scale: f64, rate: Option<f64>) -> u64 {
    let mut a = args("1");
    a.length_scale = LengthRule::Fixed(scale);
    a.rate = rate;
    a.scheduler = "fifo".into();
    a.cache = "none".into();
    let mut cfg = a.resolve().unwrap();
    cfg.engine.pool_slots = u64::MAX / 4;
    let (_, w) = run::workload(&cfg, cfg.load_trace().unwrap()).unwrap();
    run::execute(&cfg, &w, &mut Simulated(cfg.cost.as_ref()))
        .unwrap()
        .output
        .stats
        .peak_kv_slots
}

fn resolved(a: &RunArgs) -> f64 {
    let cfg = a.resolve().unwrap();
    sim_core::run::length::resolve(&cfg, &cfg.load_trace().unwrap()).unwrap()
}

#[test]
fn peak_rule_fills_the_pool_at_the_trace_peak() {
    let rule = "peak[rate=8]";
    let f = resolved(&args(rule));
    assert!(f > 0.01 && f < 1.0, "{f}");
    assert!(unbounded_peak(f, Some(8.0)) <= 20_000);
    assert!(unbounded_peak(f * 1.1, Some(8.0)) > 20_000);
    // The same factor whatever the seed or the policies of the run.
    let mut b = args(rule);
    b.seed = 7;
    b.scheduler = "mlq".into();
    b.cache = "chameleon".into();
    assert_eq!(resolved(&b), f);
}

#[test]
fn knee_rule_puts_the_baselines_p99_ttft_at_the_slo() {
    let p99 = |scale: f64| {
        let mut a = args("1");
        a.length_scale = LengthRule::Fixed(scale);
        a.rate = Some(6.0);
        a.scheduler = "fifo".into();
        a.cache = "none".into();
        let cfg = a.resolve().unwrap();
        let r = run::run(&cfg, cfg.load_trace().unwrap(), None).unwrap();
        let mut t: Vec<f64> = r
            .output
            .records
            .iter()
            .zip(&r.workload.requests)
            .filter(|(x, _)| x.outcome == Outcome::Finished)
            .map(|(x, q)| (x.first_token - q.arrival) as f64 / 1e9)
            .collect();
        t.sort_by(f64::total_cmp);
        sim_core::metrics::percentile(&t, 0.99)
    };
    let mut a = args("knee[rate=6]");
    a.rate = Some(9.0);
    let f = resolved(&a);
    assert!(p99(f) <= 5.0, "{}", p99(f));
    assert!(p99(f * 1.1) > 5.0, "{}", p99(f * 1.1));
    let cfg = a.resolve().unwrap();
    let r = run::run(&cfg, cfg.load_trace().unwrap(), None).unwrap();
    assert_eq!(r.summary.length_scale, f);
    assert_eq!(r.summary.length_rule, "knee[rate=6,p=99]");
}

/// Every registered rule, at its defaults: it resolves to a factor in (0, 1] on this setup, and its printed
/// form (the summary's `length_rule`) names it again.
#[test]
fn every_registered_rule_resolves_and_prints_as_it_parses() {
    for e in sim_core::length::RULES.entries {
        let rule: LengthRule = e.name.parse().unwrap();
        assert_eq!(rule.to_string().parse::<LengthRule>().unwrap(), rule);
        let f = resolved(&args(e.name));
        assert!(f > 0.0 && f <= 1.0, "{}: {f}", e.name);
    }
}
