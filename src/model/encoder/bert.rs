//! The BERT / XLM-RoBERTa transformer over a packed batch: every input's tokens are
//! laid end to end (no padding), so the linear layers run one matmul over all tokens
//! of all inputs, and attention stays within each input (`attention.rs`). A batch runs
//! as a [`Pass`], one layer at a time, so the engine can interleave it with LLM steps.
//!
//! Invariants: weights are pre-transposed to `[in, out]` at load and the linear layers
//! run as the load's [`LinearPlan`] says (f32, or quantized after fusing); the query,
//! key and value projections are fused into one `[hidden, 3 * hidden]` matmul; an
//! input never attends to another input's tokens; a pass's result does not depend on
//! how its layers were spread over time.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use candle_core::{DType, Tensor};

use super::attention::packed_attention;
use super::config::Activation;
use super::config::EncoderConfig;
use super::device::DevicePass;
use super::ops::{Dense, LayerNorm, activate, gelu_fast};
use super::precision::LinearPlan;

struct Layer {
    qkv: Dense,
    attn_out: Dense,
    attn_norm: LayerNorm,
    ffn_in: Dense,
    ffn_out: Dense,
    ffn_norm: LayerNorm,
}

/// A packed batch of inputs.
#[derive(Debug, Default, Clone)]
pub struct PackedBatch {
    /// Token ids of all inputs, end to end.
    pub ids: Vec<u32>,
    /// Token type (segment) ids, parallel to `ids`.
    pub type_ids: Vec<u32>,
    /// Length of each input, in order; they sum to `ids.len()`.
    pub lens: Vec<usize>,
}

impl PackedBatch {
    /// Appends one input.
    pub fn push(&mut self, ids: &[u32], type_ids: &[u32]) {
        self.ids.extend_from_slice(ids);
        self.type_ids.extend_from_slice(type_ids);
        self.lens.push(ids.len());
    }

    /// Offset of each input's first token.
    pub fn offsets(&self) -> Vec<usize> {
        self.lens
            .iter()
            .scan(0, |acc, &l| {
                let o = *acc;
                *acc += l;
                Some(o)
            })
            .collect()
    }
}

/// A packed batch part-way through the body: hidden states `[tokens, hidden]` after
/// `layers_done` layers.
pub struct Pass {
    lens: Vec<usize>,
    offsets: Vec<usize>,
    /// Empty for a pass on a device.
    x: Vec<f32>,
    layers_done: usize,
    /// The pass's state on a device (`device.rs`), when the encoder runs there.
    device: Option<DevicePass>,
}

impl Pass {
    /// A pass of `batch` whose state lives on a device.
    pub(super) fn on_device(batch: &PackedBatch, state: DevicePass) -> Self {
        Self {
            lens: batch.lens.clone(),
            offsets: batch.offsets(),
            x: Vec::new(),
            layers_done: 0,
            device: Some(state),
        }
    }

    /// The device state and the layer to run next, counted as run (device passes only).
    pub(super) fn device_step(&mut self) -> Option<(&mut DevicePass, usize)> {
        let i = self.layers_done;
        let state = self.device.as_mut()?;
        self.layers_done += 1;
        Some((state, i))
    }

    /// Takes the device state out of a finished pass.
    pub(super) fn take_device(&mut self) -> Option<DevicePass> {
        self.device.take()
    }

    /// Tokens in the batch.
    pub fn tokens(&self) -> usize {
        self.lens.iter().sum()
    }

    /// Layers already applied.
    pub fn layers_done(&self) -> usize {
        self.layers_done
    }

    /// Each input's length, in order.
    pub fn lens(&self) -> &[usize] {
        &self.lens
    }

    /// Each input's first row.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The hidden states, `[tokens, hidden]` row-major (empty for a pass on a device).
    pub fn states(&self) -> &[f32] {
        &self.x
    }
}

