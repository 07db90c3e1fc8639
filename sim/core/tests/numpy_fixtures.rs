//! Exact comparison against fixtures written by numpy itself (fixtures.py).
//! Integers must match exactly; floats must match in every bit (compared as
//! IEEE-754 bit patterns, so -0.0/NaN subtleties cannot hide a mismatch).

use sim_core::workload::numpy::LegacyRandomState;
use sim_core::workload::slora::{SloraRequest, SloraWorkloadSpec, generate};

const RAW: &str = include_str!("fixtures/numpy/raw.txt");
const WORKLOADS: &str = include_str!("fixtures/numpy/workloads.txt");
const DIGESTS: &str = include_str!("fixtures/numpy/digests.txt");

/// Values of the raw-stream fixture line `name`, as text tokens.
fn raw(name: &str) -> Vec<&'static str> {
    let line = RAW
        .lines()
        .find(|l| l.split(' ').next() == Some(name))
        .unwrap_or_else(|| panic!("fixture {name} missing"));
    line.split(' ').skip(2).collect()
}

fn raw_f64_bits(name: &str) -> Vec<u64> {
    raw(name)
        .iter()
        .map(|h| u64::from_str_radix(h, 16).unwrap())
        .collect()
}

fn raw_i64(name: &str) -> Vec<i64> {
    raw(name).iter().map(|v| v.parse().unwrap()).collect()
}

/// Draws `n` floats and compares their bits with the fixture.
fn check_f64(name: &str, seed: u32, mut draw: impl FnMut(&mut LegacyRandomState) -> f64) {
    let want = raw_f64_bits(name);
    let mut rs = LegacyRandomState::new(seed);
    let got: Vec<u64> = (0..want.len()).map(|_| draw(&mut rs).to_bits()).collect();
    assert_eq!(got, want, "{name}: bits differ from numpy");
}

#[test]
fn mt19937_raw_u32_matches_numpy() {
    for seed in [42u32, 0, u32::MAX] {
        let want = raw_i64(&format!("u32_seed{seed}"));
        let mut rs = LegacyRandomState::new(seed);
        let got: Vec<i64> = (0..want.len()).map(|_| rs.next_u32() as i64).collect();
        assert_eq!(got, want, "seed {seed}");
    }
    // Words 620..660 straddle the second state regeneration.
    let mut rs = LegacyRandomState::new(42);
    let got: Vec<i64> = (0..660).map(|_| rs.next_u32() as i64).skip(620).collect();
    assert_eq!(got, raw_i64("u32_seed42_620_660"));
}

#[test]
fn continuous_distributions_match_numpy_bits() {
    check_f64("double", 42, |r| r.legacy_double());
    check_f64("std_exp", 42, |r| r.legacy_standard_exponential());
    check_f64("gauss21", 42, |r| r.legacy_gauss());
    check_f64("std_gamma_0.25", 42, |r| r.legacy_standard_gamma(0.25));
    check_f64("std_gamma_4", 42, |r| r.legacy_standard_gamma(4.0));
    check_f64("std_gamma_1", 42, |r| r.legacy_standard_gamma(1.0));
    check_f64("gamma_0.0625_1.6", 42, |r| r.legacy_gamma(0.0625, 1.6));
    check_f64("gamma_4_0.025", 42, |r| r.legacy_gamma(4.0, 0.025));
    check_f64("power_1.5", 42, |r| r.legacy_power(1.5));
    check_f64("power_0.5", 42, |r| r.legacy_power(0.5));
    check_f64("power_1", 42, |r| r.legacy_power(1.0));
}

#[test]
fn randint_matches_numpy() {
    for (name, lo, hi) in [
        ("randint_8_512", 8i64, 512i64),
        ("randint_-5_5", -5, 5),
        ("randint_0_4294967296", 0, 1 << 32), // rng == 0xFFFFFFFF: mask never rejects
        ("randint_0_1099511627776", 0, 1 << 40), // 64-bit masked path
        ("randint_-1099511627776_3", -(1 << 40), 3),
    ] {
        let want = raw_i64(name);
        let mut rs = LegacyRandomState::new(42);
        assert_eq!(rs.randint(lo, hi, want.len()), want, "{name}");
    }
}

#[test]
fn gauss_cache_carries_across_calls() {
    let mut rs = LegacyRandomState::new(42);
    let bits = |v: Vec<f64>| v.into_iter().map(f64::to_bits).collect::<Vec<_>>();
    let g: Vec<f64> = (0..3).map(|_| rs.legacy_gauss()).collect();
    assert_eq!(bits(g), raw_f64_bits("seq_gauss3"));
    let g: Vec<f64> = (0..10).map(|_| rs.legacy_standard_gamma(4.0)).collect();
    assert_eq!(bits(g), raw_f64_bits("seq_then_std_gamma_4"));
    let u: Vec<i64> = (0..4).map(|_| rs.next_u32() as i64).collect();
    assert_eq!(u, raw_i64("seq_then_u32"));
}

