//! Turning one row of logits into the next token: logit bias, penalties, temperature, top-k,
//! top-p, min-p, a per-sequence seeded RNG, and log-probabilities.
//!
//! Invariants: temperature 0 is argmax (lowest id wins ties) and draws no randomness;
//! the same seed and the same logits give the same token; logprobs are taken from the
//! penalised, temperature-scaled distribution before truncation (as OpenAI reports).

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::types::SamplingParams;

/// Per-sequence sampling state.
pub struct SamplerState {
    rng: ChaCha8Rng,
    /// How often each token was generated so far (for the penalties).
    counts: HashMap<u32, u32>,
}

/// The chosen token and, when asked, log-probabilities.
#[derive(Debug, Clone, PartialEq)]
pub struct Sampled {
    /// Chosen token id.
    pub id: u32,
    /// `(logprob of id, top alternatives best first)` when logprobs were asked for.
    pub logprobs: Option<(f32, Vec<(u32, f32)>)>,
}

impl SamplerState {
    /// State seeded from `seed`, or from the OS when `None`.
    pub fn new(seed: Option<u64>) -> Self {
        let seed = seed.unwrap_or_else(|| rand::rng().next_u64());
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            counts: HashMap::new(),
        }
    }

    /// Records a generated token (feeds presence/frequency penalties).
    pub fn observe(&mut self, id: u32) {
        *self.counts.entry(id).or_default() += 1;
    }

    fn uniform(&mut self) -> f32 {
        ((self.rng.next_u64() >> 40) as f32) / (1u64 << 24) as f32
    }

    /// Picks the next token from `logits` (modified in place).
    pub fn sample(&mut self, logits: &mut [f32], p: &SamplingParams) -> Sampled {
        for &(id, bias) in &p.logit_bias {
            if let Some(l) = logits.get_mut(id as usize) {
                *l += bias;
            }
        }
        self.apply_penalties(logits, p);
        if p.temperature > 0.0 {
            let inv = 1.0 / p.temperature;
            logits.iter_mut().for_each(|l| *l *= inv);
        }
        let logprobs = p.logprobs.map(|k| log_softmax_top(logits, k));
        let id = if p.temperature <= 0.0 {
            argmax(logits)
        } else {
            self.draw(logits, p)
        };
        Sampled {
            id,
            logprobs: logprobs.map(|(lse, top)| (logits[id as usize] - lse, top)),
        }
    }

    fn apply_penalties(&self, logits: &mut [f32], p: &SamplingParams) {
        let rp = p.repetition_penalty;
        if p.presence_penalty == 0.0 && p.frequency_penalty == 0.0 && rp == 1.0 {
            return;
        }
        for (&id, &n) in &self.counts {
            if let Some(l) = logits.get_mut(id as usize) {
                if rp != 1.0 {
                    *l = if *l > 0.0 { *l / rp } else { *l * rp };
                }
                *l -= p.presence_penalty + p.frequency_penalty * n as f32;
            }
        }
    }

    /// Samples from the truncated distribution of temperature-scaled `logits`.
    fn draw(&mut self, logits: &[f32], p: &SamplingParams) -> u32 {
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        // Candidates as (id, unnormalised prob); min-p needs no sort.
        let min_keep = if p.min_p > 0.0 { p.min_p } else { 0.0 };
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, &l)| (i as u32, (l - max).exp()))
            .filter(|&(_, w)| w >= min_keep && w > 0.0)
            .collect();
        if p.top_k > 0 || p.top_p < 1.0 {
            cand.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            if p.top_k > 0 {
                cand.truncate(p.top_k);
            }
            if p.top_p < 1.0 {
                let total: f32 = cand.iter().map(|c| c.1).sum();
                let mut acc = 0.0;
                let mut keep = cand.len();
                for (i, c) in cand.iter().enumerate() {
                    acc += c.1 / total;
                    if acc >= p.top_p {
                        keep = i + 1;
                        break;
                    }
                }
                cand.truncate(keep);
            }
        }
        let total: f32 = cand.iter().map(|c| c.1).sum();
        let mut r = self.uniform() * total;
        for &(id, w) in &cand {
            if r < w {
                return id;
            }
            r -= w;
        }
        cand.last().map_or_else(|| argmax(logits), |c| c.0)
    }
}

