//! `calibrate` binary: parses the command line, runs it, and turns every failure into one line on stderr and
//! an exit code (2: bad input or no GPU, the user can act on it; 1: anything else). Never a panic trace.

use std::path::Path;
use std::process::ExitCode;

use calibrate::cli::{Cli, Command, MeasureArgs};
use calibrate::cost::transfer::transfer;
use calibrate::{Error, Result, measure, predict, report};
use clap::Parser;
use kernels::dtype::DType;
use sim_core::cost::LoadMethod;
use sim_core::cost::profile::{CostProfile, ProfileCost};
use sim_core::model::{GpuSpec, ModelSpec};

fn main() -> ExitCode {
    // cudarc panics when a CUDA symbol is missing from an old driver; say so in one line instead of a trace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown".into());
        eprintln!(
            "calibrate: internal error: {}",
            msg.lines().next().unwrap_or("")
        );
    }));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        // clap's message spans lines (usage, tips): one line, as sim does.
        Err(e) if !e.use_stderr() => {
            // --help, --version
            print!("{e}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let line = sim_core::error::one_line(&e.to_string());
            eprintln!("calibrate: {line} (see --help)");
            return ExitCode::from(2);
        }
    };
    match std::panic::catch_unwind(|| run(cli)) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("calibrate: {}", e.to_string().replace('\n', " "));
            ExitCode::from(e.code.clamp(1, 255) as u8)
        }
        Err(_) => ExitCode::from(1),
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        None => run_measure(&cli.measure),
        Some(Command::Predict {
            profile,
            input_tokens,
            ranks,
            load,
        }) => {
            if input_tokens == 0 {
                return Err(Error::msg("--input-tokens must be positive"));
            }
            if ranks.is_empty() || ranks.contains(&0) {
                return Err(Error::msg(
                    "--ranks must be a comma-separated list of positive ranks",
                ));
            }
            let text = std::fs::read_to_string(&profile)
                .map_err(|e| Error::msg(format!("--profile {}: {e}", profile.display())))?;
            let (rows, describe) = if text.contains(sim_core::cost::fitted::SCHEMA) {
                // An engine profile (fitted, or composed for a GPU without measured runs).
                let source = profile.display().to_string();
                let p = sim_core::cost::fitted::EngineProfile::parse(&text, &source)?;
                let cost = sim_core::cost::fitted::EngineCost::from_profile(&p, &source)?;
                let m = ModelSpec::by_name(&p.model)?;
                let rows = predict::predict_with(
                    &cost,
                    m.layers,
                    |r| m.adapter_bytes(r),
                    input_tokens,
                    &ranks,
                );
                (rows, sim_core::cost::CostModel::describe(&cost))
            } else {
                let cost = load_profile(&profile, &load)?;
                let rows = predict::predict(&cost, &cost.profile.model, input_tokens, &ranks);
                (rows, sim_core::cost::CostModel::describe(&cost))
            };
            print!("{}", predict::format_table(&rows, input_tokens, &describe));
            Ok(())
        }
        Some(Command::Transfer {
            from,
            from_gpu,
            to_gpu,
            out,
        }) => {
            let src = GpuSpec::by_name(&from_gpu).map_err(|e| e.context("--from-gpu"))?;
            let dst = GpuSpec::by_name(&to_gpu).map_err(|e| e.context("--to-gpu"))?;
            let p = CostProfile::read(&from).map_err(|e| e.context("--from"))?;
            let t = transfer(&p, src, dst);
            t.validate()?;
            write_file(&out, &t.to_json(), "--out")?;
            eprintln!(
                "calibrate: wrote {} ({} -> {}, flagged transferred_from)",
                out.display(),
                src.name,
                dst.name
            );
            Ok(())
        }
        Some(Command::Check { dtype, device }) => {
            let dtype = DType::parse(&dtype).map_err(|e| Error::msg(format!("--dtype: {e}")))?;
            check(dtype, device)
        }
        Some(Command::Report { profile, load }) => {
            let cost = load_profile(&profile, &load)?;
            print!("{}", report::format(&cost.fit_report()));
            Ok(())
        }
    }
}

