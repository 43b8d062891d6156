//! End-to-end tests of the HTTP edge against a scripted fake engine: a real server on a
//! free port, a tiny synthetic tokenizer, and an engine thread that answers each
//! sequence according to its parameters (normal, slow until aborted, failing).

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::time::Duration;

use candle_core::quantized::gguf_file::Value as G;
use serde_json::{Value, json};

use super::*;
use crate::engine::handle::{Command, EngineStats};
use crate::engine::types::{FinishReason, GenerateRequest, TokenEvent, TokenLogprob, TopLogprob, Usage};
use crate::model::ModelInfo;
use crate::model::chat_template::ChatTemplate;
use crate::model::tokenizer::ModelTokenizer;

/// `max_tokens` that makes the fake engine stream slowly until the receiver is dropped.
const SLOW: usize = 999;
/// A stop string that makes the fake engine fail after one token.
const FAIL: &str = "FAIL";

/// What the fake engine saw.
#[derive(Default)]
struct Seen {
    requests: Mutex<Vec<(String, usize, Option<u64>)>>,
    aborted: AtomicUsize,
}

fn tokenizer() -> ModelTokenizer {
    let mut tokens: Vec<String> = ('!'..='~').map(String::from).collect();
    tokens.extend(["Ġ", "Ċ", "<|im_start|>", "<|im_end|>"].map(String::from));
    let types: Vec<G> = tokens
        .iter()
        .map(|t| G::I32(if t.starts_with("<|") { 3 } else { 1 }))
        .collect();
    let eos = (tokens.len() - 1) as u32;
    let meta = HashMap::from([
        ("tokenizer.ggml.model".to_string(), G::String("gpt2".into())),
        ("tokenizer.ggml.tokens".into(), G::Array(tokens.into_iter().map(G::String).collect())),
        ("tokenizer.ggml.token_type".into(), G::Array(types)),
        ("tokenizer.ggml.merges".into(), G::Array(Vec::new())),
        ("tokenizer.ggml.eos_token_id".into(), G::U32(eos)),
    ]);
    ModelTokenizer::from_gguf(&meta).expect("synthetic tokenizer")
}

fn serve_sequence(req: GenerateRequest, seen: &Seen) {
    let p = &req.params;
    seen.requests
        .lock()
        .unwrap()
        .push((req.id.clone(), req.prompt_ids.len(), p.seed));
    let token = |k: usize| TokenEvent::Token {
        id: 1,
        text: if k == 1 { String::new() } else { "ab".into() },
        logprob: p.logprobs.map(|n| TokenLogprob {
            token: "ab".into(),
            bytes: b"ab".to_vec(),
            logprob: -0.5,
            top: (0..n)
                .map(|i| TopLogprob {
                    token: format!("t{i}"),
                    bytes: vec![b't'],
                    logprob: -1.0,
                })
                .collect(),
        }),
    };
    if p.max_tokens == SLOW {
        for k in 0.. {
            if req.events.send(token(k)).is_err() {
                seen.aborted.fetch_add(1, Ordering::SeqCst);
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    let _ = req.events.send(token(0));
    if p.stop.iter().any(|s| s == FAIL) {
        let _ = req.events.send(TokenEvent::Error("boom".into()));
        return;
    }
    for k in 1..p.max_tokens {
        let _ = req.events.send(token(k));
    }
    let _ = req.events.send(TokenEvent::Done {
        text: "!".into(),
        finish_reason: FinishReason::Length,
        usage: Usage {
            prompt_tokens: req.prompt_ids.len(),
            completion_tokens: p.max_tokens,
        },
    });
}

fn fake_engine(max_waiting: usize) -> (EngineHandle, Arc<Seen>) {
    let (tx, rx) = mpsc::channel::<Command>();
    let stats = Arc::new(EngineStats::default());
    let seen = Arc::new(Seen::default());
    let (stats2, seen2) = (stats.clone(), seen.clone());
    std::thread::spawn(move || {
        while let Ok(Command::Add(req)) = rx.recv() {
            stats2.waiting.fetch_sub(1, Ordering::AcqRel);
            let seen = seen2.clone();
            std::thread::spawn(move || serve_sequence(req, &seen));
        }
    });
    (EngineHandle::new(tx, stats, max_waiting), seen)
}

struct Server {
    base: String,
    seen: Arc<Seen>,
    client: reqwest::Client,
}

async fn start(loaded: bool, max_waiting: usize) -> Server {
    let (engine, seen) = fake_engine(max_waiting);
    let ready = Arc::new(OnceLock::new());
    if loaded {
        let model = ServedModel {
            info: ModelInfo {
                id: "tiny".into(),
                context_length: 2048,
                device: "cpu".into(),
                created: 1,
            },
            tokenizer: Arc::new(tokenizer()),
            template: ChatTemplate::new(None, "", "").expect("chatml"),
        };
        let _ = ready.set(Ready {
            model: Arc::new(model),
            engine,
        });
    }
    let state = AppState {
        ready,
        loading_model: "tiny.gguf".into(),
        device: "cpu".into(),
        metrics: metrics_exporter_prometheus::PrometheusBuilder::new()
            .build_recorder()
            .handle(),
        limits: ApiLimits {
            max_body_bytes: 4096,
            max_n: 4,
            max_tokens_cap: None,
            sse_keep_alive: Duration::from_millis(50),
        },
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router(state)).await });
    Server {
        base,
        seen,
        client: reqwest::Client::new(),
    }
}

impl Server {
    async fn post(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(format!("{}{path}", self.base)).send().await.unwrap()
    }
}

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"));
    e.clone()
}

