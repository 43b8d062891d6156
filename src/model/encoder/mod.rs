//! Encoder models (BERT and XLM-RoBERTa families, from safetensors + `config.json` +
//! `tokenizer.json`): sentence embeddings (mean or CLS pooling, L2-normalized) and
//! one-label cross-encoders for rerank.
//!
//! Invariants: `Encoder::run` returns one output per input of the packed batch, in
//! order: an embedding of `hidden` floats for embedding models, a single raw logit for
//! cross-encoders; an input's output never depends on the rest of its batch.

pub mod attention;
pub mod bert;
pub mod config;
pub mod tokenize;

use std::path::Path;

use anyhow::{Context, Result, bail};
use candle_core::{Device, Tensor};

use bert::{BertBody, Checkpoint, Dense, PackedBatch};
use config::{EncoderConfig, Family, Pooling, Task};
use tokenize::EncoderTokenizer;

/// What turns the last hidden states into outputs.
enum Head {
    /// Pool, then L2-normalize.
    Pool(Pooling),
    /// BERT: `tanh(pooler(h_cls))` then the one-label classifier.
    BertClassifier { pooler: Dense, classifier: Dense },
    /// XLM-R: `tanh(dense(h_cls))` then `out_proj`.
    RobertaClassifier { dense: Dense, out_proj: Dense },
}

/// A loaded encoder model.
pub struct Encoder {
    config: EncoderConfig,
    body: BertBody,
    head: Head,
}

/// An encoder folder, loaded.
pub struct LoadedEncoder {
    /// Weights and forward pass.
    pub encoder: Encoder,
    /// Its tokenizer.
    pub tokenizer: EncoderTokenizer,
}

impl Encoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`.
    pub fn load(dir: &Path) -> Result<LoadedEncoder> {
        Self::load_as(dir, None)
    }

    /// Like `load`, with the task forced (e.g. a cross-encoder's body used as a mean
    /// pooling embedder) instead of read from the folder.
    pub fn load_as(dir: &Path, task: Option<Task>) -> Result<LoadedEncoder> {
        let mut config = EncoderConfig::from_dir(dir)?;
        if let Some(task) = task {
            config.task = task;
        }
        let weights = dir.join("model.safetensors");
        let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
            .with_context(|| format!("reading {}", weights.display()))?;
        let ck = Checkpoint::new(tensors)?;
        let body = BertBody::load(&config, &ck).context("loading the encoder weights")?;
        let head = load_head(&config, &ck).context("loading the encoder head")?;
        let tokenizer = EncoderTokenizer::from_file(&dir.join("tokenizer.json"), config.max_len)?;
        Ok(LoadedEncoder {
            encoder: Self { config, body, head },
            tokenizer,
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Width of an output: the embedding size, or 1 for a cross-encoder.
    pub fn output_width(&self) -> usize {
        match self.config.task {
            Task::Embedding(_) => self.config.hidden,
            Task::CrossEncoder => 1,
        }
    }

    /// One output per input of the batch (see the module invariants).
    pub fn run(&self, batch: &PackedBatch) -> Result<Vec<Vec<f32>>> {
        if batch.lens.is_empty() {
            return Ok(Vec::new());
        }
        let states = self.body.forward(batch)?;
        let offsets = batch.offsets();
        let firsts: Vec<u32> = offsets.iter().map(|&o| o as u32).collect();
        let cls = || -> Result<Tensor> {
            let idx = Tensor::from_slice(&firsts, firsts.len(), &Device::Cpu)?;
            Ok(states.index_select(&idx, 0)?)
        };
        match &self.head {
            Head::Pool(pooling) => {
                let rows = states.to_vec2::<f32>()?;
                Ok(offsets
                    .iter()
                    .zip(&batch.lens)
                    .map(|(&o, &l)| normalized(pool(&rows[o..o + l], *pooling)))
                    .collect())
            }
            Head::BertClassifier { pooler, classifier } => {
                let pooled = pooler.forward(&cls()?)?.tanh()?;
                Ok(classifier.forward(&pooled)?.to_vec2::<f32>()?)
            }
            Head::RobertaClassifier { dense, out_proj } => {
                let x = dense.forward(&cls()?)?.tanh()?;
                Ok(out_proj.forward(&x)?.to_vec2::<f32>()?)
            }
        }
    }
}

fn load_head(cfg: &EncoderConfig, ck: &Checkpoint) -> Result<Head> {
    let h = cfg.hidden;
    match cfg.task {
        Task::Embedding(p) => Ok(Head::Pool(p)),
        Task::CrossEncoder if ck.has("classifier.out_proj.weight") => Ok(Head::RobertaClassifier {
            dense: ck.dense("classifier.dense", h, h)?,
            out_proj: ck.dense("classifier.out_proj", h, 1)?,
        }),
        Task::CrossEncoder if cfg.family == Family::Bert => Ok(Head::BertClassifier {
            pooler: ck.dense(&ck.body_name("pooler.dense"), h, h)?,
            classifier: ck.dense("classifier", h, 1)?,
        }),
        Task::CrossEncoder => bail!("the checkpoint has no classifier.out_proj for its XLM-R head"),
    }
}

fn pool(rows: &[Vec<f32>], pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => rows[0].clone(),
        Pooling::Mean => {
            let mut acc = vec![0.0f32; rows[0].len()];
            for r in rows {
                for (a, v) in acc.iter_mut().zip(r) {
                    *a += v;
                }
            }
            let n = rows.len() as f32;
            acc.iter_mut().for_each(|a| *a /= n);
            acc
        }
    }
}

/// L2-normalized copy (sentence-transformers' `Normalize`, which clamps the norm at
/// 1e-12 so a zero vector stays zero).
fn normalized(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

/// What the HTTP side knows about the served encoder.
#[derive(Debug, Clone)]
pub struct EncoderInfo {
    /// The id clients put in `model`.
    pub id: String,
    /// Embedding model or cross-encoder.
    pub task: Task,
    /// Embedding width (the hidden size).
    pub dims: usize,
    /// Longest input in tokens, special tokens included.
    pub max_len: usize,
    /// Rows of the model's token table (token ids must be below it).
    pub vocab: usize,
    /// Unix seconds when it was loaded.
    pub created: u64,
}

/// The text side of a loaded encoder, shared read-only with the HTTP layer.
pub struct ServedEncoder {
    /// Identity and limits.
    pub info: EncoderInfo,
    /// Its tokenizer.
    pub tokenizer: EncoderTokenizer,
}
