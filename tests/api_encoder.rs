//! The encoder routes on the running binary, with the LLM loaded beside the encoder:
//! `/v1/embeddings` (checked against sentence-transformers' vectors), `/rerank` (TEI)
//! and `/v1/rerank` (Cohere) with a synthetic cross-encoder (checked against
//! transformers' logits) and with the default embedding model (cosine mode), the
//! document shapes RAG stacks send, bad input, an encoder-only server, and LLM
//! streams running while rerank traffic flows.

mod common;

use std::path::PathBuf;

use base64::Engine as _;
use common::{MODEL, Server, chat_body, default_encoder};
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn fixtures() -> PathBuf {
    common::repo_root().join("tests/fixtures/encoders")
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join(name)).unwrap()).unwrap()
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

fn get(s: &Server, path: &str) -> Value {
    Client::new()
        .get(format!("{}{path}", s.url))
        .send()
        .unwrap()
        .json()
        .unwrap()
}

/// LLM + the default embedding encoder.
fn embedder() -> &'static Server {
    let dir = default_encoder();
    Server::shared(&["--encoder", dir.to_str().unwrap()])
}

/// LLM + the synthetic BERT cross-encoder (at most 8 documents per rerank), on the
/// exact f32 path: its scores are held to transformers' within 1e-4 (the reduced
/// precisions have their own gates in tests/encoder_precision.rs).
fn cross_encoder() -> &'static Server {
    let dir = fixtures().join("bert_cross_encoder");
    Server::shared(&[
        "--encoder",
        dir.to_str().unwrap(),
        "--max-rerank-documents",
        "8",
        "--encoder-precision",
        "f32",
    ])
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[test]
fn health_and_models_say_which_models_and_rerank_mode() {
    let s = embedder();
    let h = get(s, "/health");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["model"], MODEL);
    assert_eq!(h["encoder"]["rerank_mode"], "embedding-cosine");
    assert_eq!(h["encoder"]["dimensions"], 384);
    let models = get(s, "/v1/models");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{models}");
    let enc = &models["data"][1];
    assert_eq!(enc["task"], "embedding");
    let c = get(cross_encoder(), "/health");
    assert_eq!(c["encoder"]["rerank_mode"], "cross-encoder");
    assert_eq!(c["encoder"]["task"], "cross-encoder");
}

