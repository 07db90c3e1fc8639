//! The summary's accounting on hand-made runs: every request counts in SLO attainment, goodput and
//! throughput (a rejected one missed its objective), rejections by reason, and the overload flag.

mod common;

use common::{Const, req, run_prefetch};
use sim_core::engine::{EngineConfig, RunOutput};
use sim_core::metrics::{self, RunView, Summary};
use sim_core::model::{GpuSpec, ModelSpec};
use sim_core::slo::Slo;
use sim_core::workload::{NO_ADAPTER, Request, Workload};

fn summarize(w: &Workload, out: &RunOutput) -> Summary {
    let predicted: Vec<u32> = w.requests.iter().map(|r| r.output).collect();
    let finished = metrics::finished(out);
    let view = RunView {
        workload: w,
        predicted: &predicted,
        out,
        slo: Slo::default(),
        model: ModelSpec::by_name("llama-7b").unwrap(),
        gpu: GpuSpec::by_name("a40").unwrap(),
        finished: &finished,
    };
    metrics::summarize(&view, &[])
}

fn run(requests: Vec<Request>, cfg: EngineConfig) -> (Workload, RunOutput) {
    let w = Workload {
        adapters: vec![],
        requests,
    };
    let out = run_prefetch(&w, cfg, &Const, "fifo", "none", "none");
    (w, out)
}

