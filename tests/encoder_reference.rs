//! The encoder against its reference implementations (fixtures made by
//! `bash tests/fixtures/encoders/make_fixtures.sh` with sentence-transformers 6.2 /
//! transformers 5.23 / torch 2.15): the default encoder's embeddings, and two
//! synthetic cross-encoders (BERT and XLM-RoBERTa) scored pair by pair, tokenized by
//! us from their `tokenizer.json`.

use std::path::Path;

use ferrite::model::encoder::bert::PackedBatch;
use ferrite::model::encoder::config::{Pooling, Task};
use ferrite::model::encoder::{Encoder, LoadedEncoder};
use ferrite::model::source::DefaultEncoder;
use serde_json::Value;

#[path = "common/encoder_fixtures.rs"]
mod encoder_fixtures;
use encoder_fixtures::{cosine, fixtures, floats, ids, json, strs};

/// Embeds `texts` (truncating as sentence-transformers does) in one packed batch and
/// checks our token ids first.
fn embed(model: &LoadedEncoder, texts: &[String], want_ids: &[Value]) -> Vec<Vec<f32>> {
    let mut batch = PackedBatch::default();
    for (i, t) in texts.iter().enumerate() {
        let enc = model.tokenizer.text(t, true).expect("tokenizes");
        assert_eq!(enc.ids, ids(&want_ids[i]), "token ids of text {i}: {t:?}");
        batch.push(&enc.ids, &enc.type_ids);
    }
    model.encoder.run(&batch).expect("encoder runs")
}

#[test]
fn default_encoder_matches_sentence_transformers() {
    let dir = DefaultEncoder::ensure(&Path::new(env!("CARGO_MANIFEST_DIR")).join("models"))
        .expect("default encoder fetched");
    let model = Encoder::load(&dir).expect("loads");
    assert_eq!(model.tokenizer.max_len(), 256);
    let fx = json("minilm_embeddings.json");
    let texts = strs(&fx["sentences"]);
    let got = embed(&model, &texts, fx["token_ids"].as_array().unwrap());
    for (i, want) in fx["embeddings"].as_array().unwrap().iter().enumerate() {
        let want = floats(want);
        let c = cosine(&got[i], &want);
        assert!(c > 1.0 - 1e-4, "sentence {i}: cosine {c}");
        let norm: f32 = got[i].iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(
            (norm - 1.0).abs() < 1e-4,
            "sentence {i} is not normalized: {norm}"
        );
    }
}

fn check_cross_encoder(name: &str, dir: &str) {
    let model = Encoder::load(&fixtures().join(dir)).expect("loads");
    let fx = &json("cross_encoder_scores.json")[name];
    let pairs = fx["pairs"].as_array().unwrap();
    let mut batch = PackedBatch::default();
    for (i, pair) in pairs.iter().enumerate() {
        let p = strs(pair);
        let enc = model.tokenizer.pair(&p[0], &p[1], true).expect("tokenizes");
        assert_eq!(enc.ids, ids(&fx["input_ids"][i]), "{name} pair {i} ids");
        if let Some(types) = fx.get("token_type_ids") {
            assert_eq!(enc.type_ids, ids(&types[i]), "{name} pair {i} token types");
        }
        batch.push(&enc.ids, &enc.type_ids);
    }
    let got = model.encoder.run(&batch).expect("runs");
    let want = floats(&fx["logits"]);
    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
        assert_eq!(g.len(), 1);
        assert!((g[0] - w).abs() < 1e-4, "{name} pair {i}: {} vs {w}", g[0]);
    }
    // One pair alone gives the same logit as inside the batch.
    let enc = {
        let p = strs(&pairs[3]);
        model.tokenizer.pair(&p[0], &p[1], true).unwrap()
    };
    let mut alone = PackedBatch::default();
    alone.push(&enc.ids, &enc.type_ids);
    let single = model.encoder.run(&alone).unwrap();
    assert!((single[0][0] - got[3][0]).abs() < 1e-5);
}

#[test]
fn bert_cross_encoder_matches_transformers() {
    check_cross_encoder("bert", "bert_cross_encoder");
}

#[test]
fn xlm_roberta_cross_encoder_matches_transformers() {
    check_cross_encoder("xlmr", "xlmr_cross_encoder");
}

#[test]
fn bert_body_as_mean_pooling_embedder_matches() {
    let dir = fixtures().join("bert_cross_encoder");
    let model = Encoder::load_as(&dir, Some(Task::Embedding(Pooling::Mean))).expect("loads");
    let fx = json("cross_encoder_scores.json");
    let texts = strs(&fx["bert_mean_embeddings_texts"]);
    let got = embed(
        &model,
        &texts,
        fx["bert_mean_embeddings_input_ids"].as_array().unwrap(),
    );
    for (i, want) in fx["bert_mean_embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
    {
        let c = cosine(&got[i], &floats(want));
        assert!(c > 1.0 - 1e-4, "text {i}: cosine {c}");
    }
}

#[test]
fn over_long_inputs_are_refused_unless_truncation_is_allowed() {
    let model = Encoder::load(&fixtures().join("bert_cross_encoder")).expect("loads");
    let long = "word ".repeat(400);
    let err = model.tokenizer.text(&long, false).unwrap_err();
    assert!(err.to_string().contains("at most 128"), "{err}");
    let ok = model.tokenizer.text(&long, true).unwrap();
    assert_eq!(ok.ids.len(), 128);
}