/// The `data:` payloads of an SSE body (comments skipped).
fn sse_data(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|ev| ev.strip_prefix("data: "))
        .map(str::to_string)
        .collect()
}

fn chat_body(extra: Value) -> Value {
    let mut v = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    v.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    v
}

#[tokio::test]
async fn loading_answers_503() {
    let s = start(false, 8).await;
    let h = s.get("/health").await;
    assert_eq!(h.status().as_u16(), 503);
    let v: Value = h.json().await.unwrap();
    assert_eq!(v["status"], "loading");
    assert_eq!(v["model"], "tiny.gguf");
    let e = error_of(s.post("/v1/chat/completions", chat_body(json!({}))).await, 503).await;
    assert_eq!(e["code"], "model_loading");
    error_of(s.get("/v1/models").await, 503).await;
}

#[tokio::test]
async fn info_routes() {
    let s = start(true, 8).await;
    let h: Value = s.get("/health").await.json().await.unwrap();
    assert_eq!((h["status"].as_str(), h["device"].as_str()), (Some("ok"), Some("cpu")));
    let m: Value = s.get("/v1/models").await.json().await.unwrap();
    assert_eq!(m["object"], "list");
    assert_eq!(m["data"][0]["id"], "tiny");
    assert_eq!(m["data"][0]["owned_by"], "ferrite");
    assert_eq!(m["data"][0]["max_model_len"], 2048);
    let one: Value = s.get("/v1/models/tiny").await.json().await.unwrap();
    assert_eq!(one["object"], "model");
    let e = error_of(s.get("/v1/models/other/x").await, 404).await;
    assert_eq!(e["code"], "model_not_found");
    let metrics = s.get("/metrics").await;
    assert_eq!(metrics.headers()["content-type"], "text/plain; version=0.0.4");
    error_of(s.get("/nope").await, 404).await;
    let e = error_of(s.get("/v1/chat/completions").await, 405).await;
    assert_eq!(e["code"], "method_not_allowed");
}

#[tokio::test]
async fn chat_non_streaming() {
    let s = start(true, 8).await;
    let resp = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .header("x-request-id", "abc-123")
        .json(&chat_body(json!({"logprobs": true, "top_logprobs": 2})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny");
    let c = &v["choices"][0];
    assert_eq!(c["message"], json!({"role": "assistant", "content": "abab!"}));
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(c["logprobs"]["content"].as_array().unwrap().len(), 3);
    assert_eq!(c["logprobs"]["content"][0]["top_logprobs"].as_array().unwrap().len(), 2);
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 2);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], prompt + 3);
    assert_eq!(s.seen.requests.lock().unwrap()[0].0, "abc-123");
}

#[tokio::test]
async fn chat_streaming_follows_openai() {
    let s = start(true, 8).await;
    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let resp = s.post("/v1/chat/completions", body).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk"));
    assert_eq!(chunks[0]["choices"][0]["delta"], json!({"role": "assistant", "content": ""}));
    // 3 tokens, the second with empty text (skipped), then the final held-back "!".
    let texts: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["ab", "ab", "!"]);
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert!(chunks[..5].iter().all(|c| c["usage"].is_null()));
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks.len(), 6);
}

