//! The classifier routes on the running binary (encoder-only servers): `/predict`
//! (TEI shape) and `/v1/classify` (vLLM shape) with the synthetic three-label
//! classifier, a multi-label copy of it, and a one-label cross-encoder; `/v1/ner`
//! with the synthetic BERT and XLM-R token classifiers for every aggregation
//! strategy; all checked against transformers' pipelines
//! (`tests/fixtures/encoders/classifier_outputs.json`), plus wrong-kind and bad-input
//! 400s.

mod common;

use std::path::{Path, PathBuf};

use common::{Server, TempFile};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    common::repo_root().join("tests/fixtures/encoders")
}

fn fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("classifier_outputs.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn serve(dir: &Path) -> Server {
    Server::start_raw(&[
        "--model".into(),
        "none".into(),
        "--encoder".into(),
        dir.display().to_string(),
        "--encoder-precision".into(),
        "f32".into(),
        "--served-encoder-name".into(),
        "enc".into(),
    ])
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = Client::new()
        .post(format!("{}{path}", s.url))
        .json(body)
        .send()
        .expect("request sent");
    let status = r.status().as_u16();
    (status, r.json().expect("JSON body"))
}

fn assert_400(s: &Server, path: &str, body: Value, needle: &str) {
    let (status, res) = post(s, path, &body);
    assert_eq!(status, 400, "{path} {body}: {res}");
    let msg = res["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{path} {body}: {msg}");
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap()
}

/// A TEI prediction list equals the pipeline's answer (same order, scores 1e-5).
fn same_predictions(got: &Value, want: &Value) {
    let (g, w) = (got.as_array().unwrap(), want.as_array().unwrap());
    assert_eq!(g.len(), w.len(), "{got} vs {want}");
    for (a, b) in g.iter().zip(w) {
        assert_eq!(a["label"], b["label"], "{got} vs {want}");
        assert!(
            (f(&a["score"]) - f(&b["score"])).abs() < 1e-5,
            "{got} vs {want}"
        );
    }
}

#[test]
fn predict_and_classify_match_the_text_classification_pipeline() {
    let s = serve(&fixtures().join("bert_classifier"));
    let fx = &fixture()["classifier"];
    let texts = fx["texts"].as_array().unwrap();
    // One text: a flat list, best first.
    let (status, one) = post(&s, "/predict", &json!({"inputs": texts[0]}));
    assert_eq!(status, 200, "{one}");
    same_predictions(&one, &fx["pipeline_texts"][0]);
    // A pair of strings is one (text, text_pair) input.
    let pair = &fx["pairs"][0];
    let (status, p) = post(&s, "/predict", &json!({"inputs": pair}));
    assert_eq!(status, 200, "{p}");
    same_predictions(&p, &fx["pipeline_pairs"][0]);
    // A batch of lists: one list of predictions per input.
    let batch = json!([[texts[1]], pair, [texts[2]]]);
    let (status, b) = post(&s, "/predict", &json!({"inputs": batch}));
    assert_eq!(status, 200, "{b}");
    assert_eq!(b.as_array().unwrap().len(), 3);
    same_predictions(&b[0], &fx["pipeline_texts"][1]);
    same_predictions(&b[1], &fx["pipeline_pairs"][0]);
    same_predictions(&b[2], &fx["pipeline_texts"][2]);
    // raw_scores: the logits, still best first.
    let (_, raw) = post(
        &s,
        "/predict",
        &json!({"inputs": texts[0], "raw_scores": true}),
    );
    let logits = &fx["logits"][0];
    let labels = fx["labels"].as_array().unwrap();
    for item in raw.as_array().unwrap() {
        let j = labels.iter().position(|l| *l == item["label"]).unwrap();
        assert!((f(&item["score"]) - f(&logits[j])).abs() < 1e-4, "{raw}");
    }
    assert!(f(&raw[0]["score"]) >= f(&raw[1]["score"]));

    // vLLM's classify shape.
    let (status, c) = post(
        &s,
        "/v1/classify",
        &json!({"model": "enc", "input": [texts[0], texts[3]]}),
    );
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["object"], "list");
    assert_eq!(c["model"], "enc");
    assert!(c["id"].as_str().unwrap().starts_with("classify-"));
    assert!(c["created"].as_u64().unwrap() > 0);
    let want_tokens: usize = [0, 3]
        .iter()
        .map(|&i| fx["input_ids"][i].as_array().unwrap().len())
        .sum();
    assert_eq!(c["usage"]["prompt_tokens"], want_tokens);
    assert_eq!(c["usage"]["total_tokens"], want_tokens);
    for (k, i) in [0, 3].into_iter().enumerate() {
        let d = &c["data"][k];
        assert_eq!(d["index"], k);
        assert_eq!(d["num_classes"], 3);
        assert_eq!(d["label"], fx["pipeline_texts"][i][0]["label"], "{d}");
        for (g, w) in d["probs"]
            .as_array()
            .unwrap()
            .iter()
            .zip(fx["softmax"][i].as_array().unwrap())
        {
            assert!((f(g) - f(w)).abs() < 1e-5, "{d}");
        }
    }
    let (status, single) = post(&s, "/v1/classify", &json!({"input": texts[1]}));
    assert_eq!(status, 200, "{single}");
    assert_eq!(single["data"].as_array().unwrap().len(), 1);

    // The model card says what it is; the other routes refuse it, naming the right ones.
    let health: Value = Client::new()
        .get(format!("{}/health", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["encoder"]["task"], "classifier");
    assert_eq!(health["encoder"]["rerank_mode"], Value::Null);
    for (path, body) in [
        ("/v1/embeddings", json!({"model": "enc", "input": "a"})),
        (
            "/rerank",
            json!({"model": "enc", "query": "q", "texts": ["a"]}),
        ),
        (
            "/v1/rerank",
            json!({"model": "enc", "query": "q", "documents": ["a"]}),
        ),
        ("/v1/ner", json!({"model": "enc", "input": "a"})),
        ("/api/embed", json!({"model": "enc", "input": "a"})),
    ] {
        let (status, res) = post(&s, path, &body);
        assert_eq!(status, 400, "{path}: {res}");
        let msg = res["error"]["message"]
            .as_str()
            .unwrap_or_else(|| res["error"].as_str().unwrap());
        assert!(msg.contains("is a sequence classifier"), "{path}: {msg}");
        if !path.starts_with("/api/") {
            assert!(
                msg.contains("serves /predict and /v1/classify"),
                "{path}: {msg}"
            );
        }
    }
    // Bad input.
    assert_400(
        &s,
        "/predict",
        json!({"inputs": ["a", "b", "c"]}),
        "has 3 strings",
    );
    assert_400(&s, "/predict", json!({"inputs": []}), "must not be empty");
    assert_400(&s, "/predict", json!({}), "`inputs` is required");
    assert_400(&s, "/v1/classify", json!({"input": [""]}), "empty string");
    assert_400(
        &s,
        "/v1/classify",
        json!({"input": 5}),
        "string or an array",
    );
    let long = "word ".repeat(300);
    assert_400(&s, "/predict", json!({"inputs": long}), "at most 128");
    assert_eq!(
        post(&s, "/predict", &json!({"inputs": long, "truncate": true})).0,
        200
    );
    let (status, _) = post(&s, "/v1/classify", &json!({"model": "other", "input": "a"}));
    assert_eq!(status, 404);
}

