//! Trace files: CSV and JSON lines with bad values, columns or order, and bad `--trace-format` specs.

use super::*;

pub(crate) fn csv_traces() -> Vec<Case> {
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

pub(crate) fn jsonl_traces() -> Vec<Case> {
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

pub(crate) fn trace_formats() -> Vec<Case> {
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
