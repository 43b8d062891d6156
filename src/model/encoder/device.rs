//! The encoder on a [`Device`] (a GPU, or the kernel emulator in tests): the same BERT /
//! XLM-RoBERTa forward as `bert.rs` and the same heads as `Encoder::finish`, with every
//! tensor from the embedding lookup to the outputs kept on the device and every
//! operation a kernel of `kernels/encoder.cu`. Weights and embedding tables are f16 on
//! the device (biases and LayerNorms f32); the GEMMs run on tensor cores with f32
//! accumulation, activations stay f32.
//!
//! Invariants: a batch is checked as the CPU path checks it (`bert::check_batch`) before
//! anything is uploaded; work buffers grow to the largest batch seen and are kept
//! between batches (one batch holds them at a time, as the engine runs one); a device
//! error inside a layer fails the pass, reported by `finish`, never a panic; an input's
//! outputs depend on that input alone.

use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use super::bert::{Checkpoint, PackedBatch, check_batch};
use super::config::{Activation, EncoderConfig, Family, Pooling, Task};
use crate::device::kernels::ops::{
    self, DevEmbeddings, DevLayerNorm, DevLinear, DevSeqs, Epilogue, MAX_HEAD_DIM, RowPool,
};
use crate::device::kernels::{DevBuf, DevIndex, Device, DeviceExt};

struct DevEncLayer {
    qkv: DevLinear,
    attn_out: DevLinear,
    attn_norm: DevLayerNorm,
    ffn_in: DevLinear,
    ffn_out: DevLinear,
    ffn_norm: DevLayerNorm,
}

/// What turns the last hidden states into outputs (as `Encoder`'s head).
enum DevHead {
    /// Pool, then L2-normalise.
    Pool(Pooling),
    /// `out(tanh(dense(h_cls)))`: BERT's pooler + classifier, XLM-R's dense + out_proj.
    Classifier { dense: DevLinear, out: DevLinear },
    /// The classifier on every token.
    Tokens(DevLinear),
}

/// Work buffers of a batch, grown on demand.
#[derive(Default)]
struct Scratch {
    ids: Option<DevIndex>,
    types: Option<DevIndex>,
    pos: Option<DevIndex>,
    seqs: DevSeqs,
    x: Option<DevBuf<f32>>,
    x1: Option<DevBuf<f32>>,
    qkv: Option<DevBuf<f32>>,
    attn: Option<DevBuf<f32>>,
    ffn: Option<DevBuf<f32>>,
    pooled: Option<DevBuf<f32>>,
    mid: Option<DevBuf<f32>>,
    out: Option<DevBuf<f32>>,
}

/// A batch part-way through the device encoder: its buffers, and the first error.
pub struct DevicePass {
    bufs: Scratch,
    failed: Option<String>,
}

/// An encoder whose weights live on a device.
pub struct DeviceEncoder {
    dev: Arc<dyn Device>,
    cfg: EncoderConfig,
    emb: DevEmbeddings,
    layers: Vec<DevEncLayer>,
    head: DevHead,
    /// Buffers of the last batch, for the next one.
    spare: Mutex<Option<Scratch>>,
    weight_bytes: usize,
}

/// A dense layer `[out, in]` as PyTorch stores it.
fn linear(
    dev: &dyn Device,
    ck: &Checkpoint,
    name: &str,
    inp: usize,
    out: usize,
) -> Result<DevLinear> {
    let w = ck.get(&format!("{name}.weight"), &[out, inp])?;
    let b = ck.get(&format!("{name}.bias"), &[out])?;
    Ok(DevLinear::upload(
        dev,
        &w.flatten_all()?.to_vec1::<f32>()?,
        &b.to_vec1::<f32>()?,
        out,
        inp,
    )?)
}

fn body_vec(ck: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    Ok(ck.body(name, shape)?.flatten_all()?.to_vec1::<f32>()?)
}

fn layer_norm(
    dev: &dyn Device,
    ck: &Checkpoint,
    name: &str,
    cfg: &EncoderConfig,
) -> Result<DevLayerNorm> {
    let h = cfg.hidden;
    Ok(DevLayerNorm::upload(
        dev,
        &body_vec(ck, &format!("{name}.weight"), &[h])?,
        &body_vec(ck, &format!("{name}.bias"), &[h])?,
        cfg.eps as f32,
    )?)
}

fn epilogue(act: Activation) -> Epilogue {
    match act {
        Activation::GeluErf => Epilogue::GeluErf,
        Activation::GeluTanh => Epilogue::GeluTanh,
        Activation::Relu => Epilogue::Relu,
    }
}

