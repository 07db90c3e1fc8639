//! Distribution sanity checks on fixed seeds, independent of numpy fixtures:
//! they catch gross mistakes (wrong parameterisation, off-by-one ranges)
//! even if fixtures were regenerated from a broken generator.

use sim_core::workload::slora::{SloraWorkloadSpec, generate};

fn spec(num_adapters: u32, alpha: f64, rate: f64, cv: f64, duration: f64) -> SloraWorkloadSpec {
    SloraWorkloadSpec::paper(num_adapters, alpha, rate, cv, duration)
}

#[test]
fn request_count_is_int_of_rate_times_duration() {
    // Includes float products that are not exact: Python's int() truncates them.
    for (rate, dur, want) in [
        (10.0, 60.0, 600),
        (0.29, 100.0, 28),
        (0.1, 30.0, 3),
        (2.5, 3.0, 7),
        (0.5, 1.0, 0),
    ] {
        let s = spec(5, 1.0, rate, 1.0, dur);
        assert_eq!(s.num_requests(), want, "rate {rate} duration {dur}");
        assert_eq!(generate(&s).unwrap().len(), want);
    }
}

#[test]
fn mean_gap_is_one_over_rate() {
    // n = 10,000; the sample mean's relative s.d. is cv/100, so 5% is >= 2.5 s.d. even at cv 2.
    for cv in [0.5, 1.0, 2.0] {
        for seed in [42, 1, 2] {
            let mut s = spec(10, 1.0, 10.0, cv, 1000.0);
            s.seed = seed;
            let reqs = generate(&s).unwrap();
            assert_eq!(reqs.len(), 10_000);
            let mean_gap = reqs.last().unwrap().arrival_s / reqs.len() as f64;
            assert!(
                (mean_gap - 0.1).abs() < 0.005,
                "cv {cv} seed {seed}: mean gap {mean_gap}"
            );
        }
    }
}

#[test]
fn gap_cv_matches_requested_cv() {
    // Loose (15%) check that shape = 1/cv^2 and scale = cv^2/rate are not swapped.
    for cv in [0.5, 1.0, 2.0] {
        let reqs = generate(&spec(10, 1.0, 10.0, cv, 1000.0)).unwrap();
        let mut prev = 0.0;
        let gaps: Vec<f64> = reqs
            .iter()
            .map(|r| {
                let g = r.arrival_s - prev;
                prev = r.arrival_s;
                g
            })
            .collect();
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let var = gaps.iter().map(|g| (g - mean) * (g - mean)).sum::<f64>() / n;
        let got = var.sqrt() / mean;
        assert!((got / cv - 1.0).abs() < 0.15, "cv {cv}: measured {got}");
    }
}

#[test]
fn arrivals_start_at_first_gap_and_never_decrease() {
    let reqs = generate(&spec(10, 1.0, 10.0, 4.0, 60.0)).unwrap();
    assert!(
        reqs[0].arrival_s > 0.0,
        "first request arrives at intervals[0], not at 0"
    );
    assert!(reqs.windows(2).all(|w| w[0].arrival_s <= w[1].arrival_s));
}

#[test]
fn alpha_one_gives_uniform_adapters() {
    // Chi-square with 99 d.o.f.: the 99.9% quantile is about 148.
    let reqs = generate(&spec(100, 1.0, 10.0, 1.0, 1000.0)).unwrap();
    let mut counts = [0u32; 100];
    for r in &reqs {
        counts[r.adapter as usize] += 1;
    }
    let expect = reqs.len() as f64 / 100.0;
    let chi2: f64 = counts
        .iter()
        .map(|&c| (c as f64 - expect).powi(2) / expect)
        .sum();
    assert!(chi2 < 148.0, "chi-square {chi2}");
}

#[test]
fn alpha_skews_popularity_in_the_documented_direction() {
    // power(a) has mean a/(a+1): 1/3 for 0.5, 2/3 for 2 (as a fraction of num_adapters).
    for (alpha, want) in [(0.5, 1.0 / 3.0), (2.0, 2.0 / 3.0)] {
        let reqs = generate(&spec(1000, alpha, 10.0, 1.0, 1000.0)).unwrap();
        let mean =
            reqs.iter().map(|r| r.adapter as f64 + 0.5).sum::<f64>() / reqs.len() as f64 / 1000.0;
        assert!(
            (mean - want).abs() < 0.01,
            "alpha {alpha}: mean fraction {mean}"
        );
    }
}

#[test]
fn lengths_stay_in_half_open_ranges_and_cover_them() {
    let mut s = spec(3, 1.0, 10.0, 1.0, 100.0);
    s.input_range = (8, 12);
    s.output_range = (1, 2);
    let reqs = generate(&s).unwrap();
    assert!(
        reqs.iter()
            .all(|r| (8..12).contains(&r.input) && r.output == 1 && r.adapter < 3)
    );
    for v in 8..12 {
        assert!(reqs.iter().any(|r| r.input == v), "input {v} never drawn");
    }
    let paper = generate(&spec(100, 1.0, 10.0, 1.0, 1000.0)).unwrap();
    assert!(
        paper
            .iter()
            .all(|r| (8..512).contains(&r.input) && (8..512).contains(&r.output))
    );
    assert!(paper.iter().any(|r| r.input == 511) && paper.iter().any(|r| r.input == 8));
}

#[test]
fn invalid_specs_name_the_field() {
    let ok = spec(10, 1.0, 10.0, 1.0, 60.0);
    assert!(ok.validate().is_ok());
    type Mutate = fn(&mut SloraWorkloadSpec);
    let cases: [(&str, Mutate); 7] = [
        ("alpha", (|s| s.alpha = 0.0)),
        ("req_rate", (|s| s.req_rate = -1.0)),
        ("cv", (|s| s.cv = f64::NAN)),
        ("cv", (|s| s.cv = 1e-200)), // shape 1/cv^2 overflows
        ("duration", (|s| s.duration = 0.0)),
        ("input_range", (|s| s.input_range = (8, 8))),
        ("output_range", (|s| s.output_range = (9, 8))),
    ];
    for (field, mutate) in cases {
        let mut s = ok.clone();
        mutate(&mut s);
        let err = generate(&s).unwrap_err();
        assert!(
            err.starts_with(field) || err.contains(field),
            "{field}: {err}"
        );
        assert!(!err.contains('\n'));
    }
}

#[test]
fn no_adapters_is_the_base_model_with_the_same_stream() {
    // S-LoRA's base-model runs (num_adapters = 0) still draw power(), so lengths and arrivals match the
    // stream of a run with adapters.
    let base = generate(&spec(0, 1.0, 10.0, 1.0, 60.0)).unwrap();
    let with = generate(&spec(10, 1.0, 10.0, 1.0, 60.0)).unwrap();
    assert!(base.iter().all(|r| r.adapter == 0));
    for (a, b) in base.iter().zip(&with) {
        assert_eq!(
            (a.arrival_s, a.input, a.output),
            (b.arrival_s, b.input, b.output)
        );
    }
}
