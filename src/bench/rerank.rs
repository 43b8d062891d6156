//! Rerank timing on a synthetic XLM-R cross-encoder: a folder with `config.json`,
//! `model.safetensors` (random f32 weights, std ~0.02 like a fresh init, LayerNorms at
//! 1 / 0) and a minimal word-level `tokenizer.json`, loaded by the normal encoder
//! loader; then one packed batch of `docs` inputs of `tokens` ids each (query + document
//! as the tokenizer would have packed them), timed whole.
//!
//! [`XlmrShape::bge_reranker_v2_m3`] is that model's shape (24 layers, 1024 wide, 16
//! heads, 4096 FFN, vocab 250002, 8194 positions). The encoder runs on the bench's
//! device when it has one (`Encoder::load_on_device`: f16 weights, tensor-core GEMMs),
//! else on the CPU; the report says which.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::{Device, Tensor};
use serde::Serialize;

use super::budget::Budget;
use crate::model::encoder::Encoder;
use crate::model::encoder::bert::PackedBatch;
use crate::model::encoder::precision::EncoderPrecision;
use crate::model::gguf_writer::signed_units;

/// An XLM-R body and classifier shape.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct XlmrShape {
    /// Transformer layers.
    pub layers: usize,
    /// Hidden width.
    pub hidden: usize,
    /// Attention heads.
    pub heads: usize,
    /// Feed-forward width.
    pub intermediate: usize,
    /// Vocabulary.
    pub vocab: usize,
    /// Position table rows.
    pub max_positions: usize,
}

impl XlmrShape {
    /// BAAI/bge-reranker-v2-m3 (XLM-RoBERTa large).
    pub fn bge_reranker_v2_m3() -> Self {
        Self {
            layers: 24,
            hidden: 1024,
            heads: 16,
            intermediate: 4096,
            vocab: 250_002,
            max_positions: 8194,
        }
    }

    /// Two small layers, for `--quick`.
    pub fn tiny() -> Self {
        Self {
            layers: 2,
            hidden: 128,
            heads: 4,
            intermediate: 512,
            vocab: 1000,
            max_positions: 514,
        }
    }
}

fn random(shape: &[usize], std: f32, seed: u64) -> Result<Tensor> {
    let n: usize = shape.iter().product();
    // Uniform in [-a, a] has std a / sqrt(3).
    let a = std * 3f32.sqrt();
    let v: Vec<f32> = signed_units(n, seed).into_iter().map(|x| x * a).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn constant(n: usize, v: f32) -> Result<Tensor> {
    Ok(Tensor::from_vec(vec![v; n], n, &Device::Cpu)?)
}

/// Writes the folder for `shape` into `dir`.
pub fn write_xlmr(dir: &Path, s: XlmrShape) -> Result<()> {
    let h = s.hidden;
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut seed = 1u64;
    let mut dense = |t: &mut HashMap<String, Tensor>, name: &str, inp: usize, out: usize| {
        seed += 1;
        t.insert(format!("{name}.weight"), random(&[out, inp], 0.02, seed)?);
        t.insert(format!("{name}.bias"), constant(out, 0.0)?);
        Ok::<_, anyhow::Error>(())
    };
    let norm = |t: &mut HashMap<String, Tensor>, name: &str| {
        t.insert(format!("{name}.weight"), constant(h, 1.0)?);
        t.insert(format!("{name}.bias"), constant(h, 0.0)?);
        Ok::<_, anyhow::Error>(())
    };
    let e = "roberta.embeddings";
    t.insert(
        format!("{e}.word_embeddings.weight"),
        random(&[s.vocab, h], 0.02, 100)?,
    );
    t.insert(
        format!("{e}.position_embeddings.weight"),
        random(&[s.max_positions, h], 0.02, 101)?,
    );
    t.insert(
        format!("{e}.token_type_embeddings.weight"),
        random(&[1, h], 0.02, 102)?,
    );
    norm(&mut t, &format!("{e}.LayerNorm"))?;
    for i in 0..s.layers {
        let p = format!("roberta.encoder.layer.{i}");
        for m in ["query", "key", "value"] {
            dense(&mut t, &format!("{p}.attention.self.{m}"), h, h)?;
        }
        dense(&mut t, &format!("{p}.attention.output.dense"), h, h)?;
        norm(&mut t, &format!("{p}.attention.output.LayerNorm"))?;
        dense(
            &mut t,
            &format!("{p}.intermediate.dense"),
            h,
            s.intermediate,
        )?;
        dense(&mut t, &format!("{p}.output.dense"), s.intermediate, h)?;
        norm(&mut t, &format!("{p}.output.LayerNorm"))?;
    }
    dense(&mut t, "classifier.dense", h, h)?;
    dense(&mut t, "classifier.out_proj", h, 1)?;
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))
        .context("writing model.safetensors")?;
    drop(t);
    let config = serde_json::json!({
        "model_type": "xlm-roberta",
        "architectures": ["XLMRobertaForSequenceClassification"],
        "hidden_size": h,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "intermediate_size": s.intermediate,
        "vocab_size": s.vocab,
        "type_vocab_size": 1,
        "max_position_embeddings": s.max_positions,
        "layer_norm_eps": 1e-5,
        "hidden_act": "gelu",
        "pad_token_id": 1,
        "num_labels": 1,
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    let tokenizer = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "Whitespace"},
        "post_processor": null, "decoder": null,
        "model": {"type": "WordLevel", "unk_token": "<unk>",
                  "vocab": {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3}},
    });
    std::fs::write(dir.join("tokenizer.json"), tokenizer.to_string())?;
    Ok(())
}