#[test]
fn a_multi_label_classifier_scores_each_label_with_its_sigmoid() {
    // The same checkpoint with `problem_type: multi_label_classification`.
    let dir = TempFile::new("multi-label-classifier");
    std::fs::create_dir_all(&dir.0).unwrap();
    for entry in std::fs::read_dir(fixtures().join("bert_classifier")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.0.join(entry.file_name())).unwrap();
    }
    let config_path = dir.0.join("config.json");
    let mut config: Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["problem_type"] = json!("multi_label_classification");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let s = serve(&dir.0);
    let fx = &fixture()["classifier"];
    let texts = fx["texts"].as_array().unwrap();
    let (status, p) = post(&s, "/predict", &json!({"inputs": texts[0]}));
    assert_eq!(status, 200, "{p}");
    same_predictions(&p, &fx["pipeline_texts_sigmoid"][0]);
    let (_, c) = post(&s, "/v1/classify", &json!({"input": texts[0]}));
    let probs = c["data"][0]["probs"].as_array().unwrap();
    let sum: f64 = probs.iter().map(f).sum();
    assert!((sum - 1.0).abs() > 0.05, "sigmoids need not sum to 1: {c}");
    for (g, w) in probs.iter().zip(fx["sigmoid"][0].as_array().unwrap()) {
        assert!((f(g) - f(w)).abs() < 1e-5, "{c}");
    }
    drop(s);
    let _ = std::fs::remove_dir_all(&dir.0);
}

#[test]
fn a_cross_encoder_is_also_served_by_the_classify_routes_with_sigmoid_scores() {
    let s = serve(&fixtures().join("bert_cross_encoder"));
    let text = std::fs::read_to_string(fixtures().join("cross_encoder_scores.json")).unwrap();
    let fx: Value = serde_json::from_str(&text).unwrap();
    let pair = &fx["bert"]["pairs"][0];
    let want = f(&fx["bert"]["sigmoid"][0]);
    let (status, p) = post(&s, "/predict", &json!({"inputs": pair}));
    assert_eq!(status, 200, "{p}");
    assert_eq!(p.as_array().unwrap().len(), 1);
    assert_eq!(p[0]["label"], "LABEL_0");
    assert!((f(&p[0]["score"]) - want).abs() < 1e-4, "{p} vs {want}");
    // Rerank still works and agrees.
    let (status, r) = post(
        &s,
        "/rerank",
        &json!({"query": pair[0], "texts": [pair[1]]}),
    );
    assert_eq!(status, 200, "{r}");
    assert!((f(&r[0]["score"]) - want).abs() < 1e-4, "{r}");
    let (status, c) = post(&s, "/v1/classify", &json!({"input": "a text"}));
    assert_eq!(status, 200, "{c}");
    assert_eq!(c["data"][0]["num_classes"], 1);
    assert_400(
        &s,
        "/v1/ner",
        json!({"model": "enc", "input": "a"}),
        "is a cross-encoder",
    );
    // Without `model` too: the one served model is the wrong kind.
    assert_400(&s, "/v1/ner", json!({"input": "a"}), "is a cross-encoder");
}

