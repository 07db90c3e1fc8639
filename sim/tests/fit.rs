//! The joint fit finds the truth on its own data: runs simulated with known engine parameters on two GPUs
//! and two models at once (one set of host terms, a host factor for the second machine, efficiencies per
//! GPU) are fitted from the start point with `sim fit`'s settings, and the metrics and each GPU's
//! iteration times come back.

use sim::fit::joint::{self, Joint};
use sim::fit::lm::Problem;
use sim::fit::{self, MeasuredRun, Metrics, Setup, Variant};
use sim_core::cost::BatchShape;
use sim_core::cost::fitted::EngineParams;
use sim_core::workload::slora::{SloraSource, SloraWorkloadSpec};

#[allow(clippy::too_many_arguments)]
fn run(
    gpu: &str,
    model: &str,
    ranks: &[u32],
    n: u32,
    rate: f64,
    input: (u32, u32),
    output: (u32, u32),
    engine: Variant,
) -> MeasuredRun {
    MeasuredRun {
        file: format!("{gpu}.jsonl"),
        pool: 12_000,
        line: 1,
        setup: Setup {
            file: format!("{gpu}.jsonl"),
            gpu: gpu.into(),
            model: model.into(),
            ranks: ranks.to_vec(),
            pool: 12_000,
            pools: vec![],
            engine,
            suite: None,
            fit: true,
            why: None,
        },
        workload: SloraSource {
            spec: SloraWorkloadSpec {
                num_adapters: n,
                alpha: 1.0,
                req_rate: rate,
                cv: 1.0,
                duration: 60.0,
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
fn the_joint_fit_recovers_what_it_simulated_on_two_gpus_and_models() {
    let base = Variant::default();
    let off = Variant {
        lora_compute: false,
        ..base
    };
    let s2 = [64, 32, 16, 8];
    let s4 = [64, 32, 16];
    // Per GPU: the base model and adapters at light load (small batches), long prompts (prefill), many
    // short requests (large batches, long contexts), and the adapters without LoRA compute.
    let mut runs = Vec::new();
    for (gpu, model, ranks) in [
        ("a10g", "llama-7b", &s2[..]),
        ("a100-40gb", "llama-13b", &s4[..]),
    ] {
        runs.push(run(gpu, model, ranks, 0, 0.5, (8, 64), (8, 64), base));
        runs.push(run(gpu, model, ranks, 200, 0.5, (8, 64), (8, 64), base));
        runs.push(run(gpu, model, ranks, 20, 3.0, (400, 800), (8, 32), base));
        runs.push(run(gpu, model, ranks, 20, 2.0, (8, 64), (200, 400), base));
        runs.push(run(gpu, model, ranks, 20, 2.0, (8, 64), (200, 400), off));
    }
    let mut prepared = fit::prepare(&runs).unwrap();
    let mut truth = Joint::start(&["a100-40gb", "a10g"], &[5, 5]);
    assert_eq!(truth.reference, 1);
    let set = |j: &mut Joint, name: &str, gpu: usize, v: f64| {
        let p = EngineParams::index(name).unwrap();
        let k = j.index(p, gpu);
        j.values[k] = v;
    };
    for (name, v) in [
        ("iter_us", 2500.0),
        ("seq_us", 15.0),
        ("lora_seq_us", 10.0),
        ("layer_us", 600.0),
        ("lora_layer_us", 300.0),
    ] {
        set(&mut truth, name, 0, v);
    }
    for (g, (hf, ce, me, at, bg, mb, h2d)) in [
        (1.3, 0.55, 0.75, 0.6, 1.2, 0.05, 0.5),
        (1.0, 0.3, 0.8, 0.5, 0.6, 0.02, 0.7),
    ]
    .into_iter()
    .enumerate()
    {
        for (name, v) in [
            ("host_factor", hf),
            ("compute_eff", ce),
            ("mem_eff", me),
            ("attn_eff", at),
            ("bgmv_eff", bg),
            ("mbgmm_eff", mb),
            ("h2d_eff", h2d),
        ] {
            set(&mut truth, name, g, v);
        }
    }
    let params: Vec<EngineParams> = prepared
        .iter()
        .map(|p| truth.params(truth.gpu_index(p.gpu.name).unwrap()))
        .collect();
    let sim = fit::simulate_all(&prepared, &params, 2).unwrap();
    for (p, m) in prepared.iter_mut().zip(&sim) {
        p.run.measured = *m;
    }
    let start = Joint::start(&["a100-40gb", "a10g"], &[5, 5]);
    let fixed = start.index(joint::HOST_FACTOR, start.reference);
    let problem = Problem {
        prepared: &prepared,
        runs: (0..prepared.len()).collect(),
        free: (0..start.len()).filter(|&k| k != fixed).collect(),
        threads: 2,
        step: 0.05,
        rounds: 4,
        progress: None,
    };
    // `sim fit`'s settings: 10 Jacobians, 4 coordinate rounds, 3 starts.
    let sol = problem.solve_multi(start, 10, 3).unwrap();
    for (p, m) in prepared.iter().zip(&sol.sim) {
        for i in 0..4 {
            let e = (m.get(i) - p.run.measured.get(i)) / p.run.measured.get(i);
            assert!(
                e.abs() < 0.05,
                "{}: {} off by {:.1}%",
                p.run.name(),
                Metrics::NAMES[i],
                100.0 * e
            );
        }
    }
    // What the runs pin down comes back: the iteration times they are made of, on each GPU, and the second
    // machine's host factor. (Single terms can trade off: under the overlap a decode step is the longer of
    // the launches and the GPU's work, so only the longer is seen.)
    let mut shapes = vec![
        (
            "decode 8 x 100",
            BatchShape {
                decode_seqs: 8,
                decode_context: 800,
                ..Default::default()
            },
        ),
        (
            "decode 24 x 300 with adapters up to rank 64",
            BatchShape {
                decode_seqs: 24,
                decode_context: 24 * 300,
                lora_tokens: 24,
                lora_token_rank: 24 * 30,
                lora_distinct_rank: 15 * 30,
                lora_distinct: 15,
                lora_seqs: 24,
                lora_max_rank: 64,
                ..Default::default()
            },
        ),
    ];
    let mut pre = BatchShape::default();
    pre.add_prompt(600, Some((64, true)));
    pre.add_prompt(500, Some((16, true)));
    shapes.push(("prefill 600 + 500 with adapters", pre));
    for (i, p) in prepared.iter().enumerate().filter(|(i, _)| i % 5 == 1) {
        let g = truth.gpu_index(p.gpu.name).unwrap();
        let (t, f) = (
            fit::cost_of(p, &truth.params(g)),
            fit::cost_of(p, &sol.joint.params(g)),
        );
        for (name, s) in &shapes {
            let (want, got) = (t.iteration_ns(s), f.iteration_ns(s));
            assert!(
                (got - want).abs() / want < 0.1,
                "run {i} {}: {name}: fitted {got:.0} ns, truth {want:.0} ns",
                p.gpu.name
            );
        }
    }
    // (Loads are a few ms of TTFTs of hundreds: these short runs do not pin them, nor, with both GPUs
    // near the launch / GPU balance, how an iteration splits into host and GPU time: the second machine's
    // host factor trades with its efficiencies. The identification reports such terms of the real runs.)
}
