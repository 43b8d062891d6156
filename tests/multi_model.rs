//! Many models in one process (issue 12): two LLMs, an embedder, a cross-encoder, a
//! classifier and a token classifier served at once and routed by `model`; the memory plan and its refusal; loading on
//! demand from `--models-dir` with LRU eviction under a tiny budget; keep-alive expiry;
//! and an engine thread that panics (fault injection) turning `/health` 503 and failing
//! requests at once instead of hanging them.

mod common;
#[path = "common/encoder_fixtures.rs"]
mod encoder_fixtures;

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Server, chat_body, default_encoder, default_model};
use encoder_fixtures::fixtures;
use reqwest::blocking::Client;
use serde_json::{Value, json};

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn post(s: &Server, path: &str, body: &Value) -> (u16, Value) {
    let r = client()
        .post(format!("{}{path}", s.url))
        .json(body)
        .send()
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

fn get(s: &Server, path: &str) -> (u16, Value) {
    let r = client().get(format!("{}{path}", s.url)).send().unwrap();
    let status = r.status().as_u16();
    (status, r.json().unwrap_or(Value::Null))
}

/// The `/health` row of model `name`.
fn row(health: &Value, name: &str) -> Value {
    health["models"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .cloned()
        .unwrap_or_else(|| panic!("{name} missing from /health: {health}"))
}

fn chat(s: &Server, model: &str, content: &str, max_tokens: usize) -> String {
    let body = chat_body(content, json!({"model": model, "max_tokens": max_tokens}));
    let (status, res) = post(s, "/v1/chat/completions", &body);
    assert_eq!(status, 200, "{model}: {res}");
    assert_eq!(res["model"], model);
    res["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string()
}

fn embed(s: &Server, model: Option<&str>, texts: &[&str]) -> Vec<Vec<f64>> {
    let mut body = json!({"input": texts});
    if let Some(m) = model {
        body["model"] = json!(m);
    }
    let (status, res) = post(s, "/v1/embeddings", &body);
    assert_eq!(status, 200, "{res}");
    res["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            d["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

fn rerank(s: &Server, model: &str) -> Vec<f64> {
    let body = json!({"model": model, "query": "where is the cat", "texts": ["the cat sleeps", "stocks fell", "a dog barks"], "raw_scores": true});
    let (status, res) = post(s, "/rerank", &body);
    assert_eq!(status, 200, "{res}");
    let mut items = res.as_array().unwrap().clone();
    items.sort_by_key(|r| r["index"].as_u64().unwrap());
    items.iter().map(|r| r["score"].as_f64().unwrap()).collect()
}

fn classify(s: &Server) -> Vec<Value> {
    let body = json!({"model": "classify", "input": ["a happy cat", "stocks fell sharply"]});
    let (status, res) = post(s, "/v1/classify", &body);
    assert_eq!(status, 200, "{res}");
    res["data"].as_array().unwrap().clone()
}

fn ner(s: &Server) -> Value {
    let body = json!({"model": "ner", "input": "Marie Curie worked in Paris"});
    let (status, res) = post(s, "/v1/ner", &body);
    assert_eq!(status, 200, "{res}");
    res["data"].clone()
}

fn cross_dir() -> String {
    fixtures().join("bert_cross_encoder").display().to_string()
}

fn whole_stack() -> Server {
    let model = default_model().display().to_string();
    Server::start_raw(&[
        "--model".into(),
        format!("chat-a={model}"),
        "--model".into(),
        format!("chat-b={model}"),
        "--encoder".into(),
        format!("embed={}", default_encoder().display()),
        "--encoder".into(),
        format!("rerank={}", cross_dir()),
        "--encoder".into(),
        format!("classify={}", fixtures().join("bert_classifier").display()),
        "--encoder".into(),
        format!("ner={}", fixtures().join("xlmr_ner").display()),
        "--kv-cache-memory".into(),
        "256MiB".into(),
    ])
}

const PROMPTS: [&str; 3] = [
    "Name three colours.",
    "What is the capital of France?",
    "Count from one to five.",
];

#[test]
fn a_whole_stack_serves_concurrently_with_the_outputs_of_each_model_alone() {
    let s = whole_stack();
    let (status, h) = get(&s, "/health");
    assert_eq!(status, 200, "{h}");
    for (name, kind) in [
        ("chat-a", "llm"),
        ("chat-b", "llm"),
        ("embed", "embedding"),
        ("rerank", "cross-encoder"),
        ("classify", "classifier"),
        ("ner", "token-classifier"),
    ] {
        let r = row(&h, name);
        assert_eq!(r["kind"], kind, "{r}");
        assert_eq!(r["status"], "ready", "{r}");
        assert!(r["memory"]["weights_bytes"].as_u64().unwrap() > 0, "{r}");
    }
    let kv = |n| row(&h, n)["memory"]["kv_cache_bytes"].as_u64().unwrap();
    assert_eq!(kv("chat-a"), kv("chat-b"), "an even KV split by default");
    let (_, models) = get(&s, "/v1/models");
    assert_eq!(models["data"].as_array().unwrap().len(), 6, "{models}");

    // Each model alone, one request at a time.
    let alone: Vec<String> = PROMPTS.iter().map(|p| chat(&s, "chat-a", p, 24)).collect();
    let emb_alone = embed(&s, Some("embed"), &["a cat", "a dog"]);
    let rr_alone = rerank(&s, "rerank");
    let cls_alone = classify(&s);
    let ner_alone = ner(&s);

    // Everything at once.
    std::thread::scope(|scope| {
        let mut chats = Vec::new();
        for model in ["chat-a", "chat-b"] {
            for p in PROMPTS {
                let s = &s;
                chats.push(scope.spawn(move || chat(s, model, p, 24)));
            }
        }
        let embeds: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| embed(&s, None, &["a cat", "a dog"])))
            .collect();
        let reranks: Vec<_> = (0..4)
            .map(|_| scope.spawn(|| rerank(&s, "rerank")))
            .collect();
        let classes: Vec<_> = (0..3).map(|_| scope.spawn(|| classify(&s))).collect();
        let entities: Vec<_> = (0..3).map(|_| scope.spawn(|| ner(&s))).collect();
        for (i, c) in chats.into_iter().enumerate() {
            assert_eq!(c.join().unwrap(), alone[i % PROMPTS.len()], "chat {i}");
        }
        for e in embeds {
            for (a, b) in e
                .join()
                .unwrap()
                .iter()
                .flatten()
                .zip(emb_alone.iter().flatten())
            {
                assert!((a - b).abs() < 1e-5);
            }
        }
        for r in reranks {
            for (a, b) in r.join().unwrap().iter().zip(&rr_alone) {
                assert!((a - b).abs() < 1e-4, "{a} vs {b}");
            }
        }
        for c in classes {
            let got = c.join().unwrap();
            for (g, w) in got.iter().zip(&cls_alone) {
                assert_eq!(g["label"], w["label"]);
                let probs = |v: &Value| -> Vec<f64> {
                    v["probs"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|p| p.as_f64().unwrap())
                        .collect()
                };
                for (a, b) in probs(g).iter().zip(probs(w)) {
                    assert!((a - b).abs() < 1e-5, "{a} vs {b}");
                }
            }
        }
        for e in entities {
            let got = e.join().unwrap();
            let words = |v: &Value| -> Vec<(Value, Value, Value)> {
                v[0]["entities"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| {
                        (
                            x["entity_group"].clone(),
                            x["start"].clone(),
                            x["end"].clone(),
                        )
                    })
                    .collect()
            };
            assert_eq!(words(&got), words(&ner_alone));
        }
    });
    // Every KV block and encoder queue is back to zero.
    let (_, h) = get(&s, "/health");
    for name in ["chat-a", "chat-b"] {
        let r = row(&h, name);
        assert_eq!(r["kv_blocks_used"], 0, "{r}");
        assert_eq!(r["requests_waiting"], 0, "{r}");
    }
    for name in ["embed", "rerank", "classify", "ner"] {
        assert_eq!(row(&h, name)["inputs_waiting"], 0);
    }
    // Per-model labels on the engine metrics.
    let text = client()
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    for name in ["chat-a", "chat-b"] {
        let needle = format!("ferrite_generation_tokens_total{{model=\"{name}\"}}");
        assert!(text.contains(&needle), "{needle} missing");
    }
}

#[test]
fn models_are_routed_by_name_and_a_wrong_kind_is_a_400_naming_the_routes() {
    let s = whole_stack();
    let (status, res) = post(
        &s,
        "/v1/embeddings",
        &json!({"model": "chat-a", "input": "x"}),
    );
    assert_eq!(status, 400, "{res}");
    let msg = res["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("an LLM") && msg.contains("/v1/chat/completions"),
        "{msg}"
    );
    let (status, res) = post(
        &s,
        "/v1/chat/completions",
        &chat_body("hi", json!({"model": "embed"})),
    );
    assert_eq!(status, 400, "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/v1/embeddings")
    );
    let (status, res) = post(
        &s,
        "/v1/embeddings",
        &json!({"model": "rerank", "input": "x"}),
    );
    assert_eq!(status, 400, "{res}");
    assert!(
        res["error"]["message"]
            .as_str()
            .unwrap()
            .contains("/rerank")
    );
    let (status, res) = post(
        &s,
        "/v1/embeddings",
        &json!({"model": "nope", "input": "x"}),
    );
    assert_eq!(status, 404, "{res}");
    // Without `model`, rerank takes the cross-encoder (not the embedder).
    let body = json!({"query": "where is the cat", "texts": ["the cat sleeps", "stocks fell", "a dog barks"], "raw_scores": true});
    let (status, res) = post(&s, "/rerank", &body);
    assert_eq!(status, 200);
    let mut items = res.as_array().unwrap().clone();
    items.sort_by_key(|r| r["index"].as_u64().unwrap());
    let scores: Vec<f64> = items.iter().map(|r| r["score"].as_f64().unwrap()).collect();
    assert_eq!(scores, rerank(&s, "rerank"));
}

#[test]
fn a_flood_to_one_llm_does_not_stop_the_other_llm_or_the_encoders() {
    let s = whole_stack();
    std::thread::scope(|scope| {
        let flood: Vec<_> = (0..12)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    let body = chat_body(
                        PROMPTS[i % 3],
                        json!({"model": "chat-a", "max_tokens": 160, "ignore_eos": true}),
                    );
                    post(s, "/v1/chat/completions", &body).0
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(500));
        let t0 = Instant::now();
        let other = chat(&s, "chat-b", PROMPTS[0], 8);
        let embedded = embed(&s, Some("embed"), &["still served"]);
        let side = t0.elapsed();
        assert!(!other.is_empty() && embedded.len() == 1);
        let unfinished = flood.iter().filter(|f| !f.is_finished()).count();
        assert!(
            unfinished > 0,
            "the flood ended before the other requests were answered ({side:?}): the test did not test anything"
        );
        for f in flood {
            assert_eq!(f.join().unwrap(), 200);
        }
    });
}

#[test]
fn a_plan_over_the_memory_budget_is_refused_with_the_numbers() {
    let out = std::process::Command::new(common::binary())
        .args([
            "serve",
            "--port",
            "0",
            "--encoder",
            "none",
            "--memory",
            "20MiB",
        ])
        .arg("--model")
        .arg(default_model())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "memory budget is 20.0 MiB",
        "SmolLM2-135M-Instruct.Q4_1",
        "weights",
        "--memory",
    ] {
        assert!(err.contains(want), "{want} missing from:\n{err}");
    }
    assert!(!err.contains("stack backtrace"), "{err}");
}

