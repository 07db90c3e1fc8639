//! The bad-input corpus: every case is a command line (with the files it reads) that must fail cleanly:
//! exit code 2, one line on stderr naming the file / line / field or the option, no panic, nothing on
//! stdout, and no half-written output (an `--out` that did not exist is not created; one that did is left
//! as it was). One process per case; the cases are data, grouped by category.

use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Clone, Copy, PartialEq)]
enum Bin {
    Sim,
    Calibrate,
}

struct Case {
    category: &'static str,
    bin: Bin,
    /// `{d}` is the case's own directory.
    args: Vec<String>,
    /// Files written into `{d}` first: (name, content); a name ending in `/` is a directory.
    files: Vec<(String, String)>,
    /// Substrings of the one stderr line (`{d}` replaced).
    expect: Vec<String>,
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn case(category: &'static str, args: &str, files: &[(&str, &str)], expect: &[&str]) -> Case {
    Case {
        category,
        bin: Bin::Sim,
        args: args.split_whitespace().map(str::to_string).collect(),
        files: files
            .iter()
            .map(|(n, c)| (n.to_string(), c.to_string()))
            .collect(),
        expect: strs(expect),
    }
}

fn calibrate(args: &str, files: &[(&str, &str)], expect: &[&str]) -> Case {
    Case {
        bin: Bin::Calibrate,
        ..case("calibrate", args, files, expect)
    }
}

const AZ: &str = "TIMESTAMP,ContextTokens,GeneratedTokens\n";
const EXAMPLE_PROFILE: &str = include_str!("../../docs/example-profile.json");
const ENGINE_PROFILE: &str = include_str!("../../calibrate/profiles/slora-a100-80gb-llama-7b.json");

/// `n` JSON lines, one every `gap` from `t0`, with these keys.
fn jsonl(n: u64, t0: u64, gap: u64) -> String {
    (0..n)
        .map(|i| {
            format!(
                "{{\"timestamp\": {}, \"prompt_tokens\": 10, \"completion_tokens\": 5}}\n",
                t0 + i * gap
            )
        })
        .collect()
}

fn csv_traces() -> Vec<Case> {
    let t = |body: &str| format!("{AZ}{body}");
    let run = "run --trace {d}/t.csv";
    vec![
        case(
            "csv trace",
            run,
            &[(
                "t.csv",
                &t(
                    "2023-11-16 18:15:46.0,10,5\n2023-11-16 18:15:47.0,10,5\n2023-11-16 18:15:45.0,10,5\n",
                ),
            )],
            &[
                "t.csv",
                "line 4",
                "column TIMESTAMP",
                "backwards",
                "sort=true",
            ],
        ),
        case(
            "csv trace",
            run,
            &[(
                "t.csv",
                &t("2023-11-16 18:15:46.0,10,5\n2023-11-16 18:15:47.0,10,0\n"),
            )],
            &[
                "t.csv",
                "line 3",
                "column GeneratedTokens",
                "positive",
                "zeros=skip",
            ],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16 18:15:46.0,-4,5\n"))],
            &["t.csv", "line 2", "column ContextTokens", "positive"],
        ),
        case(
            "csv trace",
            run,
            &[(
                "t.csv",
                &t("2023-11-16 18:15:46.0,10,5\nthis is not a row\n"),
            )],
            &["t.csv", "line 3", "expected 3 fields, found 1"],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16 18:15:46.0,10,5,9,9\n"))],
            &["t.csv", "line 2", "expected 3 fields, found 5"],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16 18:15:46.0,ten,5\n"))],
            &[
                "t.csv",
                "line 2",
                "ContextTokens",
                "'ten' is not an integer",
            ],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16 18:15:46.0,1.5,5\n"))],
            &["t.csv", "line 2", "'1.5' is not an integer"],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16 18:15:46.0,4294967296,5\n"))],
            &[
                "t.csv",
                "line 2",
                "ContextTokens",
                "4294967296 is too large",
            ],
        ),
        case(
            "csv trace",
            run,
            &[(
                "t.csv",
                "TIMESTAMP,ContextTokens\n2023-11-16 18:15:46.0,10\n",
            )],
            &[
                "t.csv",
                "missing column 'GeneratedTokens'",
                "csv[output=COLUMN]",
            ],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", AZ)],
            &["t.csv", "no requests"],
        ),
        case("csv trace", run, &[("t.csv", "")], &["t.csv", "empty"]),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("\"2023-11-16 18:15:46.0,10,5\n"))],
            &["t.csv", "line 2", "unterminated quoted field"],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16 18:15:46.0,\"10\"0,5\n"))],
            &["t.csv", "line 2", "text after the closing quote of field 2"],
        ),
        case(
            "csv trace",
            run,
            &[(
                "t.csv",
                &t("2023-02-28 00:00:00,1,1\n2023-02-31 00:00:00,1,1\n"),
            )],
            &[
                "t.csv",
                "line 3",
                "'2023-02-31 00:00:00' is not a timestamp",
            ],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t("2023-11-16T18:15:46+25:00,1,1\n"))],
            &["t.csv", "line 2", "is not a timestamp"],
        ),
        case(
            "csv trace",
            "run --trace {d}/t.csv --trace-format csv[unit=s]",
            &[("t.csv", &t("2023-11-16 18:15:46,1,1\n"))],
            &["t.csv", "line 2", "not a number of s", "unit=datetime"],
        ),
        case(
            "csv trace",
            run,
            &[("t.csv", &t(",1,1\n"))],
            &["t.csv", "line 2", "TIMESTAMP", "empty"],
        ),
        case(
            "csv trace",
            "run --trace {d}/t.csv --trace-format csv[time=ts]",
            &[("t.csv", "t,input,output\n0,1,1\n")],
            &["t.csv", "missing column 'ts' for time"],
        ),
        case(
            "csv trace",
            run,
            &[(
                "t.csv",
                &("arrival_s,input,output\n".to_string()
                    + &(0..200)
                        .map(|i| format!("{},10,5\n", 1_700_000_000_000u64 + i * 300))
                        .collect::<String>()),
            )],
            &[
                "t.csv",
                "line 2",
                "column arrival_s",
                "1700000000000",
                "2023-11-14",
                "unit=ms",
            ],
        ),
        case(
            "csv trace",
            "run --trace {d}/t.csv.gz",
            &[("t.csv.gz", "not gzip at all\n")],
            &["t.csv.gz", "line 1"],
        ),
        case(
            "csv trace",
            "run --trace {d}/none.csv",
            &[],
            &["{d}/none.csv", "cannot read trace"],
        ),
        case(
            "csv trace",
            "run --trace {d}/sub",
            &[("sub/", "")],
            &["{d}/sub", "line 1"],
        ),
    ]
}

