//! Tenant-driven adapters: each adapter is one ServeGen client (an API tenant of a production LLM), and a
//! request arriving at time t belongs to tenant c with probability rate_c(t) / Σ rate(t), from the client's
//! measured request rate in the 10-minute window holding t. Popularity is then as heavy-tailed, bursty and
//! shifting over the day as the production data. Optionally lengths come from the tenant's own 6-hour
//! length statistics (a log-normal through its p50 and p99).
//!
//! The default data is a derived one-day subset shipped in traces/ (see traces/README.md); the full 14-day
//! file (or any file of the same layout, gzip or not) is named with `rates=PATH`.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io::{BufRead, Cursor};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use rand_distr::{Distribution, Gamma, Normal};

use crate::error::{Error, Result};
use crate::registry::{Param, Params};
use crate::time::Nanos;
use crate::trace::Trace;
use crate::trace::reader::{Col, Format, Records, open_path};

pub const EMBEDDED_RATES: &[u8] =
    include_bytes!("../../../../traces/servegen_m-large_day0_rates.csv");
pub const EMBEDDED_LENGTHS: &[u8] =
    include_bytes!("../../../../traces/servegen_m-large_day0_lengths.csv");
const EMBEDDED_MODEL: &str = "m-large";

pub const WINDOW_S: u64 = 600;
pub const LENGTH_WINDOW_S: u64 = 21_600;
pub const DAY_S: u64 = 86_400;
const WINDOWS: usize = (DAY_S / WINDOW_S) as usize;
/// z of the 99th percentile of a standard normal.
const Z99: f64 = 2.326_347_874;

#[derive(Clone, Debug, PartialEq)]
pub struct TenantOptions {
    /// ServeGen per-client rates (`model,client_id,timestamp,rate,...`); `None` = the embedded m-large day 0.
    pub rates: Option<PathBuf>,
    /// ServeGen per-client length statistics; `None` = the embedded m-large day 0.
    pub length_data: Option<PathBuf>,
    pub model: String,
    pub day: u32,
    /// Hour of the ServeGen day at which the trace's first request falls.
    pub start_h: f64,
    /// ServeGen seconds per trace second: 24 replays a whole day in one trace hour; 0 (`speedup=auto`)
    /// stretches the trace's span over exactly one day.
    pub speedup: f64,
    /// Draw lengths from the tenant's statistics instead of keeping the trace's.
    pub lengths: bool,
    /// Replace the trace's timing by the superposition of the tenants' own arrival processes.
    pub arrivals: bool,
}

impl Default for TenantOptions {
    fn default() -> Self {
        TenantOptions {
            rates: None,
            length_data: None,
            model: EMBEDDED_MODEL.into(),
            day: 0,
            start_h: 0.0,
            speedup: 1.0,
            lengths: false,
            arrivals: false,
        }
    }
}

/// The parameters of `tenants[...]`, with their defaults.
pub const PARAMS: &[Param] = &[
    Param::optional(
        "rates",
        "ServeGen per-client rates file (absent: the embedded m-large day 0)",
    ),
    Param::optional(
        "length_data",
        "ServeGen per-client length statistics (absent: the embedded m-large day 0)",
    ),
    Param::new(
        "model",
        EMBEDDED_MODEL,
        "ServeGen model whose tenants serve",
    ),
    Param::new("day", "0", "ServeGen day"),
    Param::new(
        "start",
        "0",
        "hour of the day at which the first request falls, in [0, 24)",
    ),
    Param::new(
        "speedup",
        "1",
        "ServeGen seconds per trace second; auto: the trace's span is one day",
    ),
    Param::new("lengths", "false", "lengths from the tenant's statistics"),
    Param::new(
        "arrivals",
        "false",
        "arrivals from the tenants' own processes",
    ),
];