/// A models folder holding the default model twice (as `a` and `b`) and the default
/// encoder, by symlink.
fn models_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ferrite-mm-{}-{tag}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["a", "b"] {
        std::os::unix::fs::symlink(default_model(), dir.join(format!("{name}.gguf"))).unwrap();
    }
    std::os::unix::fs::symlink(default_encoder(), dir.join("minilm")).unwrap();
    dir
}

fn on_demand(dir: &std::path::Path, extra: &[&str]) -> Server {
    let mut args: Vec<String> = ["--model", "none", "--encoder", "none", "--models-dir"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(dir.display().to_string());
    args.extend(["--kv-cache-memory".into(), "32MiB".into()]);
    args.extend(extra.iter().map(|s| s.to_string()));
    Server::start_raw(&args)
}

fn status_of(s: &Server, name: &str) -> String {
    let (_, h) = get(s, "/health");
    h["models"]
        .as_array()
        .and_then(|rows| rows.iter().find(|r| r["name"] == name))
        .map_or("absent".into(), |r| {
            r["status"].as_str().unwrap().to_string()
        })
}

#[test]
fn models_load_on_demand_and_the_least_recently_used_idle_one_makes_room() {
    let dir = models_dir("lru");
    // Room for one 94 MiB model with its 32 MiB of KV, not for two.
    let s = on_demand(&dir, &["--memory", "200MiB"]);
    assert_eq!(
        status_of(&s, "a"),
        "absent",
        "nothing is loaded before it is asked for"
    );
    let first = chat(&s, "a", PROMPTS[1], 8);
    assert_eq!(status_of(&s, "a"), "ready");
    let other = chat(&s, "b", PROMPTS[1], 8);
    assert_eq!(first, other, "the same weights answer the same");
    assert_eq!(
        status_of(&s, "a"),
        "unloaded",
        "a was evicted to make room for b"
    );
    assert_eq!(status_of(&s, "b"), "ready");
    // The embedder loads too (evicting b if the budget needs it).
    let v = embed(&s, Some("minilm"), &["hello"]);
    assert_eq!(v[0].len(), 384);
    // Asking for a again brings it back, evicting the least recently used.
    assert_eq!(chat(&s, "a", PROMPTS[1], 8), first);
    assert_eq!(status_of(&s, "a"), "ready");
    let (_, h) = get(&s, "/health");
    let loaded_bytes: u64 = h["models"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == "ready")
        .map(|r| {
            let m = &r["memory"];
            m["weights_bytes"].as_u64().unwrap()
                + m["activation_bytes"].as_u64().unwrap()
                + m["kv_cache_bytes"].as_u64().unwrap()
        })
        .sum();
    assert!(
        loaded_bytes <= 200 << 20,
        "{loaded_bytes} over the budget: {h}"
    );
    let log = s.log_text();
    assert!(log.contains("model unloaded"), "unloads are logged");
    let metrics = client()
        .get(format!("{}/metrics", s.url))
        .send()
        .unwrap()
        .text()
        .unwrap();
    assert!(
        metrics.contains("ferrite_model_unloads_total{model=\"a\""),
        "unloads are counted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_model_that_can_never_fit_is_a_503_that_says_why() {
    let dir = models_dir("nofit");
    // Room for the 100 MiB embedder, not for an LLM with its KV cache and logits.
    let s = on_demand(&dir, &["--memory", "120MiB"]);
    let body = chat_body("hi", json!({"model": "a", "max_tokens": 4}));
    let (status, res) = post(&s, "/v1/chat/completions", &body);
    assert_eq!(status, 503, "{res}");
    let msg = res["error"]["message"].as_str().unwrap();
    assert!(msg.contains("memory budget is 120.0 MiB"), "{msg}");
    // The server keeps serving what does fit.
    assert_eq!(embed(&s, Some("minilm"), &["hello"]).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn idle_models_are_unloaded_when_their_keep_alive_runs_out() {
    let dir = models_dir("keepalive");
    let s = on_demand(&dir, &["--keep-alive", "1s"]);
    chat(&s, "a", PROMPTS[0], 4);
    assert_eq!(status_of(&s, "a"), "ready");
    let (_, ps) = get(&s, "/api/ps");
    let expires = ps["models"][0]["expires_at"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        !expires.is_empty() && !expires.starts_with("2318"),
        "/api/ps shows when the keep-alive ends: {ps}"
    );
    let t0 = Instant::now();
    while status_of(&s, "a") != "unloaded" {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "a was never unloaded"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "unloaded before its keep-alive"
    );
    // And it comes back on the next request.
    chat(&s, "a", PROMPTS[0], 4);
    assert_eq!(status_of(&s, "a"), "ready");
    // Ollama's way: a request's own keep_alive ("-1": keep; 0: unload once idle).
    let ollama = |ka: Value| {
        let body = json!({"model": "b", "prompt": "", "stream": false, "keep_alive": ka});
        let (status, res) = post(&s, "/api/generate", &body);
        assert_eq!(status, 200, "{res}");
    };
    ollama(json!("-1"));
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(status_of(&s, "b"), "ready", "keep_alive -1 keeps it");
    ollama(json!(0));
    let t0 = Instant::now();
    while status_of(&s, "b") != "unloaded" {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "keep_alive 0 did not unload b"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let (status, _) = post(
        &s,
        "/api/generate",
        &json!({"model": "b", "prompt": "", "keep_alive": "soon"}),
    );
    assert_eq!(status, 400, "a malformed keep_alive is a 400");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_engine_panic_turns_health_503_and_fails_requests_at_once() {
    let s = Server::start(&["--fault-injection"]);
    let body = chat_body(
        "Tell me a long story.",
        json!({"max_tokens": 2000, "ignore_eos": true, "stream": true}),
    );
    let mut stream = client()
        .post(format!("{}/v1/chat/completions", s.url))
        .json(&body)
        .send()
        .unwrap();
    let mut first = [0u8; 64];
    let n = stream.read(&mut first).unwrap();
    assert!(n > 0, "the stream started");
    s.signal("USR2");
    let t0 = Instant::now();
    let mut rest = String::new();
    let _ = stream.read_to_string(&mut rest);
    assert!(
        t0.elapsed() < Duration::from_secs(10),
        "the stream hung after the engine died"
    );
    assert!(
        rest.contains("\"error\""),
        "the stream ends with an error event: {rest}"
    );
    let (status, h) = get(&s, "/health");
    assert_eq!(status, 503, "{h}");
    assert_eq!(h["status"], "failed");
    assert!(h["error"].as_str().unwrap().contains("restart"), "{h}");
    let t0 = Instant::now();
    let (status, res) = post(
        &s,
        "/v1/chat/completions",
        &chat_body("hi", json!({"max_tokens": 4})),
    );
    assert_eq!(status, 503, "{res}");
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "a new request waited for a dead engine"
    );
    assert!(s.log_text().contains("the engine thread panicked"));
}
