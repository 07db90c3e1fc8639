//! What `calibrate` measures: the grid of points per table, cut to what fits in GPU memory. Pure data, so the
//! grid logic is tested without a GPU.

use sim::cost::LoadMethod;

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
    pub warmup: u32,
    pub repeats: u32,
    /// Points dropped because they do not fit, for the profile's notes.
    pub skipped: Vec<String>,
}

/// Largest prefill batch measured (tokens), which sizes the activation buffers.
pub const MAX_TOKENS: u64 = 8192;

const PAPER_RANKS: [u32; 5] = [8, 16, 32, 64, 128];

impl Plan {
    /// The grid; `kv_tokens` is how many KV-cache token slots fit in the memory left for the cache.
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
        self.decode.retain(|&(b, c)| {
            let ok = b * c <= kv_tokens;
            if !ok {
                skipped.push(format!("decode batch {b} x context {c}"));
            }
            ok
        });
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

/// Tokens of each adapter when `tokens` are split as evenly as possible over `adapters` (first ones get the
/// remainder), grouped so each adapter's tokens are adjacent.
pub fn split_tokens(tokens: u64, adapters: usize) -> Vec<i32> {
    let n = adapters.max(1) as u64;
    (0..adapters)
        .flat_map(|a| {
            let count = tokens / n + u64::from((a as u64) < tokens % n);
            std::iter::repeat_n(a as i32, count as usize)
        })
        .collect()
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

    #[test]
    fn tokens_split_evenly_and_grouped() {
        assert_eq!(split_tokens(5, 2), vec![0, 0, 0, 1, 1]);
        assert_eq!(split_tokens(4, 4), vec![0, 1, 2, 3]);
        assert_eq!(split_tokens(1, 1), vec![0]);
        assert_eq!(split_tokens(1024, 5).len(), 1024);
    }
}
