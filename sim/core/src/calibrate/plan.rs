//! What a calibration measures: the grid of points per profile table. `Plan::new` is `calibrate`'s grid for
//! a GPU at full model size, cut to what fits in memory; `Plan::for_run` is `sim fidelity`'s, spanning the
//! shapes one run can produce. Pure data, so the grid logic is tested without a backend.

use crate::cost::LoadMethod;
use crate::run::RunConfig;

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// (tokens, sequences): sequences of tokens/sequences tokens each.
    pub prefill: Vec<(u64, u64)>,
    /// (batch, context per sequence).
    pub decode: Vec<(u64, u64)>,
    /// (tokens, ranks of the distinct adapters; tokens split evenly among them).
    pub lora: Vec<(u64, Vec<u32>)>,
    /// (adapter rank, copy method, alongside compute).
    pub loads: Vec<(u32, LoadMethod, bool)>,
    /// Rounds run before the measured ones, discarded.
    pub warmup: u32,
    /// Measured rounds: each point's value is the median of its repeats.
    pub repeats: u32,
    /// Points dropped because they do not fit, for the profile's notes.
    pub skipped: Vec<String>,
}

/// Largest prefill batch measured (tokens), which sizes the activation buffers.
pub const MAX_TOKENS: u64 = 8192;

const PAPER_RANKS: [u32; 5] = [8, 16, 32, 64, 128];

fn geometric(from: u64, to: u64, factor: u64) -> Vec<u64> {
    let mut v = Vec::new();
    let mut x = from.max(1);
    while x < to {
        v.push(x);
        x *= factor;
    }
    v.push(to.max(1));
    v.dedup();
    v
}

impl Plan {
    /// `calibrate`'s grid for a GPU at full model size; `kv_tokens` is how many KV-cache token slots fit in the memory left for the cache.
    pub fn new(quick: bool, kv_tokens: u64) -> Plan {
        let (single, multi_tokens, multi_seqs): (&[u64], &[u64], &[u64]) = if quick {
            (&[16, 128, 512, 2048, 8192], &[2048, 8192], &[4, 32])
        } else {
            (
                &[
                    1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
                    6144, 8192,
                ],
                &[512, 1024, 2048, 4096, 8192],
                &[2, 4, 8, 16, 32, 64],
            )
        };
        let mut prefill: Vec<(u64, u64)> = single.iter().map(|&t| (t, 1)).collect();
        for &t in multi_tokens {
            prefill.extend(
                multi_seqs
                    .iter()
                    .filter(|&&s| t % s == 0 && t / s >= 16)
                    .map(|&s| (t, s)),
            );
        }
        let (batches, contexts): (&[u64], &[u64]) = if quick {
            (&[1, 8, 32, 128, 256], &[256, 1024, 4096])
        } else {
            (
                &[1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256],
                &[128, 256, 512, 1024, 2048, 4096],
            )
        };
        let decode = batches
            .iter()
            .flat_map(|&b| contexts.iter().map(move |&c| (b, c)))
            .collect();

        let mut mixes: Vec<Vec<u32>> = vec![vec![8], vec![128], PAPER_RANKS.to_vec(), vec![64, 64]];
        let lora_tokens: &[u64] = if quick {
            &[1, 64, 1024]
        } else {
            mixes.extend([
                vec![16],
                vec![32],
                vec![64],
                vec![8; 8],
                vec![128; 4],
                PAPER_RANKS.repeat(4),
                vec![16; 32],
            ]);
            &[1, 4, 16, 64, 256, 1024, 4096]
        };
        let lora = lora_tokens
            .iter()
            .flat_map(|&t| {
                mixes
                    .iter()
                    .filter(move |m| m.len() as u64 <= t.max(1))
                    .map(move |m| (t, m.clone()))
            })
            .collect::<Vec<_>>();
        // A single token cannot be split over several adapters; keep the one-token points of single adapters.
        let load_ranks: &[u32] = if quick { &[8, 32, 128] } else { &PAPER_RANKS };
        let loads = load_ranks
            .iter()
            .flat_map(|&r| {
                LoadMethod::ALL
                    .into_iter()
                    .flat_map(move |m| [(r, m, false), (r, m, true)])
            })
            .collect();
        let mut p = Plan {
            prefill,
            decode,
            lora,
            loads,
            warmup: if quick { 1 } else { 3 },
            repeats: if quick { 3 } else { 10 },
            skipped: Vec::new(),
        };
        p.fit_kv(kv_tokens);
        p
    }