fn jsonl_traces() -> Vec<Case> {
    let run = "run --trace {d}/t.jsonl";
    let one = |body: &'static str| [("t.jsonl", body)];
    vec![
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": 1}\n"),
            &[
                "t.jsonl",
                "missing field 'GeneratedTokens'",
                "jsonl[output=FIELD]",
            ],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": 1, \"output\": 2}\n{oops\n"),
            &["t.jsonl", "line 2", "not JSON"],
        ),
        case(
            "jsonl trace",
            run,
            &one("[0, 1, 2]\n"),
            &["t.jsonl", "line 1", "expected a JSON object"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": true, \"output\": 1}\n"),
            &["t.jsonl", "line 1", "field input", "'true'"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": 5, \"output\": -1}\n"),
            &["t.jsonl", "line 1", "field output", "positive"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": \"soon\", \"input\": 5, \"output\": 1}\n"),
            &["t.jsonl", "line 1", "field time", "'soon'"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": \"2023-13-01 00:00:00\", \"input\": 5, \"output\": 1}\n"),
            &["t.jsonl", "line 1", "field time", "is not a timestamp"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": 0, \"output\": 1}\n"),
            &["t.jsonl", "line 1", "field input", "zeros=skip"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": 5000000000, \"output\": 1}\n"),
            &["t.jsonl", "field input", "too large"],
        ),
        case(
            "jsonl trace",
            run,
            &one(
                "{\"time\": 5, \"input\": 1, \"output\": 1}\n{\"time\": 1, \"input\": 1, \"output\": 1}\n",
            ),
            &["t.jsonl", "line 2", "field time", "backwards"],
        ),
        case(
            "jsonl trace",
            run,
            &one("\u{feff}{\"time\": 0, \"input\": 1}\n"),
            &["t.jsonl", "missing field 'GeneratedTokens'"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": null, \"input\": 1, \"output\": 1}\n"),
            &["t.jsonl", "line 1", "field time", "empty"],
        ),
        case(
            "jsonl trace",
            run,
            &one("{\"time\": 0, \"input\": {\"n\": 3}, \"output\": 1}\n"),
            &["t.jsonl", "field input", "not an integer"],
        ),
        case(
            "jsonl trace",
            run,
            &[("t.jsonl", &jsonl(200, 1_700_000_000_000, 300))],
            &[
                "t.jsonl",
                "line 1",
                "field timestamp",
                "2023-11-14",
                "add unit=ms",
            ],
        ),
        case(
            "jsonl trace",
            "run --trace {d}/t.jsonl --trace-format jsonl[time=when]",
            &one("{\"time\": 0, \"input\": 1, \"output\": 1}\n"),
            &["t.jsonl", "missing field 'when'"],
        ),
    ]
}