#[test]
fn rejected_requests_count_against_slo_attainment_goodput_and_throughput() {
    // 10 requests one second apart; 3 prompts beyond a 100-token context. Each served one takes 100 ms of
    // prefill and one 10 ms decode step: every finished request meets both objectives.
    let mut cfg = EngineConfig::new(100_000);
    cfg.context_tokens = Some(100);
    let requests = (0..10)
        .map(|i| {
            req(
                i,
                i as u64 * 1000,
                if i % 3 == 1 { 200 } else { 10 },
                2,
                NO_ADAPTER,
            )
        })
        .collect();
    let (w, out) = run(requests, cfg);
    let s = summarize(&w, &out);
    assert_eq!(
        (s.requests_total, s.requests_finished, s.requests_rejected),
        (10, 7, 3)
    );
    assert_eq!(
        (s.rejected_context_length, s.rejected_context_length_share),
        (3, 0.3)
    );
    assert_eq!(s.rejections().iter().map(|r| r.1).sum::<u64>(), 3);
    assert_eq!(s.requests_rejected_share, 0.3);
    // Attainment over all 10 requests, not the 7 finished (which would read 1.0).
    assert_eq!(s.slo_attainment, 0.7);
    assert_eq!(s.slo_ttft_attainment, 0.7);
    assert_eq!(s.slo_tbt_attainment, 0.7);
    // Latencies over the finished ones: 100 ms TTFT each.
    assert_eq!(s.ttft_p99_s, Some(0.1));
    // The run spans the first arrival to the last event; the last request (id 9, at 9 s) finished at 9.11 s.
    assert!((s.simulated_s - 9.11).abs() < 1e-9, "{}", s.simulated_s);
    assert!((s.throughput_rps.unwrap() - 7.0 / 9.11).abs() < 1e-9);
    assert_eq!(s.goodput_rps, s.throughput_rps);
    assert!((s.offered_rps.unwrap() - 1.0).abs() < 1e-12);
    assert!(!s.overloaded && s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn a_rejection_at_the_end_of_the_trace_stays_inside_the_throughput_window() {
    let mut cfg = EngineConfig::new(100_000);
    cfg.context_tokens = Some(100);
    let (w, out) = run(
        vec![
            req(0, 0, 10, 2, NO_ADAPTER),
            req(1, 10_000, 500, 2, NO_ADAPTER),
        ],
        cfg,
    );
    let s = summarize(&w, &out);
    assert_eq!(s.requests_rejected, 1);
    // One request over the 10 s of the trace, not over the 110 ms until its finish.
    assert!(
        (s.throughput_rps.unwrap() - 0.1).abs() < 1e-9,
        "{:?}",
        s.throughput_rps
    );
    assert_eq!(s.slo_attainment, 0.5);
}

/// One request at a time, 200 ms each (prefill 100 ms + 10 decode steps of 10 ms): capacity 5 req/s.
fn serial() -> EngineConfig {
    let mut cfg = EngineConfig::new(100_000);
    cfg.max_batch = 1;
    cfg
}

fn steady(n: u32, every_ms: u64) -> Vec<Request> {
    (0..n)
        .map(|i| req(i, i as u64 * every_ms, 10, 11, NO_ADAPTER))
        .collect()
}

#[test]
fn an_offered_load_above_capacity_is_flagged_with_numbers_and_a_hint() {
    // 10 req/s offered for 60 s against a capacity of 5 req/s.
    let (w, out) = run(steady(600, 100), serial());
    let s = summarize(&w, &out);
    assert!(s.overloaded);
    assert!(s.queue_growth_s.unwrap() > 20.0, "{:?}", s.queue_growth_s);
    let warn = s.warnings.join("\n");
    assert!(
        warn.contains("overloaded") && warn.contains("--rate") && warn.contains("--length-scale"),
        "{warn}"
    );
    assert!(warn.contains("finished at 5.0"), "{warn}");
}

#[test]
fn a_sustainable_load_bursts_short_traces_and_rejections_are_not_overload() {
    let not = |requests: Vec<Request>, cfg: EngineConfig, what: &str| {
        let (w, out) = run(requests, cfg);
        let s = summarize(&w, &out);
        assert!(
            !s.overloaded && s.warnings.is_empty(),
            "{what}: {:?}",
            s.warnings
        );
    };
    // 4 req/s against 5: queues stay short.
    not(steady(600, 250), serial(), "80% load");
    // A burst of 50 at once (10 s of work), then 1 req/s for 5 minutes: the server catches up.
    let mut burst: Vec<Request> = (0..50).map(|i| req(i, 0, 10, 11, NO_ADAPTER)).collect();
    burst.extend((50..350).map(|i| req(i, (i as u64 - 49) * 1000, 10, 11, NO_ADAPTER)));
    not(burst, serial(), "a burst the server recovers from");
    // Eight long requests over one second: each waits for the last, but there is no trace to outgrow.
    let long = (0..8)
        .map(|i| req(i, i as u64 * 125, 10, 500, NO_ADAPTER))
        .collect();
    not(long, serial(), "a short trace of long requests");
    // Half the requests rejected at a light load.
    let mut cfg = serial();
    cfg.context_tokens = Some(100);
    let half = (0..400)
        .map(|i| {
            req(
                i,
                i as u64 * 250,
                if i % 2 == 0 { 10 } else { 300 },
                11,
                NO_ADAPTER,
            )
        })
        .collect();
    not(half, cfg, "heavy rejections");
}

#[test]
fn the_overload_rule_needs_a_growing_queue_and_a_lagging_run_or_a_long_growth() {
    use metrics::overloaded;
    // (arrival span, run span, queue growth, TTFT objective)
    assert!(overloaded(100.0, 200.0, 50.0, 5.0));
    assert!(
        overloaded(1000.0, 2000.0, 40.0, 5.0),
        "a lagging run whose queue grew past the objective, however long the trace"
    );
    assert!(
        !overloaded(100.0, 200.0, 4.0, 5.0),
        "growth under the objective"
    );
    // A run that kept up (within 1/19 of its arrivals): only a growth over 2.5% of the span trips it.
    assert!(!overloaded(1000.0, 1010.0, 20.0, 5.0), "kept up, growth 2%");
    assert!(
        overloaded(1000.0, 1010.0, 30.0, 5.0),
        "kept up, growth 3%: at capacity"
    );
    assert!(!overloaded(100.0, 104.0, 2.4, 1.0), "kept up, growth 2.4%");
    assert!(!overloaded(0.0, 10.0, 50.0, 5.0), "all at once: no rate");
}
