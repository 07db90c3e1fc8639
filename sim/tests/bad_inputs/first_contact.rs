//! The first-contact cases (issue 23).

use super::*;

/// What a new user met (issue 23): each misreading that is an input error, refused in one line naming it.
pub(crate) fn first_contact() -> Vec<Case> {
    let model = include_str!("../../../sim/core/models/llama-3.1-8b.json");
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
