//! What an encoder folder says about itself: the transformer shape from `config.json`
//! (BERT, or XLM-RoBERTa / RoBERTa / CamemBERT), its task (an embedding model, a one-label cross-encoder, a
//! sequence classifier with several labels, or a token classifier), the label names
//! (`id2label`), and the sentence-transformers pooling and length settings.
//!
//! Invariants: a config that parses here can be run by `bert.rs` (unsupported
//! architectures, activations, label counts or shapes are errors at load time);
//! `labels` has exactly one name per output of the classifier head (`LABEL_i` where
//! `id2label` has no entry) and is empty for embedding models.

use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Which transformer family: they differ in position ids and checkpoint prefixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// BERT (positions from 0, token types 0/1 for the two segments of a pair).
    Bert,
    /// XLM-RoBERTa (positions from `pad_token_id + 1`, one token type).
    XlmRoberta,
}

/// The feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU (`erf`), what `"gelu"` means in transformers.
    GeluErf,
    /// The tanh approximation (`gelu_new`, `gelu_pytorch_tanh`).
    GeluTanh,
    /// ReLU.
    Relu,
}

/// Pooling of token states into one sentence vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pooling {
    /// Mean over all tokens of the input (special tokens included, as
    /// sentence-transformers does with its attention mask).
    Mean,
    /// The first token's state.
    Cls,
}

/// What the model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// Sentence embeddings (pooled, L2-normalized).
    Embedding(Pooling),
    /// One relevance logit per (query, document) pair (a one-label
    /// `*ForSequenceClassification`).
    CrossEncoder,
    /// A `*ForSequenceClassification` with two or more labels: one logit per label
    /// per input.
    Classifier {
        /// `problem_type` is `multi_label_classification`: each label's score is its
        /// sigmoid; otherwise the scores are the softmax over labels.
        multi_label: bool,
    },
    /// A `*ForTokenClassification` (e.g. NER): one logit per label per token.
    TokenClassifier,
}

impl Task {
    /// A short name for errors, `/health` and `/v1/models`.
    pub fn name(self) -> &'static str {
        match self {
            Task::Embedding(_) => "embedding",
            Task::CrossEncoder => "cross-encoder",
            Task::Classifier { .. } => "classifier",
            Task::TokenClassifier => "token-classifier",
        }
    }
}

/// Everything needed to run an encoder folder.
#[derive(Debug, Clone)]
pub struct EncoderConfig {
    /// Transformer family.
    pub family: Family,
    /// Embedding model or cross-encoder.
    pub task: Task,
    /// Hidden width.
    pub hidden: usize,
    /// Transformer layers.
    pub layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Rows of the token-type table.
    pub type_vocab: usize,
    /// Rows of the position table.
    pub max_positions: usize,
    /// LayerNorm epsilon.
    pub eps: f64,
    /// Feed-forward activation.
    pub activation: Activation,
    /// Padding id (XLM-R positions start after it).
    pub pad_id: usize,
    /// Longest input in tokens, special tokens included.
    pub max_len: usize,
    /// Name of each classifier output, in order (`id2label`); empty for embedders.
    pub labels: Vec<String>,
}

#[derive(Deserialize)]
struct RawConfig {
    model_type: Option<String>,
    #[serde(default)]
    architectures: Vec<String>,
    hidden_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    intermediate_size: usize,
    vocab_size: usize,
    #[serde(default = "one")]
    type_vocab_size: usize,
    max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    layer_norm_eps: f64,
    #[serde(default = "default_act")]
    hidden_act: String,
    pad_token_id: Option<usize>,
    num_labels: Option<usize>,
    id2label: Option<serde_json::Map<String, serde_json::Value>>,
    position_embedding_type: Option<String>,
    problem_type: Option<String>,
}

fn one() -> usize {
    1
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".into()
}

#[derive(Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default)]
    pooling_mode_mean_tokens: bool,
}

#[derive(Deserialize)]
struct SentenceBertConfig {
    max_seq_length: Option<usize>,
}

#[derive(Deserialize)]
struct TokenizerConfig {
    model_max_length: Option<f64>,
}

