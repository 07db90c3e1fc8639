//! Cost profiles, `sim run`'s numeric options out of range, and bad `NAME[k=v,...]` specs.

use super::*;

pub(crate) fn profiles() -> Vec<Case> {
    let run = "run --max-requests 5 --allow-profile-mismatch --profile {d}/p.json";
    let neg = EXAMPLE_PROFILE.replacen("\"time_ns\": ", "\"time_ns\": -", 1);
    let zero = EXAMPLE_PROFILE.replacen("\"batch\": 1,", "\"batch\": 0,", 1);
    let v2 = EXAMPLE_PROFILE.replacen("\"version\": 1", "\"version\": 2", 1);
    let eng_neg = ENGINE_PROFILE.replacen("\"copy_us\": ", "\"copy_us\": -", 1);
    let mut v: serde_json::Value = serde_json::from_str(ENGINE_PROFILE).unwrap();
    v["params"]["iter_us"] = serde_json::json!("fast");
    let eng_bad = serde_json::to_string_pretty(&v).unwrap();
    vec![
        case(
            "profile",
            run,
            &[("p.json", "{ not json")],
            &["p.json", "not valid JSON"],
        ),
        case(
            "profile",
            run,
            &[("p.json", "{\"schema\": \"other\"}")],
            &["p.json", "not a cost profile"],
        ),
        case("profile", run, &[("p.json", &v2)], &["p.json", "version 2"]),
        case(
            "profile",
            run,
            &[("p.json", &neg)],
            &["p.json", "line", "field time_ns", "invalid value"],
        ),
        case(
            "profile",
            run,
            &[("p.json", &zero)],
            &["p.json", "decode[0]"],
        ),
        case(
            "profile",
            "run --profile {d}/none.json",
            &[],
            &["{d}/none.json"],
        ),
        case(
            "profile",
            "run --max-requests 5 --gpu a100-80gb --profile {d}/p.json",
            &[("p.json", &eng_neg)],
            &["p.json", "params.copy_us", "must be in [0"],
        ),
        case(
            "profile",
            "run --max-requests 5 --gpu a100-80gb --profile {d}/p.json --cost profile[member=999]",
            &[("p.json", ENGINE_PROFILE)],
            &["--cost profile[member=..]", "'999'", "p.json"],
        ),
        case(
            "profile",
            "run --max-requests 5 --gpu a100-80gb --profile {d}/p.json",
            &[("p.json", &eng_bad)],
            &["p.json", "line", "iter_us"],
        ),
        case(
            "profile",
            "run --max-requests 5 --profile {d}/p.json",
            &[("p.json", ENGINE_PROFILE)],
            &["p.json", "a100-80gb", "--allow-profile-mismatch"],
        ),
        case(
            "profile",
            "run --cost profile --gpu a100-40gb",
            &[],
            &[
                "--cost",
                "needs --profile",
                "no engine profile ships for a100-40gb x llama-7b",
            ],
        ),
        case(
            "profile",
            "run --allow-profile-mismatch --profile {d}/p.json --cost profile[load=teleport]",
            &[("p.json", EXAMPLE_PROFILE)],
            &["--cost", "'teleport'"],
        ),
    ]
}

/// Every numeric option of `sim run` out of its range.
pub(crate) fn run_numbers() -> Vec<Case> {
    let bad: &[(&str, &[&str])] = &[
        ("--max-requests", &["0", "-1"]),
        ("--rate", &["-1", "0", "1e30", "abc"]),
        ("--length-scale", &["-1", "0", "1e6"]),
        ("--seed", &["-1"]),
        ("--gpu-mem-gib", &["0", "-24"]),
        ("--mem-util", &["0", "1.5"]),
        ("--pool-tokens", &["0"]),
        ("--adapters", &["-1", "2000000"]),
        ("--ranks", &["8,0", "8,,16"]),
        ("--popularity", &["-1"]),
        ("--max-wait-tokens", &["-1"]),
        ("--max-batch", &["0"]),
        ("--max-prefill-tokens", &["0"]),
        ("--max-input-tokens", &["-1"]),
        ("--max-total-tokens", &["-1"]),
        ("--context-tokens", &["-2048"]),
        ("--idle-poll-ms", &["-1"]),
        ("--ttft-slo", &["-1", "0"]),
        ("--tbt-slo", &["0", "inf"]),
    ];
    let mut out = Vec::new();
    for (flag, values) in bad {
        for v in *values {
            let mut c = case("sim run number", "run", &[], &[flag]);
            c.args.extend([flag.to_string(), v.to_string()]);
            out.push(c);
        }
    }
    out
}

pub(crate) fn specs() -> Vec<Case> {
    let r = |args: &str, expect: &[&str]| case("policy / model spec", args, &[], expect);
    vec![
        r(
            "run --scheduler lottery",
            &["--scheduler", "unknown scheduler 'lottery'", "fifo"],
        ),
        r(
            "run --scheduler fifo[x=1]",
            &["--scheduler", "unknown parameter 'x'"],
        ),
        r("run --scheduler mlq[max_k=0]", &["--scheduler", "max_k"]),
        r("run --scheduler sjf[aging=-1]", &["--scheduler", "aging"]),
        r(
            "run --cache magic",
            &["--cache", "unknown cache policy 'magic'"],
        ),
        r("run --cache chameleon[freq=-1]", &["--cache", "weights"]),
        r("run --prefetch nope", &["--prefetch", "'nope'"]),
        r("run --predictor psychic", &["--predictor", "'psychic'"]),
        r(
            "run --predictor noisy[accuracy=2]",
            &["--predictor", "accuracy"],
        ),
        r(
            "run --adapter-model zipf[alpha=-1]",
            &["--adapter-model", "alpha"],
        ),
        r(
            "run --adapter-model trace[by=foo]",
            &["--adapter-model", "'foo'"],
        ),
        r("run --arrivals gamma[cv=0]", &["--arrivals", "cv"]),
        r("run --arrivals weird", &["--arrivals", "'weird'"]),
        r("run --reserve max:0", &["--reserve"]),
        r("run --reserve always", &["--reserve", "'always'"]),
        r("run --adapter-load twice", &["--adapter-load", "'twice'"]),
        r(
            "run --adapter-load once[pinned=maybe]",
            &["--adapter-load", "'pinned'"],
        ),
        r(
            "run --cost analytic[compute_eff=2]",
            &["--cost", "compute_eff"],
        ),
        r(
            "run --cost analytic[speed=2]",
            &["--cost", "unknown parameter 'speed'"],
        ),
        r(
            "run --model llama-65b",
            &["--model", "'llama-65b'", "llama-7b"],
        ),
        r("run --gpu v100", &["--gpu", "'v100'", "a40"]),
        r("run --gpu-mem-gib 8", &["--gpu-mem-gib 8", "does not fit"]),
        r(
            "run --model llama-30b --gpu a10g",
            &["--gpu a10g", "does not fit"],
        ),
        r("run --workload slora[rate=-1]", &["--workload", "rate"]),
        r(
            "run --workload slora --trace x.csv",
            &["--workload", "--trace"],
        ),
        r("run --workload slora --rate 3", &["--workload", "--rate"]),
        r(
            "real --backend gpu --max-requests 5",
            &["--backend", "'gpu'"],
        ),
        r(
            "real --backend cpu[layers=0] --max-requests 5",
            &["--backend", "positive"],
        ),
    ]
}
