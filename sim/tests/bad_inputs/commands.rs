//! Sweep configs, the other commands, output paths, `sim run --config`, the command line itself and the
//! `calibrate` binary.

use super::*;

pub(crate) fn sweep_configs() -> Vec<Case> {
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

pub(crate) fn other_commands() -> Vec<Case> {
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

pub(crate) fn outputs() -> Vec<Case> {
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
pub(crate) fn run_configs() -> Vec<Case> {
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

pub(crate) fn command_lines() -> Vec<Case> {
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

pub(crate) fn calibrate_cases() -> Vec<Case> {
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