impl EncoderConfig {
    /// Reads `config.json` and the optional sentence-transformers files in `dir`.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let raw: RawConfig = read_json(&dir.join("config.json"))?
            .context("the encoder folder has no config.json")?;
        let family = match raw.model_type.as_deref() {
            Some("bert") => Family::Bert,
            // CamemBERT is the RoBERTa architecture (same weights layout and positions).
            Some("xlm-roberta" | "roberta" | "camembert") => Family::XlmRoberta,
            other => bail!(
                "encoder model_type {other:?} is not supported (bert, xlm-roberta, roberta, \
                 camembert)"
            ),
        };
        if let Some(kind) = raw.position_embedding_type.as_deref()
            && kind != "absolute"
        {
            bail!("position_embedding_type {kind:?} is not supported (absolute)");
        }
        let activation = match raw.hidden_act.as_str() {
            "gelu" => Activation::GeluErf,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => bail!("hidden_act {other:?} is not supported"),
        };
        if raw.num_attention_heads == 0 || !raw.hidden_size.is_multiple_of(raw.num_attention_heads)
        {
            bail!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                raw.hidden_size,
                raw.num_attention_heads
            );
        }
        let (task, labels) = task(dir, &raw)?;
        let pad_id = raw.pad_token_id.unwrap_or(match family {
            Family::Bert => 0,
            Family::XlmRoberta => 1,
        });
        let position_offset = match family {
            Family::Bert => 0,
            Family::XlmRoberta => pad_id + 1,
        };
        let mut max_len = raw
            .max_position_embeddings
            .checked_sub(position_offset)
            .filter(|&n| n > 0)
            .context("max_position_embeddings leaves no positions")?;
        let sbert: Option<SentenceBertConfig> = read_json(&dir.join("sentence_bert_config.json"))?;
        let tok: Option<TokenizerConfig> = read_json(&dir.join("tokenizer_config.json"))?;
        let limits = [
            sbert.and_then(|c| c.max_seq_length),
            tok.and_then(|c| c.model_max_length)
                .filter(|n| (1.0..1e9).contains(n))
                .map(|n| n as usize),
        ];
        for limit in limits.into_iter().flatten() {
            max_len = max_len.min(limit);
        }
        Ok(Self {
            family,
            task,
            hidden: raw.hidden_size,
            layers: raw.num_hidden_layers,
            heads: raw.num_attention_heads,
            intermediate: raw.intermediate_size,
            vocab: raw.vocab_size,
            type_vocab: raw.type_vocab_size.max(1),
            max_positions: raw.max_position_embeddings,
            eps: raw.layer_norm_eps,
            activation,
            pad_id,
            max_len,
            labels,
        })
    }

    /// First position id of a sequence.
    pub fn position_offset(&self) -> usize {
        match self.family {
            Family::Bert => 0,
            Family::XlmRoberta => self.pad_id + 1,
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden / self.heads
    }

    /// Bytes of activations one forward over `tokens` tokens (no sequence longer
    /// than `max_len`) needs at its peak: the residual stream, the fused QKV, the
    /// attention output, the feed-forward intermediate, and one sequence's scores.
    pub fn activation_bytes(&self, tokens: usize) -> usize {
        let per_token = 6 * self.hidden + 2 * self.intermediate;
        let scores = self.heads * self.max_len * self.max_len;
        4 * (tokens * per_token + scores)
    }
}

fn task(dir: &Path, raw: &RawConfig) -> Result<(Task, Vec<String>)> {
    let arch = raw.architectures.first().map(String::as_str).unwrap_or("");
    if arch.ends_with("ForSequenceClassification") {
        let labels = labels(raw, arch)?;
        let task = match labels.len() {
            1 => Task::CrossEncoder,
            _ => Task::Classifier {
                multi_label: raw.problem_type.as_deref() == Some("multi_label_classification"),
            },
        };
        return Ok((task, labels));
    }
    if arch.ends_with("ForTokenClassification") {
        return Ok((Task::TokenClassifier, labels(raw, arch)?));
    }
    let pooling: Option<PoolingConfig> = read_json(&dir.join("1_Pooling/config.json"))?;
    let pooling = match pooling {
        Some(p) if p.pooling_mode_cls_token && !p.pooling_mode_mean_tokens => Pooling::Cls,
        Some(p) if p.pooling_mode_mean_tokens => Pooling::Mean,
        Some(_) => bail!("1_Pooling/config.json asks for a pooling other than mean or CLS"),
        // Without a sentence-transformers config: XLM-R embedders (bge-m3 family) use
        // CLS, BERT sentence embedders mean pooling.
        None if raw.model_type.as_deref() == Some("bert") => Pooling::Mean,
        None => Pooling::Cls,
    };
    Ok((Task::Embedding(pooling), Vec::new()))
}

