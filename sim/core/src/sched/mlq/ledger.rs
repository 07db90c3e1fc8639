//! How `mlq` counts what a queue holds against its quota. The paper (§3.3) charges each running request its
//! whole reserved size (prompt + predicted output + its adapter) until it finishes; the options measure the
//! same thing other ways:
//!
//! - `charge`: an adapter's slots count for every request that uses it (`request`, the paper), once per queue
//!   while any of its requests there runs (`queue`: a shared, resident adapter is held once), or not at all
//!   (`none`);
//! - `ledger`: a request holds its full reservation until it finishes (`lifetime`, the paper), or a queue holds
//!   the peak future KV use of its running requests by S-LoRA's own rule (`peak`: requests that have
//!   generated most of their output hold only what they can still grow, as the engine's admission check
//!   counts them).

use std::collections::HashMap;

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Charge {
    Request,
    Queue,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ledger {
    Lifetime,
    Peak,
}

impl Charge {
    pub fn parse(s: &str) -> Result<Charge> {
        match s {
            "request" => Ok(Charge::Request),
            "queue" => Ok(Charge::Queue),
            "none" => Ok(Charge::None),
            _ => Err(Error::msg(format!(
                "mlq: charge must be request (the paper), queue or none, got '{s}'"
            ))),
        }
    }
}

impl Ledger {
    pub fn parse(s: &str) -> Result<Ledger> {
        match s {
            "lifetime" => Ok(Ledger::Lifetime),
            "peak" => Ok(Ledger::Peak),
            _ => Err(Error::msg(format!(
                "mlq: ledger must be lifetime (the paper) or peak, got '{s}'"
            ))),
        }
    }
}

/// One active request as the ledger sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    pub id: u32,
    /// Prompt tokens and predicted output tokens.
    pub input: u64,
    pub output: u64,
    pub adapter: u32,
    pub adapter_slots: u64,
}

/// What each queue holds.
#[derive(Clone, Debug)]
pub struct Book {
    pub charge: Charge,
    pub ledger: Ledger,
    /// Per queue: prompt + predicted output of its active requests.
    tokens: Vec<u64>,
    /// Per queue: adapter slots charged.
    adapters: Vec<u64>,
    /// Per (queue, adapter): active requests using it (for `charge=queue`).
    users: HashMap<(usize, u32), u32>,
    /// Per queue, for `ledger=peak`: this merge's (held, still to come) of its active requests, by the second
    /// descending.
    snapshot: Vec<Vec<(u64, u64)>>,
}

impl Book {
    pub fn new(charge: Charge, ledger: Ledger, queues: usize) -> Book {
        Book {
            charge,
            ledger,
            tokens: vec![0; queues],
            adapters: vec![0; queues],
            users: HashMap::new(),
            snapshot: vec![Vec::new(); queues],
        }
    }

    pub fn reset(&mut self, queues: usize) {
        *self = Book::new(self.charge, self.ledger, queues);
    }

    /// The adapter slots `r` would add to queue `q`.
    fn adapter_charge(&self, q: usize, r: &Held) -> u64 {
        match self.charge {
            Charge::Request => r.adapter_slots,
            Charge::Queue if !self.users.contains_key(&(q, r.adapter)) => r.adapter_slots,
            _ => 0,
        }
    }

    pub fn add(&mut self, q: usize, r: &Held) {
        self.adapters[q] += self.adapter_charge(q, r);
        self.tokens[q] += r.input + r.output;
        if r.adapter_slots > 0 {
            *self.users.entry((q, r.adapter)).or_insert(0) += 1;
        }
        if self.ledger == Ledger::Peak {
            insert(
                &mut self.snapshot[q],
                (r.input + 1, r.output.saturating_sub(1)),
            );
        }
    }

    pub fn remove(&mut self, q: usize, r: &Held) {
        self.tokens[q] = self.tokens[q].saturating_sub(r.input + r.output);
        if r.adapter_slots == 0 {
            return;
        }
        let key = (q, r.adapter);
        let n = self
            .users
            .get_mut(&key)
            .expect("an adapter user was counted");
        *n -= 1;
        let last = *n == 0;
        if last {
            self.users.remove(&key);
        }
        let freed = match self.charge {
            Charge::Request => r.adapter_slots,
            Charge::Queue if last => r.adapter_slots,
            _ => 0,
        };
        self.adapters[q] = self.adapters[q].saturating_sub(freed);
    }