fn trace_formats() -> Vec<Case> {
    let f = |spec: &str, expect: &[&str]| {
        let mut c = case("trace format", "run --trace-format", &[], expect);
        c.args.push(spec.to_string());
        c
    };
    vec![
        f("xml", &["--trace-format", "unknown format 'xml'"]),
        f("csv[unit=weeks]", &["--trace-format", "'unit'", "'weeks'"]),
        f("csv[spread=-1]", &["--trace-format", "'spread'"]),
        f("csv[zeros=maybe]", &["--trace-format", "'zeros'"]),
        f("csv[delim=x]", &["--trace-format", "'delim'"]),
        f(
            "csv[colour=red]",
            &["--trace-format", "unknown parameter 'colour'"],
        ),
        f("csv[sort=maybe]", &["--trace-format", "sort"]),
        f("csv[unit=ms", &["--trace-format"]),
    ]
}

fn profiles() -> Vec<Case> {
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
fn run_numbers() -> Vec<Case> {
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

fn specs() -> Vec<Case> {
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

fn sweep_configs() -> Vec<Case> {
    let s = "sweep {d}/c.json --out {d}/res";
    let cfg = |json: &str, expect: &[&str]| {
        let mut e = vec!["c.json"];
        e.extend_from_slice(expect);
        case("sweep config", s, &[("c.json", json)], &e)
    };
    let ok_plot = r#""plot": {"x": "rate", "panels": [{"y": "ttft_p99_s"}]}"#;
    vec![
        cfg("{ not json", &["JSON"]),
        cfg("[1, 2]", &["top level"]),
        cfg(r#"{"title": "t", "grid": {"rate": [1]}}"#, &["name"]),
        cfg(
            r#"{"name": "a b", "title": "t", "grid": {"rate": [1]}}"#,
            &["name", "letters"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [1]}, "colour": 1}"#,
            &["colour", "unknown field"],
        ),
        cfg(r#"{"name": "b", "title": "t"}"#, &["grid"]),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {}}"#,
            &["grid", "no axes"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": []}}"#,
            &["grid.rate", "empty list"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": 3}}"#,
            &["grid.rate", "list"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rte": [1]}}"#,
            &["grid point rte=1", "--rte"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": ["fast"]}}"#,
            &["grid point rate=\"fast\"", "--rate"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [-1]}}"#,
            &["grid point rate=-1", "--rate", "(0, 1000000]"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "base": {"max-requests": 0}, "grid": {"rate": [1]}}"#,
            &["base", "--max-requests"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "base": {"seed": -1}, "grid": {"rate": [1]}}"#,
            &["base", "--seed"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"max-batch": [0]}}"#,
            &["--max-batch"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"ttft-slo": [0]}}"#,
            &["--ttft-slo"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"system": [{"cache": "lru"}]}}"#,
            &["grid.system[0]", "label"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [1]}, "throughput": {}}"#,
            &["grid.rate", "throughput"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"seed": [1]}, "throughput": {"lo": 5, "hi": 2}}"#,
            &["throughput", "lo < hi"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"cache": ["lru"]}, "throughput": {"seeds": []}}"#,
            &["throughput.seeds"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"cache": ["lru"]}, "throughput": {"speed": 1}}"#,
            &["throughput.speed"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"cache": ["lru"]}, "throughput": {"tol": -1}}"#,
            &["throughput.tol", "positive"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [1]}, "plot": {"x": "rate", "panels": []}}"#,
            &["plot.panels", "empty"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [1]}, "plot": {"x": "rate", "panels": [{"y": "ttft_p99"}]}}"#,
            &["plot.panels[0].y", "'ttft_p99' is not a column"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [1]}, "plot": {"kind": "pie", "x": "rate", "panels": [{"y": "ttft_p99_s"}]}}"#,
            &["plot.kind", "'pie'"],
        ),
        cfg(
            &format!(
                r#"{{"name": "b", "title": "t", "grid": {{"rate": [1]}}, {ok_plot}, "claims": [{{"metric": "latency"}}]}}"#
            ),
            &["claims[0].metric", "'latency'"],
        ),
        cfg(
            r#"{"name": "b", "title": "t", "grid": {"rate": [1]}, "plot": {"x": "rate", "panels": [{"y": "ttft_p99_s"}], "paper": [{"y": "ttft_p99_s", "points": [1, 2]}]}}"#,
            &["plot.paper[0].points"],
        ),
        case(
            "sweep config",
            "sweep {d}/none.json",
            &[],
            &["{d}/none.json"],
        ),
        case(
            "sweep config",
            "sweep",
            &[],
            &["name a CONFIG or pass --all"],
        ),
        case(
            "sweep config",
            "sweep --all --experiments {d}/nodir",
            &[],
            &["{d}/nodir"],
        ),
    ]
}