/// Rerank timing.
#[derive(Debug, Clone, Serialize)]
pub struct RerankResult {
    /// The model's shape.
    pub shape: XlmrShape,
    /// Where the encoder ran, and why.
    pub runs_on: String,
    /// Linear-layer precision.
    pub precision: String,
    /// Inputs per request.
    pub docs: usize,
    /// Tokens per input.
    pub tokens: usize,
    /// Writing the synthetic folder, seconds.
    pub generate_s: f64,
    /// Loading it, seconds.
    pub load_s: f64,
    /// Timed requests (after one warm-up).
    pub reps: usize,
    /// Fastest request, ms.
    pub min_ms: f64,
    /// Median request, ms.
    pub p50_ms: f64,
}

/// Writes the model into `dir`, loads it and times `docs x tokens` batches.
pub fn measure(
    dir: &Path,
    shape: XlmrShape,
    (docs, tokens): (usize, usize),
    device: Option<Arc<dyn crate::device::kernels::Device>>,
    budget: &Budget,
) -> Result<RerankResult> {
    let t = Instant::now();
    write_xlmr(dir, shape)?;
    let generate_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (enc, runs_on) = match device {
        Some(dev) => {
            let name = dev.name();
            let enc = Encoder::load_on_device(dir, None, dev)?.encoder;
            (enc, format!("device encoder on {name}"))
        }
        None => (
            Encoder::load_precision(dir, EncoderPrecision::Auto)?.encoder,
            "cpu encoder".to_string(),
        ),
    };
    let load_s = t.elapsed().as_secs_f64();
    let mut batch = PackedBatch::default();
    for d in 0..docs {
        let ids: Vec<u32> = (0..tokens)
            .map(|p| match p {
                0 => 0,
                _ if p == tokens - 1 => 2,
                _ => (4 + (p * 7919 + d * 104_729) % (shape.vocab - 4)) as u32,
            })
            .collect();
        batch.push(&ids, &vec![0; tokens]);
    }
    let time = || -> Result<f64> {
        let t = Instant::now();
        let out = enc.run(&batch)?;
        anyhow::ensure!(
            out.len() == docs && out.iter().all(|o| o.len() == 1 && o[0].is_finite()),
            "rerank gave no finite score per document"
        );
        Ok(t.elapsed().as_secs_f64() * 1e3)
    };
    let warm = time()?;
    let mut times = Vec::new();
    // Up to 5 timed requests, fewer when one is slow or the budget is spent.
    while times.len() < 5 && (times.is_empty() || !budget.over()) {
        times.push(time()?);
        if warm > 10_000.0 {
            break;
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(RerankResult {
        shape,
        runs_on,
        precision: enc.describe(),
        docs,
        tokens,
        generate_s,
        load_s,
        reps: times.len(),
        min_ms: times[0],
        p50_ms: times[times.len() / 2],
    })
}