impl TenantOptions {
    /// Reads the parameters of a `tenants[...]` spec.
    pub fn from_params(p: &mut Params) -> Result<TenantOptions> {
        let o = TenantOptions {
            rates: p.given("rates").map(PathBuf::from),
            length_data: p.given("length_data").map(PathBuf::from),
            model: p.get("model")?,
            day: p.get("day")?,
            start_h: p.get("start")?,
            speedup: match p.get::<String>("speedup")?.as_str() {
                "auto" => 0.0,
                v => v.parse().map_err(|_| {
                    Error::msg(format!(
                        "tenants: speedup must be a positive number or auto, got '{v}'"
                    ))
                })?,
            },
            lengths: p.get("lengths")?,
            arrivals: p.get("arrivals")?,
        };
        if !(o.speedup >= 0.0 && o.speedup.is_finite()) {
            return Err(Error::msg(format!(
                "tenants: speedup must be positive, got {}",
                o.speedup
            )));
        }
        if !(0.0..24.0).contains(&o.start_h) {
            return Err(Error::msg(format!(
                "tenants: start must be an hour in [0, 24), got {}",
                o.start_h
            )));
        }
        Ok(o)
    }

    pub fn describe(&self) -> String {
        format!(
            "tenants[{} day {}, from {}, start {} h, speedup {}{}]",
            self.model,
            self.day,
            self.rates
                .as_ref()
                .map_or("embedded ServeGen subset".to_string(), |p| p
                    .display()
                    .to_string()),
            self.start_h,
            if self.speedup == 0.0 {
                "auto".to_string()
            } else {
                self.speedup.to_string()
            },
            match (self.lengths, self.arrivals) {
                (true, true) => ", tenant lengths and arrivals",
                (true, false) => ", tenant lengths",
                (false, true) => ", tenant arrivals",
                (false, false) => "",
            }
        )
    }
}

/// One day of per-tenant rates, busiest tenant first.
#[derive(Clone, Debug)]
pub struct TenantTable {
    pub source: String,
    pub model: String,
    pub day: u32,
    /// ServeGen client ids, in order of the day's request volume (descending; ties by id).
    pub clients: Vec<u64>,
    /// rates[i][w]: requests/s of `clients[i]` in 10-minute window w of the day.
    pub rates: Vec<Vec<f64>>,
    /// cvs[i][w]: coefficient of variation of that client's inter-arrival times in the window (1 where the
    /// data has none).
    pub cvs: Vec<Vec<f64>>,
}

fn records(path: &Option<PathBuf>, embedded: &'static [u8], what: &str) -> Result<Records> {
    match path {
        Some(p) => {
            let (input, pb) = open_path(p)?;
            Records::from_reader(input, &p.display().to_string(), Format::Csv, None, pb)
        }
        None => {
            let input: Box<dyn BufRead> = Box::new(Cursor::new(embedded));
            Records::from_reader(input, what, Format::Csv, None, None)
        }
    }
}

fn column(rec: &Records, name: &str) -> Result<Col> {
    rec.find(name).ok_or_else(|| {
        Error::msg(format!(
            "{}: missing column '{name}' (found: {})",
            rec.source,
            rec.names().join(", ")
        ))
    })
}

fn number<T: std::str::FromStr>(rec: &Records, col: &Col, name: &str) -> Result<T> {
    let v = rec.cell(col).ok_or_else(|| rec.err(name, "empty"))?;
    v.parse()
        .map_err(|_| rec.err(name, format!("'{v}' is not a valid number")))
}

fn check_embedded(opts_path: &Option<PathBuf>, model: &str, day: u32) -> Result<()> {
    if opts_path.is_none() && (model != EMBEDDED_MODEL || day != 0) {
        return Err(Error::msg(format!(
            "tenants: the embedded ServeGen subset has {EMBEDDED_MODEL} day 0 only; for {model} day {day} give \
             rates=PATH (e.g. ../shared/traces/servegen/servegen_language_client_rates.csv.gz)"
        )));
    }
    Ok(())
}