    /// A grid covering the shapes a run of `args` on `trace` can produce: prompts up to the longest merge the
    /// trace is likely to make, decode batches up to the number of requests, contexts up to the longest
    /// request, the run's adapter ranks.
    pub fn for_run(cfg: &RunConfig, rows: &[(u32, u32)], repeats: u32) -> Plan {
        let max_in = rows.iter().map(|r| r.0 as u64).max().unwrap_or(16);
        let max_len = rows.iter().map(|r| (r.0 + r.1) as u64).max().unwrap_or(32);
        let n = rows.len().max(1) as u64;
        let prefill_top = (2 * max_in).min(cfg.engine.max_prefill_tokens).max(16);
        let mut prefill: Vec<(u64, u64)> = geometric(4, prefill_top, 4)
            .into_iter()
            .map(|t| (t, 1))
            .collect();
        for seqs in [4, 16] {
            if prefill_top >= seqs {
                prefill.push((prefill_top, seqs));
            }
        }
        let batch_top = n.min(cfg.engine.max_batch as u64).max(1);
        let mut decode = Vec::new();
        for b in geometric(1, batch_top, 4) {
            for c in [16.min(max_len), max_len] {
                decode.push((b, c.max(1)));
            }
        }
        decode.dedup();
        let mut ranks = cfg.adapters.ranks.clone();
        ranks.sort_unstable();
        ranks.dedup();
        ranks.retain(|&r| r > 0);
        if ranks.is_empty() || cfg.adapters.count == 0 {
            ranks = vec![8, 64];
        }
        let (lo, hi) = (ranks[0], *ranks.last().unwrap());
        // Decode-sized points (2 to 32 tokens) only: the profile's LoRA fit is an unweighted least-squares
        // line, so long-prefill points (hundreds of ms, with ms of noise) would set its intercept and swamp
        // every decode step (about a millisecond on the CPU); LoRA work is linear in tokens x rank, so longer
        // prefills extrapolate along the line.
        let mut lora = Vec::new();
        let mut sizes = vec![2, 8, 32.min(prefill_top)];
        sizes.sort_unstable();
        sizes.dedup();
        for t in sizes {
            lora.push((t, vec![lo]));
            lora.push((t, vec![hi]));
            if ranks.len() > 1 && t >= ranks.len() as u64 {
                lora.push((t, ranks.clone()));
            }
        }
        let mut load_ranks = ranks.clone();
        if load_ranks.len() < 2 {
            load_ranks.push(2 * lo);
        }
        Plan {
            prefill,
            decode,
            lora,
            loads: load_ranks
                .into_iter()
                .map(|r| (r, LoadMethod::PerLayerPinned, false))
                .collect(),
            warmup: 0,
            repeats: repeats.max(1),
            skipped: Vec::new(),
        }
    }

    /// Rounds the loop runs: warm-up, then measured.
    pub fn rounds(&self) -> u32 {
        self.warmup + self.repeats.max(1)
    }

    /// KV token slots a decode point holds while measured: its context, one token per round, and a page
    /// of slack per sequence for partly filled last pages.
    pub fn decode_need(&self, batch: u64, context: u64) -> u64 {
        decode_need(batch, context, self.rounds())
    }

    /// The LoRA points' adapters: each distinct adapter's rank, and per point the distinct adapters it
    /// uses, in its mix's order. The j-th adapter of rank r in a mix is the same adapter in every point
    /// (only its rank matters to the cost), so a calibration holds one set resident, not one per point.
    pub fn lora_adapters(&self) -> (Vec<u32>, Vec<Vec<usize>>) {
        let mut distinct: Vec<(u32, usize)> = Vec::new();
        let points = self
            .lora
            .iter()
            .map(|(_, ranks)| {
                ranks
                    .iter()
                    .enumerate()
                    .map(|(i, &r)| {
                        let key = (r, ranks[..i].iter().filter(|&&x| x == r).count());
                        distinct.iter().position(|&d| d == key).unwrap_or_else(|| {
                            distinct.push(key);
                            distinct.len() - 1
                        })
                    })
                    .collect()
            })
            .collect();
        (distinct.into_iter().map(|d| d.0).collect(), points)
    }

    /// Sum of the ranks of the LoRA adapters a calibration holds at once: sizes the adapter store.
    pub fn lora_rank_total(&self) -> u64 {
        self.lora_adapters().0.iter().map(|&r| r as u64).sum()
    }

    /// The distinct ranks of the load points, in order.
    pub fn load_ranks(&self) -> Vec<u32> {
        let mut v: Vec<u32> = Vec::new();
        for &(r, _, _) in &self.loads {
            if !v.contains(&r) {
                v.push(r);
            }
        }
        v
    }

