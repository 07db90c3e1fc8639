//! The contract every registered scheduler and cache policy must meet. A new policy added to a registry is
//! tested here with no extra code: no request lost or duplicated, memory within the pool, deterministic
//! runs, and no starvation beyond the stated bound.

mod common;

use common::{Linear, MS, adapters, random_case, req, run_prefetch, run_with};
use sim_core::engine::api::{Admission, PolicyCtx, Scheduler};
use sim_core::engine::{Engine, EngineConfig, Observed, Observer, Outcome, Policies, Simulated};
use sim_core::slo::Slo;
use sim_core::workload::{Request, Workload};
use sim_core::{cache, prefetch, sched};

/// Every registered scheduler (its defaults), plus settings that reach paths the defaults rarely do on
/// these small cases: `slora-abort` with a 50 ms objective (it aborts), `slora-pets` planning from 3 waiting.
fn schedulers() -> Vec<&'static str> {
    let mut v: Vec<&str> = sched::REGISTRY.entries.iter().map(|e| e.name).collect();
    v.extend([
        "slora-abort[slo_s=0.05,margin_s=0]",
        "slora-pets[threshold=2]",
    ]);
    v
}

fn pairs() -> Vec<(&'static str, &'static str)> {
    let mut v = Vec::new();
    for s in schedulers() {
        for c in cache::REGISTRY.entries {
            v.push((s, c.name));
        }
    }
    v
}

#[test]
fn no_request_is_lost_and_memory_stays_within_the_pool() {
    for seed in 0..40 {
        let case = random_case(1000 + seed);
        for (s, c) in pairs() {
            let out = run_prefetch(&case.w, case.cfg.clone(), &Linear, s, c, &case.prefetch);
            assert!(
                out.stats.peak_total_slots <= case.cfg.pool_slots,
                "{s} + {c}, seed {seed}"
            );
            for (r, rec) in case.w.requests.iter().zip(&out.records) {
                match &rec.outcome {
                    Outcome::Finished => {
                        assert!(r.arrival <= rec.admitted && rec.first_token <= rec.finished)
                    }
                    Outcome::Rejected(_) => {}
                    Outcome::Aborted(_) => assert!(r.arrival <= rec.finished),
                    Outcome::Waiting => {
                        panic!("{s} + {c}, seed {seed}: request {} never ran", r.id)
                    }
                }
            }
        }
    }
}

#[test]
fn runs_are_deterministic() {
    for seed in 0..10 {
        let case = random_case(2000 + seed);
        for (s, c) in pairs() {
            let a = run_prefetch(&case.w, case.cfg.clone(), &Linear, s, c, &case.prefetch);
            let b = run_prefetch(&case.w, case.cfg.clone(), &Linear, s, c, &case.prefetch);
            assert!(
                a.records == b.records && a.stats == b.stats,
                "{s} + {c}, seed {seed}"
            );
        }
    }
}

/// The stated bound, for every scheduler that declares itself starvation-free: a large request (three quarters of the pool) arriving amid 300 s of
/// small requests at 50 per second (more than the pool holds at once), is admitted within 60 s under every
/// policy pair. FIFO admits it at once; SJF's aging (10 tokens/s) puts it ahead of newcomers after its 500
/// predicted tokens / 10 = 50 s; MLQ keeps its queue's quota for it.
#[test]
fn a_large_request_is_not_starved_by_a_stream_of_small_ones() {
    // Small requests every 20 ms; the large one arrives at 2.01 s, when the batch is full of small ones.
    let mut requests: Vec<_> = (0..15_000u32)
        .map(|i| req(i, i as u64 * 20, 20, 100, 0))
        .collect();
    requests.insert(101, req(0, 2010, 400, 500, 1));
    for (i, r) in requests.iter_mut().enumerate() {
        r.id = i as u32;
    }
    let w = Workload {
        adapters: adapters(2, 16),
        requests,
    };
    let mut cfg = EngineConfig::new(1200);
    cfg.max_batch = 32;
    let fair = sched::REGISTRY
        .entries
        .iter()
        .filter(|e| e.props.starvation_free);
    let fair: Vec<&str> = fair.map(|e| e.name).collect();
    for (s, c) in pairs().into_iter().filter(|(s, _)| fair.contains(s)) {
        let out = run_with(&w, cfg.clone(), &Linear, s, c);
        // Admitted, or dropped by a scheduler that aborts: either way it stopped waiting.
        let rec = &out.records[101];
        let ended = match rec.outcome {
            Outcome::Aborted(_) => rec.finished,
            _ => rec.admitted,
        };
        let wait = ended - w.requests[101].arrival;
        eprintln!("{s} + {c}: waited {:.3} s", wait as f64 / 1e9);
        assert!(
            wait <= 60_000 * MS,
            "{s} + {c}: the large request waited {} s",
            wait / 1_000_000_000
        );
    }
}