impl TenantTable {
    pub fn load(rates: &Option<PathBuf>, model: &str, day: u32) -> Result<TenantTable> {
        check_embedded(rates, model, day)?;
        let mut rec = records(rates, EMBEDDED_RATES, "servegen rates (embedded)")?;
        let [cm, cc, ct, cr] = ["model", "client_id", "timestamp", "rate"].map(|n| column(&rec, n));
        let (cm, cc, ct, cr) = (cm?, cc?, ct?, cr?);
        let ccv = rec.find("cv");
        let (lo, hi) = (day as u64 * DAY_S, (day as u64 + 1) * DAY_S);
        let mut by_client: HashMap<u64, (Vec<f64>, Vec<f64>)> = HashMap::new();
        let mut models_seen: Vec<String> = Vec::new();
        while rec.advance()? {
            let m = rec.cell(&cm).unwrap_or_default();
            if m != model {
                if models_seen.len() < 10 && !models_seen.iter().any(|s| *s == m) {
                    models_seen.push(m.into_owned());
                }
                continue;
            }
            let t: u64 = number(&rec, &ct, "timestamp")?;
            if t < lo || t >= hi {
                continue;
            }
            let c: u64 = number(&rec, &cc, "client_id")?;
            let r: f64 = number(&rec, &cr, "rate")?;
            if !(r >= 0.0 && r.is_finite()) {
                return Err(rec.err("rate", format!("must be >= 0, got {r}")));
            }
            let cv: f64 = match &ccv {
                Some(col) if rec.cell(col).is_some() => number(&rec, col, "cv")?,
                _ => 1.0,
            };
            let w = ((t - lo) / WINDOW_S) as usize;
            let e = by_client
                .entry(c)
                .or_insert_with(|| (vec![0.0; WINDOWS], vec![1.0; WINDOWS]));
            e.0[w] += r;
            if cv > 0.0 && cv.is_finite() {
                e.1[w] = cv;
            }
        }
        let mut clients: Vec<(f64, u64)> = by_client
            .iter()
            .map(|(&c, r)| (r.0.iter().sum::<f64>(), c))
            .filter(|(v, _)| *v > 0.0)
            .collect();
        if clients.is_empty() {
            return Err(Error::msg(format!(
                "{}: no requests for model '{model}' on day {day} (models seen: {})",
                rec.source,
                models_seen.join(", ")
            )));
        }
        clients.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        Ok(TenantTable {
            source: rec.source.clone(),
            model: model.into(),
            day,
            rates: clients
                .iter()
                .map(|(_, c)| by_client[c].0.clone())
                .collect(),
            cvs: clients
                .iter()
                .map(|(_, c)| by_client[c].1.clone())
                .collect(),
            clients: clients.into_iter().map(|(_, c)| c).collect(),
        })
    }

    /// The 10-minute window of the day (0..144) holding trace time `t` under `opts`.
    pub fn window(opts: &TenantOptions, t: Nanos) -> usize {
        let s = opts.start_h * 3600.0 + t as f64 / 1e9 * opts.speedup;
        ((s.rem_euclid(DAY_S as f64) / WINDOW_S as f64) as usize).min(WINDOWS - 1)
    }
}

/// Per-tenant log-normal length parameters by 6-hour window: (mu, sigma, cap) for input and output.
type LenParams = [(f64, f64, f64); 2];

fn load_lengths(
    path: &Option<PathBuf>,
    model: &str,
    day: u32,
) -> Result<HashMap<(u64, usize), LenParams>> {
    check_embedded(path, model, day)?;
    let mut rec = records(path, EMBEDDED_LENGTHS, "servegen lengths (embedded)")?;
    let cols = [
        "model",
        "client_id",
        "timestamp",
        "input_p50",
        "input_p99",
        "output_p50",
        "output_p99",
    ]
    .map(|n| column(&rec, n));
    let [cm, cc, ct, ip50, ip99, op50, op99] = cols;
    let (cm, cc, ct) = (cm?, cc?, ct?);
    let (ip50, ip99, op50, op99) = (ip50?, ip99?, op50?, op99?);
    let (lo, hi) = (day as u64 * DAY_S, (day as u64 + 1) * DAY_S);
    let mut out = HashMap::new();
    while rec.advance()? {
        if rec.cell(&cm).unwrap_or_default() != model {
            continue;
        }
        let t: u64 = number(&rec, &ct, "timestamp")?;
        if t < lo || t >= hi {
            continue;
        }
        let c: u64 = number(&rec, &cc, "client_id")?;
        let mut p = [(0.0, 0.0, 0.0); 2];
        for (k, (c50, c99, n50, n99)) in [
            (&ip50, &ip99, "input_p50", "input_p99"),
            (&op50, &op99, "output_p50", "output_p99"),
        ]
        .into_iter()
        .enumerate()
        {
            let p50: f64 = number(&rec, c50, n50)?;
            let p99: f64 = number(&rec, c99, n99)?;
            if !(p50 >= 1.0 && p99 >= p50) {
                return Err(rec.err(n99, format!("need 1 <= p50 <= p99, got {p50} and {p99}")));
            }
            p[k] = (p50.ln(), (p99 / p50).ln() / Z99, 2.0 * p99);
        }
        out.insert((c, ((t - lo) / LENGTH_WINDOW_S) as usize), p);
    }
    Ok(out)
}

