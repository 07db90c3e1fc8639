//! Results tables: rows (flat JSON objects) to and from CSV and Parquet through polars.

use std::path::Path;

use polars::prelude::*;
use serde_json::{Map, Value};

use crate::error::{Error, Result};

pub type Row = Map<String, Value>;

fn perr(path: &Path) -> impl Fn(PolarsError) -> Error + '_ {
    move |e| Error::internal(format!("{}: {e}", path.display()))
}

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

/// A typed polars frame: a column is Boolean, Int64 or Float64 when all its non-null values are, else String;
/// floats are `clean`ed.
pub fn frame(rows: &[Row], cols: &[String]) -> Result<DataFrame> {
    let mut out = Vec::with_capacity(cols.len());
    for c in cols {
        let vals: Vec<Option<&Value>> = rows
            .iter()
            .map(|r| r.get(c).filter(|v| !v.is_null()))
            .collect();
        let present = || vals.iter().flatten();
        let name: PlSmallStr = c.as_str().into();
        let col = if present().all(|v| v.is_boolean()) && present().next().is_some() {
            Column::new(
                name,
                vals.iter()
                    .map(|v| v.and_then(Value::as_bool))
                    .collect::<Vec<_>>(),
            )
        } else if present().all(|v| v.is_i64()) && present().next().is_some() {
            Column::new(
                name,
                vals.iter()
                    .map(|v| v.and_then(Value::as_i64))
                    .collect::<Vec<_>>(),
            )
        } else if present().all(|v| v.is_number()) {
            Column::new(
                name,
                vals.iter()
                    .map(|v| v.and_then(Value::as_f64).map(clean))
                    .collect::<Vec<_>>(),
            )
        } else {
            let s = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            Column::new(name, vals.iter().map(|v| v.map(s)).collect::<Vec<_>>())
        };
        out.push(col);
    }
    DataFrame::new(rows.len(), out).map_err(|e| Error::internal(format!("results table: {e}")))
}

/// Writes `stem.csv` and `stem.parquet` atomically (temporary file, then rename).
pub fn write(rows: &[Row], first: &[String], dir: &Path, stem: &str) -> Result<()> {
    let cols = columns(rows, first);
    let mut df = frame(rows, &cols)?;
    let csv = dir.join(format!("{stem}.csv"));
    let tmp = dir.join(format!(".{stem}.csv.tmp"));
    let f = std::fs::File::create(&tmp)
        .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
    CsvWriter::new(f)
        .include_header(true)
        .finish(&mut df)
        .map_err(perr(&csv))?;
    std::fs::rename(&tmp, &csv)?;
    let pq = dir.join(format!("{stem}.parquet"));
    let tmp = dir.join(format!(".{stem}.parquet.tmp"));
    let f = std::fs::File::create(&tmp)
        .map_err(|e| Error::internal(format!("{}: {e}", tmp.display())))?;
    ParquetWriter::new(f).finish(&mut df).map_err(perr(&pq))?;
    std::fs::rename(&tmp, &pq)?;
    Ok(())
}

/// Reads a results table (`.csv` or `.parquet`) back into rows.
pub fn read(path: &Path) -> Result<Vec<Row>> {
    let df = if path.extension().is_some_and(|x| x == "parquet") {
        let f = std::fs::File::open(path)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        ParquetReader::new(f).finish().map_err(perr(path))?
    } else {
        if !path.exists() {
            return Err(Error::msg(format!("{}: no such file", path.display())));
        }
        CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(None)
            .try_into_reader_with_file_path(Some(path.to_path_buf()))
            .map_err(perr(path))?
            .finish()
            .map_err(perr(path))?
    };
    let mut rows = vec![Row::new(); df.height()];
    for col in df.columns() {
        let name = col.name().to_string();
        let s = col.as_materialized_series();
        let dt = s.dtype().clone();
        if dt == DataType::Boolean {
            for (r, v) in rows.iter_mut().zip(s.bool().map_err(perr(path))?.iter()) {
                r.insert(name.clone(), v.map_or(Value::Null, Value::from));
            }
        } else if dt.is_integer() {
            let s = s.cast(&DataType::Int64).map_err(perr(path))?;
            for (r, v) in rows.iter_mut().zip(s.i64().map_err(perr(path))?.iter()) {
                r.insert(name.clone(), v.map_or(Value::Null, Value::from));
            }
        } else if dt.is_primitive_numeric() {
            let s = s.cast(&DataType::Float64).map_err(perr(path))?;
            for (r, v) in rows.iter_mut().zip(s.f64().map_err(perr(path))?.iter()) {
                r.insert(name.clone(), v.map_or(Value::Null, Value::from));
            }
        } else {
            let s = s.cast(&DataType::String).map_err(perr(path))?;
            for (r, v) in rows.iter_mut().zip(s.str().map_err(perr(path))?.iter()) {
                r.insert(name.clone(), v.map_or(Value::Null, Value::from));
            }
        }
    }
    Ok(rows)
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
        let df = frame(&rows, &["x".to_string()]).unwrap();
        assert_eq!(
            df.column("x").unwrap().f64().unwrap().get(0),
            Some(0.5921875)
        );
    }
}