fn other_commands() -> Vec<Case> {
    let r = |args: &str, expect: &[&str]| case("other command option", args, &[], expect);
    vec![
        r("sweep --threads 0 --all", &["--threads", ">= 1"]),
        r("sweep --all --shard 3/2", &["--shard", "I/N"]),
        r("sweep --all --shard x", &["--shard"]),
        r("sweep --all --scale huge", &["--scale", "'huge'"]),
        r("bench --requests 0", &["--requests"]),
        r("bench --rate 0", &["--rate"]),
        r("trace tenants --top 0", &["--top"]),
        r("trace tenants --every 100", &["--every", ">= 600"]),
        r("trace tenants --every 900", &["--every", "multiple of 600"]),
        r("trace tenants --day -1", &["--day"]),
        r("trace zipf x.csv --max-rank 1", &["--max-rank", ">= 2"]),
        r("trace stats", &["<FILE>"]),
        r("trace stats {d}/none.csv", &["{d}/none.csv"]),
        r(
            "trace stats {d}/t.csv --format csv[unit=fortnights]",
            &["--trace-format", "'unit'"],
        ),
        r("fit --iters 0", &["--iters"]),
        r("fit --threads 0", &["--threads"]),
        r("fit --restarts -1", &["--restarts"]),
        r("fidelity --repeats 0 --out {d}/f", &["--repeats"]),
        r("real --rate -1", &["--rate"]),
        r("plot", &["name a RESULTS directory"]),
        r("plot {d}/nothing", &["{d}/nothing", "no such results"]),
        case(
            "other command option",
            "plot {d}/res",
            &[("res/", "")],
            &["{d}/res/config.json"],
        ),
    ]
}

fn outputs() -> Vec<Case> {
    let bad_trace = [("t.csv", "TIMESTAMP,ContextTokens\n")];
    vec![
        case(
            "--out",
            "run --max-requests 5 --out /proc/sim-out",
            &[],
            &["--out", "/proc/sim-out"],
        ),
        case(
            "--out",
            "run --max-requests 5 --out {d}/file.txt",
            &[("file.txt", "x")],
            &["--out", "not a directory"],
        ),
        case(
            "--out",
            "run --trace {d}/t.csv --out {d}/new",
            &bad_trace,
            &["t.csv", "missing column"],
        ),
        case(
            "--out",
            "run --trace {d}/t.csv --out {d}/old",
            &[bad_trace[0], ("old/keep.txt", "mine")],
            &["t.csv"],
        ),
        case("--out", "run --rate -1 --out {d}/new", &[], &["--rate"]),
        case(
            "--out",
            "real --max-requests 5 --out /proc/sim-out",
            &[],
            &["--out"],
        ),
        case(
            "--out",
            "sweep {d}/c.json --out /proc/sim-res",
            &[(
                "c.json",
                r#"{"name": "b", "title": "t", "grid": {"rate": [1]}}"#,
            )],
            &["--out", "/proc/sim-res"],
        ),
        case(
            "--out",
            "sweep {d}/c.json --out {d}/res",
            &[(
                "c.json",
                r#"{"name": "b", "title": "t", "grid": {"rate": [-2]}}"#,
            )],
            &["--rate"],
        ),
    ]
}