/// Checks a batch against the model: inputs non-empty, at most `max_len` long and within
/// the position table, ids inside the vocabulary, one token type per id.
pub fn check_batch(cfg: &EncoderConfig, batch: &PackedBatch) -> Result<()> {
    if batch.type_ids.len() != batch.ids.len()
        || batch.lens.iter().sum::<usize>() != batch.ids.len()
    {
        bail!(
            "a batch of {} token ids with {} token types and lengths summing to {}",
            batch.ids.len(),
            batch.type_ids.len(),
            batch.lens.iter().sum::<usize>()
        );
    }
    if let Some(&bad) = batch.ids.iter().find(|&&t| t as usize >= cfg.vocab) {
        bail!("token id {bad} is outside the vocabulary of {}", cfg.vocab);
    }
    if let Some(&long) = batch.lens.iter().find(|&&l| l == 0 || l > cfg.max_len) {
        bail!("an input of {long} tokens is outside 1..={}", cfg.max_len);
    }
    let longest = batch.lens.iter().copied().max().unwrap_or(0);
    if longest + cfg.position_offset() > cfg.max_positions {
        bail!(
            "an input of {longest} tokens needs more than the model's {} positions",
            cfg.max_positions
        );
    }
    Ok(())
}

/// Weights of the transformer body (embeddings + layers).
pub struct BertBody {
    cfg: EncoderConfig,
    word: Vec<f32>,
    position: Vec<f32>,
    token_type: Vec<f32>,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    plan: LinearPlan,
}

/// Tensors of a checkpoint by name, with the model's prefix (`bert.`, `roberta.`, or
/// none) resolved once.
pub struct Checkpoint {
    tensors: HashMap<String, Tensor>,
    prefix: String,
}

impl Checkpoint {
    /// Wraps loaded tensors (converted to f32), finding the body's prefix.
    pub fn new(tensors: HashMap<String, Tensor>) -> Result<Self> {
        let prefix = ["", "bert.", "roberta.", "model."]
            .into_iter()
            .find(|p| tensors.contains_key(&format!("{p}embeddings.word_embeddings.weight")))
            .context("the checkpoint has no embeddings.word_embeddings.weight")?
            .to_string();
        let tensors = tensors
            .into_iter()
            .map(|(k, t)| Ok((k, t.to_dtype(DType::F32)?)))
            .collect::<Result<_>>()?;
        Ok(Self { tensors, prefix })
    }

    /// A tensor of the body (prefix added) with the shape checked.
    pub fn body(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        self.get(&format!("{}{name}", self.prefix), shape)
    }

