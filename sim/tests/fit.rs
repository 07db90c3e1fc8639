//! The fit finds the truth on its own data: runs simulated with known engine parameters are fitted from the
//! roofline's defaults and the parameters and metrics come back.

use sim::fit::{self, MeasuredRun, Mechanisms, Metrics, Setup};
use sim_core::cost::fitted::{EngineCost, EngineParams};
use sim_core::cost::{BatchShape, LoraKernels};
use sim_core::model::{GpuSpec, ModelSpec};
use sim_core::workload::slora::{SloraSource, SloraWorkloadSpec};

fn run(n: u32, rate: f64, duration: f64, input: (u32, u32), output: (u32, u32)) -> MeasuredRun {
    MeasuredRun {
        file: "synthetic.jsonl".into(),
        line: 1,
        setup: Setup {
            file: "synthetic.jsonl".into(),
            gpu: "a10g".into(),
            model: "llama-7b".into(),
            ranks: vec![64, 32, 16, 8],
            pool: 14_500,
            fit: true,
            why: None,
        },
        workload: SloraSource {
            spec: SloraWorkloadSpec {
                num_adapters: n,
                alpha: 1.0,
                req_rate: rate,
                cv: 1.0,
                duration,
                input_range: input,
                output_range: output,
                seed: 42,
            },
            prompt_extra: 2,
        },
        measured: Metrics::default(),
    }
}

#[test]
fn the_fit_recovers_the_parameters_it_simulated() {
    let truth = EngineParams {
        iteration_us: 6000.0,
        per_seq_us: 0.0,
        compute_eff: 0.35,
        mem_eff: 0.55,
        attn_eff: 0.4,
        lora_eff: 0.004,
        lora_us: 0.0,
        h2d_eff: 0.8,
        copy_us: 10.0,
    };
    let mech = Mechanisms::ALL;
    // Base model and adapters; short requests at light load (small batches, little context), long prompts
    // with short outputs (prefill), short prompts with long outputs at heavy load (large batches, long
    // contexts): each term dominates some run.
    let runs = vec![
        run(0, 0.5, 200.0, (8, 64), (8, 64)),
        run(0, 2.0, 150.0, (512, 1024), (8, 32)),
        run(0, 3.0, 150.0, (8, 64), (256, 512)),
        run(20, 0.5, 200.0, (8, 64), (8, 64)),
        run(20, 2.0, 150.0, (512, 1024), (8, 32)),
        run(20, 3.0, 150.0, (8, 64), (256, 512)),
    ];
    let mut prepared = fit::prepare(&runs, mech).unwrap();
    let sim = fit::simulate_all(&prepared, &truth, mech, 2).unwrap();
    for (p, m) in prepared.iter_mut().zip(&sim) {
        p.run.measured = *m;
    }
    // The terms these runs exercise; the others stay at the start's values (the truth's).
    let effort = fit::Effort {
        free: &[0, 2, 3, 4, 5],
        prior: 0.0,
        starts: 3,
        ..fit::Effort::new(300, 2, 2)
    };
    let start = EngineParams {
        iteration_us: 1000.0,
        compute_eff: 0.6,
        mem_eff: 0.8,
        attn_eff: 0.8,
        lora_eff: 0.2,
        ..truth
    };
    let f = fit::fit(&prepared, start, mech, effort, None).unwrap();
    let back = fit::simulate_all(&prepared, &f.params, mech, 2).unwrap();
    for (m, b) in sim.iter().zip(&back) {
        for i in 0..4 {
            let e = (b.get(i) - m.get(i)) / m.get(i);
            assert!(
                e.abs() < 0.03,
                "{} off by {:.1}%",
                Metrics::NAMES[i],
                100.0 * e
            );
        }
    }
    // What the runs pin down comes back: the time of the iterations they are made of. (Single parameters
    // can trade off: a decode step's fixed cost is the loop's overhead plus reading the weights, so
    // iteration_us and mem_eff are only jointly determined.)
    let cost = |p: &EngineParams| {
        EngineCost::new(
            *p,
            ModelSpec::by_name("llama-7b").unwrap(),
            GpuSpec::by_name("a10g").unwrap(),
            LoraKernels::Slora,
            None,
            "t",
        )
    };
    let (t, g) = (cost(&truth), cost(&f.params));
    let shapes = [
        (
            "decode 16 x 300",
            BatchShape {
                decode_seqs: 16,
                decode_context: 16 * 300,
                ..Default::default()
            },
        ),
        (
            "decode 48 x 500",
            BatchShape {
                decode_seqs: 48,
                decode_context: 48 * 500,
                ..Default::default()
            },
        ),
        (
            "decode 32 x 400 with adapters up to rank 64",
            BatchShape {
                decode_seqs: 32,
                decode_context: 32 * 400,
                lora_tokens: 32,
                lora_token_rank: 32 * 30,
                lora_distinct_rank: 20 * 30,
                lora_distinct: 20,
                lora_seqs: 32,
                lora_max_rank: 64,
                ..Default::default()
            },
        ),
        (
            "prefill 2 x 260",
            BatchShape {
                prefill_seqs: 2,
                prefill_tokens: 520,
                prefill_sq_tokens: 2 * 260 * 260,
                prefill_max_len: 260,
                ..Default::default()
            },
        ),
    ];
    for (name, s) in shapes {
        let (want, got) = (t.iteration_ns(&s), g.iteration_ns(&s));
        assert!(
            (got - want).abs() / want < 0.1,
            "{name}: fitted {got:.0} ns, truth {want:.0} ns ({:?})",
            f.params
        );
    }
}