/// (input, output) tokens of each request.
pub type Lengths = Vec<(u32, u32)>;

/// What the tenant model decides for each request, in trace order.
#[derive(Clone, Debug, PartialEq)]
pub struct Assignment {
    /// Adapter index (busiest tenant = 0).
    pub adapters: Vec<u32>,
    /// New lengths when `lengths`.
    pub lengths: Option<Lengths>,
    /// New arrival times (sorted) when `arrivals`.
    pub arrivals: Option<Vec<Nanos>>,
}

/// Tenant of each trace row (busiest = 0); new lengths when `opts.lengths`; with `opts.arrivals`, new
/// arrivals too, from the tenants' own processes.
pub fn assign(trace: &Trace, opts: &TenantOptions, count: u32, seed: u64) -> Result<Assignment> {
    let table = TenantTable::load(&opts.rates, &opts.model, opts.day)?;
    if table.clients.len() < count as usize {
        return Err(Error::msg(format!(
            "tenants: {} has {} active tenants for {} day {}, fewer than --adapters {count}",
            table.source,
            table.clients.len(),
            table.model,
            table.day
        )));
    }
    if opts.arrivals {
        return assign_with_arrivals(trace, &table, opts, count, seed);
    }
    let mut opts = opts.clone();
    if opts.speedup == 0.0 {
        let span = trace.span() as f64 / 1e9;
        // Just under a day, so the last request falls in the last window rather than wrapping to the first.
        opts.speedup = if span > 0.0 {
            DAY_S as f64 * (1.0 - 1e-9) / span
        } else {
            1.0
        };
    }
    let opts = &opts;
    let n = count as usize;
    let volume: Vec<f64> = table.rates[..n].iter().map(|r| r.iter().sum()).collect();
    let cdfs: Vec<Vec<f64>> = (0..WINDOWS)
        .map(|w| {
            let mut acc = 0.0;
            let mut cdf: Vec<f64> = table.rates[..n]
                .iter()
                .map(|r| {
                    acc += r[w];
                    acc
                })
                .collect();
            if acc <= 0.0 {
                // Nobody among the chosen tenants is active: fall back to the day's volumes.
                let mut acc = 0.0;
                cdf = volume
                    .iter()
                    .map(|v| {
                        acc += v;
                        acc
                    })
                    .collect();
            }
            cdf
        })
        .collect();
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7E4A_4175_0000_0003);
    let adapters: Vec<u32> = trace
        .rows
        .iter()
        .map(|r| {
            let cdf = &cdfs[TenantTable::window(opts, r.arrival)];
            let u = rng.random::<f64>() * cdf[n - 1];
            cdf.partition_point(|&c| c <= u).min(n - 1) as u32
        })
        .collect();
    let times: Vec<Nanos> = trace.rows.iter().map(|r| r.arrival).collect();
    let lengths = tenant_lengths(trace, &table, opts, &adapters, &times, seed)?;
    Ok(Assignment {
        adapters,
        lengths,
        arrivals: None,
    })
}

/// Lengths drawn from each request's tenant statistics (`None` unless `opts.lengths`).
fn tenant_lengths(
    trace: &Trace,
    table: &TenantTable,
    opts: &TenantOptions,
    adapters: &[u32],
    times: &[Nanos],
    seed: u64,
) -> Result<Option<Lengths>> {
    if !opts.lengths {
        return Ok(None);
    }
    let params = load_lengths(&opts.length_data, &opts.model, opts.day)?;
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7E4A_4175_0000_0004);
    let std_normal = Normal::new(0.0, 1.0).expect("valid");
    let lengths = trace
        .rows
        .iter()
        .zip(adapters)
        .zip(times)
        .map(|((r, &a), &t)| {
            let s = opts.start_h * 3600.0 + t as f64 / 1e9 * opts.speedup;
            let w6 = (s.rem_euclid(DAY_S as f64) / LENGTH_WINDOW_S as f64) as usize;
            match params.get(&(table.clients[a as usize], w6)) {
                // Tenants without statistics (ServeGen's coverage is incomplete) keep the trace's lengths.
                None => (r.input, r.output),
                Some(p) => {
                    let mut draw = |(mu, sigma, cap): (f64, f64, f64)| {
                        let x: f64 = (mu + sigma * std_normal.sample(&mut rng)).exp();
                        x.round().clamp(1.0, cap.max(1.0)) as u32
                    };
                    (draw(p[0]), draw(p[1]))
                }
            }
        })
        .collect();
    Ok(Some(lengths))
}