/// Index of the largest logit (lowest index on ties; NaN never wins). SIMD where the
/// CPU has it (`device::cpu::rowops::argmax`), same result as a plain scan.
pub fn argmax(logits: &[f32]) -> u32 {
    crate::device::cpu::rowops::argmax(logits) as u32
}

/// `(log-sum-exp, top-k (id, logprob) best first)` of `logits`.
fn log_softmax_top(logits: &[f32], k: usize) -> (f32, Vec<(u32, f32)>) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &l) in logits.iter().enumerate() {
        if top.len() < k || top.last().is_some_and(|t| l > t.1) {
            let at = top.partition_point(|t| t.1 >= l);
            top.insert(at, (i as u32, l));
            top.truncate(k);
        }
    }
    (lse, top.into_iter().map(|(i, l)| (i, l - lse)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> SamplingParams {
        SamplingParams::default()
    }

    #[test]
    fn greedy_takes_argmax_and_reports_logprobs() {
        let mut s = SamplerState::new(Some(1));
        let p = SamplingParams {
            temperature: 0.0,
            logprobs: Some(2),
            ..params()
        };
        let mut l = vec![0.0, 2.0, 1.0, 2.0];
        let out = s.sample(&mut l, &p);
        assert_eq!(out.id, 1, "lowest id wins ties");
        let (lp, top) = out.logprobs.unwrap();
        let lse = (1.0f32 + 2.0f32.exp() * 2.0 + 1.0f32.exp()).ln();
        assert!((lp - (2.0 - lse)).abs() < 1e-5);
        assert_eq!(top.iter().map(|t| t.0).collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn same_seed_same_tokens() {
        let p = params();
        let logits: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let run = |seed| {
            let mut s = SamplerState::new(Some(seed));
            (0..20)
                .map(|_| s.sample(&mut logits.clone(), &p).id)
                .collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn top_k_and_top_p_and_min_p_truncate() {
        let logits = vec![5.0, 4.9, 0.0, -1.0];
        let mut s = SamplerState::new(Some(3));
        let k1 = SamplingParams {
            top_k: 1,
            ..params()
        };
        let p_small = SamplingParams {
            top_p: 0.1,
            ..params()
        };
        let min_p = SamplingParams {
            min_p: 0.5,
            ..params()
        };
        for _ in 0..50 {
            assert_eq!(s.sample(&mut logits.clone(), &k1).id, 0);
            assert_eq!(s.sample(&mut logits.clone(), &p_small).id, 0);
            assert!(s.sample(&mut logits.clone(), &min_p).id <= 1);
        }
    }

    #[test]
    fn penalties_push_repeated_tokens_down() {
        let mut s = SamplerState::new(Some(1));
        s.observe(0);
        s.observe(0);
        let p = SamplingParams {
            temperature: 0.0,
            frequency_penalty: 1.0,
            ..params()
        };
        assert_eq!(s.sample(&mut [1.0, 0.5], &p).id, 1);
        let p = SamplingParams {
            temperature: 0.0,
            presence_penalty: 0.4,
            ..params()
        };
        assert_eq!(s.sample(&mut [1.0, 0.5], &p).id, 0);
        // Repetition penalty 2.5: 1.0 / 2.5 = 0.4 < 0.5 (positive logits are divided,
        // negative ones multiplied, so a seen token always loses ground).
        let p = SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.5,
            ..params()
        };
        assert_eq!(s.sample(&mut [1.0, 0.5], &p).id, 1);
        assert_eq!(s.sample(&mut [-0.1, -0.2], &p).id, 1);
        assert!(!p.is_plain_greedy());
    }

    #[test]
    fn logit_bias_moves_and_bans_tokens() {
        let mut s = SamplerState::new(Some(1));
        let p = SamplingParams {
            temperature: 0.0,
            logit_bias: vec![(0, -100.0), (2, 5.0)],
            ..params()
        };
        assert!(!p.is_plain_greedy());
        assert_eq!(s.sample(&mut [3.0, 1.0, -1.0], &p).id, 2);
        let hot = SamplingParams {
            temperature: 1.0,
            logit_bias: vec![(0, -100.0)],
            ..params()
        };
        for _ in 0..50 {
            assert_ne!(s.sample(&mut [3.0, 1.0, 1.0], &hot).id, 0);
        }
    }
}
