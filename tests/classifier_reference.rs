//! The classifier kinds against transformers (fixtures made by
//! `bash tests/fixtures/encoders/make_fixtures.sh`, `classifier_outputs.json`): a
//! synthetic three-label BERT sequence classifier (logits and the text-classification
//! pipeline's scores, texts and pairs), and two synthetic token classifiers, BERT
//! (WordPiece: exact sub-word marks) and XLM-RoBERTa (Unigram: the pipeline's
//! fallback heuristic), checked token by token (ids, character offsets, special
//! marks, logits) and entity by entity for all five aggregation strategies.

use ferrite::model::encoder::bert::PackedBatch;
use ferrite::model::encoder::config::Task;
use ferrite::model::encoder::ner::{self, Aggregation};
use ferrite::model::encoder::{Encoder, LoadedEncoder};
use serde_json::Value;

#[path = "common/encoder_fixtures.rs"]
mod encoder_fixtures;
use encoder_fixtures::{fixtures, floats, ids, json, strs};

fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() < tol, "{what}[{i}]: {g} vs {w}");
    }
}

#[test]
fn sequence_classifier_matches_transformers_on_texts_and_pairs() {
    let model = Encoder::load(&fixtures().join("bert_classifier")).expect("loads");
    let fx = &json("classifier_outputs.json")["classifier"];
    let cfg = model.encoder.config();
    assert_eq!(cfg.task, Task::Classifier { multi_label: false });
    assert_eq!(cfg.labels, strs(&fx["labels"]));
    assert_eq!(model.encoder.output_width(), 3);
    let mut batch = PackedBatch::default();
    let texts = strs(&fx["texts"]);
    let pairs: Vec<Vec<String>> = fx["pairs"].as_array().unwrap().iter().map(strs).collect();
    let encoded = texts
        .iter()
        .map(|t| model.tokenizer.text(t, true).unwrap())
        .chain(
            pairs
                .iter()
                .map(|p| model.tokenizer.pair(&p[0], &p[1], true).unwrap()),
        );
    for (i, enc) in encoded.enumerate() {
        assert_eq!(enc.ids, ids(&fx["input_ids"][i]), "input {i} ids");
        batch.push(&enc.ids, &enc.type_ids);
    }
    let got = model.encoder.run(&batch).expect("runs");
    assert_eq!(got.len(), texts.len() + pairs.len());
    for (i, row) in got.iter().enumerate() {
        close(row, &floats(&fx["logits"][i]), 1e-4, &format!("logits {i}"));
        let probs = &ner::softmax_rows(row, 3)[0];
        close(
            probs,
            &floats(&fx["softmax"][i]),
            1e-5,
            &format!("softmax {i}"),
        );
    }
    // The pipeline's answers (best first) are the softmax of those logits.
    let answers: Vec<&Value> = fx["pipeline_texts"]
        .as_array()
        .unwrap()
        .iter()
        .chain(fx["pipeline_pairs"].as_array().unwrap())
        .collect();
    for (i, answer) in answers.iter().enumerate() {
        let probs = &ner::softmax_rows(&got[i], 3)[0];
        for item in answer.as_array().unwrap() {
            let j = cfg.labels.iter().position(|l| l == &item["label"]).unwrap();
            let want = item["score"].as_f64().unwrap() as f32;
            assert!(
                (probs[j] - want).abs() < 1e-5,
                "answer {i} {}",
                item["label"]
            );
        }
    }
}

fn check_ner(name: &str) {
    let model: LoadedEncoder = Encoder::load(&fixtures().join(name)).expect("loads");
    let fx = &json("classifier_outputs.json")[name];
    let cfg = model.encoder.config();
    assert_eq!(cfg.task, Task::TokenClassifier);
    assert_eq!(cfg.labels, strs(&fx["labels"]));
    let texts = strs(&fx["texts"]);
    let mut batch = PackedBatch::default();
    let mut all_spans = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        let (enc, spans) = model.tokenizer.text_spans(t, true).expect("tokenizes");
        let want = &fx["tokens"][i];
        assert_eq!(enc.ids, ids(&want["input_ids"]), "{name} text {i} ids");
        let offsets: Vec<(usize, usize)> = spans.iter().map(|s| (s.start, s.end)).collect();
        let want_offsets: Vec<(usize, usize)> = want["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(offsets, want_offsets, "{name} text {i} character offsets");
        let special: Vec<u32> = spans.iter().map(|s| u32::from(s.special)).collect();
        assert_eq!(
            special,
            ids(&want["special"]),
            "{name} text {i} special marks"
        );
        batch.push(&enc.ids, &enc.type_ids);
        all_spans.push(spans);
    }
    let got = model.encoder.run(&batch).expect("runs");
    let n = cfg.labels.len();
    for (i, out) in got.iter().enumerate() {
        let want: Vec<f32> = fx["logits"][i]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        assert_eq!(out.len(), all_spans[i].len() * n);
        close(out, &want, 1e-4, &format!("{name} text {i} token logits"));
    }
    let join = |pieces: &[String]| model.tokenizer.join_tokens(pieces);
    let mut multi_token = 0;
    for strategy in ["none", "simple", "first", "average", "max"] {
        let agg = Aggregation::parse(strategy).unwrap();
        for (i, text) in texts.iter().enumerate() {
            let probs = ner::softmax_rows(&got[i], n);
            let scored = ner::gather(text, &all_spans[i], probs, model.tokenizer.word_aware());
            let found = ner::entities(&scored, &cfg.labels, agg, &["O".into()], &join);
            let want = fx["entities"][strategy][i].as_array().unwrap();
            let at = format!("{name} {strategy} text {i}");
            assert_eq!(found.len(), want.len(), "{at}: {found:?}\nvs {want:?}");
            for (e, w) in found.iter().zip(want) {
                let key = if agg == Aggregation::None {
                    "entity"
                } else {
                    "entity_group"
                };
                assert_eq!(e.label, w[key].as_str().unwrap(), "{at}: {e:?} vs {w}");
                assert_eq!(e.word, w["word"].as_str().unwrap(), "{at}: {e:?} vs {w}");
                assert_eq!(e.start as u64, w["start"].as_u64().unwrap(), "{at}: {e:?}");
                assert_eq!(e.end as u64, w["end"].as_u64().unwrap(), "{at}: {e:?}");
                assert_eq!(e.index.map(|x| x as u64), w["index"].as_u64(), "{at}");
                let score = w["score"].as_f64().unwrap() as f32;
                assert!((e.score - score).abs() < 1e-4, "{at}: {e:?} vs {w}");
                if agg != Aggregation::None && e.word.chars().count() > 1 {
                    multi_token += 1;
                }
            }
        }
    }
    assert!(multi_token > 0, "{name}: the aggregation merged nothing");
}

#[test]
fn bert_token_classifier_matches_the_pipeline_for_every_strategy() {
    check_ner("bert_ner");
}

#[test]
fn xlm_roberta_token_classifier_matches_the_pipeline_for_every_strategy() {
    check_ner("xlmr_ner");
}