#[tokio::test]
async fn completions_n_and_prompts() {
    let s = start(true, 8).await;
    let body = json!({"model": "tiny", "prompt": [[1, 2, 3], [4, 5]], "n": 2, "seed": 10, "max_tokens": 2});
    let v: Value = s.post("/v1/completions", body).await.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"], "ab!");
    }
    assert_eq!(v["usage"], json!({"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13}));
    let mut seen = s.seen.requests.lock().unwrap().clone();
    seen.sort();
    let seeds: Vec<_> = seen.iter().map(|(_, len, seed)| (*len, *seed)).collect();
    assert_eq!(seeds, [(3, Some(10)), (3, Some(11)), (2, Some(10)), (2, Some(11))]);
}

#[tokio::test]
async fn completions_streaming_with_logprobs_keeps_empty_tokens() {
    let s = start(true, 8).await;
    let body = json!({"prompt": "hello", "max_tokens": 3, "stream": true, "logprobs": 1});
    let data = sse_data(&s.post("/v1/completions", body).await.text().await.unwrap());
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // 3 token chunks (one with empty text), "!" chunk, finish chunk; no usage key.
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[1]["choices"][0]["text"], "");
    assert_eq!(chunks[2]["choices"][0]["logprobs"]["text_offset"], json!([4]));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert!(chunks.iter().all(|c| !c.as_object().unwrap().contains_key("usage")));
}

#[tokio::test]
async fn request_errors_are_openai_shaped() {
    let s = start(true, 8).await;
    let raw = |body: &'static str| {
        s.client
            .post(format!("{}/v1/chat/completions", s.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    error_of(raw("{not json").await.unwrap(), 400).await;
    let e = error_of(raw(r#"{"messages": [], "temperature": "hot"}"#).await.unwrap(), 400).await;
    assert!(e["message"].as_str().unwrap().contains("invalid type"), "{e}");
    let e = error_of(s.post("/v1/chat/completions", chat_body(json!({"model": "gpt-4"}))).await, 404).await;
    assert_eq!(e["code"], "model_not_found");
    let e = error_of(s.post("/v1/chat/completions", chat_body(json!({"tools": [{"type": "function"}]}))).await, 400).await;
    assert_eq!(e["param"], "tools");
    let big = "x".repeat(5000);
    let e = error_of(s.post("/v1/completions", json!({"prompt": big})).await, 413).await;
    assert_eq!(e["code"], "request_too_large");
    let e = error_of(s.post("/v1/completions", json!({"prompt": [1, 2], "max_tokens": 2047})).await, 400).await;
    assert!(e["message"].as_str().unwrap().contains("you requested 2049 tokens (2 in the prompt, 2047 for the completion)"));
    let e = error_of(s.post("/v1/completions", json!({"prompt": [100000]})).await, 400).await;
    assert_eq!(e["param"], "prompt");
}

#[tokio::test]
async fn queue_full_is_429_with_retry_after() {
    let s = start(true, 0).await;
    let resp = s.post("/v1/completions", json!({"prompt": "x"})).await;
    assert_eq!(resp.headers()["retry-after"], "1");
    error_of(resp, 429).await;
}

#[tokio::test]
async fn engine_error_mid_stream_is_a_json_event() {
    let s = start(true, 8).await;
    let body = chat_body(json!({"stream": true, "stop": [FAIL]}));
    let data = sse_data(&s.post("/v1/chat/completions", body).await.text().await.unwrap());
    let n = data.len();
    assert_eq!(data[n - 1], "[DONE]");
    let err: Value = serde_json::from_str(&data[n - 2]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    // Non-streaming: a 500 in the same shape.
    error_of(s.post("/v1/chat/completions", chat_body(json!({"stop": FAIL}))).await, 500).await;
}

async fn wait_aborted(seen: &Seen, count: usize) {
    for _ in 0..200 {
        if seen.aborted.load(Ordering::SeqCst) >= count {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the engine never saw the receiver dropped");
}

#[tokio::test]
async fn client_disconnect_drops_receivers() {
    let s = start(true, 8).await;
    // Streaming: read one chunk, then drop the response.
    let body = chat_body(json!({"stream": true, "max_tokens": SLOW, "n": 2}));
    let mut resp = s.post("/v1/chat/completions", body).await;
    assert!(resp.chunk().await.unwrap().is_some());
    drop(resp);
    wait_aborted(&s.seen, 2).await;
    // Non-streaming: give up waiting for the body.
    let req = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .timeout(Duration::from_millis(200))
        .json(&json!({"prompt": "x", "max_tokens": SLOW}))
        .send();
    assert!(req.await.is_err());
    wait_aborted(&s.seen, 3).await;
}
