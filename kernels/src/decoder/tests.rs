//! The forward pass on a scenario that exercises every path (mixed ranks, a sequence without adapter,
//! prefill, a batch mixing prefill and decode, paged decode across pages, grouped-query attention), run on
//! the CPU and, with `--features gpu-tests` on a machine with a GPU, on the GPU against the CPU.

use super::cpu::CpuOps;
use super::*;
use crate::dtype::DType;

/// The tests' decoder: two layers, grouped-query attention (one K/V head for two query heads).
pub(super) fn shape() -> Shape {
    Shape {
        layers: 2,
        hidden: 64,
        heads: 2,
        kv_heads: 1,
        intermediate: 96,
        vocab: 50,
    }
}

const SEED: u64 = 11;
const PAGE: usize = 4;
/// (adapter, rank)
const ADAPTERS: [(u32, u32); 2] = [(7, 8), (9, 16)];

/// Host weights rounded through `dtype` (when given), so a CPU run and a GPU run start from equal values.
fn rounded(v: Vec<f32>, dtype: Option<DType>) -> Vec<f32> {
    match dtype {
        Some(d) => v.into_iter().map(|x| d.round(x)).collect(),
        None => v,
    }
}

fn build<O: Ops>(
    mut ops: O,
    dtype: Option<DType>,
    store: impl FnOnce(&mut O, &Shape) -> AdapterStore<O::Buf>,
) -> Decoder<O> {
    let s = shape();
    let w = Weights::build(
        &s,
        &mut ops,
        |o, t| o.upload_tensor(rounded(host_tensor(SEED, &t), dtype)),
        |o, t| o.embed_table(rounded(host_tensor(SEED, &t), dtype)),
    )
    .unwrap();
    let kv = KvCache::new(&mut ops, &s, PAGE, 64, true).unwrap();
    let st = store(&mut ops, &s);
    let mut d = Decoder::new(ops, s, w, kv, st).unwrap();
    for (a, r) in ADAPTERS {
        let host = rounded(adapter_weights(&s, SEED, a, r), dtype);
        let host = d.ops.host_adapter(host).unwrap();
        d.load_adapter(a, r, &host).unwrap();
    }
    d
}

fn strided<O: Ops>(ops: &mut O, s: &Shape) -> AdapterStore<O::Buf> {
    let region = 2 * AdapterLayout::Strided { region: 0 }.units(s, 16);
    let pool = ops.alloc(PROJECTIONS * s.layers * region).unwrap();
    AdapterStore::strided(pool, region)
}

fn packed<O: Ops>(ops: &mut O, _: &Shape) -> AdapterStore<O::Buf> {
    AdapterStore::packed(ops.alloc(0).unwrap(), 0)
}

fn step(request: u32, tokens: Vec<u32>, adapter: Option<u32>) -> Step {
    Step {
        request,
        tokens,
        adapter,
    }
}

/// The token request r feeds at pass i: fixed, not the previous pass's argmax, so two backends whose
/// argmax differ on a near tie still run the same inputs.
fn fed(r: u32, i: u32) -> Vec<u32> {
    vec![(r * 7 + i * 3) % shape().vocab as u32]
}

/// Four passes: a prefill of three sequences (two adapters and none, 10 tokens each so LoRA takes the
/// segmented kernels), a batch mixing two decodes with a new prefill, two decode steps of all four.
fn scenario<O: Ops>(d: &mut Decoder<O>) -> Vec<ForwardOut> {
    let s = d.shape;
    let p = |r: u32, n: usize| prompt(SEED, s.vocab, r, n);
    let mut out = vec![
        d.forward(&[
            step(1, p(1, 10), Some(7)),
            step(2, p(2, 10), None),
            step(3, p(3, 10), Some(9)),
        ])
        .unwrap(),
    ];
    let mixed = [
        step(1, fed(1, 1), Some(7)),
        step(4, p(4, 6), Some(9)),
        step(3, fed(3, 1), Some(9)),
    ];
    out.push(d.forward(&mixed).unwrap());
    for i in 2..4 {
        let dec: Vec<Step> = [(1, Some(7)), (2, None), (3, Some(9)), (4, Some(9))]
            .into_iter()
            .map(|(r, a)| step(r, fed(r, i), a))
            .collect();
        out.push(d.forward(&dec).unwrap());
    }
    out
}