fn check_ner_route(name: &str) {
    let s = serve(&fixtures().join(name));
    let fx = &fixture()[name];
    let texts = &fx["texts"];
    for strategy in ["none", "simple", "first", "average", "max"] {
        let (status, res) = post(
            &s,
            "/v1/ner",
            &json!({"model": "enc", "input": texts, "aggregation_strategy": strategy}),
        );
        assert_eq!(status, 200, "{strategy}: {res}");
        assert_eq!(res["object"], "list");
        assert_eq!(res["model"], "enc");
        let tokens: usize = fx["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["input_ids"].as_array().unwrap().len())
            .sum();
        assert_eq!(res["usage"]["prompt_tokens"], tokens);
        let data = res["data"].as_array().unwrap();
        assert_eq!(data.len(), texts.as_array().unwrap().len());
        for (i, d) in data.iter().enumerate() {
            assert_eq!(d["index"], i);
            let got = d["entities"].as_array().unwrap();
            let want = fx["entities"][strategy][i].as_array().unwrap();
            assert_eq!(
                got.len(),
                want.len(),
                "{name} {strategy} {i}: {got:?} vs {want:?}"
            );
            for (g, w) in got.iter().zip(want) {
                let mut g = g.clone();
                let mut w = w.clone();
                let (gs, ws) = (f(&g["score"]), f(&w["score"]));
                assert!((gs - ws).abs() < 1e-4, "{name} {strategy} {i}: {g} vs {w}");
                g["score"] = json!(0);
                w["score"] = json!(0);
                assert_eq!(g, w, "{name} {strategy} text {i}");
            }
        }
    }
    // The default is `simple`; `ignore_labels: []` keeps the O groups too.
    let (_, default) = post(&s, "/v1/ner", &json!({"input": texts[1]}));
    let simple = &fx["entities"]["simple"][1];
    assert_eq!(
        default["data"][0]["entities"].as_array().unwrap().len(),
        simple.as_array().unwrap().len()
    );
    let (_, all) = post(
        &s,
        "/v1/ner",
        &json!({"input": texts[1], "ignore_labels": []}),
    );
    let all = all["data"][0]["entities"].as_array().unwrap().clone();
    assert!(all.len() > simple.as_array().unwrap().len());
    assert!(all.iter().any(|e| e["entity_group"] == "O"));
}

#[test]
fn ner_matches_the_token_classification_pipeline_bert() {
    check_ner_route("bert_ner");
}

#[test]
fn ner_matches_the_token_classification_pipeline_xlm_roberta_and_refuses_misuse() {
    check_ner_route("xlmr_ner");
    let s = serve(&fixtures().join("xlmr_ner"));
    for (path, body) in [
        ("/v1/embeddings", json!({"model": "enc", "input": "a"})),
        (
            "/rerank",
            json!({"model": "enc", "query": "q", "texts": ["a"]}),
        ),
        (
            "/v1/rerank",
            json!({"model": "enc", "query": "q", "documents": ["a"]}),
        ),
        ("/predict", json!({"model": "enc", "inputs": "a"})),
        ("/v1/classify", json!({"model": "enc", "input": "a"})),
    ] {
        let (status, res) = post(&s, path, &body);
        assert_eq!(status, 400, "{path}: {res}");
        let msg = res["error"]["message"].as_str().unwrap();
        assert!(msg.contains("is a token classifier (NER)"), "{path}: {msg}");
        assert!(msg.contains("enc serves /v1/ner"), "{path}: {msg}");
    }
    assert_400(
        &s,
        "/v1/ner",
        json!({"input": "a", "aggregation_strategy": "mean"}),
        "aggregation_strategy",
    );
    assert_400(&s, "/v1/ner", json!({"input": []}), "must not be empty");
    assert_400(&s, "/v1/ner", json!({"input": ["a", 3]}), "`input[1]`");
    let long = "word ".repeat(300);
    assert_eq!(
        post(&s, "/v1/ner", &json!({"input": long})).0,
        200,
        "truncates by default"
    );
    assert_400(
        &s,
        "/v1/ner",
        json!({"input": long, "truncate": false}),
        "at most 128",
    );
    let health: Value = Client::new()
        .get(format!("{}/v1/models", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert_eq!(health["data"][0]["task"], "token-classifier");
}