#[test]
fn embeddings_match_sentence_transformers_in_float_and_base64() {
    let s = embedder();
    let fx = fixture("minilm_embeddings.json");
    let sentences: Vec<Value> = fx["sentences"].as_array().unwrap()[..4].to_vec();
    let (status, float) = post(s, "/v1/embeddings", &json!({"input": sentences}));
    assert_eq!(status, 200, "{float}");
    let (status, b64) = post(
        s,
        "/v1/embeddings",
        &json!({"input": sentences, "encoding_format": "base64"}),
    );
    assert_eq!(status, 200, "{b64}");
    let want_tokens: usize = fx["token_ids"].as_array().unwrap()[..4]
        .iter()
        .map(|t| t.as_array().unwrap().len())
        .sum();
    assert_eq!(float["usage"]["prompt_tokens"], want_tokens);
    assert_eq!(float["object"], "list");
    for i in 0..4 {
        let got = floats(&float["data"][i]["embedding"]);
        assert_eq!(float["data"][i]["index"], i);
        let want = floats(&fx["embeddings"][i]);
        assert!(cosine(&got, &want) > 1.0 - 1e-4, "sentence {i}");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64["data"][i]["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f64> = bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect();
        assert_eq!(decoded.len(), 384);
        for (a, b) in decoded.iter().zip(&got) {
            assert!((a - b).abs() < 1e-6);
        }
    }
}

#[test]
fn cross_encoder_rerank_in_tei_shape_matches_transformers() {
    let s = cross_encoder();
    let fx = &fixture("cross_encoder_scores.json")["bert"];
    // The fixture's pairs that share the first pair's query.
    let pairs = fx["pairs"].as_array().unwrap();
    let query = pairs[0][0].as_str().unwrap();
    let chosen: Vec<usize> = (0..pairs.len()).filter(|&i| pairs[i][0] == query).collect();
    assert!(
        chosen.len() >= 2,
        "the fixture has several documents for one query"
    );
    let texts: Vec<&str> = chosen
        .iter()
        .map(|&i| pairs[i][1].as_str().unwrap())
        .collect();
    let body = json!({"query": query, "texts": texts, "return_text": true, "truncate": true});
    let (status, res) = post(s, "/rerank", &body);
    assert_eq!(status, 200, "{res}");
    let results = res.as_array().unwrap();
    assert_eq!(results.len(), texts.len());
    let mut last = f64::INFINITY;
    for r in results {
        let k = r["index"].as_u64().unwrap() as usize;
        let want = sigmoid(fx["logits"][chosen[k]].as_f64().unwrap());
        let got = r["score"].as_f64().unwrap();
        assert!((got - want).abs() < 1e-4, "doc {k}: {got} vs {want}");
        assert!(got <= last, "sorted best first");
        last = got;
        assert_eq!(r["text"], texts[k]);
    }
    let raw = json!({"query": query, "texts": texts, "raw_scores": true, "truncate": true});
    let (_, res) = post(s, "/rerank", &raw);
    for r in res.as_array().unwrap() {
        let k = r["index"].as_u64().unwrap() as usize;
        let want = fx["logits"][chosen[k]].as_f64().unwrap();
        assert!((r["score"].as_f64().unwrap() - want).abs() < 1e-4);
        assert!(r.get("text").is_none());
    }
}

#[test]
fn cohere_shape_with_rag_documents_echoes_metadata_and_respects_top_n() {
    let s = cross_encoder();
    let docs = json!([
        {"content": "paris is the capital of france", "metadata": {"source": "a.md", "chunk": 1}},
        {"text": "the weather is nice today"},
        "bananas are yellow",
    ]);
    let body = json!({"query": "capital of france", "documents": docs, "top_n": 2, "return_documents": true});
    let (status, res) = post(s, "/v1/rerank", &body);
    assert_eq!(status, 200, "{res}");
    let results = res["results"].as_array().unwrap();
    assert_eq!(results.len(), 2);
    assert!(res["usage"]["total_tokens"].as_u64().unwrap() > 10);
    assert!(
        results[0]["relevance_score"].as_f64().unwrap()
            >= results[1]["relevance_score"].as_f64().unwrap()
    );
    let all = post(
        s,
        "/v1/rerank",
        &json!({"query": "capital of france", "documents": docs}),
    )
    .1;
    let all = all["results"].as_array().unwrap().clone();
    assert_eq!(all.len(), 3);
    assert_eq!(
        &all[..2],
        &results
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("document");
                r
            })
            .collect::<Vec<_>>()[..],
        "top_n is a prefix of the full ranking"
    );
    for r in results {
        let i = r["index"].as_u64().unwrap() as usize;
        let text = docs[i]
            .get("content")
            .or(docs[i].get("text"))
            .cloned()
            .unwrap_or(docs[i].clone());
        assert_eq!(r["document"]["text"], text);
        if i == 0 {
            assert_eq!(r["metadata"], json!({"source": "a.md", "chunk": 1}));
        }
    }
    // The same documents on the TEI route.
    let (status, tei) = post(
        s,
        "/rerank",
        &json!({"query": "capital of france", "documents": docs}),
    );
    assert_eq!(status, 200, "{tei}");
    let first = tei
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["index"] == 0)
        .unwrap();
    assert_eq!(first["metadata"]["source"], "a.md");
}

#[test]
fn embedding_model_reranks_by_cosine() {
    let s = embedder();
    let docs = [
        "A man is eating food.",
        "The new movie is awesome.",
        "A man is eating a piece of bread.",
    ];
    let (status, res) = post(
        s,
        "/v1/rerank",
        &json!({"query": "Someone is having a meal", "documents": docs}),
    );
    assert_eq!(status, 200, "{res}");
    let results = res["results"].as_array().unwrap();
    let top = results[0]["index"].as_u64().unwrap();
    assert_ne!(
        top, 1,
        "the movie sentence is not the best match for a meal: {res}"
    );
    let (_, emb) = post(
        s,
        "/v1/embeddings",
        &json!({"input": ["Someone is having a meal", docs[0]]}),
    );
    let want = cosine(
        &floats(&emb["data"][0]["embedding"]),
        &floats(&emb["data"][1]["embedding"]),
    );
    let got = results.iter().find(|r| r["index"] == 0).unwrap()["relevance_score"]
        .as_f64()
        .unwrap();
    assert!((got - want).abs() < 1e-5, "{got} vs {want}");
}

fn assert_400(s: &Server, path: &str, body: Value, needle: &str) {
    let (status, res) = post(s, path, &body);
    assert_eq!(status, 400, "{body} -> {res}");
    let msg = res["error"]["message"].as_str().unwrap();
    assert!(msg.contains(needle), "{body}: {msg}");
    assert_eq!(res["error"]["type"], "invalid_request_error");
}

