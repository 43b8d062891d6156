//! Encoder models (BERT and XLM-RoBERTa families, CamemBERT included, from
//! safetensors + `config.json` + `tokenizer.json`): sentence embeddings (mean or CLS
//! pooling, L2-normalized), one-label cross-encoders for rerank, sequence classifiers
//! with any number of labels, and token classifiers (NER; aggregation in `ner`).
//! The forward runs on the CPU (`bert.rs`, the heads here) or, loaded with
//! [`Encoder::load_on_device`], whole on a GPU or the kernel emulator (`device.rs`);
//! the engine drives both through the same `begin` / `advance` / `finish`.
//!
//! Invariants: `Encoder::run` returns one output per input of the packed batch, in
//! order: an embedding of `hidden` floats for embedding models, one raw logit per
//! label for sequence classifiers (a single one for cross-encoders), and
//! `len * labels` raw logits (token-major) for token classifiers; an input's output
//! never depends on the rest of its batch.

#[cfg(target_arch = "x86_64")]
mod amx;
pub mod attention;
pub mod bert;
pub mod config;
pub mod device;
pub mod ner;
pub mod ops;
pub mod precision;
#[cfg(target_arch = "x86_64")]
mod qkernels;
pub mod qlinear;
pub mod tokenize;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::Device;

use bert::{BertBody, Checkpoint, PackedBatch, Pass};
use config::{EncoderConfig, Family, Pooling, Task};
use device::DeviceEncoder;
use ops::Dense;
use precision::{EncoderPrecision, LinearPlan};
use tokenize::EncoderTokenizer;

/// What turns the last hidden states into outputs.
enum Head {
    /// Pool, then L2-normalize.
    Pool(Pooling),
    /// BERT: `tanh(pooler(h_cls))` then the classifier (one output per label).
    BertClassifier { pooler: Dense, classifier: Dense },
    /// XLM-R: `tanh(dense(h_cls))` then `out_proj`.
    RobertaClassifier { dense: Dense, out_proj: Dense },
    /// Token classification (BERT and XLM-R alike): the classifier on every token.
    Tokens { classifier: Dense },
}

/// Where the forward runs.
enum Backend {
    /// The CPU: `bert.rs` and the heads here.
    Host {
        body: Box<BertBody>,
        head: Box<Head>,
    },
    /// A device (`device.rs`).
    Device(Box<DeviceEncoder>),
}

/// A loaded encoder model.
pub struct Encoder {
    config: EncoderConfig,
    plan: LinearPlan,
    backend: Backend,
}

/// An encoder folder, loaded.
pub struct LoadedEncoder {
    /// Weights and forward pass.
    pub encoder: Encoder,
    /// Its tokenizer.
    pub tokenizer: EncoderTokenizer,
}

impl Encoder {
    /// Loads `config.json`, `model.safetensors` and `tokenizer.json` from `dir`, in
    /// f32 (the exact path).
    pub fn load(dir: &Path) -> Result<LoadedEncoder> {
        Self::load_as(dir, None)
    }

    /// Like `load`, with the task forced (e.g. a cross-encoder's body used as a mean
    /// pooling embedder) instead of read from the folder.
    pub fn load_as(dir: &Path, task: Option<Task>) -> Result<LoadedEncoder> {
        Self::load_with(dir, task, LinearPlan::F32)
    }

    /// Like `load`, the linear layers in `precision` as this process's CPU features
    /// (`FERRITE_ISA` applied) allow; an unavailable explicit precision is an error.
    pub fn load_precision(dir: &Path, precision: EncoderPrecision) -> Result<LoadedEncoder> {
        let features = crate::device::cpu::isa::CpuFeatures::get();
        Self::load_with(dir, None, LinearPlan::resolve(precision, features)?)
    }