/// The classifier's label names: `num_labels` of them (else as many as `id2label`
/// has, else two, transformers' default), each from `id2label` or `LABEL_i`.
fn labels(raw: &RawConfig, arch: &str) -> Result<Vec<String>> {
    let names = raw.id2label.as_ref();
    let n = raw
        .num_labels
        .or_else(|| names.map(|m| m.len()))
        .unwrap_or(2);
    if n == 0 {
        bail!("{arch} has no labels");
    }
    (0..n)
        .map(|i| match names.and_then(|m| m.get(&i.to_string())) {
            None => Ok(format!("LABEL_{i}")),
            Some(serde_json::Value::String(s)) => Ok(s.clone()),
            Some(other) => bail!("id2label[{i}] is {other}, not a string"),
        })
        .collect()
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    match std::fs::read_to_string(path) {
        Ok(text) => serde_json::from_str(&text)
            .map(Some)
            .with_context(|| format!("parsing {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Parses a config.json made of a small BERT plus `extra`.
    fn parse(extra: serde_json::Value) -> Result<EncoderConfig> {
        let mut cfg = json!({
            "model_type": "bert", "hidden_size": 8, "num_hidden_layers": 1,
            "num_attention_heads": 2, "intermediate_size": 16, "vocab_size": 10,
            "max_position_embeddings": 16,
        });
        for (k, v) in extra.as_object().unwrap() {
            cfg[k] = v.clone();
        }
        let dir = std::env::temp_dir().join(format!(
            "ferrite-config-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("config.json"), cfg.to_string())?;
        let out = EncoderConfig::from_dir(&dir);
        std::fs::remove_dir_all(&dir)?;
        out
    }

    #[test]
    fn sequence_classifiers_by_label_count_and_problem_type() {
        let seq = json!(["BertForSequenceClassification"]);
        let one = parse(json!({"architectures": seq, "id2label": {"0": "LABEL_0"}})).unwrap();
        assert_eq!(one.task, Task::CrossEncoder);
        assert_eq!(one.labels, ["LABEL_0"]);
        let three = parse(json!({"architectures": seq,
            "id2label": {"0": "neg", "1": "neu", "2": "pos"}}))
        .unwrap();
        assert_eq!(three.task, Task::Classifier { multi_label: false });
        assert_eq!(three.labels, ["neg", "neu", "pos"]);
        let multi = parse(json!({"architectures": seq, "num_labels": 3,
            "problem_type": "multi_label_classification", "id2label": {"1": "b"}}))
        .unwrap();
        assert_eq!(multi.task, Task::Classifier { multi_label: true });
        assert_eq!(
            multi.labels,
            ["LABEL_0", "b", "LABEL_2"],
            "missing names are LABEL_i"
        );
        // No label information at all: transformers' default of two.
        let default = parse(json!({"architectures": seq})).unwrap();
        assert_eq!(default.labels.len(), 2);
        assert!(parse(json!({"architectures": seq, "id2label": {"0": 3}})).is_err());
        assert!(parse(json!({"architectures": seq, "num_labels": 0})).is_err());
    }

    #[test]
    fn token_classifiers_and_camembert() {
        let ner = parse(json!({"architectures": ["CamembertForTokenClassification"],
            "model_type": "camembert", "pad_token_id": 1,
            "id2label": {"0": "O", "1": "B-PER", "2": "I-PER"}}))
        .unwrap();
        assert_eq!(ner.task, Task::TokenClassifier);
        assert_eq!(ner.family, Family::XlmRoberta);
        assert_eq!(ner.labels, ["O", "B-PER", "I-PER"]);
        assert_eq!(ner.task.name(), "token-classifier");
        let emb = parse(json!({"architectures": ["BertModel"]})).unwrap();
        assert_eq!(emb.task, Task::Embedding(Pooling::Mean));
        assert!(emb.labels.is_empty());
    }
}