#[test]
fn bad_encoder_input_is_a_400_in_openai_shape() {
    let s = cross_encoder();
    let q = "query";
    assert_400(
        s,
        "/rerank",
        json!({"query": q, "texts": []}),
        "must not be empty",
    );
    assert_400(
        s,
        "/v1/rerank",
        json!({"query": q, "documents": []}),
        "must not be empty",
    );
    assert_400(
        s,
        "/rerank",
        json!({"query": q, "texts": vec!["a"; 9]}),
        "at most 8",
    );
    assert_400(
        s,
        "/v1/rerank",
        json!({"query": q, "documents": ["a", 7]}),
        "`documents[1]`",
    );
    assert_400(
        s,
        "/rerank",
        json!({"query": "", "texts": ["a"]}),
        "`query` must not be empty",
    );
    assert_400(
        s,
        "/v1/rerank",
        json!({"documents": ["a"]}),
        "`query` is required",
    );
    assert_400(
        s,
        "/v1/rerank",
        json!({"query": q, "documents": ["a"], "top_n": 0}),
        "top_n",
    );
    let long = "word ".repeat(300);
    assert_400(
        s,
        "/rerank",
        json!({"query": q, "texts": [long]}),
        "at most 128",
    );
    let (status, _) = post(
        s,
        "/rerank",
        &json!({"query": q, "texts": [long], "truncate": true}),
    );
    assert_eq!(status, 200);
    assert_400(s, "/v1/embeddings", json!({"input": "a"}), "cross-encoder");
    let e = embedder();
    assert_400(
        e,
        "/v1/embeddings",
        json!({"input": []}),
        "must not be empty",
    );
    assert_400(
        e,
        "/v1/embeddings",
        json!({"input": "a", "dimensions": 12}),
        "dimensions",
    );
    assert_400(
        e,
        "/v1/embeddings",
        json!({"input": "a", "encoding_format": "int8"}),
        "encoding_format",
    );
    assert_400(
        e,
        "/v1/embeddings",
        json!({"input": [[1, 2], [99999999]]}),
        "outside the vocabulary",
    );
    let (status, res) = post(e, "/v1/embeddings", &json!({"input": "a", "model": "nope"}));
    assert_eq!(status, 404, "{res}");
    // Still serving.
    assert_eq!(
        post(e, "/v1/embeddings", &json!({"input": "still here"})).0,
        200
    );
}

#[test]
fn encoder_only_server_answers_llm_routes_with_404() {
    let dir = fixtures().join("xlmr_cross_encoder");
    let s = Server::start_raw(&[
        "--model".into(),
        "none".into(),
        "--encoder".into(),
        dir.display().to_string(),
    ]);
    let h = get(&s, "/health");
    assert_eq!(h["status"], "ok");
    assert_eq!(h["model"], Value::Null);
    assert_eq!(h["encoder"]["task"], "cross-encoder");
    let (status, res) = post(
        &s,
        "/v1/chat/completions",
        &chat_body("hi", json!({"max_tokens": 4})),
    );
    assert_eq!(status, 404, "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--model")
    );
    let (status, res) = post(&s, "/rerank", &json!({"query": "q", "texts": ["a", "b"]}));
    assert_eq!(status, 200, "{res}");
    let models = get(&s, "/v1/models");
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
}

#[test]
fn no_encoder_means_404_on_encoder_routes() {
    let s = Server::shared(&[]);
    let (status, res) = post(s, "/v1/embeddings", &json!({"input": "a"}));
    assert_eq!(status, 404, "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--encoder")
    );
}

#[test]
fn llm_streams_and_rerank_requests_at_once_are_all_correct() {
    let s = cross_encoder();
    let client = Client::new();
    let chat = |prompt: &str| {
        let r: Value = client
            .post(format!("{}/v1/chat/completions", s.url))
            .json(&chat_body(prompt, json!({"max_tokens": 24})))
            .send()
            .unwrap()
            .json()
            .unwrap();
        r["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let rerank_body = |i: usize| json!({"query": format!("question {i}"), "texts": (0..6).map(|d| format!("document {d} about topic {i}")).collect::<Vec<_>>(), "raw_scores": true});
    let prompts = ["Name a color.", "Count to five.", "Say hello."];
    let want_chat: Vec<String> = prompts.iter().map(|p| chat(p)).collect();
    let want_rerank: Vec<Value> = (0..6)
        .map(|i| post(s, "/rerank", &rerank_body(i)).1)
        .collect();
    std::thread::scope(|scope| {
        let chats: Vec<_> = prompts
            .iter()
            .map(|p| scope.spawn(move || chat(p)))
            .collect();
        let reranks: Vec<_> = (0..6)
            .map(|i| {
                let body = rerank_body(i);
                scope.spawn(move || post(s, "/rerank", &body))
            })
            .collect();
        for (h, want) in chats.into_iter().zip(&want_chat) {
            assert_eq!(
                &h.join().unwrap(),
                want,
                "chat output changed under rerank load"
            );
        }
        for (i, (h, want)) in reranks.into_iter().zip(&want_rerank).enumerate() {
            let (status, got) = h.join().unwrap();
            assert_eq!(status, 200);
            let g = got.as_array().unwrap();
            let w = want.as_array().unwrap();
            assert_eq!(g.len(), w.len());
            for (a, b) in g.iter().zip(w) {
                assert_eq!(a["index"], b["index"], "rerank {i} order changed");
                assert!((a["score"].as_f64().unwrap() - b["score"].as_f64().unwrap()).abs() < 1e-4);
            }
        }
    });
    let h = get(s, "/health");
    assert_eq!(h["encoder"]["inputs_waiting"], 0);
    assert_eq!(h["kv_blocks_used"], 0);
}
