//! The bad-input corpus: every case is a command line (with the files it reads) that must fail cleanly:
//! exit code 2, one line on stderr naming the file / line / field or the option, no panic, nothing on
//! stdout, and no half-written output (an `--out` that did not exist is not created; one that did is left
//! as it was). One process per case; the cases are data, grouped by category.

use std::path::{Path, PathBuf};
use std::process::Command;

mod commands;
mod first_contact;
mod options;
mod traces;

use commands::*;
use first_contact::*;
use options::*;
use traces::*;

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
const EXAMPLE_PROFILE: &str = include_str!("../../../docs/example-profile.json");
const ENGINE_PROFILE: &str =
    include_str!("../../../calibrate/profiles/slora-a100-80gb-llama-7b.json");

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