#[test]
fn the_strided_store_gives_the_packed_stores_bits() {
    // The GPU's adapter layout, run on the CPU: the same values in another place give the same result.
    let a = scenario(&mut build(CpuOps, None, packed));
    let b = scenario(&mut build(CpuOps, None, strided));
    assert_eq!(a, b);
    assert_eq!(a.len(), 4);
    assert_eq!(a[1].next.len(), 3);
}

#[test]
fn a_mixed_batch_equals_its_sequences_run_alone() {
    let batched = scenario(&mut build(CpuOps, None, packed));
    // Sequence 4 joins at the second pass (a prefill next to two decodes); run it alone from scratch.
    let mut d = build(CpuOps, None, packed);
    let s = d.shape;
    let mut o = d
        .forward(&[step(4, prompt(SEED, s.vocab, 4, 6), Some(9))])
        .unwrap();
    assert_eq!(o.logits[..], batched[1].logits[s.vocab..2 * s.vocab]);
    for (i, b) in (2..).zip(&batched[2..]) {
        o = d.forward(&[step(4, fed(4, i), Some(9))]).unwrap();
        assert_eq!(o.logits[..], b.logits[3 * s.vocab..]);
    }
    // Sequence 1's decodes crossed into a fourth page (10 + 3 tokens, pages of 4).
    let mut d = build(CpuOps, None, packed);
    scenario(&mut d);
    assert_eq!(d.seqs[&1].pages.len(), 4);
    assert_eq!(d.context_len(1), Some(13));
}

#[test]
fn bad_batches_are_errors_not_panics() {
    let mut d = build(CpuOps, None, packed);
    let e = d.forward(&[step(1, vec![], None)]).unwrap_err();
    assert!(e.0.contains("no tokens"), "{e}");
    let e = d.forward(&[step(1, vec![50], None)]).unwrap_err();
    assert!(e.0.contains("outside the vocabulary"), "{e}");
    let e = d.forward(&[step(1, vec![1], Some(3))]).unwrap_err();
    assert!(e.0.contains("adapter 3, which is not loaded"), "{e}");
    assert!(d.load_adapter(5, 8, &[0.0; 3]).is_err());
    assert!(!d.store.is_resident(5));
}

/// The GPU against the CPU on the scenario, fp16, both from the same rounded weights. Runs only with
/// `--features gpu-tests` on a machine with an NVIDIA GPU, NVRTC and cuBLAS; otherwise says why it skipped.
#[test]
fn the_gpu_forward_matches_the_cpu_reference() {
    if !cfg!(feature = "gpu-tests") {
        eprintln!("skipped: the GPU forward test needs `--features gpu-tests`");
        return;
    }
    if let Err(e) = crate::gpu::require_libraries(true, true) {
        eprintln!("skipped: no usable GPU here ({e})");
        return;
    }
    let (ctx, info) = match crate::gpu::open_device(0) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: no usable GPU here ({e})");
            return;
        }
    };
    let dtype = DType::F16;
    let gpu = gpu::GpuOps::new(ctx, dtype).unwrap();
    let got = scenario(&mut build(gpu, Some(dtype), strided));
    let want = scenario(&mut build(CpuOps, Some(dtype), packed));
    // fp16 activations through two layers: a few units in the last place of fp16 per operation add up.
    let tol = 0.05;
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        let err = crate::check::compare(&g.logits, &w.logits);
        eprintln!("{}: pass {i}: max logit error {err:.2e}", info.name);
        assert!(err <= tol, "pass {i}: logits differ by {err:.2e} > {tol}");
    }
}
