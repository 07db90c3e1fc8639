//! Where a fleet's results go: final records consumed in order (metrics, the records table or the streamed
//! rows), here or on a second thread, and the fleet sampled at each epoch's end.

use std::io::Write;

use super::acc::{self, Acc};
use super::view::FleetView;
use super::{FleetConfig, FleetInputs, Sample};
use crate::engine::RequestRecord;
use crate::error::{Error, Result};
use crate::slo::Slo;
use crate::time::Nanos;
use crate::workload::Workload;

/// A record that became final, on its way to the consumer: (id, replica, record).
pub(super) type Final = (u32, u32, RequestRecord);

/// What consumes final records in order: metrics, the records table or the rows file.
pub(super) struct Consumer<'a> {
    w: &'a Workload,
    slo: Slo,
    pub(super) records: Option<Vec<RequestRecord>>,
    pub(super) replicas: Vec<Acc>,
    pub(super) total: Acc,
    rows: Option<std::io::BufWriter<std::fs::File>>,
}

impl<'a> Consumer<'a> {
    pub(super) fn new(fc: &FleetConfig, inp: &FleetInputs<'a>, n: usize) -> Result<Consumer<'a>> {
        let w = inp.workload;
        let rows = match &fc.stream {
            None => None,
            Some(path) => {
                let f = std::fs::File::create(path)
                    .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
                let mut f = std::io::BufWriter::with_capacity(1 << 20, f);
                writeln!(f, "{},replica", crate::metrics::REQUEST_COLUMNS.join(","))
                    .map_err(|e| Error::internal(format!("{}: {e}", path.display())))?;
                Some(f)
            }
        };
        Ok(Consumer {
            w,
            slo: inp.slo,
            records: fc
                .stream
                .is_none()
                .then(|| vec![RequestRecord::new(); w.requests.len()]),
            replicas: vec![Acc::default(); n],
            total: Acc::full(),
            rows,
        })
    }

    /// Flushes the rows file (streaming).
    pub(super) fn flush(&mut self) -> Result<()> {
        if let Some(f) = &mut self.rows {
            f.flush()
                .map_err(|e| Error::internal(format!("--stream: {e}")))?;
        }
        Ok(())
    }

    fn take(&mut self, batch: Vec<Final>) -> Result<()> {
        for (id, r, rec) in batch {
            let req = &self.w.requests[id as usize];
            self.replicas[r as usize].add(self.w, req, &rec, &self.slo);
            self.total.add(self.w, req, &rec, &self.slo);
            if let Some(f) = &mut self.rows {
                acc::write_row(f, self.w, id, r, &rec)
                    .map_err(|e| Error::internal(format!("--stream: {e}")))?;
            }
            if let Some(v) = &mut self.records {
                v[id as usize] = rec;
            }
        }
        Ok(())
    }
}

/// Where an epoch's final records go, sorted by (final time, id): the consumer here, or on its thread.
pub(super) enum Sink<'s, 'a> {
    Here(Box<Consumer<'a>>),
    Thread(
        std::sync::mpsc::SyncSender<Vec<Final>>,
        std::thread::ScopedJoinHandle<'s, Result<Consumer<'a>>>,
    ),
}

impl<'s, 'a: 's> Sink<'s, 'a> {
    /// Consumes on this thread, or on a thread of `scope` when `thread`.
    pub(super) fn new<'e>(
        consumer: Consumer<'a>,
        thread: bool,
        scope: &'s std::thread::Scope<'s, 'e>,
    ) -> Sink<'s, 'a>
    where
        'a: 'e,
    {
        if !thread {
            return Sink::Here(Box::new(consumer));
        }
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Final>>(16);
        let mut c = consumer;
        let h = scope.spawn(move || -> Result<Consumer> {
            for batch in rx {
                c.take(batch)?;
            }
            Ok(c)
        });
        Sink::Thread(tx, h)
    }
}

impl<'a> Sink<'_, 'a> {
    pub(super) fn send(&mut self, mut batch: Vec<Final>) -> Result<()> {
        batch.sort_unstable_by_key(|(id, _, rec)| (rec.finished, *id));
        match self {
            Sink::Here(c) => c.take(batch),
            Sink::Thread(tx, _) => tx
                .send(batch)
                .map_err(|_| Error::internal("the fleet's record consumer stopped")),
        }
    }

    pub(super) fn close(self) -> Result<Consumer<'a>> {
        match self {
            Sink::Here(c) => Ok(*c),
            Sink::Thread(tx, h) => {
                drop(tx);
                h.join()
                    .map_err(|_| Error::internal("the fleet's record consumer panicked"))?
            }
        }
    }
}

/// The fleet sampled at epoch ends: load, and which replicas hold which adapters.
pub(super) struct Sampler {
    pub(super) samples: Vec<Sample>,
    held_sum: Vec<u64>,
    held_max: Vec<usize>,
}

impl Sampler {
    pub(super) fn new(adapters: usize) -> Sampler {
        Sampler {
            samples: Vec::new(),
            held_sum: vec![0; adapters],
            held_max: vec![0; adapters],
        }
    }

    /// Per adapter: the mean over samples of the replicas holding it, and the most at any sample.
    pub(super) fn replication(&self) -> Vec<(f64, usize)> {
        let k = self.samples.len().max(1) as f64;
        self.held_sum
            .iter()
            .zip(&self.held_max)
            .map(|(&s, &m)| (s as f64 / k, m))
            .collect()
    }

    pub(super) fn sample(&mut self, t: Nanos, view: &FleetView) {
        let n = view.replicas();
        let (mut out_sum, mut out_max, mut tok_sum, mut tok_max) = (0u64, 0u32, 0u64, 0u64);
        for r in 0..n {
            out_sum += view.outstanding(r) as u64;
            out_max = out_max.max(view.outstanding(r));
            tok_sum += view.outstanding_tokens(r);
            tok_max = tok_max.max(view.outstanding_tokens(r));
        }
        let (adapters_held, holders) = view.replication();
        for (a, (s, m)) in self
            .held_sum
            .iter_mut()
            .zip(self.held_max.iter_mut())
            .enumerate()
        {
            let h = view.holders(a as u32).len();
            *s += h as u64;
            *m = (*m).max(h);
        }
        self.samples.push(Sample {
            t,
            outstanding_mean: out_sum as f64 / n as f64,
            outstanding_max: out_max,
            tokens_mean: tok_sum as f64 / n as f64,
            tokens_max: tok_max,
            adapters_held,
            holders,
            holders_max: view.max_replication(),
        });
    }
}