/// `sim run --config FILE`, and the recording options.
fn run_configs() -> Vec<Case> {
    let c = |content: &str, expect: &[&str]| {
        case(
            "--config",
            "run --config {d}/run.json --out {d}/new",
            &[("run.json", content)],
            expect,
        )
    };
    vec![
        case(
            "--config",
            "run --config {d}/none.json",
            &[],
            &["none.json", "No such file"],
        ),
        c("{\"rate\": 3,", &["run.json", "not JSON"]),
        c("[1, 2]", &["run.json", "expected an object of options"]),
        c("{\"rat\": 3}", &["run.json", "unknown option '--rat'"]),
        c("{\"rate\": -1}", &["run.json", "--rate"]),
        c("{\"rate\": \"fast\"}", &["run.json", "--rate"]),
        c("{\"scheduler\": \"nope\"}", &["--scheduler", "nope"]),
        c("{\"max-batch\": 0}", &["run.json", "--max-batch"]),
        case(
            "recording",
            "run --max-requests 5 --trace-window 5,1",
            &[],
            &["--trace-window", "START_S < END_S"],
        ),
        case(
            "recording",
            "run --max-requests 5 --timeline-interval-ms -1",
            &[],
            &["--timeline-interval-ms"],
        ),
        case(
            "recording",
            "run --max-requests 5 --percentiles 50,101",
            &[],
            &["--percentiles"],
        ),
        case(
            "recording",
            "run --max-requests 5 --timeline {d}/f.txt",
            &[("f.txt", "x")],
            &["--timeline", "not a directory"],
        ),
        case(
            "recording",
            "run --max-requests 5 --chrome-trace /proc/sim-trace/t.json",
            &[],
            &["--chrome-trace"],
        ),
    ]
}

fn command_lines() -> Vec<Case> {
    let r = |args: &str, expect: &[&str]| case("command line", args, &[], expect);
    vec![
        r("", &["subcommand is required"]),
        r("frobnicate", &["unrecognized subcommand 'frobnicate'"]),
        r("run --rat 3", &["'--rat'", "--rate"]),
        r("run --rate", &["--rate", "value is required"]),
        r("run --json --json", &["--json", "multiple times"]),
        r("run extra-positional", &["'extra-positional'"]),
    ]
}

