//! Decode and prefill timing of a decoder on the CPU or a device, without the engine:
//! `n` sequences of `prompt` tokens are prefilled in steps of up to [`PREFILL_CHUNK`]
//! tokens (whole prompts per step), then every sequence decodes one token per step
//! for up to `output` steps. A step includes what the engine's steps include (the
//! batch upload, the greedy ids or logits back to the host); sampling is left out.
//!
//! Invariant: every step waits for its results, so host timers measure device work.

use std::time::Instant;

use anyhow::Result;
use serde::Serialize;

use super::budget::Budget;
use crate::model::device_decoder::{DeviceDecoder, DeviceKvCache};
use crate::model::paged_attention::PagedKvCache;
use crate::model::spec::ModelSpec;
use crate::model::step_batch::{HandSeq, step};
use crate::model::transformer::{BatchInput, CpuModel};

/// Tokens per KV block.
pub const BLOCK: usize = 16;
/// Most tokens per prefill step.
pub const PREFILL_CHUNK: usize = 2048;

/// A decoder to time.
pub enum BenchModel {
    /// Host weights, CPU kernels.
    Cpu(Box<CpuModel>),
    /// Device weights, device kernels.
    Device(Box<DeviceDecoder>),
}

enum Cache {
    Cpu(PagedKvCache),
    Device(DeviceKvCache),
}

impl BenchModel {
    /// The model's description.
    pub fn config(&self) -> &ModelSpec {
        match self {
            Self::Cpu(m) => m.config(),
            Self::Device(m) => m.config(),
        }
    }

    fn cache(&self, blocks: usize) -> Result<Cache> {
        let c = self.config();
        Ok(match self {
            Self::Cpu(_) => Cache::Cpu(PagedKvCache::new(
                c.n_layer,
                blocks,
                BLOCK,
                c.n_kv_head,
                c.head_dim,
            )),
            Self::Device(m) => {
                Cache::Device(DeviceKvCache::new(m.device().as_ref(), c, blocks, BLOCK)?)
            }
        })
    }

    /// One step; greedy ids come back on a device, logits on the CPU.
    fn forward(&mut self, input: &BatchInput, cache: &mut Cache) -> Result<()> {
        match (self, cache) {
            (Self::Cpu(m), Cache::Cpu(c)) => m.forward(input, c).map(drop),
            (Self::Device(m), Cache::Device(c)) => m.forward_argmax(input, c).map(drop),
            _ => anyhow::bail!("cache of another device"),
        }
    }
}

/// One measured configuration.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeResult {
    /// Sequences decoding together.
    pub seqs: usize,
    /// Prompt tokens per sequence.
    pub prompt: usize,
    /// Decode steps asked for.
    pub output: usize,
    /// Decode steps measured (fewer when the budget ran out).
    pub steps: usize,
    /// Prefill of all prompts, seconds.
    pub prefill_s: f64,
    /// Prompt tokens per second in the prefill.
    pub prefill_tok_s: f64,
    /// Median decode step, ms.
    pub step_p50_ms: f64,
    /// 99th percentile decode step, ms.
    pub step_p99_ms: f64,
    /// Output tokens per second over the measured steps.
    pub output_tok_s: f64,
    /// Ideal step at the copy bandwidth (weights + K/V at the mean context), ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roofline_ms: Option<f64>,
    /// `roofline_ms / mean step`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roofline_frac: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn token(p: usize, i: usize, vocab: usize) -> u32 {
    ((p * 7919 + i * 104_729 + 11) % vocab) as u32
}

/// Prefills `n` prompts of `prompt` tokens, then decodes up to `output` steps.
/// `roofline`: (weight bytes, copy bandwidth in bytes/s) for the batch-1 fraction.
pub fn measure(
    model: &mut BenchModel,
    (n, prompt, output): (usize, usize, usize),
    roofline: Option<(usize, f64)>,
    budget: &Budget,
) -> Result<DecodeResult> {
    let cfg = model.config().clone();
    let per_seq = (prompt + output).div_ceil(BLOCK);
    let mut cache = model.cache(n * per_seq)?;
    let total = prompt + output;
    let mut seqs: Vec<HandSeq> = (0..n)
        .map(|i| HandSeq {
            tokens: (0..total).map(|p| token(p, i, cfg.vocab_size)).collect(),
            computed: 0,
            blocks: (0..per_seq as u32)
                .map(|b| (i * per_seq) as u32 + b)
                .collect(),
        })
        .collect();
    let per_step = (PREFILL_CHUNK / prompt.max(1)).max(1);
    let t = Instant::now();
    for first in (0..n).step_by(per_step) {
        let take: Vec<usize> = (0..n)
            .map(|i| {
                if (first..first + per_step).contains(&i) {
                    prompt
                } else {
                    0
                }
            })
            .collect();
        // Tokens past the prompt are known in advance: ask for no logits yet.
        let mut input = step(&seqs, &take, BLOCK)?;
        input.logits_rows = input.spans.iter().map(|s| s.offset + s.len - 1).collect();
        model.forward(&input, &mut cache)?;
        for (s, &k) in seqs.iter_mut().zip(&take) {
            s.computed += k;
        }
    }
    let prefill_s = t.elapsed().as_secs_f64();
    let mut steps = Vec::with_capacity(output);
    for _ in 0..output {
        if budget.over() && steps.len() >= 8 {
            break;
        }
        let mut input = step(&seqs, &vec![1; n], BLOCK)?;
        input.logits_rows = (0..n).collect();
        let t = Instant::now();
        model.forward(&input, &mut cache)?;
        steps.push(t.elapsed().as_secs_f64());
        for s in &mut seqs {
            s.computed += 1;
        }
    }
    let sum: f64 = steps.iter().sum();
    let mean = sum / steps.len().max(1) as f64;
    let mut sorted = steps.clone();
    sorted.sort_by(f64::total_cmp);
    let (roofline_ms, roofline_frac) = match roofline {
        Some((weight_bytes, bw)) if n == 1 && !steps.is_empty() => {
            let ctx = prompt + steps.len() / 2;
            let kv_bytes = cfg.n_layer * ctx * cfg.n_kv_head * cfg.head_dim * 2 * 2;
            let ideal = (weight_bytes + kv_bytes) as f64 / bw;
            (Some(ideal * 1e3), Some(ideal / mean))
        }
        _ => (None, None),
    };
    Ok(DecodeResult {
        seqs: n,
        prompt,
        output,
        steps: steps.len(),
        prefill_s,
        prefill_tok_s: (n * prompt) as f64 / prefill_s,
        step_p50_ms: percentile(&sorted, 0.5) * 1e3,
        step_p99_ms: percentile(&sorted, 0.99) * 1e3,
        output_tok_s: (n * steps.len()) as f64 / sum.max(f64::MIN_POSITIVE),
        roofline_ms,
        roofline_frac,
    })
}
