//! What a model will take from the memory budget, estimated before it is loaded from
//! what is cheap to read: file sizes, the GGUF header (widths, vocabulary) and an
//! encoder's `config.json`.
//!
//! Invariant: estimates only read headers and sizes; no weights are read here.

use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;

use crate::model::encoder::config::EncoderConfig;
use crate::registry::memory::MemoryUse;

/// Widths an LLM's activations scale with, from its GGUF header.
#[derive(Debug, Clone, Copy)]
struct LlmShape {
    n_embd: usize,
    n_ff: usize,
    vocab: usize,
}

fn llm_shape(path: &Path) -> Result<LlmShape> {
    let mut file = std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    );
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("reading the GGUF header of {}", path.display()))?;
    let md = &content.metadata;
    let arch = md
        .get("general.architecture")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_else(|| "llama".into());
    let num = |key: &str| -> usize {
        md.get(&format!("{arch}.{key}"))
            .and_then(|v| v.to_u64().ok().or_else(|| v.to_u32().ok().map(u64::from)))
            .unwrap_or(0) as usize
    };
    let vocab = md
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.to_vec().ok())
        .map_or(0, Vec::len);
    Ok(LlmShape {
        n_embd: num("embedding_length"),
        n_ff: num("feed_forward_length"),
        vocab,
    })
}

/// An LLM's use: its file as weights, the activations of a step of `max_rows` tokens
/// with `max_logit_rows` rows of logits, and `kv` bytes of KV cache.
pub fn llm(path: &Path, max_rows: usize, max_logit_rows: usize, kv: usize) -> Result<MemoryUse> {
    let weights = std::fs::metadata(path)
        .with_context(|| format!("reading {}", path.display()))?
        .len();
    let s = llm_shape(path)?;
    // Per row: the residual, normed input, q/k/v/attention output (~6 widths) and the
    // gate/up/down of the FFN (~3 FFN widths), in f32; plus the logits rows.
    let per_row = 6 * s.n_embd + 3 * s.n_ff;
    let activations = 4 * (max_rows * per_row + max_logit_rows * s.vocab);
    Ok(MemoryUse {
        weights,
        activations: activations as u64,
        kv: kv as u64,
    })
}

/// An encoder folder's use: its safetensors as weights (an upper bound when the
/// linear layers are quantized at load) and the activations of its largest batch.
pub fn encoder(dir: &Path, batch_tokens: usize) -> Result<MemoryUse> {
    let weights_path = dir.join("model.safetensors");
    let weights = std::fs::metadata(&weights_path)
        .with_context(|| format!("reading {}", weights_path.display()))?
        .len();
    let cfg = EncoderConfig::from_dir(dir)?;
    Ok(MemoryUse {
        weights,
        activations: cfg.activation_bytes(batch_tokens.max(cfg.max_len)) as u64,
        kv: 0,
    })
}