/// Largest inter-arrival CV used: a Gamma shape below 1/100 makes gaps of zero in f64.
const MAX_CV: f64 = 10.0;

/// Each of the `count` busiest tenants is a renewal process whose gaps have mean 1 and the window's CV in
/// operational time Λ_c(s) = ∫ f·rate_c (time rescaling: the expected count in a window is f·rate·600 exactly,
/// whatever the CV), started in equilibrium so that no tenant begins with a burst. f scales the day-average
/// aggregate rate to the trace's mean rate (n-1)/span in trace time; the rate of the replayed part then follows
/// the day's profile. The trace's rows keep their order and lengths; the i-th arrival in time takes row i.
fn assign_with_arrivals(
    trace: &Trace,
    table: &TenantTable,
    opts: &TenantOptions,
    count: u32,
    seed: u64,
) -> Result<Assignment> {
    let n = count as usize;
    let rows = trace.rows.len();
    let span = trace.span() as f64 / 1e9;
    if rows < 2 || span <= 0.0 {
        return Err(Error::msg(
            "tenants[arrivals=true] needs a trace (or --rate) with at least two distinct arrival times",
        ));
    }
    let lambda = (rows - 1) as f64 / span;
    let mut opts = opts.clone();
    if opts.speedup == 0.0 {
        opts.speedup = DAY_S as f64 * lambda / (rows - 1) as f64;
    }
    let day_rate: f64 =
        table.rates[..n].iter().flatten().sum::<f64>() * WINDOW_S as f64 / DAY_S as f64;
    let f = lambda / (day_rate * opts.speedup);
    // cum[c][w]: operational time of tenant c at the start of window w.
    let cum: Vec<Vec<f64>> = table.rates[..n]
        .iter()
        .map(|r| {
            let mut acc = 0.0;
            let mut v = vec![0.0];
            for x in r {
                acc += f * x * WINDOW_S as f64;
                v.push(acc);
            }
            v
        })
        .collect();
    let s0 = opts.start_h * 3600.0;
    let window_of =
        |s: f64| ((s.rem_euclid(DAY_S as f64) / WINDOW_S as f64) as usize).min(WINDOWS - 1);
    let op_time = |c: usize, s: f64| {
        let day = (s / DAY_S as f64).floor();
        let w = window_of(s);
        let within = s.rem_euclid(DAY_S as f64) - (w as u64 * WINDOW_S) as f64;
        day * cum[c][WINDOWS] + cum[c][w] + f * table.rates[c][w] * within
    };
    let real_time = |c: usize, u: f64| {
        let total = cum[c][WINDOWS];
        let day = (u / total).floor();
        let u = u - day * total;
        // The window whose operational interval holds u; it has a positive rate.
        let w = cum[c].partition_point(|&x| x <= u).clamp(1, WINDOWS) - 1;
        let r = f * table.rates[c][w];
        day * DAY_S as f64
            + (w as u64 * WINDOW_S) as f64
            + if r > 0.0 { (u - cum[c][w]) / r } else { 0.0 }
    };
    let gamma = |cv: f64, size_biased: bool| {
        let cv = if cv > 0.0 { cv.min(MAX_CV) } else { 1.0 };
        let k = 1.0 / (cv * cv);
        Gamma::new(if size_biased { k + 1.0 } else { k }, 1.0 / k)
            .expect("positive shape and scale")
    };
    let mut rng = StdRng::seed_from_u64(seed ^ 0x7E4A_4175_0000_0005);
    // Min-heap of (next arrival in ServeGen seconds, tenant, its operational time); times are non-negative
    // f64s, whose bit patterns order like the numbers.
    let mut heap = BinaryHeap::new();
    for c in 0..n {
        let u0 = op_time(c, s0);
        let cv = table.cvs[c][window_of(s0)];
        // Forward recurrence time of a stationary renewal process: U times a size-biased gap.
        let first = rng.random::<f64>() * gamma(cv, true).sample(&mut rng);
        let s = real_time(c, u0 + first);
        heap.push(Reverse((s.to_bits(), c, (u0 + first).to_bits())));
    }
    let mut times = Vec::with_capacity(rows);
    let mut adapters = Vec::with_capacity(rows);
    while times.len() < rows {
        let Reverse((sb, c, ub)) = heap.pop().expect("every tenant stays in the heap");
        let (s, u) = (f64::from_bits(sb), f64::from_bits(ub));
        times.push((((s - s0) / opts.speedup) * 1e9).round() as Nanos);
        adapters.push(c as u32);
        let u = u + gamma(table.cvs[c][window_of(s)], false).sample(&mut rng);
        heap.push(Reverse((real_time(c, u).to_bits(), c, u.to_bits())));
    }
    let t0 = times[0];
    for t in &mut times {
        *t -= t0;
    }
    let lengths = tenant_lengths(trace, table, &opts, &adapters, &times, seed)?;
    Ok(Assignment {
        adapters,
        lengths,
        arrivals: Some(times),
    })
}

