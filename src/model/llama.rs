//! The llama-family decoder (llama, mistral, SmolLM2, …) loaded from GGUF, with one
//! batched forward per engine step over a flat batch of tokens from many sequences.
//!
//! Every weight matmul runs once per step on all `T` tokens of the batch (`[T, k] x
//! [k, n]`); only attention is per sequence, reading K/V through block tables. Each
//! row's result depends on that row alone, which keeps outputs batch-invariant.

use std::collections::HashMap;
use std::io::{Read, Seek};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::quantized::{QMatMul, QTensor, gguf_file};
use candle_core::{Device, Module, Tensor};

use super::ops::{RopeTable, rms_norm, silu_mul};
use super::paged_attention::{HeadShape, PagedKvCache, SeqSpan};
use super::tokenizer::Meta;
use crate::device::cpu::{CpuQMatrix, QKind};

/// Hyper-parameters read from GGUF metadata.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Decoder layers.
    pub n_layer: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// K/V heads.
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Rotary base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Trained context length.
    pub context_length: usize,
    /// Vocabulary size (rows of the output projection).
    pub vocab_size: usize,
}

impl LlamaConfig {
    /// Reads the `llama.*` keys (the architecture named in `general.architecture`).
    pub fn from_gguf(metadata: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let meta = Meta(metadata);
        let arch = meta.str_opt("general.architecture").unwrap_or("llama");
        if !matches!(arch, "llama" | "mistral") {
            bail!("unsupported architecture `{arch}` (supported: llama, mistral)");
        }
        let u =
            |k: &str| -> Result<usize> { Ok(meta.get(&format!("{arch}.{k}"))?.to_u32()? as usize) };
        let f = |k: &str, default: f32| -> f32 {
            metadata
                .get(&format!("{arch}.{k}"))
                .and_then(|v| v.to_f32().ok())
                .unwrap_or(default)
        };
        let n_embd = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_kv_head = u("attention.head_count_kv").unwrap_or(n_head);
        if n_head == 0 || n_kv_head == 0 || n_head % n_kv_head != 0 || n_embd % n_head != 0 {
            bail!("invalid head counts: {n_head} heads, {n_kv_head} kv heads, width {n_embd}");
        }
        let vocab_size = metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(Vec::len)
            .or_else(|| u("vocab_size").ok())
            .context("GGUF metadata has neither tokenizer.ggml.tokens nor vocab_size")?;
        Ok(Self {
            n_layer: u("block_count")?,
            n_embd,
            n_ff: u("feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim: n_embd / n_head,
            rope_theta: f("rope.freq_base", 10_000.0),
            rms_eps: f("attention.layer_norm_rms_epsilon", 1e-5),
            context_length: u("context_length").unwrap_or(2048),
            vocab_size,
        })
    }

    fn heads(&self) -> HeadShape {
        HeadShape {
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            head_dim: self.head_dim,
        }
    }
}

struct Layer {
    attn_norm: Vec<f32>,
    wq: Linear,
    wk: Linear,
    wv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    w_gate: Linear,
    w_up: Linear,
    w_down: Linear,
}

/// A weight matmul: our batched CPU kernel for Q4_1 / Q8_0, candle's for the rest.
enum Linear {
    Ours(CpuQMatrix),
    Candle(QMatMul),
}

impl Linear {
    fn from_arc(t: Arc<QTensor>) -> Result<Self> {
        if QKind::from_ggml(t.dtype()).is_some() && t.shape().rank() == 2 {
            Ok(Linear::Ours(CpuQMatrix::from_qtensor(&t)?))
        } else {
            Ok(Linear::Candle(QMatMul::from_arc(t)?))
        }
    }

