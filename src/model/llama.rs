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
use candle_core::quantized::{QTensor, gguf_file};
use candle_core::{Device, Tensor};

mod linear;
mod profile;

use linear::{Linear, Projections};
use profile::Laps;
pub use profile::{Phase, StepProfile};

use super::ops::{RopeTable, rms_norm, silu_gate_up};
use super::paged_attention::{HeadShape, PagedKvCache, SeqSpan, Strided};
use super::tokenizer::Meta;

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
    /// Q, K and V.
    qkv: Projections,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// FFN gate and up.
    gate_up: Projections,
    w_down: Linear,
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

fn load_q(ct: &gguf_file::Content, r: &mut (impl Read + Seek), name: &str) -> Result<QTensor> {
    ct.tensor(r, name, &Device::Cpu)
        .with_context(|| format!("loading {name}"))
}

fn load_mm(ct: &gguf_file::Content, r: &mut (impl Read + Seek), name: &str) -> Result<Linear> {
    Linear::from_arc(Arc::new(load_q(ct, r, name)?))
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
                qkv: Projections::new(vec![
                    load_q(ct, r, &p("attn_q"))?,
                    load_q(ct, r, &p("attn_k"))?,
                    load_q(ct, r, &p("attn_v"))?,
                ])?,
                wo: load_mm(ct, r, &p("attn_output"))?,
                ffn_norm: load_f32(ct, r, &p("ffn_norm"))?,
                gate_up: Projections::new(vec![
                    load_q(ct, r, &p("ffn_gate"))?,
                    load_q(ct, r, &p("ffn_up"))?,
                ])?,
                w_down: load_mm(ct, r, &p("ffn_down"))?,
            });
            let l = &layers[i];
            let (qw, kw) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
            if l.qkv.widths() != [qw, kw, kw] || l.gate_up.widths() != [cfg.n_ff, cfg.n_ff] {
                bail!(
                    "layer {i}: projection widths {:?} / {:?} do not match the metadata \
                     ({qw}, {kw}, {kw} / {ff}, {ff})",
                    l.qkv.widths(),
                    l.gate_up.widths(),
                    ff = cfg.n_ff
                );
            }
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
        self.forward_profiled(input, cache, None)
    }

    /// [`Self::forward`], adding the wall-clock time of each phase to `profile` when one
    /// is given (without one, no clock is read).
    ///
    /// The whole step runs on a rayon worker: its parallel regions (one per matmul and
    /// attention, hundreds per step) then fork from inside the pool, instead of this
    /// thread handing each one over and sleeping until it is done.
    pub fn forward_profiled(
        &self,
        input: &BatchInput,
        cache: &mut PagedKvCache,
        profile: Option<&mut StepProfile>,
    ) -> Result<Vec<Vec<f32>>> {
        rayon::scope(|_| self.step(input, cache, profile))
    }

    fn step(
        &self,
        input: &BatchInput,
        cache: &mut PagedKvCache,
        profile: Option<&mut StepProfile>,
    ) -> Result<Vec<Vec<f32>>> {
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
        let mut laps = Laps::new(profile);
        let ids = Tensor::from_slice(&input.tokens, t, &Device::Cpu)?;
        let mut x = self
            .embed
            .embedding(&ids)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        laps.lap(Phase::Embed);
        let mut attn = vec![0f32; t * cfg.n_head * cfg.head_dim];
        for (li, layer) in self.layers.iter().enumerate() {
            self.layer_forward(li, layer, input, cache, &mut x, &mut attn, &mut laps)?;
        }
        let d = cfg.n_embd;
        let r = input.logits_rows.len();
        if r == 0 {
            return Ok(Vec::new());
        }
        let mut last = Vec::with_capacity(r * d);
        for &row in &input.logits_rows {
            last.extend_from_slice(&x[row * d..(row + 1) * d]);
        }
        let h = rms_norm(&last, &self.norm, cfg.rms_eps);
        laps.lap(Phase::Norm);
        let logits = self.output.forward(&h, r)?;
        let rows = logits.chunks(cfg.vocab_size).map(<[f32]>::to_vec).collect();
        laps.lap(Phase::LmHead);
        Ok(rows)
    }

    /// One decoder layer over the whole batch, updating the residual stream `x`.
    #[allow(clippy::too_many_arguments)]
    fn layer_forward(
        &self,
        li: usize,
        layer: &Layer,
        input: &BatchInput,
        cache: &mut PagedKvCache,
        x: &mut [f32],
        attn: &mut [f32],
        laps: &mut Laps<'_>,
    ) -> Result<()> {
        let cfg = &self.cfg;
        let t = input.tokens.len();
        let h = rms_norm(x, &layer.attn_norm, cfg.rms_eps);
        laps.lap(Phase::Norm);
        // One [t, qw | kw | kw] buffer; the parts are read in place.
        let mut qkv = layer.qkv.forward(&h, t)?;
        let (qw, kw) = (cfg.n_head * cfg.head_dim, cfg.n_kv_head * cfg.head_dim);
        let stride = qw + 2 * kw;
        laps.lap(Phase::Qkv);
        let pos = &input.positions;
        self.rope
            .apply_strided(&mut qkv, stride, 0, pos, cfg.n_head);
        self.rope
            .apply_strided(&mut qkv, stride, qw, pos, cfg.n_kv_head);
        laps.lap(Phase::Rotary);
        let part = |offset| Strided {
            data: &qkv,
            stride,
            offset,
        };
        cache.write_strided(li, &input.slots, part(qw), part(qw + kw));
        laps.lap(Phase::KvWrite);
        cache.attend_strided(li, cfg.heads(), &input.spans, part(0), attn);
        laps.lap(Phase::Attention);
        let o = layer.wo.forward(attn, t)?;
        laps.lap(Phase::OutProj);
        add_in_place(x, &o);
        laps.lap(Phase::Residual);
        let h = rms_norm(x, &layer.ffn_norm, cfg.rms_eps);
        laps.lap(Phase::Norm);
        let gu = layer.gate_up.forward(&h, t)?;
        laps.lap(Phase::FfnGateUp);
        let a = silu_gate_up(&gu, cfg.n_ff);
        laps.lap(Phase::Silu);
        let dn = layer.w_down.forward(&a, t)?;
        laps.lap(Phase::FfnDown);
        add_in_place(x, &dn);
        laps.lap(Phase::Residual);
        Ok(())
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