/// Parses a `spec k=v ...` line; returns the spec and the unused k=v pairs.
fn parse_spec(line: &str) -> (String, SloraWorkloadSpec, Vec<(&str, &str)>) {
    let mut kv: Vec<(&str, &str)> = line
        .split(' ')
        .skip(1)
        .map(|t| t.split_once('=').unwrap())
        .collect();
    let mut take = |k: &str| {
        let i = kv
            .iter()
            .position(|(key, _)| *key == k)
            .unwrap_or_else(|| panic!("no {k}"));
        kv.remove(i).1
    };
    let range = |s: &str| {
        let (a, b) = s.split_once(',').unwrap();
        (a.parse().unwrap(), b.parse().unwrap())
    };
    let name = take("name").to_string();
    let spec = SloraWorkloadSpec {
        num_adapters: take("num_adapters").parse().unwrap(),
        alpha: take("alpha").parse().unwrap(),
        req_rate: take("req_rate").parse().unwrap(),
        cv: take("cv").parse().unwrap(),
        duration: take("duration").parse().unwrap(),
        input_range: range(take("input")),
        output_range: range(take("output")),
        seed: take("seed").parse().unwrap(),
    };
    (name, spec, kv)
}

fn parse_row(tokens: &[&str]) -> SloraRequest {
    SloraRequest {
        arrival_s: f64::from_bits(u64::from_str_radix(tokens[0], 16).unwrap()),
        adapter: tokens[1].parse().unwrap(),
        input: tokens[2].parse().unwrap(),
        output: tokens[3].parse().unwrap(),
    }
}

/// Compares field by field; arrivals by bit pattern.
fn assert_same(name: &str, got: &[SloraRequest], want: &[SloraRequest]) {
    assert_eq!(got.len(), want.len(), "{name}: request count");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(
            (g.arrival_s.to_bits(), g.adapter, g.input, g.output),
            (w.arrival_s.to_bits(), w.adapter, w.input, w.output),
            "{name}: request {i} differs (got {g:?}, numpy {w:?})"
        );
    }
}

#[test]
fn full_workloads_match_trace_py() {
    let mut current: Option<(String, SloraWorkloadSpec, Vec<SloraRequest>)> = None;
    let mut checked = 0;
    let mut flush = |c: Option<(String, SloraWorkloadSpec, Vec<SloraRequest>)>| {
        if let Some((name, spec, want)) = c {
            assert_same(&name, &generate(&spec).unwrap(), &want);
            checked += 1;
        }
    };
    for line in WORKLOADS.lines().filter(|l| !l.starts_with('#')) {
        if line.starts_with("spec ") {
            flush(current.take());
            let (name, spec, _) = parse_spec(line);
            current = Some((name, spec, Vec::new()));
        } else {
            let toks: Vec<&str> = line.split(' ').collect();
            current.as_mut().unwrap().2.push(parse_row(&toks));
        }
    }
    flush(current.take());
    assert_eq!(checked, 8, "every workload fixture was checked");
}

/// FNV-1a 64 over (arrival bits, adapter, input, output) little-endian,
/// identical to fixtures.py's `fnv`.
fn fnv(reqs: &[SloraRequest]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for r in reqs {
        let mut bytes = Vec::with_capacity(20);
        bytes.extend_from_slice(&r.arrival_s.to_bits().to_le_bytes());
        for v in [r.adapter, r.input, r.output] {
            bytes.extend_from_slice(&v.to_le_bytes());
        }
        for b in bytes {
            h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[test]
fn long_workloads_match_trace_py_digests() {
    let mut checked = 0;
    for line in DIGESTS.lines().filter(|l| l.starts_with("spec ")) {
        let (name, spec, rest) = parse_spec(line);
        let get = |k: &str| rest.iter().find(|(key, _)| *key == k).unwrap().1;
        let got = generate(&spec).unwrap();
        assert_eq!(
            got.len(),
            get("n").parse::<usize>().unwrap(),
            "{name}: count"
        );
        let last: Vec<&str> = get("last").split(',').collect();
        assert_same(&name, &got[got.len() - 1..], &[parse_row(&last)]);
        assert_eq!(
            fnv(&got),
            u64::from_str_radix(get("fnv"), 16).unwrap(),
            "{name}: digest"
        );
        checked += 1;
    }
    assert_eq!(checked, 7);
}