    /// For `ledger=peak`: this merge's progress of the active requests, as (queue, held, still to come).
    pub fn set_progress(&mut self, progress: impl Iterator<Item = (usize, u64, u64)>) {
        for s in &mut self.snapshot {
            s.clear();
        }
        for (q, held, rem) in progress {
            self.snapshot[q].push((held, rem));
        }
        for s in &mut self.snapshot {
            s.sort_unstable_by_key(|&(_, rem)| std::cmp::Reverse(rem));
        }
    }

    /// What queue `q` holds now.
    pub fn used(&self, q: usize) -> u64 {
        self.adapters[q]
            + match self.ledger {
                Ledger::Lifetime => self.tokens[q],
                Ledger::Peak => peak(&self.snapshot[q]),
            }
    }

    /// What queue `q` would hold with `r` admitted too.
    pub fn used_with(&self, q: usize, r: &Held) -> u64 {
        self.adapters[q]
            + self.adapter_charge(q, r)
            + match self.ledger {
                Ledger::Lifetime => self.tokens[q] + r.input + r.output,
                Ledger::Peak => {
                    let mut s = self.snapshot[q].clone();
                    insert(&mut s, (r.input + 1, r.output.saturating_sub(1)));
                    peak(&s)
                }
            }
    }
}

/// S-LoRA's peak future KV use of (held, still to come) sorted by the second descending.
fn peak(held: &[(u64, u64)]) -> u64 {
    let (mut cum, mut best) = (0, 0);
    for (i, &(len, rem)) in held.iter().enumerate() {
        cum += len;
        best = best.max(cum + rem * (i as u64 + 1));
    }
    best
}

fn insert(held: &mut Vec<(u64, u64)>, e: (u64, u64)) {
    let at = held.partition_point(|&(_, rem)| rem >= e.1);
    held.insert(at, e);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u32, adapter: u32) -> Held {
        Held {
            id,
            input: 100,
            output: 100,
            adapter,
            adapter_slots: 512,
        }
    }

    #[test]
    fn a_shared_rank_128_adapter_is_charged_once_per_queue() {
        // Two requests on one rank-128 adapter (512 slots) in queue 0.
        let mut paper = Book::new(Charge::Request, Ledger::Lifetime, 1);
        let mut once = Book::new(Charge::Queue, Ledger::Lifetime, 1);
        let mut free = Book::new(Charge::None, Ledger::Lifetime, 1);
        for b in [&mut paper, &mut once, &mut free] {
            b.add(0, &req(1, 7));
            b.add(0, &req(2, 7));
        }
        assert_eq!(paper.used(0), 2 * (200 + 512));
        assert_eq!(once.used(0), 2 * 200 + 512);
        assert_eq!(free.used(0), 2 * 200);
        // A third user of the same adapter adds its tokens only, unless charged per request.
        assert_eq!(once.used_with(0, &req(3, 7)), 3 * 200 + 512);
        assert_eq!(paper.used_with(0, &req(3, 7)), 3 * (200 + 512));
        // The adapter stays charged until its last user leaves.
        once.remove(0, &req(1, 7));
        assert_eq!(once.used(0), 200 + 512);
        once.remove(0, &req(2, 7));
        assert_eq!(once.used(0), 0);
    }

    #[test]
    fn the_peak_ledger_admits_what_the_lifetime_ledger_refuses() {
        // Queue 0 holds two requests of 100 + 400 tokens, each 380 tokens into its output (20 to go):
        // a lifetime ledger counts 1000 slots; S-LoRA's peak rule counts 2 x 480 held + 2 x 20 to come.
        let mut life = Book::new(Charge::None, Ledger::Lifetime, 1);
        let mut peak = Book::new(Charge::None, Ledger::Peak, 1);
        let r = |id| Held {
            id,
            input: 100,
            output: 400,
            adapter: 0,
            adapter_slots: 0,
        };
        for b in [&mut life, &mut peak] {
            b.add(0, &r(1));
            b.add(0, &r(2));
        }
        peak.set_progress([(0, 480, 20), (0, 480, 20)].into_iter());
        assert_eq!(life.used(0), 1000);
        assert_eq!(peak.used(0), 960 + 2 * 20);
        // A newcomer of 100 + 200 under a quota of 1,300: the lifetime ledger says 1,300 + 0 ... refuses at
        // 1,299; the peak rule: sorted by still to come (199, 20, 20): 101 + 199 = 300, 581 + 40 = 621,
        // 1061 + 60 = 1121.
        let new = Held {
            id: 3,
            input: 100,
            output: 200,
            adapter: 0,
            adapter_slots: 0,
        };
        assert_eq!(life.used_with(0, &new), 1300);
        assert_eq!(peak.used_with(0, &new), 1121);
        let quota = 1299;
        assert!(life.used_with(0, &new) > quota && peak.used_with(0, &new) <= quota);
    }
}