    /// Like `load_as`, the body's linear layers run as `plan` (the classifier heads
    /// stay f32: one row per input, where precision matters most).
    pub fn load_with(dir: &Path, task: Option<Task>, plan: LinearPlan) -> Result<LoadedEncoder> {
        let (config, ck, tokenizer) = read_folder(dir, task)?;
        let body = BertBody::load(&config, &ck, plan).context("loading the encoder weights")?;
        let head = load_head(&config, &ck).context("loading the encoder head")?;
        Ok(LoadedEncoder {
            encoder: Self {
                config,
                plan,
                backend: Backend::Host {
                    body: Box::new(body),
                    head: Box::new(head),
                },
            },
            tokenizer,
        })
    }

    /// Like `load_as`, the weights (f16) and every step of the forward on `dev` (see
    /// `device.rs`); outputs are those of the CPU path within f16 rounding.
    pub fn load_on_device(
        dir: &Path,
        task: Option<Task>,
        dev: Arc<dyn crate::device::kernels::Device>,
    ) -> Result<LoadedEncoder> {
        let (config, ck, tokenizer) = read_folder(dir, task)?;
        let on_device = DeviceEncoder::load(dev, &config, &ck)
            .context("loading the encoder weights onto the device")?;
        Ok(LoadedEncoder {
            encoder: Self {
                config,
                plan: LinearPlan::F32,
                backend: Backend::Device(Box::new(on_device)),
            },
            tokenizer,
        })
    }

    /// The device encoder, when the forward runs on one.
    pub fn on_device(&self) -> Option<&DeviceEncoder> {
        match &self.backend {
            Backend::Device(d) => Some(d),
            Backend::Host { .. } => None,
        }
    }

    /// How the linear layers run on the CPU (`F32` for a device encoder).
    pub fn plan(&self) -> LinearPlan {
        self.plan
    }

    /// How the linear layers run, for logs: the CPU plan, or the device.
    pub fn describe(&self) -> String {
        match &self.backend {
            Backend::Host { .. } => self.plan.describe().to_string(),
            Backend::Device(d) => format!("f16 tensor-core GEMM on {}", d.device_name()),
        }
    }

    /// The model's configuration.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// Width of an output (per token for a token classifier): the embedding size,
    /// 1 for a cross-encoder, the number of labels for the classifiers.
    pub fn output_width(&self) -> usize {
        match self.config.task {
            Task::Embedding(_) => self.config.hidden,
            Task::CrossEncoder => 1,
            Task::Classifier { .. } | Task::TokenClassifier => self.config.labels.len(),
        }
    }

    /// Number of transformer layers (the steps of a [`Pass`]).
    pub fn layers(&self) -> usize {
        match &self.backend {
            Backend::Host { body, .. } => body.layers(),
            Backend::Device(d) => d.layers(),
        }
    }

    /// Starts a batch: checks it and computes its embeddings (see [`BertBody::begin`]).
    pub fn begin(&self, batch: &PackedBatch) -> Result<Pass> {
        match &self.backend {
            Backend::Host { body, .. } => body.begin(batch),
            Backend::Device(d) => Ok(Pass::on_device(batch, d.begin(batch)?)),
        }
    }

    /// Runs the pass's next layer; true once every layer has run. (On a device, an
    /// error stops the pass; `finish` reports it.)
    pub fn advance(&self, pass: &mut Pass) -> bool {
        match &self.backend {
            Backend::Host { body, .. } => body.advance(pass),
            Backend::Device(d) => {
                if pass.layers_done() < d.layers()
                    && let Some((state, i)) = pass.device_step()
                {
                    d.advance(state, i);
                }
                pass.layers_done() == d.layers()
            }
        }
    }