fn load_layer(
    dev: &dyn Device,
    ck: &Checkpoint,
    cfg: &EncoderConfig,
    i: usize,
) -> Result<DevEncLayer> {
    let h = cfg.hidden;
    let p = ck.body_name(&format!("encoder.layer.{i}"));
    let mut w = Vec::with_capacity(3 * h * h);
    let mut b = Vec::with_capacity(3 * h);
    for part in ["query", "key", "value"] {
        let name = format!("{p}.attention.self.{part}");
        w.extend(
            ck.get(&format!("{name}.weight"), &[h, h])?
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        b.extend(ck.get(&format!("{name}.bias"), &[h])?.to_vec1::<f32>()?);
    }
    let q = format!("encoder.layer.{i}");
    Ok(DevEncLayer {
        qkv: DevLinear::upload(dev, &w, &b, 3 * h, h)?,
        attn_out: linear(dev, ck, &format!("{p}.attention.output.dense"), h, h)?,
        attn_norm: layer_norm(dev, ck, &format!("{q}.attention.output.LayerNorm"), cfg)?,
        ffn_in: linear(
            dev,
            ck,
            &format!("{p}.intermediate.dense"),
            h,
            cfg.intermediate,
        )?,
        ffn_out: linear(dev, ck, &format!("{p}.output.dense"), cfg.intermediate, h)?,
        ffn_norm: layer_norm(dev, ck, &format!("{q}.output.LayerNorm"), cfg)?,
    })
}

fn load_head(dev: &dyn Device, cfg: &EncoderConfig, ck: &Checkpoint) -> Result<DevHead> {
    let h = cfg.hidden;
    let n = cfg.labels.len().max(1);
    match cfg.task {
        Task::Embedding(p) => Ok(DevHead::Pool(p)),
        Task::TokenClassifier => Ok(DevHead::Tokens(linear(dev, ck, "classifier", h, n)?)),
        Task::CrossEncoder | Task::Classifier { .. } if ck.has("classifier.out_proj.weight") => {
            Ok(DevHead::Classifier {
                dense: linear(dev, ck, "classifier.dense", h, h)?,
                out: linear(dev, ck, "classifier.out_proj", h, n)?,
            })
        }
        Task::CrossEncoder | Task::Classifier { .. } if cfg.family == Family::Bert => {
            Ok(DevHead::Classifier {
                dense: linear(dev, ck, &ck.body_name("pooler.dense"), h, h)?,
                out: linear(dev, ck, "classifier", h, n)?,
            })
        }
        Task::CrossEncoder | Task::Classifier { .. } => {
            bail!("the checkpoint has no classifier.out_proj for its XLM-R head")
        }
    }
}

/// Device bytes of a batch of `tokens` tokens' work buffers for `cfg` (what
/// [`DeviceEncoder::reserve`] allocates, before rounding up to powers of two).
pub fn activation_bytes(cfg: &EncoderConfig, tokens: usize) -> usize {
    let out = cfg.labels.len().max(1).max(cfg.hidden);
    4 * tokens * (7 * cfg.hidden + cfg.intermediate + out + 5)
}

/// Device bytes of `cfg`'s weights as [`DeviceEncoder::load`] stores them (f16
/// matrices and tables, f32 biases and LayerNorms), from the shape alone.
pub fn weight_bytes(cfg: &EncoderConfig) -> usize {
    let (h, ff) = (cfg.hidden, cfg.intermediate);
    let labels = cfg.labels.len().max(1);
    let tables = (cfg.vocab + cfg.max_positions + cfg.type_vocab) * h;
    let per_layer = 2 * (4 * h * h + 2 * h * ff) + 4 * (4 * h + ff + h + 4 * h);
    let head = match cfg.task {
        Task::Embedding(_) => 0,
        Task::TokenClassifier => 2 * h * labels + 4 * labels,
        Task::CrossEncoder | Task::Classifier { .. } => 2 * (h * h + h * labels) + 4 * (h + labels),
    };
    2 * tables + 8 * h + cfg.layers * per_layer + head
}

impl DeviceEncoder {
    /// Uploads the body and head of checkpoint `ck` (shaped as `cfg`) to `dev`.
    pub fn load(dev: Arc<dyn Device>, cfg: &EncoderConfig, ck: &Checkpoint) -> Result<Self> {
        let hd = cfg.head_dim();
        if hd > MAX_HEAD_DIM || hd * cfg.heads != cfg.hidden {
            bail!(
                "the device encoder runs heads of at most {MAX_HEAD_DIM} values that tile the \
                 hidden size; this model has {} heads over {}",
                cfg.heads,
                cfg.hidden
            );
        }
        let d = dev.as_ref();
        let h = cfg.hidden;
        let norm = layer_norm(d, ck, "embeddings.LayerNorm", cfg)?;
        let emb = DevEmbeddings::upload(
            d,
            &body_vec(ck, "embeddings.word_embeddings.weight", &[cfg.vocab, h])?,
            &body_vec(
                ck,
                "embeddings.position_embeddings.weight",
                &[cfg.max_positions, h],
            )?,
            &body_vec(
                ck,
                "embeddings.token_type_embeddings.weight",
                &[cfg.type_vocab, h],
            )?,
            norm,
        )?;
        let layers = (0..cfg.layers)
            .map(|i| load_layer(d, ck, cfg, i).with_context(|| format!("layer {i}")))
            .collect::<Result<Vec<_>>>()?;
        let head = load_head(d, cfg, ck).context("loading the encoder head")?;
        let linears = layers
            .iter()
            .flat_map(|l| [&l.qkv, &l.attn_out, &l.ffn_in, &l.ffn_out])
            .chain(match &head {
                DevHead::Pool(_) => vec![],
                DevHead::Classifier { dense, out } => vec![dense, out],
                DevHead::Tokens(c) => vec![c],
            })
            .map(DevLinear::bytes)
            .sum::<usize>();
        let norms = (2 * cfg.layers + 1) * 2 * 4 * h;
        Ok(Self {
            weight_bytes: emb.bytes() + linears + norms,
            dev,
            cfg: cfg.clone(),
            emb,
            layers,
            head,
            spare: Mutex::new(None),
        })
    }

    /// The device's name.
    pub fn device_name(&self) -> String {
        self.dev.name()
    }

    /// Device bytes of the weights.
    pub fn weight_bytes(&self) -> usize {
        self.weight_bytes
    }

    /// Transformer layers.
    pub fn layers(&self) -> usize {
        self.layers.len()
    }

    /// Allocates the work buffers of a batch of `tokens` tokens now (so the memory is
    /// taken at load, not at the first request).
    pub fn reserve(&self, tokens: usize) -> Result<()> {
        let mut s = self.take_spare();
        let r = self.grow(&mut s, tokens, tokens);
        self.put_spare(s);
        r
    }

    fn take_spare(&self) -> Scratch {
        self.spare
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_default()
    }

    fn put_spare(&self, s: Scratch) {
        if let Ok(mut spare) = self.spare.lock() {
            *spare = Some(s);
        }
    }

    fn grow(&self, s: &mut Scratch, tokens: usize, inputs: usize) -> Result<()> {
        let d = self.dev.as_ref();
        let (h, ff) = (self.cfg.hidden, self.cfg.intermediate);
        let out_w = self.cfg.labels.len().max(1).max(h);
        d.grown(&mut s.x, tokens * h)?;
        d.grown(&mut s.x1, tokens * h)?;
        d.grown(&mut s.qkv, tokens * 3 * h)?;
        d.grown(&mut s.attn, tokens * h)?;
        d.grown(&mut s.ffn, tokens * ff)?;
        d.grown(&mut s.pooled, inputs * h)?;
        d.grown(&mut s.mid, inputs * h)?;
        d.grown(&mut s.out, tokens.max(inputs) * out_w)?;
        Ok(())
    }

    /// Checks `batch`, uploads it and computes its embeddings.
    pub fn begin(&self, batch: &PackedBatch) -> Result<DevicePass> {
        let cfg = &self.cfg;
        check_batch(cfg, batch)?;
        let d = self.dev.as_ref();
        let mut s = self.take_spare();
        let tokens = batch.ids.len();
        self.grow(&mut s, tokens, batch.lens.len())?;
        let ids: Vec<i32> = batch.ids.iter().map(|&t| t as i32).collect();
        let top = cfg.type_vocab.saturating_sub(1);
        let types: Vec<i32> = batch
            .type_ids
            .iter()
            .map(|&t| (t as usize).min(top) as i32)
            .collect();
        let pos: Vec<i32> = batch
            .lens
            .iter()
            .flat_map(|&l| (0..l).map(|p| (p + cfg.position_offset()) as i32))
            .collect();
        if types.len() != tokens {
            bail!("{tokens} token ids with {} token types", types.len());
        }
        d.refill_index(&mut s.ids, &ids)?;
        d.refill_index(&mut s.types, &types)?;
        d.refill_index(&mut s.pos, &pos)?;
        s.seqs.refill(d, &batch.lens)?;
        let (Some(i), Some(t), Some(p), Some(x)) = (&s.ids, &s.types, &s.pos, s.x.as_mut()) else {
            bail!("internal: batch buffers missing after upload");
        };
        ops::embed_layer_norm(d, &self.emb, i, t, p, x)?;
        Ok(DevicePass {
            bufs: s,
            failed: None,
        })
    }

    /// Runs layer `i` on the pass; a failure is kept and reported by `finish`.
    pub fn advance(&self, pass: &mut DevicePass, i: usize) {
        if pass.failed.is_some() {
            return;
        }
        let Some(l) = self.layers.get(i) else { return };
        if let Err(e) = self.layer(l, &mut pass.bufs) {
            pass.failed = Some(format!("layer {i} on {}: {e:#}", self.dev.name()));
        }
    }

    fn layer(&self, l: &DevEncLayer, s: &mut Scratch) -> Result<()> {
        let d = self.dev.as_ref();
        let cfg = &self.cfg;
        let (h, ff, t) = (cfg.hidden, cfg.intermediate, s.seqs.tokens());
        let (Some(x), Some(x1), Some(qkv), Some(attn), Some(ffn)) = (
            s.x.as_mut(),
            s.x1.as_mut(),
            s.qkv.as_mut(),
            s.attn.as_mut(),
            s.ffn.as_mut(),
        ) else {
            bail!("internal: layer buffers missing");
        };
        ops::gemm_f16w(d, x, h, t, &l.qkv, Epilogue::None, qkv, 3 * h)?;
        ops::encoder_attention(d, qkv, &s.seqs, cfg.heads, cfg.head_dim(), attn)?;
        ops::gemm_f16w(d, attn, h, t, &l.attn_out, Epilogue::None, x1, h)?;
        ops::layer_norm_residual(d, x1, Some(x), &l.attn_norm, t)?;
        ops::gemm_f16w(d, x1, h, t, &l.ffn_in, epilogue(cfg.activation), ffn, ff)?;
        ops::gemm_f16w(d, ffn, ff, t, &l.ffn_out, Epilogue::None, x, h)?;
        ops::layer_norm_residual(d, x, Some(x1), &l.ffn_norm, t)?;
        Ok(())
    }

    /// The outputs of a pass whose every layer ran (see `Encoder::finish`), and its
    /// buffers kept for the next batch.
    pub fn finish(&self, pass: DevicePass, lens: &[usize]) -> Result<Vec<Vec<f32>>> {
        let DevicePass { mut bufs, failed } = pass;
        let r = match failed {
            Some(e) => Err(anyhow::anyhow!(e)),
            None => self.head(&mut bufs, lens),
        };
        self.put_spare(bufs);
        r
    }

    fn head(&self, s: &mut Scratch, lens: &[usize]) -> Result<Vec<Vec<f32>>> {
        let d = self.dev.as_ref();
        let h = self.cfg.hidden;
        let n = s.seqs.inputs();
        let (Some(x), Some(pooled), Some(mid), Some(out)) = (
            s.x.as_ref(),
            s.pooled.as_mut(),
            s.mid.as_mut(),
            s.out.as_mut(),
        ) else {
            bail!("internal: head buffers missing");
        };
        let (rows, width) = match &self.head {
            DevHead::Pool(p) => {
                let pool = match p {
                    Pooling::Cls => RowPool::First,
                    Pooling::Mean => RowPool::Mean,
                };
                ops::pool_rows(d, x, &s.seqs, h, pool, true, out)?;
                (n, h)
            }
            DevHead::Classifier { dense, out: proj } => {
                ops::pool_rows(d, x, &s.seqs, h, RowPool::First, false, pooled)?;
                ops::gemm_f16w(d, pooled, h, n, dense, Epilogue::Tanh, mid, h)?;
                ops::gemm_f16w(d, mid, h, n, proj, Epilogue::None, out, proj.n())?;
                (n, proj.n())
            }
            DevHead::Tokens(c) => {
                let t = s.seqs.tokens();
                ops::gemm_f16w(d, x, h, t, c, Epilogue::None, out, c.n())?;
                (t, c.n())
            }
        };
        let mut host = vec![0.0f32; rows * width];
        d.download_into(out, &mut host)?;
        Ok(match &self.head {
            DevHead::Tokens(_) => {
                let mut at = 0;
                lens.iter()
                    .map(|&l| {
                        let v = host[at * width..(at + l) * width].to_vec();
                        at += l;
                        v
                    })
                    .collect()
            }
            _ => host.chunks_exact(width).map(<[f32]>::to_vec).collect(),
        })
    }
}
