//! `cdf.csv`: latency distributions of a run's finished requests.

use std::io::Write;

use crate::engine::RunOutput;
use crate::metrics::percentile;
use crate::time::secs;
use crate::workload::Workload;

/// The quantiles `cdf.csv` always has: 0 to 1 by 0.01, and 0.999.
pub fn cdf_grid(extra: &[f64]) -> Vec<f64> {
    let mut q: Vec<f64> = (0..=100).map(|i| i as f64 / 100.0).collect();
    q.push(0.999);
    q.extend_from_slice(extra);
    q.sort_by(f64::total_cmp);
    q.dedup();
    q
}

/// `cdf.csv`: `metric,quantile,value_s` for TTFT, TBT (mean per request), E2E and queueing of the finished
/// requests at `quantiles` (linear interpolation, like every percentile of the summary).
pub fn write_cdf_csv(
    f: impl Write,
    w: &Workload,
    out: &RunOutput,
    quantiles: &[f64],
) -> std::io::Result<()> {
    let finished = crate::metrics::finished(out);
    let rec = |i: usize| (&out.records[i], &w.requests[i]);
    let col = |g: &dyn Fn(usize) -> Option<f64>| {
        let mut x: Vec<f64> = finished.iter().filter_map(|&i| g(i)).collect();
        x.sort_by(f64::total_cmp);
        x
    };
    let metrics: [(&str, Vec<f64>); 4] = [
        (
            "ttft",
            col(&|i| Some(secs(rec(i).0.first_token - rec(i).1.arrival))),
        ),
        (
            "tbt",
            col(&|i| {
                let (r, q) = rec(i);
                (q.output > 1).then(|| secs(r.finished - r.first_token) / (q.output - 1) as f64)
            }),
        ),
        (
            "e2e",
            col(&|i| Some(secs(rec(i).0.finished - rec(i).1.arrival))),
        ),
        (
            "queue",
            col(&|i| Some(secs(rec(i).0.admitted - rec(i).1.arrival))),
        ),
    ];
    let mut t = crate::csv_out::CsvOut::new(f, &["metric", "quantile", "value_s"])?;
    for (name, x) in &metrics {
        for q in quantiles {
            t.record(&[name, q, &crate::csv_out::Num(percentile(x, *q), 9)])?;
        }
    }
    t.finish()?;
    Ok(())
}