    /// One output per input of a finished pass (see the module invariants).
    pub fn finish(&self, pass: &mut Pass) -> Result<Vec<Vec<f32>>> {
        if pass.layers_done() != self.layers() {
            bail!(
                "the pass ran {} of {} layers",
                pass.layers_done(),
                self.layers()
            );
        }
        let head = match &self.backend {
            Backend::Host { head, .. } => &**head,
            Backend::Device(d) => {
                let state = pass
                    .take_device()
                    .context("the pass was finished already, or is not a device pass")?;
                return d.finish(state, pass.lens());
            }
        };
        let h = self.config.hidden;
        let states = pass.states();
        let firsts = || -> Vec<f32> {
            pass.offsets()
                .iter()
                .flat_map(|&o| states[o * h..(o + 1) * h].iter().copied())
                .collect()
        };
        let rows = |v: Vec<f32>, width: usize| v.chunks_exact(width).map(<[f32]>::to_vec).collect();
        match head {
            Head::Pool(pooling) => Ok(pass
                .offsets()
                .iter()
                .zip(pass.lens())
                .map(|(&o, &l)| normalized(pool(&states[o * h..(o + l) * h], h, *pooling)))
                .collect()),
            Head::BertClassifier { pooler, classifier } => {
                let mut pooled = pooler.forward(&firsts());
                ops::tanh(&mut pooled);
                Ok(rows(classifier.forward(&pooled), classifier.out()))
            }
            Head::RobertaClassifier { dense, out_proj } => {
                let mut x = dense.forward(&firsts());
                ops::tanh(&mut x);
                Ok(rows(out_proj.forward(&x), out_proj.out()))
            }
            Head::Tokens { classifier } => {
                let logits = classifier.forward(states);
                let n = classifier.out();
                Ok(pass
                    .offsets()
                    .iter()
                    .zip(pass.lens())
                    .map(|(&o, &l)| logits[o * n..(o + l) * n].to_vec())
                    .collect())
            }
        }
    }

    /// One output per input of the batch, all layers at once.
    pub fn run(&self, batch: &PackedBatch) -> Result<Vec<Vec<f32>>> {
        if batch.lens.is_empty() {
            return Ok(Vec::new());
        }
        let mut pass = self.begin(batch)?;
        while !self.advance(&mut pass) {}
        self.finish(&mut pass)
    }
}

fn load_head(cfg: &EncoderConfig, ck: &Checkpoint) -> Result<Head> {
    let h = cfg.hidden;
    let n = cfg.labels.len().max(1);
    match cfg.task {
        Task::Embedding(p) => Ok(Head::Pool(p)),
        Task::TokenClassifier => Ok(Head::Tokens {
            classifier: ck.dense("classifier", h, n)?,
        }),
        Task::CrossEncoder | Task::Classifier { .. } if ck.has("classifier.out_proj.weight") => {
            Ok(Head::RobertaClassifier {
                dense: ck.dense("classifier.dense", h, h)?,
                out_proj: ck.dense("classifier.out_proj", h, n)?,
            })
        }
        Task::CrossEncoder | Task::Classifier { .. } if cfg.family == Family::Bert => {
            Ok(Head::BertClassifier {
                pooler: ck.dense(&ck.body_name("pooler.dense"), h, h)?,
                classifier: ck.dense("classifier", h, n)?,
            })
        }
        Task::CrossEncoder | Task::Classifier { .. } => {
            bail!("the checkpoint has no classifier.out_proj for its XLM-R head")
        }
    }
}

/// Pools an input's hidden states (`[len, width]` row-major).
fn pool(rows: &[f32], width: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => rows[..width].to_vec(),
        Pooling::Mean => {
            let mut acc = vec![0.0f32; width];
            for r in rows.chunks_exact(width) {
                for (a, v) in acc.iter_mut().zip(r) {
                    *a += v;
                }
            }
            let n = (rows.len() / width) as f32;
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
    /// What the model computes.
    pub task: Task,
    /// Classifier label names, one per output (empty for embedding models).
    pub labels: Vec<String>,
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

/// An encoder folder's configuration (its task replaced by `task` when given), its
/// weights and its tokenizer: what every backend loads from.
fn read_folder(
    dir: &Path,
    task: Option<Task>,
) -> Result<(EncoderConfig, Checkpoint, EncoderTokenizer)> {
    let mut config = EncoderConfig::from_dir(dir)?;
    if let Some(task) = task {
        config.task = task;
    }
    let weights = dir.join("model.safetensors");
    let tensors = candle_core::safetensors::load(&weights, &Device::Cpu)
        .with_context(|| format!("reading {}", weights.display()))?;
    let ck = Checkpoint::new(tensors)?;
    let tokenizer = EncoderTokenizer::from_file(&dir.join("tokenizer.json"), config.max_len)?;
    Ok((config, ck, tokenizer))
}