/// Counts, per request, the events that end it: a finish, a rejection, an abort.
struct Ends(std::rc::Rc<std::cell::RefCell<Vec<u32>>>);

impl Observer for Ends {
    fn observe(&mut self, _now: sim_core::time::Nanos, ev: Observed<'_>) {
        if let Observed::Finished { id } | Observed::Rejected { id } | Observed::Aborted { id } = ev
        {
            self.0.borrow_mut()[id as usize] += 1;
        }
    }
}

#[test]
fn every_request_ends_exactly_once_finished_rejected_or_aborted() {
    let mut aborted = 0;
    for seed in 0..40 {
        let case = random_case(3000 + seed);
        let n = case.w.requests.len();
        for (s, c) in pairs() {
            let predicted: Vec<u32> = case.w.requests.iter().map(|r| r.output).collect();
            let ctx = PolicyCtx::new(&case.w, &predicted, &case.cfg, Slo::default(), &Linear);
            let policies = Policies {
                scheduler: sched::REGISTRY.build(s, &ctx).unwrap().made,
                cache: cache::REGISTRY.build(c, &ctx).unwrap().made,
                prefetch: prefetch::REGISTRY.build(&case.prefetch, &ctx).unwrap().made,
            };
            let ends = std::rc::Rc::new(std::cell::RefCell::new(vec![0u32; n]));
            let mut clock = Simulated(&Linear);
            let mut engine = Engine::new(&case.w, case.cfg.clone(), &mut clock, policies);
            engine.observe(Box::new(Ends(ends.clone())));
            let out = engine.run().unwrap();
            assert!(
                ends.borrow().iter().all(|&k| k == 1),
                "{s} + {c}, seed {seed}: a request ended {:?} times",
                ends.borrow().iter().find(|&&k| k != 1)
            );
            let (mut fin, mut rej, mut abo) = (0, 0, 0);
            for rec in &out.records {
                match rec.outcome {
                    Outcome::Finished => fin += 1,
                    Outcome::Rejected(_) => rej += 1,
                    Outcome::Aborted(_) => abo += 1,
                    Outcome::Waiting => panic!("{s} + {c}, seed {seed}: a request still waits"),
                }
            }
            assert_eq!(fin + rej + abo, n, "{s} + {c}, seed {seed}");
            aborted += abo;
            assert_eq!(
                (out.stats.finished, out.stats.aborted),
                (fin as u64, abo as u64)
            );
        }
    }
    // The abort path was exercised (the 50 ms objective).
    assert!(aborted > 100, "only {aborted} aborts");
}

/// Every registered prefetcher (its defaults), under a scheduler and a cache that keep adapters and one that
/// frees them at once: no request lost, memory within the pool, the same run twice.
#[test]
fn every_prefetcher_keeps_the_contract() {
    for seed in 0..20 {
        let case = random_case(9000 + seed);
        for p in prefetch::REGISTRY.entries {
            for (s, c) in [("fifo", "lru"), ("mlq", "none")] {
                let run = || run_prefetch(&case.w, case.cfg.clone(), &Linear, s, c, p.name);
                let out = run();
                assert!(
                    out.stats.peak_total_slots <= case.cfg.pool_slots,
                    "{} with {s} + {c}, seed {seed}",
                    p.name
                );
                assert!(
                    out.records
                        .iter()
                        .all(|r| !matches!(r.outcome, Outcome::Waiting)),
                    "{} with {s} + {c}, seed {seed}: a request never ran",
                    p.name
                );
                let again = run();
                assert!(
                    again.records == out.records && again.stats == out.stats,
                    "{} with {s} + {c}, seed {seed}: not deterministic",
                    p.name
                );
            }
        }
    }
}

/// What one `select` saw and did: the queue as `peek` gave it just before (split into the scheduler's
/// queues where it reports them), whether a request changed queue during it (a re-bucketing), and the
/// requests it admitted, in the order it admitted them (the engine's `Admitted` events).
#[derive(Default)]
struct Merge {
    queues: Vec<Vec<u32>>,
    moved: bool,
    admitted: Vec<u32>,
}

type Log = std::rc::Rc<std::cell::RefCell<Vec<Merge>>>;

/// A scheduler run as usual, its queues taken by `peek` and `describe_queues` around each `select`.
struct Peeking {
    inner: Box<dyn Scheduler>,
    log: Log,
}