/// What a new user met (issue 23): each misreading that is an input error, refused in one line naming it.
fn first_contact() -> Vec<Case> {
    let model = include_str!("../../sim/core/models/llama-3.1-8b.json");
    let edit = |from: &str, to: &str| {
        assert!(model.contains(from), "{from}");
        model.replacen(from, to, 1)
    };
    fn m(content: String, expect: &[&'static str]) -> (String, Vec<&'static str>) {
        let mut e = vec!["m.json"];
        e.extend_from_slice(expect);
        (content, e)
    }
    let mut out = Vec::new();
    for (content, expect) in [
        m(
            edit("\"hidden_size\": 4096,", ""),
            &["field hidden_size is missing"],
        ),
        m(
            edit("\"num_key_value_heads\": 8", "\"num_key_value_heads\": 0"),
            &["field num_key_value_heads", "positive whole number"],
        ),
        m(
            edit("\"model_type\": \"llama\"", "\"model_type\": \"mixtral\""),
            &["field model_type", "'mixtral'"],
        ),
        m(
            edit("\"torch_dtype\": \"bfloat16\"", "\"torch_dtype\": \"int4\""),
            &["field torch_dtype", "quantised"],
        ),
        m(
            edit(
                "\"vocab_size\": 128256,",
                "\"vocab_size\": 128256, \"sliding_window\": 4096,",
            ),
            &["field sliding_window", "not modelled"],
        ),
        m(
            edit(
                "\"vocab_size\": 128256,",
                "\"vocab_size\": 128256, \"vocab_size\": 32000,",
            ),
            &["duplicate key 'vocab_size'", "line"],
        ),
        m("{ \"model_type\": ".into(), &["not a JSON config"]),
    ] {
        out.push(case(
            "first contact",
            "run --max-requests 5 --model {d}/m.json",
            &[("m.json", &content)],
            &expect,
        ));
    }
    let dup_trace = "{\"timestamp\": 1, \"prompt_tokens\": 10, \"completion_tokens\": 5}\n\
                     {\"timestamp\": 2, \"prompt_tokens\": 10, \"prompt_tokens\": 99999, \"completion_tokens\": 5}\n";
    let r = |args: &str, expect: &[&str]| case("first contact", args, &[], expect);
    out.extend([
        r(
            "run --model llama-99b",
            &[
                "--model",
                "unknown model 'llama-99b'",
                "llama-3.1-8b",
                "config.json",
            ],
        ),
        r(
            "run --model {d}/none/config.json",
            &["--model", "none/config.json", "no such file"],
        ),
        r(
            "run --lora-targets q,q",
            &["--lora-targets", "'q' is given twice"],
        ),
        r(
            "run --lora-targets q,attn",
            &["--lora-targets", "'attn'", "all-linear"],
        ),
        r(
            "run --no-server-limits --max-input-tokens 4096",
            &[
                "--no-server-limits",
                "--max-input-tokens 4096",
                "exclude each other",
            ],
        ),
        // A file with no line break is refused at its first line, not read into memory.
        r(
            "run --trace /dev/zero",
            &["/dev/zero", "line 1", "longer than 4 MiB"],
        ),
        r(
            "run --config /dev/zero",
            &["/dev/zero", "larger than 64 MiB"],
        ),
        r(
            "run --model /dev/zero",
            &["/dev/zero", "larger than 64 MiB"],
        ),
        // The rank that cannot fit is named, not the length rule that then fails.
        r(
            "run --ranks 65536",
            &["--ranks", "rank 65536", "more than the whole pool"],
        ),
        // An absurd efficiency is refused in a short number.
        r(
            "run --max-requests 5 --cost analytic[compute_eff=1e300]",
            &["compute_eff", "got 1e300"],
        ),
        r(
            "run --max-requests 5 --cost analytic[overhead_us=1e300]",
            &["overhead_us", "1e300"],
        ),
        // A measured profile's GPU is a device name: no `--gpu Example GPU (...)` advice.
        r(
            "run --cost profile --model llama-3.1-8b",
            &["--cost", "no engine profile ships for a40 x llama-3.1-8b"],
        ),
    ]);
    out.push(case(
        "first contact",
        "run --max-requests 5 --profile {d}/p.json",
        &[("p.json", EXAMPLE_PROFILE)],
        &[
            "p.json",
            "no --gpu the simulator knows matches it",
            "--allow-profile-mismatch",
        ],
    ));
    out.push(case(
        "first contact",
        "run --trace {d}/t.jsonl",
        &[("t.jsonl", dup_trace)],
        &["t.jsonl", "line 2", "duplicate key 'prompt_tokens'"],
    ));
    out.push(case(
        "first contact",
        "run --config {d}/run.json",
        &[("run.json", "{\"rate\": 3, \"rate\": 9}")],
        &["run.json", "duplicate key 'rate'"],
    ));
    out.push(case(
        "first contact",
        "sweep {d}/c.json --out {d}/res",
        &[(
            "c.json",
            r#"{"name": "b", "title": "t", "title": "u", "grid": {"rate": [1]}}"#,
        )],
        &["c.json", "duplicate key 'title'"],
    ));
    out
}

fn calibrate_cases() -> Vec<Case> {
    vec![
        calibrate("--bogus", &[], &["--bogus"]),
        calibrate("--device -1", &[], &["--device"]),
        calibrate("--mem-limit-gib -3", &[], &["--mem-limit-gib"]),
        calibrate("--model llama-99b", &[], &["--model"]),
        calibrate("predict", &[], &["--profile"]),
        calibrate(
            "predict --profile {d}/p.json --input-tokens 0",
            &[("p.json", EXAMPLE_PROFILE)],
            &["--input-tokens"],
        ),
        calibrate(
            "predict --profile {d}/p.json --ranks 8,0",
            &[("p.json", EXAMPLE_PROFILE)],
            &["--ranks"],
        ),
        calibrate(
            "report --profile {d}/p.json",
            &[(
                "p.json",
                &EXAMPLE_PROFILE.replacen("\"time_ns\": ", "\"time_ns\": -", 1),
            )],
            &["p.json", "field time_ns"],
        ),
        calibrate("transfer", &[], &["--from", "--to-gpu"]),
        case("command line", "fit --iters 0", &[], &["--iters"]),
    ]
}

fn all_cases() -> Vec<Case> {
    [
        csv_traces(),
        jsonl_traces(),
        trace_formats(),
        profiles(),
        run_numbers(),
        specs(),
        sweep_configs(),
        other_commands(),
        outputs(),
        run_configs(),
        command_lines(),
        first_contact(),
        calibrate_cases(),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// The `calibrate` binary beside `sim` (same target directory), when the workspace built it.
fn calibrate_bin() -> Option<PathBuf> {
    let sim = Path::new(env!("CARGO_BIN_EXE_sim"));
    let name = format!("calibrate{}", std::env::consts::EXE_SUFFIX);
    Some(sim.with_file_name(name)).filter(|p| p.exists())
}

/// Every file under `dir`, relative, with its content: what "left untouched" compares.
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p.clone());
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), Vec::new()));
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                out.push((p.strip_prefix(dir).unwrap().to_path_buf(), bytes));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn every_bad_input_fails_with_one_line_naming_it() {
    let root = std::env::temp_dir().join(format!("sim-bad-inputs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cases = all_cases();
    let mut failures = Vec::new();
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut skipped = 0;
    for (i, c) in cases.iter().enumerate() {
        match counts.iter_mut().find(|(k, _)| *k == c.category) {
            Some(n) => n.1 += 1,
            None => counts.push((c.category, 1)),
        }
        let d = root.join(i.to_string());
        std::fs::create_dir_all(&d).unwrap();
        let ds = d.display().to_string();
        for (name, content) in &c.files {
            let p = d.join(name);
            if name.ends_with('/') {
                std::fs::create_dir_all(&p).unwrap();
            } else {
                std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                std::fs::write(&p, content).unwrap();
            }
        }
        let args: Vec<String> = c.args.iter().map(|a| a.replace("{d}", &ds)).collect();
        let before = snapshot(&d);
        let bin = match c.bin {
            Bin::Sim => PathBuf::from(env!("CARGO_BIN_EXE_sim")),
            Bin::Calibrate => match calibrate_bin() {
                Some(b) => b,
                None => {
                    skipped += 1;
                    continue;
                }
            },
        };
        let out = Command::new(bin)
            .args(&args)
            .current_dir(&d)
            .env_remove("RUST_BACKTRACE")
            .output()
            .expect("the binary runs");
        let err = String::from_utf8_lossy(&out.stderr);
        let mut why = Vec::new();
        if out.status.code() != Some(2) {
            why.push(format!("exit {:?}", out.status.code()));
        }
        if err.trim_end().lines().count() != 1 {
            why.push("not one line".to_string());
        }
        if err.contains("panicked") || err.contains("RUST_BACKTRACE") {
            why.push("panic".to_string());
        }
        if !out.stdout.is_empty() {
            why.push(format!("stdout: {}", String::from_utf8_lossy(&out.stdout)));
        }
        for e in &c.expect {
            let e = e.replace("{d}", &ds);
            if !err.contains(&e) {
                why.push(format!("lacks '{e}'"));
            }
        }
        // No output left behind: the case's directory holds exactly what it held before.
        let after = snapshot(&d);
        if after != before {
            let new: Vec<_> = after
                .iter()
                .filter(|a| !before.contains(a))
                .map(|a| a.0.display().to_string())
                .collect();
            why.push(format!("output left behind: {new:?}"));
        }
        if std::env::var_os("BAD_INPUTS_SHOW").is_some() {
            println!(
                "[{}] {} -> {}",
                c.category,
                args.join(" ").replace(&ds, "{d}"),
                err.trim_end().replace(&ds, "{d}")
            );
        }
        if !why.is_empty() {
            failures.push(format!(
                "#{i} [{}] {args:?}: {}\n    stderr: {err}",
                c.category,
                why.join("; ")
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    if skipped > 0 {
        println!(
            "note: {skipped} calibrate cases skipped (its binary is built by `cargo test --workspace`)"
        );
    }
    println!("{} cases:", cases.len());
    for (k, n) in &counts {
        println!("  {n:>3}  {k}");
    }
    assert!(cases.len() >= 100, "{} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