/// `sim trace tenants`: how the hot set moves over the day, one line per `every_s` seconds.
pub fn hotset_text(table: &TenantTable, top: usize, every_s: u64) -> Result<String> {
    if every_s < WINDOW_S || !every_s.is_multiple_of(WINDOW_S) || top == 0 {
        return Err(Error::msg(format!(
            "--every must be a positive multiple of {WINDOW_S} s and --top positive"
        )));
    }
    let per = (every_s / WINDOW_S) as usize;
    let n = table.clients.len();
    let day_total: f64 = table.rates.iter().flatten().sum();
    let day_top: Vec<usize> = (0..top.min(n)).collect();
    let mut o = format!(
        "{}: {} day {}, {} active tenants, mean {:.2} req/s over the day; tenants by client id, share of the period's requests\n",
        table.source,
        table.model,
        table.day,
        n,
        day_total / WINDOWS as f64
    );
    o += &format!(
        "day's top-{top} tenants (share of the day; --adapter-model tenants makes the j-th adapter j): {}\n\n",
        day_top
            .iter()
            .map(|&i| format!(
                "{} ({:.3})",
                table.clients[i],
                table.rates[i].iter().sum::<f64>() / day_total
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    o += &format!(
        "{:>6} {:>9} {:>8} {:>9} {:>8}  top-{top} of the period\n",
        "hour", "req/s", "top-k", "day-top-k", "kept"
    );
    let mut prev: Vec<usize> = Vec::new();
    for (p, start) in (0..WINDOWS).step_by(per).enumerate() {
        let end = (start + per).min(WINDOWS);
        let vol: Vec<f64> = table
            .rates
            .iter()
            .map(|r| r[start..end].iter().sum())
            .collect();
        let total: f64 = vol.iter().sum();
        let mut order: Vec<usize> = (0..n).filter(|&i| vol[i] > 0.0).collect();
        order.sort_by(|&a, &b| vol[b].total_cmp(&vol[a]).then(a.cmp(&b)));
        order.truncate(top);
        let share = |ids: &[usize]| ids.iter().map(|&i| vol[i]).sum::<f64>() / total.max(1e-300);
        let kept = order.iter().filter(|i| prev.contains(i)).count();
        o += &format!(
            "{:>6.1} {:>9.2} {:>8.3} {:>9.3} {:>8}  {}\n",
            (p as u64 * every_s) as f64 / 3600.0,
            total / (end - start) as f64,
            share(&order),
            share(&day_top),
            if p == 0 {
                "-".to_string()
            } else {
                format!("{kept}/{}", order.len())
            },
            order
                .iter()
                .map(|&i| format!("{}:{:.2}", table.clients[i], vol[i] / total))
                .collect::<Vec<_>>()
                .join(" ")
        );
        prev = order;
    }
    o += "\nreq/s: all tenants' rate; top-k: share of the period's own top k; day-top-k: share of the day's top k; \
          kept: period top-k also in the previous period's\n";
    Ok(o)
}

/// Used by `sim trace tenants` and tests: the embedded table.
pub fn embedded_table() -> Result<TenantTable> {
    TenantTable::load(&None, EMBEDDED_MODEL, 0)
}

/// The default rates file beside the repository, for tests and docs.
pub fn shared_rates_path() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/traces/servegen/servegen_language_client_rates.csv.gz"
    ))
}
