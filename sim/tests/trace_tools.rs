//! `sim trace ...` and the workload flags of `sim run` as a user runs them, on small hand-checkable files.

use std::path::Path;
mod common;
use common::{fails, ok, sim, tmp as dir, write};

use sim_core::model::ModelSpec;
use sim_core::trace::{Trace, TraceRow};
use sim_core::workload::tenants::{TenantOptions, TenantTable, embedded_table};
use sim_core::workload::{AdapterModel, AdapterOptions, NO_ADAPTER, Workload};

// 5 requests over 8 s (gaps 1, 1, 2, 4), adapters a a a b and one without.
const SMALL: &str =
    "time,input,output,adapter\n0,10,1,a\n1,20,2,a\n2,30,3,b\n4,40,4,a\n8,1000,5,\n";

#[test]
fn stats_are_exact_on_a_small_file() {
    let d = dir("stats");
    let p = write(&d, "s.csv", SMALL);
    let j: serde_json::Value =
        serde_json::from_str(&ok(&sim(&["trace", "stats", &p, "--json"]))).unwrap();
    assert_eq!(j["rows"], 5);
    assert_eq!(j["span_s"], 8.0);
    assert_eq!(j["rate_rps"], 0.5);
    assert_eq!(j["interarrival_mean_s"], 2.0);
    // gaps 1,1,2,4: population sd sqrt(1.5), CV sqrt(1.5)/2
    assert!((j["interarrival_cv"].as_f64().unwrap() - 1.5f64.sqrt() / 2.0).abs() < 1e-12);
    assert_eq!(j["input_mean"], 220.0);
    assert_eq!(j["input_p50"], 30.0);
    // p99 of 10,20,30,40,1000: 40 + 0.96 * 960
    assert!((j["input_p99"].as_f64().unwrap() - 961.6).abs() < 1e-9);
    assert_eq!(j["input_max"], 1000);
    assert_eq!(j["adapters_distinct"], 2);
    assert_eq!(j["adapter_top1_share"], 0.75);
    assert_eq!(j["rows_without_adapter"], 1);
    let text = ok(&sim(&["trace", "stats", &p]));
    for needle in [
        "rows          5",
        "CV 0.612",
        "top-1 / 10 / 100",
        "power-of-two bins",
        "arrivals per",
    ] {
        assert!(text.contains(needle), "'{needle}' not in:\n{text}");
    }
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn convert_writes_a_normalised_file_that_reads_back_identically() {
    let d = dir("convert");
    let p = write(
        &d,
        "in.jsonl",
        "{\"ts_ms\": 1000, \"prompt_tokens\": 7, \"completion_tokens\": 3, \"lora\": \"x,y\"}\n\
         {\"ts_ms\": 1000, \"prompt_tokens\": 8, \"completion_tokens\": 4, \"lora\": null}\n\
         {\"ts_ms\": 2250, \"prompt_tokens\": 9, \"completion_tokens\": 5, \"lora\": \"z\"}\n",
    );
    let out = d.join("out.csv").display().to_string();
    ok(&sim(&[
        "trace",
        "convert",
        &p,
        &out,
        "--format",
        "jsonl[time=ts_ms]",
    ]));
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text,
        "arrival_s,input_tokens,output_tokens,adapter,tenant\n\
         0.000000000,7,3,\"x,y\",\n0.000000000,8,4,,\n1.250000000,9,5,z,\n"
    );
    let a = sim_core::trace::load_detailed(
        Path::new(&p),
        &sim_core::trace::ReadSpec::parse("jsonl[time=ts_ms]").unwrap(),
    )
    .unwrap();
    let b = sim_core::trace::load_detailed(Path::new(&out), &Default::default()).unwrap();
    assert_eq!(a.trace.rows, b.trace.rows);
    assert_eq!(a.adapter_names, b.adapter_names);
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn zipf_fit_of_a_column_and_of_keyed_lists() {
    let d = dir("zipf");
    // Counts 4, 2, 1 of ids: the MLE over three ranks is near 1.
    let p = write(&d, "z.csv", "id,n\na,1\na,1\nb,1\na,1\nc,1\nb,1\na,1\n");
    let j: serde_json::Value = serde_json::from_str(&ok(&sim(&[
        "trace", "zipf", &p, "--column", "id", "--json",
    ])))
    .unwrap();
    assert_eq!(j["items"], 3);
    assert_eq!(j["uses"], 7);
    assert!((j["top1_observed"].as_f64().unwrap() - 4.0 / 7.0).abs() < 1e-12);
    let p = write(
        &d,
        "k.csv",
        "lora_args\n\"[{'modelVersionId': 'u', 'scale': 1.0}, {'modelVersionId': 'v', 'scale': 1.0}]\"\n[]\n\"[{'modelVersionId': 'u', 'scale': 0.5}]\"\n",
    );
    let j: serde_json::Value = serde_json::from_str(&ok(&sim(&[
        "trace",
        "zipf",
        &p,
        "--column",
        "lora_args",
        "--key",
        "modelVersionId",
        "--json",
    ])))
    .unwrap();
    assert_eq!(
        (j["items"].as_u64(), j["uses"].as_u64()),
        (Some(2), Some(3))
    );
    assert!((j["alpha_mle"].as_f64().unwrap() - 1.0).abs() < 1e-6, "{j}");
    fails(
        &sim(&["trace", "zipf", &p, "--column", "nope"]),
        &["missing column 'nope'"],
    );
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn trace_commands_fail_cleanly() {
    let d = dir("fail");
    let p = write(&d, "bad.csv", "time,input,output\n0,1,1\n1,1,oops\n");
    fails(
        &sim(&["trace", "stats", &p]),
        &["bad.csv", "line 3", "column output", "'oops'"],
    );
    let out = d.join("o.csv").display().to_string();
    fails(
        &sim(&["trace", "convert", &p, &out]),
        &["bad.csv", "line 3"],
    );
    fails(&sim(&["trace", "stats", "/no/such.csv"]), &["/no/such.csv"]);
    fails(
        &sim(&["trace", "stats", &p, "--format", "csv[unit=fortnights]"]),
        &["unit"],
    );
    fails(
        &sim(&["trace", "tenants", "--model", "m-small"]),
        &["embedded", "rates="],
    );
    fails(&sim(&["trace", "tenants", "--every", "100"]), &["--every"]);
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn run_accepts_formats_models_and_arrival_processes() {
    let d = dir("run");
    let p = write(&d, "s.csv", SMALL);
    let j = |args: &[&str]| -> serde_json::Value {
        let mut a = vec!["run", "--json"];
        a.extend_from_slice(args);
        serde_json::from_str(&ok(&sim(&a))).unwrap()
    };
    let r = j(&["--trace", &p, "--adapter-model", "trace", "--adapters", "4"]);
    assert_eq!(r["requests_finished"], 5);
    assert_eq!(r["adapter_model"], "trace[by=adapter]");
    let r = j(&[
        "--max-requests",
        "300",
        "--adapter-model",
        "zipf[alpha=0.92]",
        "--rate",
        "4",
        "--arrivals",
        "gamma[cv=3]",
    ]);
    assert_eq!(r["arrivals"], "gamma[cv=3]");
    assert_eq!(r["requests_total"], 300);
    let r = j(&[
        "--max-requests",
        "300",
        "--adapter-model",
        "tenants[speedup=24,lengths=true]",
        "--length-scale",
        "1",
    ]);
    assert_eq!(r["requests_total"], 300);
    fails(
        &sim(&["run", "--adapter-model", "pareto"]),
        &["--adapter-model", "pareto"],
    );
    fails(
        &sim(&["run", "--adapter-model", "tenants[speed=2]"]),
        &["unknown parameter 'speed'"],
    );
    fails(
        &sim(&["run", "--adapter-model", "tenants", "--adapters", "500"]),
        &["101 active tenants"],
    );
    fails(
        &sim(&["run", "--arrivals", "weibull", "--rate", "3"]),
        &["--arrivals"],
    );
    fails(
        &sim(&["run", "--trace", &p, "--adapter-model", "trace[by=tenant]"]),
        &["no tenant column"],
    );
    fails(
        &sim(&["run", "--trace", &p, "--trace-format", "jsonl"]),
        &["s.csv", "line 1", "not JSON"],
    );
    std::fs::remove_dir_all(d).ok();
}

fn trace_of(rows: Vec<TraceRow>) -> Trace {
    Trace {
        source: "t".into(),
        rows,
        ..Default::default()
    }
}

#[test]
fn zipf_and_trace_models_assign_as_documented() {
    let m = ModelSpec::by_name("llama-7b").unwrap();
    let n = 100_000;
    let t = trace_of((0..n).map(|i| TraceRow::new(i as u64, 1, 1)).collect());
    let opts = AdapterOptions {
        count: 10,
        model: AdapterModel::parse("zipf[alpha=1]").unwrap(),
        ..Default::default()
    };
    let w = Workload::build(&t, m, &opts, 5).unwrap();
    let mut c = [0f64; 10];
    for r in &w.requests {
        c[r.adapter as usize] += 1.0;
    }
    // Zipf(1) over 10: adapter 0 has 1/H(10) = 0.3414 of requests, adapter 1 half of that.
    assert!(
        (c[0] / n as f64 - 0.3414).abs() < 0.006,
        "{}",
        c[0] / n as f64
    );
    assert!((c[0] / c[1] - 2.0).abs() < 0.08);
    // The trace model: most used id first; ids beyond --adapters fold (j mod count); no id = base model.
    let ids = [5u32, 5, 5, 9, 9, 2, sim_core::trace::NO_ID];
    let t = trace_of(
        ids.iter()
            .map(|&a| TraceRow {
                adapter: a,
                ..TraceRow::new(0, 1, 1)
            })
            .collect(),
    );
    let opts = AdapterOptions {
        count: 2,
        model: AdapterModel::parse("trace").unwrap(),
        ..Default::default()
    };
    let got: Vec<u32> = Workload::build(&t, m, &opts, 0)
        .unwrap()
        .requests
        .iter()
        .map(|r| r.adapter)
        .collect();
    assert_eq!(got, [0, 0, 0, 1, 1, 0, NO_ADAPTER]);
}

#[test]
fn tenants_follow_the_rates_of_their_window() {
    let d = dir("tenants");
    // Tenant 7 is alone in the first 10 minutes, tenant 3 alone in the second; 3 is the day's busier one.
    let rates = write(
        &d,
        "r.csv",
        "model,client_id,timestamp,rate\nm,7,0,1.0\nm,3,600,5.0\nm,9,0,0\nother,1,0,100\n",
    );
    let lengths = write(
        &d,
        "l.csv",
        "model,client_id,timestamp,input_mean,input_p50,input_p99,output_mean,output_p50,output_p99\nm,3,0,1,100,100,1,40,40\n",
    );
    let table = TenantTable::load(&Some(rates.clone().into()), "m", 0).unwrap();
    assert_eq!(table.clients, [3, 7]);
    let m = ModelSpec::by_name("llama-7b").unwrap();
    let s = |sec: u64| sec * 1_000_000_000;
    let t = trace_of(vec![
        TraceRow::new(s(0), 11, 12),
        TraceRow::new(s(599), 11, 12),
        TraceRow::new(s(600), 11, 12),
        TraceRow::new(s(1199), 11, 12),
    ]);
    let mut to = TenantOptions {
        rates: Some(rates.clone().into()),
        length_data: Some(lengths.into()),
        model: "m".into(),
        ..Default::default()
    };
    let build = |to: &TenantOptions| {
        let opts = AdapterOptions {
            count: 2,
            model: AdapterModel::Tenants(to.clone()),
            ..Default::default()
        };
        Workload::build(&t, m, &opts, 1).unwrap().requests
    };
    let r = build(&to);
    // adapter 0 = tenant 3 (busier), 1 = tenant 7.
    assert_eq!(
        r.iter().map(|r| r.adapter).collect::<Vec<_>>(),
        [1, 1, 0, 0]
    );
    assert!(r.iter().all(|r| (r.input, r.output) == (11, 12)));
    // speedup 2: trace second 599 is ServeGen second 1198, in the second window; the last two fall in
    // windows where neither tenant is active, so they are drawn by the day's volumes.
    to.speedup = 2.0;
    let r = build(&to);
    assert_eq!((r[0].adapter, r[1].adapter), (1, 0));
    assert!(r.iter().all(|r| r.adapter < 2));
    // speedup=auto stretches the 1199 s span over the day: only the first request is in window 0.
    let AdapterModel::Tenants(auto) = AdapterModel::parse("tenants[speedup=auto]").unwrap() else {
        panic!("tenants")
    };
    assert_eq!(auto.speedup, 0.0);
    to.speedup = 0.0;
    assert_eq!(build(&to)[0].adapter, 1);
    // Tenant lengths: p50 = p99 pins the log-normal; tenant 7 has no statistics and keeps the trace's.
    to.speedup = 1.0;
    to.lengths = true;
    let r = build(&to);
    assert_eq!(
        r.iter().map(|r| (r.input, r.output)).collect::<Vec<_>>(),
        [(11, 12), (11, 12), (100, 40), (100, 40)]
    );
    // The embedded day is the shipped ServeGen subset.
    let e = embedded_table().unwrap();
    assert_eq!((e.clients.len(), e.clients[0]), (101, 142));
    std::fs::remove_dir_all(d).ok();
}

#[test]
fn hot_sets_move_over_the_embedded_day() {
    let text = ok(&sim(&[
        "trace", "tenants", "--top", "3", "--every", "21600",
    ]));
    // Four 6-hour lines; the day's busiest tenant 142 leads in the afternoon, not at midnight.
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(
        lines[0].contains("61:") && lines[2].contains("142:"),
        "{text}"
    );
}

#[test]
#[ignore = "writes and reads a 10-million-row file (about 300 MB); run by hand"]
fn ten_million_rows_stream_in_bounded_memory() {
    use std::io::Write;
    let p = std::env::temp_dir().join("sim-10m.csv");
    if !p.exists() {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&p).unwrap());
        writeln!(f, "arrival_ms,input_tokens,output_tokens,adapter").unwrap();
        for i in 0u64..10_000_000 {
            writeln!(
                f,
                "{},{},{},a{}",
                i * 7,
                1 + (i * 7919) % 8000,
                1 + (i * 104_729) % 1000,
                (i * i) % 1000
            )
            .unwrap();
        }
    }
    let t = std::time::Instant::now();
    let o = sim(&["trace", "stats", p.to_str().unwrap(), "--json"]);
    let j: serde_json::Value = serde_json::from_str(&ok(&o)).unwrap();
    assert_eq!(j["rows"], 10_000_000);
    println!("10M-row stats: {:.1} s", t.elapsed().as_secs_f64());
}

#[test]
fn tenants_can_bring_their_own_bursty_arrivals() {
    let d = dir("tenant-arrivals");
    let m = ModelSpec::by_name("llama-7b").unwrap();
    // Tenant 1 at 3 req/s, Poisson-like (cv 1); tenant 2 at 1 req/s with cv 4, all day.
    let mut body = String::from("model,client_id,timestamp,rate,cv\n");
    for w in 0..144 {
        body += &format!("m,1,{},3,1\nm,2,{},1,4\n", w * 600, w * 600);
    }
    let rates = write(&d, "r.csv", &body);
    let n = 40_000;
    // The trace sets the mean rate: 40,000 requests over 9,999.75 s = 4 req/s.
    let t = trace_of(
        (0..n)
            .map(|i| TraceRow::new(i as u64 * 250_000_000, 5, 6))
            .collect(),
    );
    let build = |count: u32, seed: u64| {
        let to = TenantOptions {
            rates: Some(rates.clone().into()),
            model: "m".into(),
            arrivals: true,
            ..Default::default()
        };
        let opts = AdapterOptions {
            count,
            model: AdapterModel::Tenants(to),
            ..Default::default()
        };
        Workload::build(&t, m, &opts, seed).unwrap().requests
    };
    let r = build(2, 3);
    assert_eq!(r[0].arrival, 0);
    assert!(r.windows(2).all(|w| w[0].arrival <= w[1].arrival));
    assert!(r.iter().all(|r| (r.input, r.output) == (5, 6)));
    let rate = (n - 1) as f64 / (r[n - 1].arrival as f64 / 1e9);
    assert!((rate - 4.0).abs() < 0.2, "{rate}");
    // adapter 0 = the busier tenant 1: three quarters of the requests.
    let share0 = r.iter().filter(|r| r.adapter == 0).count() as f64 / n as f64;
    assert!((share0 - 0.75).abs() < 0.02, "{share0}");
    // Each tenant's own gaps keep its CV: ~1 for tenant 1, ~4 for tenant 2.
    let cv_of = |a: u32| {
        let rows: Vec<TraceRow> = r
            .iter()
            .filter(|r| r.adapter == a)
            .map(|r| TraceRow::new(r.arrival, 1, 1))
            .collect();
        sim_core::trace::arrivals::gap_stats(&rows).1
    };
    println!(
        "rate {rate:.3}, share {share0:.4}, cv {:.3} / {:.3}",
        cv_of(0),
        cv_of(1)
    );
    assert!((cv_of(0) - 1.0).abs() < 0.1, "{}", cv_of(0));
    assert!((cv_of(1) - 4.0).abs() < 0.8, "{}", cv_of(1));
    assert_eq!(r, build(2, 3), "same seed, same workload");
    assert_ne!(r, build(2, 4));
    // With one tenant only, it takes every request and its bursts are the whole process.
    let one = build(1, 3);
    assert!(one.iter().all(|r| r.adapter == 0));
    std::fs::remove_dir_all(d).ok();
}

#[test]
#[ignore = "needs /tmp/sim-10m.csv from ten_million_rows_stream_in_bounded_memory; run by hand"]
fn ten_million_rows_load_at_24_bytes_each() {
    let p = std::env::temp_dir().join("sim-10m.csv");
    let t = std::time::Instant::now();
    let tr = Trace::load(Some(&p)).unwrap();
    assert_eq!(tr.rows.len(), 10_000_000);
    println!(
        "10M-row load: {:.1} s, peak RSS {:.0} MiB",
        t.elapsed().as_secs_f64(),
        sim::bench::peak_rss_mib().unwrap_or(f64::NAN)
    );
}
