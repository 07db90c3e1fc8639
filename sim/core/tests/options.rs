//! The contract of every registered arrival process and adapter model (their defaults), checked with no
//! extra code when an entry is added: an arrival process keeps every request and its order, starts at 0,
//! meets the target rate and is a function of the seed; an adapter model gives every request an adapter
//! the workload has (or the base model) and is a function of the seed. (Length rules: `sim/tests/
//! length_rules.rs`, which resolves every registered rule.)

use sim_core::model::ModelSpec;
use sim_core::time::Nanos;
use sim_core::trace::arrivals::{self, Arrivals};
use sim_core::trace::{Trace, TraceRow};
use sim_core::workload::{ADAPTER_MODELS, AdapterModel, AdapterOptions, NO_ADAPTER, Workload};

/// `n` rows from time 0 (as a read trace starts), a second apart but every tenth 5 ms after the previous
/// one; adapter ids cycling over 7 and tenants over 3.
fn trace(n: usize) -> Trace {
    let mut t: Nanos = 0;
    let rows = (0..n)
        .map(|i| {
            if i > 0 {
                t += if i % 10 == 0 {
                    5_000_000
                } else {
                    1_000_000_000
                };
            }
            TraceRow {
                adapter: (i % 7) as u32,
                tenant: (i % 3) as u32,
                ..TraceRow::new(t, 10 + (i % 50) as u32, 5 + (i % 20) as u32)
            }
        })
        .collect();
    Trace {
        source: "test".into(),
        rows,
        ..Default::default()
    }
}

#[test]
fn every_arrival_process_keeps_the_requests_meets_the_rate_and_follows_the_seed() {
    let base = trace(4000);
    for e in arrivals::REGISTRY.entries {
        let a = Arrivals::parse(e.name).unwrap();
        for (seed, rate) in [(0, 5.0), (3, 40.0)] {
            let mut rows = base.rows.clone();
            a.retime(&mut rows, rate, seed).unwrap();
            let name = e.name;
            assert_eq!(rows.len(), base.rows.len(), "{name}");
            assert_eq!(rows[0].arrival, 0, "{name}: the first request at 0");
            assert!(
                rows.windows(2).all(|w| w[0].arrival <= w[1].arrival),
                "{name}: out of order"
            );
            assert!(
                rows.iter()
                    .zip(&base.rows)
                    .all(|(r, b)| (r.input, r.output, r.adapter) == (b.input, b.output, b.adapter)),
                "{name}: only the times change"
            );
            let span = rows[rows.len() - 1].arrival as f64 / 1e9;
            let got = (rows.len() - 1) as f64 / span;
            assert!(
                (got / rate - 1.0).abs() < 0.1,
                "{name}: {got} req/s for {rate}"
            );
            let mut again = base.rows.clone();
            a.retime(&mut again, rate, seed).unwrap();
            assert_eq!(again, rows, "{name}: the same seed, the same arrivals");
            assert_eq!(
                Arrivals::parse(&a.describe()).unwrap(),
                a,
                "{name}: its description names it"
            );
        }
    }
}

#[test]
fn every_adapter_model_assigns_adapters_the_workload_has_and_follows_the_seed() {
    let t = trace(3000);
    let model = ModelSpec::by_name("llama-7b").unwrap();
    for e in ADAPTER_MODELS.entries {
        let m = AdapterModel::parse(e.name).unwrap();
        let opts = AdapterOptions {
            count: 20,
            model: m,
            ..AdapterOptions::default()
        };
        let name = e.name;
        let w = Workload::build(&t, model, &opts, 1).unwrap();
        assert_eq!(w.adapters.len(), 20, "{name}");
        assert_eq!(w.requests.len(), t.rows.len(), "{name}");
        assert!(
            w.requests
                .iter()
                .all(|r| r.adapter == NO_ADAPTER || (r.adapter as usize) < w.adapters.len()),
            "{name}: an adapter the workload does not have"
        );
        assert!(
            w.requests.iter().any(|r| r.adapter != NO_ADAPTER),
            "{name}: no request got an adapter"
        );
        let again = Workload::build(&t, model, &opts, 1).unwrap();
        assert!(
            w.requests
                .iter()
                .zip(&again.requests)
                .all(|(a, b)| a.adapter == b.adapter && a.arrival == b.arrival),
            "{name}: the same seed, the same assignment"
        );
    }
}