impl Peeking {
    fn queues(&self) -> Vec<Vec<u32>> {
        let mut order = Vec::new();
        self.inner.peek(&mut |id| {
            order.push(id);
            true
        });
        assert_eq!(
            order.len(),
            self.inner.waiting(),
            "peek visits every waiting request"
        );
        let mut sizes = Vec::new();
        self.inner
            .describe_queues(&mut |q| sizes.push(q.waiting as usize));
        if sizes.is_empty() {
            return vec![order];
        }
        assert_eq!(sizes.iter().sum::<usize>(), order.len());
        let mut rest = &order[..];
        sizes
            .iter()
            .map(|&n| {
                let (q, r) = rest.split_at(n);
                rest = r;
                q.to_vec()
            })
            .collect()
    }
}

impl Scheduler for Peeking {
    fn on_arrival(&mut self, req: &Request, now: sim_core::time::Nanos) {
        self.inner.on_arrival(req, now)
    }
    fn select(&mut self, adm: &mut Admission<'_>) {
        let before = self.queues();
        self.inner.select(adm);
        let after = self.queues();
        let queue_of = |qs: &[Vec<u32>], id: u32| qs.iter().position(|q| q.contains(&id));
        let moved = after
            .iter()
            .flatten()
            .any(|&id| queue_of(&before, id).is_some_and(|q| queue_of(&after, id) != Some(q)));
        self.log.borrow_mut().push(Merge {
            queues: before,
            moved,
            admitted: Vec::new(),
        });
    }
    fn peek(&self, visit: &mut dyn FnMut(u32) -> bool) {
        self.inner.peek(visit)
    }
    fn on_finish(&mut self, req: &Request, now: sim_core::time::Nanos) {
        self.inner.on_finish(req, now)
    }
    fn waiting(&self) -> usize {
        self.inner.waiting()
    }
    fn skipped_merges(&mut self, calls: u64) {
        self.inner.skipped_merges(calls)
    }
    fn describe_queues(&self, queue: &mut dyn FnMut(sim_core::engine::QueueInfo)) {
        self.inner.describe_queues(queue)
    }
    fn merge_every(&self) -> Option<u32> {
        self.inner.merge_every()
    }
}

/// Admissions, in order, into the current merge's entry (the engine reports them as the merge ends).
struct Admits(Log);

impl Observer for Admits {
    fn observe(&mut self, _now: sim_core::time::Nanos, ev: Observed<'_>) {
        if let Observed::Admitted { id, .. } = ev
            && let Some(m) = self.0.borrow_mut().last_mut()
        {
            m.admitted.push(id);
        }
    }
}

/// `peek` is the order `select` offers requests in (the prefetcher loads adapters by it): the requests a
/// merge admits come in peek's order. A scheduler with several queues (`describe_queues`) is held to it per
/// queue: `mlq` admits from its queues in two phases (quotas, then lent quota), and a refresh that
/// re-buckets the waiting requests at a merge is skipped. A request admitted again after a squash was not
/// waiting before the merge and is not checked.
#[test]
fn peek_visits_requests_in_the_order_select_admits_them() {
    let mut checked = 0;
    for seed in 0..40 {
        let case = random_case(5000 + seed);
        for s in schedulers() {
            let predicted: Vec<u32> = case.w.requests.iter().map(|r| r.output).collect();
            let ctx = PolicyCtx::new(&case.w, &predicted, &case.cfg, Slo::default(), &Linear);
            let log = Log::default();
            let policies = Policies {
                scheduler: Box::new(Peeking {
                    inner: sched::REGISTRY.build(s, &ctx).unwrap().made,
                    log: log.clone(),
                }),
                cache: cache::REGISTRY.build("lru", &ctx).unwrap().made,
                prefetch: prefetch::REGISTRY.build("none", &ctx).unwrap().made,
            };
            let mut clock = Simulated(&Linear);
            let mut engine = Engine::new(&case.w, case.cfg.clone(), &mut clock, policies);
            engine.observe(Box::new(Admits(log.clone())));
            engine.run().unwrap();
            for (k, m) in log.borrow().iter().enumerate().filter(|(_, m)| !m.moved) {
                for q in &m.queues {
                    let mine: Vec<u32> = m
                        .admitted
                        .iter()
                        .copied()
                        .filter(|id| q.contains(id))
                        .collect();
                    // Each admitted request is found after the one admitted before it.
                    let mut at = 0;
                    for id in &mine {
                        match q[at..].iter().position(|x| x == id) {
                            Some(p) => at += p + 1,
                            None => panic!(
                                "{s}, seed {seed}, merge {k}: admitted {:?}, but peek's order was {:?}",
                                m.admitted, m.queues
                            ),
                        }
                    }
                    checked += mine.len().saturating_sub(1);
                }
            }
        }
    }
    // Merges that admit several requests from one queue are common in these cases.
    assert!(checked > 1000, "only {checked} ordered pairs checked");
}