    /// A tensor by its full name with the shape checked.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .with_context(|| format!("the checkpoint has no tensor {name}"))?;
        if t.dims() != shape {
            bail!("{name} has shape {:?}, expected {shape:?}", t.dims());
        }
        Ok(t.clone())
    }

    /// Whether a full name exists.
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// A dense layer stored PyTorch-style (`weight` `[out, in]`, `bias` `[out]`).
    pub fn dense(&self, name: &str, inp: usize, out: usize) -> Result<Dense> {
        let w = self.get(&format!("{name}.weight"), &[out, inp])?;
        let w = w.t()?.contiguous()?.flatten_all()?.to_vec1::<f32>()?;
        let b = self
            .get(&format!("{name}.bias"), &[out])?
            .to_vec1::<f32>()?;
        Ok(Dense::new(w, b, inp, out))
    }

    fn layer_norm(&self, name: &str, width: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm::new(
            self.body(&format!("{name}.weight"), &[width])?.to_vec1()?,
            self.body(&format!("{name}.bias"), &[width])?.to_vec1()?,
            eps,
        ))
    }

    /// A body table `[rows, width]` as a flat row-major vector.
    fn table(&self, name: &str, rows: usize, width: usize) -> Result<Vec<f32>> {
        Ok(self.body(name, &[rows, width])?.flatten_all()?.to_vec1()?)
    }

    /// Name of a body tensor with the prefix.
    pub fn body_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl BertBody {
    /// Loads the body's weights from a checkpoint, its linear layers run as `plan`.
    pub fn load(cfg: &EncoderConfig, ck: &Checkpoint, plan: LinearPlan) -> Result<Self> {
        let h = cfg.hidden;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            let f32_dense =
                |name: &str, inp, out| ck.dense(&ck.body_name(&format!("{p}.{name}")), inp, out);
            let dense = |name: &str, inp, out| {
                Ok::<_, anyhow::Error>(f32_dense(name, inp, out)?.with_plan(plan))
            };
            let qkv = Dense::concat(&[
                f32_dense("attention.self.query", h, h)?,
                f32_dense("attention.self.key", h, h)?,
                f32_dense("attention.self.value", h, h)?,
            ])
            .with_plan(plan);
            layers.push(Layer {
                qkv,
                attn_out: dense("attention.output.dense", h, h)?,
                attn_norm: ck.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, cfg.eps)?,
                ffn_in: dense("intermediate.dense", h, cfg.intermediate)?,
                ffn_out: dense("output.dense", cfg.intermediate, h)?,
                ffn_norm: ck.layer_norm(&format!("{p}.output.LayerNorm"), h, cfg.eps)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word: ck.table("embeddings.word_embeddings.weight", cfg.vocab, h)?,
            position: ck.table(
                "embeddings.position_embeddings.weight",
                cfg.max_positions,
                h,
            )?,
            token_type: ck.table("embeddings.token_type_embeddings.weight", cfg.type_vocab, h)?,
            embed_norm: ck.layer_norm("embeddings.LayerNorm", h, cfg.eps)?,
            layers,
            plan,
        })
    }

    /// Number of transformer layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Starts a pass: checks the batch and computes the embeddings. Inputs must be
    /// non-empty, at most `max_len` long, with ids inside the vocabulary.
    pub fn begin(&self, batch: &PackedBatch) -> Result<Pass> {
        let cfg = &self.cfg;
        let h = cfg.hidden;
        check_batch(cfg, batch)?;
        let mut x = Vec::with_capacity(batch.ids.len() * h);
        let positions = batch
            .lens
            .iter()
            .flat_map(|&l| (0..l).map(|p| p + cfg.position_offset()));
        for ((&id, &ty), pos) in batch.ids.iter().zip(&batch.type_ids).zip(positions) {
            let ty = (ty as usize).min(cfg.type_vocab - 1);
            let (w, p, t) = (id as usize * h, pos * h, ty * h);
            x.extend(
                self.word[w..w + h]
                    .iter()
                    .zip(&self.position[p..p + h])
                    .zip(&self.token_type[t..t + h])
                    .map(|((a, b), c)| a + b + c),
            );
        }
        self.embed_norm.apply(&mut x);
        Ok(Pass {
            lens: batch.lens.clone(),
            offsets: batch.offsets(),
            x,
            layers_done: 0,
            device: None,
        })
    }

    /// Applies the next layer; true once every layer has run.
    pub fn advance(&self, pass: &mut Pass) -> bool {
        if let Some(l) = self.layers.get(pass.layers_done) {
            pass.x = self.layer(l, &pass.x, &pass.offsets, &pass.lens);
            pass.layers_done += 1;
        }
        pass.layers_done == self.layers.len()
    }

    fn layer(&self, l: &Layer, x: &[f32], offsets: &[usize], lens: &[usize]) -> Vec<f32> {
        let cfg = &self.cfg;
        let qkv = l.qkv.forward(x);
        let attn = packed_attention(&qkv, offsets, lens, cfg.heads, cfg.head_dim());
        let mut x1 = l.attn_out.forward(&attn);
        l.attn_norm.apply_residual(&mut x1, x);
        let mut h = l.ffn_in.forward(&x1);
        // Reduced precision also takes the vectorized GELU (its error is far smaller).
        match (self.plan, cfg.activation) {
            (LinearPlan::Quantized(_), Activation::GeluErf) => gelu_fast(&mut h),
            _ => activate(&mut h, cfg.activation),
        }
        let mut out = l.ffn_out.forward(&h);
        l.ffn_norm.apply_residual(&mut out, &x1);
        out
    }
}
