//! Results tables: rows (flat JSON objects) to and from CSV, and Parquet (polars) with the `parquet` feature.

use std::path::Path;

use serde_json::{Map, Value};

use sim_core::error::{Error, Result};

pub type Row = Map<String, Value>;

/// Column order: `first` (those present), then every other key sorted.
pub fn columns(rows: &[Row], first: &[String]) -> Vec<String> {
    let mut all = std::collections::BTreeSet::new();
    for r in rows {
        all.extend(r.keys().cloned());
    }
    let mut cols: Vec<String> = first.iter().filter(|c| all.contains(*c)).cloned().collect();
    cols.extend(all.into_iter().filter(|c| !first.contains(c)));
    cols
}

/// `x` to 12 significant digits: an average over seeds such as 0.5921875000000001 is written 0.5921875.
/// (The runs' own figures are far less precise than that.)
pub fn clean(x: f64) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    format!("{x:.11e}").parse().unwrap_or(x)
}

/// The type of a column: Boolean, Int64 or Float64 when all its non-null values are, else String.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    Bool,
    Int,
    Float,
    Text,
}

fn kind<'a>(mut present: impl Iterator<Item = &'a Value> + Clone) -> Kind {
    if present.clone().next().is_some() && present.clone().all(Value::is_boolean) {
        Kind::Bool
    } else if present.clone().next().is_some() && present.clone().all(|v| v.is_i64()) {
        Kind::Int
    } else if present.all(Value::is_number) {
        Kind::Float
    } else {
        Kind::Text
    }
}

/// One cell as the CSV holds it: floats `clean`ed and written with a decimal point or exponent (4.0, 1e-9),
/// nulls empty.
fn cell(v: Option<&Value>, k: Kind) -> String {
    match (v, k) {
        (None, _) => String::new(),
        (Some(v), Kind::Float) => v
            .as_f64()
            .map_or_else(String::new, |x| format!("{:?}", clean(x))),
        (Some(Value::String(s)), _) => s.clone(),
        (Some(v), _) => v.to_string(),
    }
}

/// Writes `stem.csv` (and, with the `parquet` feature, `stem.parquet`) atomically (temporary file, then
/// rename).
pub fn write(rows: &[Row], first: &[String], dir: &Path, stem: &str) -> Result<()> {
    let cols = columns(rows, first);
    let csv = dir.join(format!("{stem}.csv"));
    let tmp = dir.join(format!(".{stem}.csv.tmp"));
    let mut w = csv::Writer::from_path(&tmp)
        .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
    let kinds: Vec<Kind> = cols
        .iter()
        .map(|c| {
            kind(
                rows.iter()
                    .filter_map(|r| r.get(c).filter(|v| !v.is_null())),
            )
        })
        .collect();
    let cerr = |e: csv::Error| Error::internal(format!("{}: {e}", csv.display()));
    w.write_record(&cols).map_err(cerr)?;
    for r in rows {
        w.write_record(
            cols.iter()
                .zip(&kinds)
                .map(|(c, &k)| cell(r.get(c).filter(|v| !v.is_null()), k)),
        )
        .map_err(cerr)?;
    }
    w.flush()
        .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
    drop(w);
    std::fs::rename(&tmp, &csv)?;
    let pq = dir.join(format!("{stem}.parquet"));
    #[cfg(feature = "parquet")]
    parquet::write(rows, &cols, &pq)?;
    // Without the feature a Parquet table from an earlier build would no longer match the CSV.
    #[cfg(not(feature = "parquet"))]
    if pq.exists() {
        std::fs::remove_file(&pq)?;
    }
    Ok(())
}

/// Columns that are text whatever their cells look like: a short commit id such as `70e4484` or `0012345`
/// parses as a number (infinity, or an integer losing its zeros).
const TEXT_COLUMNS: &[&str] = &["git_commit"];

/// Reads a results table (`.csv`, or `.parquet` with the `parquet` feature) back into rows: a CSV column
/// is Boolean, Int64 or Float64 when all its non-empty cells parse as one (a finite one), else String, as
/// are `TEXT_COLUMNS`; empty cells are nulls.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    if path.extension().is_some_and(|x| x == "parquet") {
        #[cfg(feature = "parquet")]
        return parquet::read(path);
        #[cfg(not(feature = "parquet"))]
        return Err(Error::msg(format!(
            "{}: reading Parquet needs a build with `--features parquet`; read the .csv beside it",
            path.display()
        )));
    }
    if !path.exists() {
        return Err(Error::msg(format!("{}: no such file", path.display())));
    }
    let bad = |e: csv::Error| Error::msg(format!("{}: {e}", path.display()));
    let mut r = csv::Reader::from_path(path).map_err(bad)?;
    let header: Vec<String> = r
        .headers()
        .map_err(bad)?
        .iter()
        .map(str::to_string)
        .collect();
    let records: Vec<csv::StringRecord> = r.records().collect::<Result<_, _>>().map_err(bad)?;
    let mut rows = vec![Row::new(); records.len()];
    for (j, name) in header.iter().enumerate() {
        let cells = || {
            records
                .iter()
                .map(|rec| rec.get(j).unwrap_or(""))
                .filter(|c| !c.is_empty())
        };
        let k = if cells().next().is_none() || TEXT_COLUMNS.contains(&name.as_str()) {
            Kind::Text
        } else if cells().all(|c| c == "true" || c == "false") {
            Kind::Bool
        } else if cells().all(|c| c.parse::<i64>().is_ok()) {
            Kind::Int
        } else if cells().all(|c| c.parse::<f64>().is_ok_and(f64::is_finite)) {
            Kind::Float
        } else {
            Kind::Text
        };
        for (row, rec) in rows.iter_mut().zip(&records) {
            let c = rec.get(j).unwrap_or("");
            let v = match k {
                _ if c.is_empty() => Value::Null,
                Kind::Bool => Value::from(c == "true"),
                Kind::Int => Value::from(c.parse::<i64>().unwrap_or_default()),
                Kind::Float => Value::from(c.parse::<f64>().unwrap_or_default()),
                Kind::Text => Value::from(c),
            };
            row.insert(name.clone(), v);
        }
    }
    Ok(rows)
}