    /// Drops points whose KV cache would not fit (a prefill writes its tokens, a decode reads batch x context).
    fn fit_kv(&mut self, kv_tokens: u64) {
        let mut skipped = Vec::new();
        self.prefill.retain(|&(t, s)| {
            let ok = t <= kv_tokens;
            if !ok {
                skipped.push(format!("prefill {t} tokens/{s} seqs"));
            }
            ok
        });
        let rounds = self.rounds();
        let need = |b, c| decode_need(b, c, rounds);
        let mut decode = std::mem::take(&mut self.decode);
        decode.retain(|&(b, c)| {
            let ok = need(b, c) <= kv_tokens;
            if !ok {
                skipped.push(format!("decode batch {b} x context {c}"));
            }
            ok
        });
        self.decode = decode;
        self.skipped.extend(skipped);
    }

    /// Largest sum of ranks in one LoRA point: sizes the adapter pool.
    pub fn max_rank_sum(&self) -> u64 {
        self.lora
            .iter()
            .map(|(_, r)| r.iter().map(|&x| x as u64).sum())
            .max()
            .unwrap_or(0)
    }

    pub fn max_load_rank(&self) -> u32 {
        self.loads.iter().map(|l| l.0).max().unwrap_or(0)
    }

    /// Largest number of sequences in one iteration (rows of the LM head).
    pub fn max_seqs(&self) -> u64 {
        let p = self.prefill.iter().map(|x| x.1);
        p.chain(self.decode.iter().map(|x| x.0)).max().unwrap_or(1)
    }

    pub fn points(&self) -> u64 {
        (self.prefill.len() + self.decode.len() + self.lora.len() + self.loads.len()) as u64
    }

    /// Whether what is left still gives the simulator a usable profile.
    pub fn usable(&self) -> Result<(), String> {
        if self.prefill.iter().filter(|p| p.1 == 1).count() < 2 {
            return Err("fewer than two single-sequence prefill points fit in GPU memory".into());
        }
        if self.decode.is_empty() {
            return Err("no decode point fits in GPU memory".into());
        }
        Ok(())
    }
}

fn decode_need(batch: u64, context: u64, rounds: u32) -> u64 {
    batch * (context + rounds as u64 + 1 + 16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_plan_is_small_and_complete() {
        let p = Plan::new(true, u64::MAX);
        assert!(p.points() < 80, "{}", p.points());
        assert!(p.skipped.is_empty());
        assert!(p.usable().is_ok());
        assert!(
            p.prefill
                .iter()
                .all(|&(t, s)| t % s == 0 && t <= MAX_TOKENS)
        );
        assert!(p.prefill.contains(&(8192, 32)));
        // The LoRA fit needs both token x rank and distinct-rank variety.
        assert!(p.lora.contains(&(1024, vec![8, 16, 32, 64, 128])));
        assert!(p.lora.iter().all(|(t, r)| r.len() as u64 <= *t));
        // Every load method gets at least two sizes, so each has its own fit.
        for m in LoadMethod::ALL {
            assert!(p.loads.iter().filter(|l| l.1 == m && !l.2).count() >= 2);
        }
        assert_eq!(p.max_rank_sum(), 248);
        assert_eq!(p.max_load_rank(), 128);
    }

    #[test]
    fn lora_points_share_one_adapter_per_rank_and_occurrence() {
        let p = Plan::new(true, u64::MAX);
        // [64, 64] and the paper's ranks share their first rank-64 adapter.
        let (ranks, points) = p.lora_adapters();
        assert_eq!(ranks, vec![8, 128, 16, 32, 64, 64]);
        assert_eq!(p.lora_rank_total(), 312);
        let mixed = p.lora.iter().position(|l| l.1 == vec![64, 64]).unwrap();
        assert_eq!(points[mixed], vec![4, 5]);
    }

    #[test]
    fn full_plan_covers_the_issue_ranges() {
        let p = Plan::new(false, u64::MAX);
        assert_eq!(p.prefill.iter().map(|x| x.0).min(), Some(1));
        assert_eq!(p.prefill.iter().map(|x| x.0).max(), Some(8192));
        assert_eq!(p.decode.iter().map(|x| x.0).max(), Some(256));
        assert_eq!(p.max_seqs(), 256);
        assert!(p.lora.iter().any(|(_, r)| r.len() == 32));
        assert!(p.repeats > Plan::new(true, u64::MAX).repeats);
    }

    #[test]
    fn points_beyond_the_kv_cache_are_skipped_and_named() {
        // Llama-7B with ~20 GB for the cache: 40k token slots.
        let p = Plan::new(true, 40_000);
        assert!(p.decode.iter().all(|&(b, c)| b * c <= 40_000));
        assert!(
            p.skipped
                .iter()
                .any(|s| s == "decode batch 256 x context 4096")
        );
        assert!(p.usable().is_ok());
        let tiny = Plan::new(true, 100);
        assert!(tiny.usable().unwrap_err().contains("prefill"));
    }
}