fn check(dtype: DType, device: usize) -> Result<()> {
    let (ctx, info) = kernels::gpu::open_device(device).map_err(calibrate::gpu_err)?;
    let k = kernels::gpu::Kernels::new(ctx.clone(), dtype).map_err(calibrate::gpu_err)?;
    let stream = ctx
        .new_stream()
        .map_err(|e| Error::internal(format!("creating a stream: {e}")))?;
    let results = kernels::check::run(&k, &stream).map_err(calibrate::gpu_err)?;
    println!(
        "{} ({}), driver CUDA {}, NVRTC {}",
        info.name,
        dtype.name(),
        info.driver,
        info.nvrtc
    );
    for r in &results {
        let verdict = if r.ok() { "ok" } else { "FAIL" };
        println!(
            "{:<20} max err {:>10.3e}  tolerance {:>9.2e}  {verdict}",
            r.kernel, r.max_err, r.tolerance
        );
    }
    let failed = results.iter().filter(|r| !r.ok()).count();
    if failed > 0 {
        return Err(Error::internal(format!(
            "{failed} kernel(s) disagree with the CPU reference"
        )));
    }
    Ok(())
}

fn load_profile(path: &Path, load: &str) -> Result<ProfileCost> {
    let method = LoadMethod::parse(load).map_err(|e| e.context("--load"))?;
    let p = CostProfile::read(path).map_err(|e| e.context("--profile"))?;
    ProfileCost::new(p, &path.display().to_string(), method).map_err(|e| e.context(path.display()))
}

fn write_file(path: &Path, text: &str, flag: &str) -> Result<()> {
    std::fs::write(path, text)
        .map_err(|e| Error::msg(format!("{flag} {}: cannot write: {e}", path.display())))
}

/// Validates every flag before touching the GPU, so bad input is reported the same with or without one.
fn measure_options(a: &MeasureArgs) -> Result<measure::Options> {
    let model = ModelSpec::resolve(&a.model).map_err(|e| e.context("--model"))?;
    let dtype = DType::parse(&a.dtype).map_err(|e| Error::msg(format!("--dtype: {e}")))?;
    let mem_limit = match a.mem_limit_gib {
        None => None,
        Some(g) if g.is_finite() && g > 0.0 => Some((g * (1u64 << 30) as f64) as u64),
        Some(g) => {
            return Err(Error::msg(format!(
                "--mem-limit-gib must be a positive number of GiB, got {g}"
            )));
        }
    };
    if let Some(dir) = a
        .out
        .parent()
        .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
    {
        return Err(Error::msg(format!(
            "--out {}: directory {} does not exist",
            a.out.display(),
            dir.display()
        )));
    }
    Ok(measure::Options {
        model,
        dtype,
        device: a.device,
        mem_limit,
        quick: a.quick,
        check: !a.skip_check,
    })
}

fn run_measure(a: &MeasureArgs) -> Result<()> {
    let opts = measure_options(a)?;
    let got = measure::run(&opts)?;
    let cost = ProfileCost::new(
        got.profile.clone(),
        &a.out.display().to_string(),
        LoadMethod::PerLayerPinned,
    )?;
    let fit = report::format(&cost.fit_report());
    write_file(&a.out, &got.profile.to_json(), "--out")?;
    let fit_path = a.out.with_extension("fit.txt");
    let header = format!(
        "fit report for {} ({} on {}, {})\n",
        a.out.display(),
        got.profile.model.name,
        got.device.name,
        got.profile.provenance.date
    );
    write_file(&fit_path, &format!("{header}{fit}"), "--out")?;
    print!("{header}{fit}");
    eprintln!(
        "calibrate: wrote {} and {}",
        a.out.display(),
        fit_path.display()
    );
    Ok(())
}
