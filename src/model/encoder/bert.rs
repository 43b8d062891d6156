//! The BERT / XLM-RoBERTa transformer over a packed batch: every input's tokens are
//! laid end to end (no padding), so the linear layers run one matmul over all tokens
//! of all inputs, and attention stays within each input (`attention.rs`).
//!
//! Invariants: weights are f32 and pre-transposed to `[in, out]` at load; the query,
//! key and value projections are fused into one `[hidden, 3 * hidden]` matmul; an
//! input never attends to another input's tokens.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use candle_core::{D, DType, Device, Tensor};

use super::attention::packed_attention;
use super::config::{Activation, EncoderConfig};

/// A dense layer: `x @ w + b` with `w` stored `[in, out]`.
pub struct Dense {
    w: Tensor,
    b: Tensor,
}

impl Dense {
    /// `x`: `[rows, in]` -> `[rows, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w)?.broadcast_add(&self.b)?)
    }
}

/// LayerNorm with weight and bias.
pub struct LayerNorm {
    w: Tensor,
    b: Tensor,
    eps: f64,
}

impl LayerNorm {
    /// Normalizes each row of `x` (`[rows, hidden]`).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        Ok(normed.broadcast_mul(&self.w)?.broadcast_add(&self.b)?)
    }
}

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

/// Weights of the transformer body (embeddings + layers).
pub struct BertBody {
    cfg: EncoderConfig,
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
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
        Ok(Dense {
            w: w.t()?.contiguous()?,
            b: self.get(&format!("{name}.bias"), &[out])?,
        })
    }

    fn layer_norm(&self, name: &str, width: usize, eps: f64) -> Result<LayerNorm> {
        Ok(LayerNorm {
            w: self.body(&format!("{name}.weight"), &[width])?,
            b: self.body(&format!("{name}.bias"), &[width])?,
            eps,
        })
    }

    /// Name of a body tensor with the prefix.
    pub fn body_name(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

impl BertBody {
    /// Loads the body's weights from a checkpoint.
    pub fn load(cfg: &EncoderConfig, ck: &Checkpoint) -> Result<Self> {
        let h = cfg.hidden;
        let mut layers = Vec::with_capacity(cfg.layers);
        for i in 0..cfg.layers {
            let p = format!("encoder.layer.{i}");
            let dense =
                |name: &str, inp, out| ck.dense(&ck.body_name(&format!("{p}.{name}")), inp, out);
            let (q, k, v) = (
                dense("attention.self.query", h, h)?,
                dense("attention.self.key", h, h)?,
                dense("attention.self.value", h, h)?,
            );
            layers.push(Layer {
                qkv: Dense {
                    w: Tensor::cat(&[&q.w, &k.w, &v.w], 1)?,
                    b: Tensor::cat(&[&q.b, &k.b, &v.b], 0)?,
                },
                attn_out: dense("attention.output.dense", h, h)?,
                attn_norm: ck.layer_norm(&format!("{p}.attention.output.LayerNorm"), h, cfg.eps)?,
                ffn_in: dense("intermediate.dense", h, cfg.intermediate)?,
                ffn_out: dense("output.dense", cfg.intermediate, h)?,
                ffn_norm: ck.layer_norm(&format!("{p}.output.LayerNorm"), h, cfg.eps)?,
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word: ck.body("embeddings.word_embeddings.weight", &[cfg.vocab, h])?,
            position: ck.body(
                "embeddings.position_embeddings.weight",
                &[cfg.max_positions, h],
            )?,
            token_type: ck.body(
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab, h],
            )?,
            embed_norm: ck.layer_norm("embeddings.LayerNorm", h, cfg.eps)?,
            layers,
        })
    }

    /// Final hidden states `[tokens, hidden]` of a packed batch. Inputs must be
    /// non-empty, at most `max_len` long, with ids inside the vocabulary.
    pub fn forward(&self, batch: &PackedBatch) -> Result<Tensor> {
        let cfg = &self.cfg;
        let n = batch.ids.len();
        if let Some(&bad) = batch.ids.iter().find(|&&t| t as usize >= cfg.vocab) {
            bail!("token id {bad} is outside the vocabulary of {}", cfg.vocab);
        }
        if let Some(&long) = batch.lens.iter().find(|&&l| l == 0 || l > cfg.max_len) {
            bail!("an input of {long} tokens is outside 1..={}", cfg.max_len);
        }
        let dev = Device::Cpu;
        let positions: Vec<u32> = batch
            .lens
            .iter()
            .flat_map(|&l| (0..l).map(|p| (p + cfg.position_offset()) as u32))
            .collect();
        let types: Vec<u32> = batch
            .type_ids
            .iter()
            .map(|&t| t.min(cfg.type_vocab as u32 - 1))
            .collect();
        let ids = Tensor::from_slice(&batch.ids, n, &dev)?;
        let positions = Tensor::from_vec(positions, n, &dev)?;
        let types = Tensor::from_vec(types, n, &dev)?;
        let x = ((self.word.embedding(&ids)? + self.position.embedding(&positions)?)?
            + self.token_type.embedding(&types)?)?;
        let mut x = self.embed_norm.forward(&x)?;
        let offsets = batch.offsets();
        for layer in &self.layers {
            x = self.layer(layer, &x, &offsets, &batch.lens)?;
        }
        Ok(x)
    }

    fn layer(&self, l: &Layer, x: &Tensor, offsets: &[usize], lens: &[usize]) -> Result<Tensor> {
        let cfg = &self.cfg;
        let qkv = l.qkv.forward(x)?.flatten_all()?.to_vec1::<f32>()?;
        let attn = packed_attention(&qkv, offsets, lens, cfg.heads, cfg.head_dim());
        let attn = Tensor::from_vec(attn, (x.dim(0)?, cfg.hidden), &Device::Cpu)?;
        let x = l.attn_norm.forward(&(l.attn_out.forward(&attn)? + x)?)?;
        let h = l.ffn_in.forward(&x)?;
        let h = match cfg.activation {
            Activation::GeluErf => h.gelu_erf()?,
            Activation::GeluTanh => h.gelu()?,
            Activation::Relu => h.relu()?,
        };
        l.ffn_norm.forward(&(l.ffn_out.forward(&h)? + x)?)
    }
}