    /// `x · Wᵀ` for `m` rows of `x`, as `[m, n]`.
    fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Linear::Ours(w) => Ok(w.matmul(x, m)),
            Linear::Candle(w) => {
                let x = Tensor::from_slice(x, (m, x.len() / m.max(1)), &Device::Cpu)?;
                Ok(w.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// A flat batch: the tokens one step computes, from any number of sequences.
#[derive(Debug, Clone, Default)]
pub struct BatchInput {
    /// Token ids, `T` of them.
    pub tokens: Vec<u32>,
    /// Position of each token in its sequence.
    pub positions: Vec<usize>,
    /// Cache slot where each token's K/V is written.
    pub slots: Vec<usize>,
    /// The sequences, in row order.
    pub spans: Vec<SeqSpan>,
    /// Rows whose logits are wanted (each sampling sequence's last row).
    pub logits_rows: Vec<usize>,
}

/// A loaded llama-family model.
pub struct Llama {
    cfg: LlamaConfig,
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: Vec<f32>,
    output: Linear,
    rope: RopeTable,
}

fn load_f32(ct: &gguf_file::Content, r: &mut (impl Read + Seek), name: &str) -> Result<Vec<f32>> {
    let t = ct
        .tensor(r, name, &Device::Cpu)
        .with_context(|| format!("loading {name}"))?;
    Ok(t.dequantize(&Device::Cpu)?
        .flatten_all()?
        .to_vec1::<f32>()?)
}

fn load_mm(ct: &gguf_file::Content, r: &mut (impl Read + Seek), name: &str) -> Result<Linear> {
    let t = ct
        .tensor(r, name, &Device::Cpu)
        .with_context(|| format!("loading {name}"))?;
    Linear::from_arc(Arc::new(t))
}

impl Llama {
    /// Loads the weights described by `ct` from `r`.
    pub fn load(ct: &gguf_file::Content, r: &mut (impl Read + Seek)) -> Result<Self> {
        let cfg = LlamaConfig::from_gguf(&ct.metadata)?;
        let embed = Arc::new(
            ct.tensor(r, "token_embd.weight", &Device::Cpu)
                .context("loading token_embd.weight")?,
        );
        // Tied embeddings share one copy of the table with the output projection.
        let output = if ct.tensor_infos.contains_key("output.weight") {
            load_mm(ct, r, "output.weight")?
        } else {
            Linear::from_arc(embed.clone())?
        };
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for i in 0..cfg.n_layer {
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            layers.push(Layer {
                attn_norm: load_f32(ct, r, &p("attn_norm"))?,
                wq: load_mm(ct, r, &p("attn_q"))?,
                wk: load_mm(ct, r, &p("attn_k"))?,
                wv: load_mm(ct, r, &p("attn_v"))?,
                wo: load_mm(ct, r, &p("attn_output"))?,
                ffn_norm: load_f32(ct, r, &p("ffn_norm"))?,
                w_gate: load_mm(ct, r, &p("ffn_gate"))?,
                w_up: load_mm(ct, r, &p("ffn_up"))?,
                w_down: load_mm(ct, r, &p("ffn_down"))?,
            });
        }
        let rope = RopeTable::new(cfg.head_dim, cfg.context_length, cfg.rope_theta);
        Ok(Self {
            norm: load_f32(ct, r, "output_norm.weight")?,
            cfg,
            embed,
            layers,
            output,
            rope,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    /// Runs one step: writes the batch's K/V into `cache` and returns the logits of
    /// `input.logits_rows`, one `vocab_size` row each.
    pub fn forward(&self, input: &BatchInput, cache: &mut PagedKvCache) -> Result<Vec<Vec<f32>>> {
        let t = input.tokens.len();
        let cfg = &self.cfg;
        if t == 0 {
            return Ok(Vec::new());
        }
        if let Some(&p) = input
            .positions
            .iter()
            .find(|&&p| p >= self.rope.max_positions())
        {
            bail!(
                "position {p} is beyond the model's context length {}",
                cfg.context_length
            );
        }
        let ids = Tensor::from_slice(&input.tokens, t, &Device::Cpu)?;
        let mut x = self
            .embed
            .embedding(&ids)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let (d, qw, kw) = (
            cfg.n_embd,
            cfg.n_head * cfg.head_dim,
            cfg.n_kv_head * cfg.head_dim,
        );
        let mut attn = vec![0f32; t * qw];
        for (li, layer) in self.layers.iter().enumerate() {
            let h = rms_norm(&x, &layer.attn_norm, cfg.rms_eps);
            let mut q = layer.wq.forward(&h, t)?;
            let mut k = layer.wk.forward(&h, t)?;
            let v = layer.wv.forward(&h, t)?;
            self.rope.apply(&mut q, &input.positions, cfg.n_head);
            self.rope.apply(&mut k, &input.positions, cfg.n_kv_head);
            debug_assert_eq!(k.len(), t * kw);
            cache.write(li, &input.slots, &k, &v);
            cache.attend(li, cfg.heads(), &input.spans, &q, &mut attn);
            add_in_place(&mut x, &layer.wo.forward(&attn, t)?);
            let h = rms_norm(&x, &layer.ffn_norm, cfg.rms_eps);
            let g = layer.w_gate.forward(&h, t)?;
            let u = layer.w_up.forward(&h, t)?;
            add_in_place(&mut x, &layer.w_down.forward(&silu_mul(&g, &u), t)?);
        }
        let r = input.logits_rows.len();
        if r == 0 {
            return Ok(Vec::new());
        }
        let mut last = Vec::with_capacity(r * d);
        for &row in &input.logits_rows {
            last.extend_from_slice(&x[row * d..(row + 1) * d]);
        }
        let logits = self
            .output
            .forward(&rms_norm(&last, &self.norm, cfg.rms_eps), r)?;
        Ok(logits.chunks(cfg.vocab_size).map(<[f32]>::to_vec).collect())
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
