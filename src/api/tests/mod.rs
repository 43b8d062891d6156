//! End-to-end tests of the HTTP edge against a scripted fake engine: a real server on a
//! free port, a tiny synthetic tokenizer, and an engine thread that answers each
//! sequence according to its parameters (normal, delayed, slow until aborted, failing).
//! This file is the harness; `generation` covers the happy paths, `edges` errors,
//! loading, disconnects, keep-alive and metrics.

mod edges;
mod generation;
mod ollama;
mod templates;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use candle_core::quantized::gguf_file::Value as G;
use serde_json::{Value, json};

use super::*;
use crate::engine::error::EngineError;
use crate::engine::handle::{Command, DeviceEngine, EngineHandle, EngineStats, ThreadHealth};
use crate::engine::types::{
    FinishReason, GenerateRequest, TokenEvent, TokenLogprob, TopLogprob, Usage,
};
use crate::model::ModelInfo;
use crate::model::ServedModel;
use crate::model::chat_template::ChatTemplate;
use crate::model::tokenizer::ModelTokenizer;
use crate::registry::spec::{KeepAlive, ModelSpec, SpecKind};
use crate::registry::{Loaded, Registry, RegistryConfig};

/// `max_tokens` that makes the fake engine stream slowly until the receiver is dropped.
const SLOW: usize = 999;
/// `max_tokens` that makes the fake engine wait 300 ms before its first token.
const DELAYED: usize = 777;
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
        (
            "tokenizer.ggml.tokens".into(),
            G::Array(tokens.into_iter().map(G::String).collect()),
        ),
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
                    token_id: i as u32,
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
    if p.max_tokens == DELAYED {
        std::thread::sleep(Duration::from_millis(300));
    }
    let _ = req.events.send(token(0));
    if p.stop.iter().any(|s| s == FAIL) {
        let _ = req
            .events
            .send(TokenEvent::Error(EngineError::ModelFailed("boom".into())));
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
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        while let Ok(Command::Add { req, permit, .. }) = rx.recv() {
            drop(permit);
            let seen = seen2.clone();
            std::thread::spawn(move || serve_sequence(req, &seen));
        }
    });
    let device = DeviceEngine::new(tx, Arc::new(ThreadHealth::default()));
    (device.handle(0, "tiny", stats, max_waiting, 0), seen)
}

struct Server {
    base: String,
    seen: Arc<Seen>,
    client: reqwest::Client,
}

async fn start(loaded: bool, max_waiting: usize) -> Server {
    start_with(loaded, max_waiting, None).await
}

async fn start_with(loaded: bool, max_waiting: usize, metrics: Option<PrometheusHandle>) -> Server {
    start_web(loaded, max_waiting, metrics, test_web()).await
}

/// The web settings of the test server.
fn test_web() -> super::WebSettings {
    super::WebSettings::default()
}

/// The test LLM's alias (what `--model-alias` gives).
const ALIAS: &str = "tiny-alias:7b";

async fn start_web(
    loaded: bool,
    max_waiting: usize,
    metrics: Option<PrometheusHandle>,
    web: super::WebSettings,
) -> Server {
    start_inner(
        loaded,
        max_waiting,
        metrics,
        ChatTemplate::chatml("", ""),
        web,
    )
    .await
}

async fn start_full(
    loaded: bool,
    max_waiting: usize,
    metrics: Option<PrometheusHandle>,
    template: ChatTemplate,
) -> Server {
    start_inner(loaded, max_waiting, metrics, template, test_web()).await
}

async fn start_inner(
    loaded: bool,
    max_waiting: usize,
    metrics: Option<PrometheusHandle>,
    template: ChatTemplate,
    web: super::WebSettings,
) -> Server {
    let (engine, seen) = fake_engine(max_waiting);
    let registry = Arc::new(Registry::new(RegistryConfig {
        loader: None,
        budget: None,
        models_dir: None,
        keep_alive: KeepAlive::Forever,
    }));
    let spec = ModelSpec {
        aliases: vec![ALIAS.into()],
        ..ModelSpec::default_of(SpecKind::Llm)
    };
    let entry = registry.add("tiny", spec, false).unwrap();
    if loaded {
        let info = ModelInfo {
            id: "tiny".into(),
            context_length: 2048,
            device: "cpu".into(),
            created: 1,
        };
        let model = ServedModel::new(info, Arc::new(tokenizer()), template);
        let ready = Ready {
            model: Arc::new(model),
            engine,
        };
        registry.mark_ready(&entry, Loaded::Llm(Arc::new(ready)), Default::default());
    } else {
        registry.mark_starting(&entry, Default::default());
    }
    let state = AppState {
        registry,
        device: "cpu".into(),
        metrics: metrics.unwrap_or_else(|| {
            metrics_exporter_prometheus::PrometheusBuilder::new()
                .build_recorder()
                .handle()
        }),
        limits: ApiLimits {
            max_body_bytes: 4096,
            max_n: 4,
            max_tokens_cap: None,
            sse_keep_alive: Duration::from_millis(50),
        },
        web,
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
        self.client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap()
    }
}

async fn error_of(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    let e = &v["error"];
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    assert!(
        e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code")
    );
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
    let mut v =
        json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3});
    v.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    v
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
