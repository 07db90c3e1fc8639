//! Writing CSV tables through the `csv` crate: the header given once as the column list, fields quoted only
//! where RFC 4180 needs it (a delimiter, quote or line break inside), numbers formatted by the caller.

use std::fmt::{Display, Write as _};
use std::io::Write;

/// A CSV table being written: `CsvOut::new(out, &COLUMNS)`, then `record(&[&a, &b, ...])` per row.
pub struct CsvOut<W: Write> {
    w: csv::Writer<W>,
    buf: String,
    columns: usize,
}

impl<W: Write> CsvOut<W> {
    /// Starts a table on `out` with its header row.
    pub fn new<S: AsRef<str>>(out: W, columns: &[S]) -> std::io::Result<CsvOut<W>> {
        let mut t = CsvOut {
            w: csv::WriterBuilder::new()
                .buffer_capacity(1 << 16)
                .from_writer(out),
            buf: String::new(),
            columns: columns.len(),
        };
        t.w.write_record(columns.iter().map(|c| c.as_ref()))?;
        Ok(t)
    }

    /// One row: each field as it displays (`Num` for a float that may be missing).
    pub fn record(&mut self, fields: &[&dyn Display]) -> std::io::Result<()> {
        debug_assert_eq!(fields.len(), self.columns, "a row has one field per column");
        for f in fields {
            self.buf.clear();
            write!(self.buf, "{f}").expect("writing to a String");
            self.w.write_field(&self.buf)?;
        }
        self.w.write_record(None::<&[u8]>)?;
        Ok(())
    }

    /// Flushes the table and returns the writer.
    pub fn finish(self) -> std::io::Result<W> {
        self.w
            .into_inner()
            .map_err(|e| std::io::Error::other(e.error().to_string()))
    }
}

/// A table written into a `String` (tables returned to a caller that writes them elsewhere).
pub fn to_string<S: AsRef<str>>(
    columns: &[S],
    rows: impl FnOnce(&mut CsvOut<Vec<u8>>) -> std::io::Result<()>,
) -> String {
    let mut t = CsvOut::new(Vec::new(), columns).expect("writing to memory");
    rows(&mut t).expect("writing to memory");
    String::from_utf8(t.finish().expect("writing to memory")).expect("the fields were UTF-8")
}

/// A float with `.1` digits after the point, or an empty field when it is not finite (no data).
#[derive(Clone, Copy)]
pub struct Num(pub f64, pub usize);

impl Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_finite() {
            write!(f, "{:.*}", self.1, self.0)
        } else {
            Ok(())
        }
    }
}

/// An optional value: empty when absent.
pub struct Opt<T>(pub Option<T>);

impl<T: Display> Display for Opt<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_quoted_only_where_needed() {
        let s = to_string(&["a", "b", "c"], |t| {
            t.record(&[&"x,y", &Num(1.5, 3), &Num(f64::NAN, 3)])?;
            t.record(&[&"say \"hi\"", &"two\nlines", &Opt(None::<u32>)])
        });
        assert_eq!(
            s,
            "a,b,c\n\"x,y\",1.500,\n\"say \"\"hi\"\"\",\"two\nlines\",\n"
        );
    }
}