/// The Parquet side (polars), built only with the `parquet` feature.
#[cfg(feature = "parquet")]
mod parquet {
    use std::path::Path;

    use polars::prelude::*;
    use serde_json::Value;

    use super::{Kind, Row, clean, kind};
    use sim_core::error::{Error, Result};

    fn perr(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
        move |e| Error::internal(format!("{}: {e}", path.display()))
    }

    /// A typed polars frame of `rows` (the CSV's column types).
    pub fn frame(rows: &[Row], cols: &[String]) -> Result<DataFrame> {
        let mut out = Vec::with_capacity(cols.len());
        for c in cols {
            let vals: Vec<Option<&Value>> = rows
                .iter()
                .map(|r| r.get(c).filter(|v| !v.is_null()))
                .collect();
            let name: PlSmallStr = c.as_str().into();
            let col = match kind(vals.iter().flatten().copied()) {
                Kind::Bool => Column::new(
                    name,
                    vals.iter()
                        .map(|v| v.and_then(Value::as_bool))
                        .collect::<Vec<_>>(),
                ),
                Kind::Int => Column::new(
                    name,
                    vals.iter()
                        .map(|v| v.and_then(Value::as_i64))
                        .collect::<Vec<_>>(),
                ),
                Kind::Float => Column::new(
                    name,
                    vals.iter()
                        .map(|v| v.and_then(Value::as_f64).map(clean))
                        .collect::<Vec<_>>(),
                ),
                Kind::Text => {
                    let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
                    Column::new(name, vals.iter().map(|v| v.map(s)).collect::<Vec<_>>())
                }
            };
            out.push(col);
        }
        DataFrame::new(rows.len(), out).map_err(|e| Error::internal(format!("results table: {e}")))
    }

    pub fn write(rows: &[Row], cols: &[String], pq: &Path) -> Result<()> {
        let mut df = frame(rows, cols)?;
        let tmp = pq.with_extension("parquet.tmp");
        let f = std::fs::File::create(&tmp)
            .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
        ParquetWriter::new(f).finish(&mut df).map_err(perr(pq))?;
        std::fs::rename(&tmp, pq)?;
        Ok(())
    }

    pub fn read(path: &Path) -> Result<Vec<Row>> {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        let df = ParquetReader::new(f).finish().map_err(perr(path))?;
        let mut rows = vec![Row::new(); df.height()];
        for col in df.columns() {
            let name = col.name().to_string();
            let s = col.as_materialized_series();
            let dt = s.dtype().clone();
            let put = |rows: &mut Vec<Row>, vals: Vec<Value>| {
                for (r, v) in rows.iter_mut().zip(vals) {
                    r.insert(name.clone(), v);
                }
            };
            let vals: Vec<Value> = if dt == DataType::Boolean {
                let s = s.bool().map_err(perr(path))?;
                s.iter()
                    .map(|v| v.map_or(Value::Null, Value::from))
                    .collect()
            } else if dt.is_integer() {
                let s = s.cast(&DataType::Int64).map_err(perr(path))?;
                let s = s.i64().map_err(perr(path))?;
                s.iter()
                    .map(|v| v.map_or(Value::Null, Value::from))
                    .collect()
            } else if dt.is_primitive_numeric() {
                let s = s.cast(&DataType::Float64).map_err(perr(path))?;
                let s = s.f64().map_err(perr(path))?;
                s.iter()
                    .map(|v| v.map_or(Value::Null, Value::from))
                    .collect()
            } else {
                let s = s.cast(&DataType::String).map_err(perr(path))?;
                let s = s.str().map_err(perr(path))?;
                s.iter()
                    .map(|v| v.map_or(Value::Null, Value::from))
                    .collect()
            };
            put(&mut rows, vals);
        }
        Ok(rows)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_lose_their_noise_not_their_value() {
        assert_eq!(clean(0.5921875000000001), 0.5921875);
        assert_eq!(clean((0.1 + 0.2) / 3.0), 0.1);
        assert_eq!(clean(1.0 / 3.0), 0.333333333333);
        assert_eq!(clean(123456.0), 123456.0);
        assert_eq!(clean(-2.5e-9), -2.5e-9);
        assert!(clean(f64::NAN).is_nan());
        let rows = vec![
            serde_json::json!({"x": 0.5921875000000001})
                .as_object()
                .unwrap()
                .clone(),
        ];
        let dir = std::env::temp_dir().join(format!("sim-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        write(&rows, &[], &dir, "t").unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.join("t.csv")).unwrap(),
            "x\n0.5921875\n"
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_commit_id_or_an_overflowing_cell_reads_back_as_text() {
        let dir = std::env::temp_dir().join(format!("sim-table-text-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("r.csv");
        std::fs::write(&p, "git_commit,x,n\n70e4484,1e999,1\n0012345,2,2\n").unwrap();
        let rows = read(&p).unwrap();
        assert_eq!(rows[0]["git_commit"], serde_json::json!("70e4484"));
        assert_eq!(rows[1]["git_commit"], serde_json::json!("0012345"));
        assert_eq!(rows[0]["x"], serde_json::json!("1e999"));
        assert_eq!(rows[1]["n"], serde_json::json!(2));
        std::fs::remove_dir_all(&dir).ok();
    }
}
