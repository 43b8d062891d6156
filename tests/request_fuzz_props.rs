//! Property tests over HTTP: random bodies posted to `/v1/chat/completions` and
//! `/v1/completions` of the real server never get a 5xx and never take it down.
//!
//! Three generators: arbitrary JSON (objects keyed mostly by real parameter names, and
//! any other JSON value), mutations of valid requests (fields set to random JSON,
//! removed, messages altered, the text truncated or a byte flipped), and raw bytes.
//! Every answer must be a 200 with a well-formed body (JSON, or SSE ending in `[DONE]`)
//! or a 4xx in OpenAI's error shape. The server runs with `--max-tokens-cap 4
//! --max-n 4`, so an accepted request generates at most 16 tokens and the 7,500 cases
//! stay within about 30 seconds. Afterwards the process is alive, never logged a panic,
//! and `/health` is 200.

mod common;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::sse::parse_strict;
use common::{MODEL, Server};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{Map, Value, json};

/// Request parameter names (both endpoints), and keys of nested objects.
const FIELDS: &[&str] = &[
    "model",
    "messages",
    "prompt",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "seed",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "n",
    "stream",
    "stream_options",
    "include_usage",
    "ignore_eos",
    "user",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "tools",
    "tool_choice",
    "functions",
    "function_call",
    "response_format",
    "audio",
    "modalities",
    "prediction",
    "echo",
    "suffix",
    "best_of",
    "role",
    "content",
    "type",
    "text",
];

/// Strings that mean something to some parser or template along the way.
const STRINGS: &[&str] = &[
    MODEL,
    "user",
    "assistant",
    "system",
    "developer",
    "tool",
    "text",
    "image_url",
    "none",
    "auto",
    "json_object",
    "",
    " ",
    "\n",
    "\u{0}",
    "{{ messages }}",
    "{% for %}",
    "<|im_start|>",
    "<|im_end|>",
    "</s>",
    "\u{1F980}",
    "\u{FFFD}",
    "é",
    "[DONE]",
    "data: x\n\n",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-3i64..6).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-3.0f64..3.0).prop_map(|f| json!(f)),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        ".{0,24}".prop_map(Value::String),
        prop::sample::select(STRINGS).prop_map(|s| Value::String(s.into())),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(FIELDS).prop_map(String::from),
        1 => "[a-z_]{1,10}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// A random body: mostly an object of parameter-like keys, sometimes any JSON.
fn random_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec((key(), json_value()), 0..8)
            .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        1 => json_value(),
    ]
    .prop_map(|v| serde_json::to_vec(&v).unwrap())
}

/// One change to a valid request.
#[derive(Debug, Clone)]
enum Mutation {
    Set(&'static str, Value),
    Remove(&'static str),
    Message(usize, &'static str, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let field = prop::sample::select(FIELDS);
    prop_oneof![
        3 => (field.clone(), json_value()).prop_map(|(f, v)| Mutation::Set(f, v)),
        1 => field.prop_map(Mutation::Remove),
        2 => (0usize..3, prop::sample::select(&["role", "content"][..]), json_value())
            .prop_map(|(i, k, v)| Mutation::Message(i, k, v)),
    ]
}

fn valid_body(chat: bool, stream: bool) -> Value {
    let mut b = if chat {
        json!({"model": MODEL, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Name a color."}]})
    } else {
        json!({"model": MODEL, "prompt": "Colors: red,"})
    };
    b["max_tokens"] = json!(3);
    b["stream"] = json!(stream);
    b
}

fn apply(mut body: Value, muts: &[Mutation]) -> Value {
    for m in muts {
        match m {
            Mutation::Set(f, v) => body[*f] = v.clone(),
            Mutation::Remove(f) => {
                body.as_object_mut().map(|o| o.remove(*f));
            }
            Mutation::Message(i, k, v) => {
                if let Some(msg) = body["messages"].get_mut(*i).filter(|m| m.is_object()) {
                    msg[*k] = v.clone();
                }
            }
        }
    }
    body
}

/// A valid request with 1 to 4 mutations; sometimes then truncated or with a byte flipped.
fn mutated_body() -> impl Strategy<Value = Vec<u8>> {
    (
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(mutation(), 1..5),
        0u8..10,
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(chat, stream, muts, damage, at, byte)| {
            let mut bytes = serde_json::to_vec(&apply(valid_body(chat, stream), &muts)).unwrap();
            let i = at.index(bytes.len());
            match damage {
                0 => bytes.truncate(i),
                1 => bytes[i] = byte,
                _ => {}
            }
            bytes
        })
}

/// Posts `body` to the chat or completions route and checks the answer.
fn post_and_check(
    c: &reqwest::blocking::Client,
    base: &str,
    chat: bool,
    body: &[u8],
    seen: &RefCell<BTreeMap<u16, usize>>,
) -> Result<(), TestCaseError> {
    let path = if chat {
        "/v1/chat/completions"
    } else {
        "/v1/completions"
    };
    let r = c
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_vec())
        .send();
    let r = r.map_err(|e| TestCaseError::fail(format!("request failed (server down?): {e}")))?;
    let status = r.status().as_u16();
    *seen.borrow_mut().entry(status).or_default() += 1;
    let sse = r
        .headers()
        .get("content-type")
        .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    let text = r
        .text()
        .map_err(|e| TestCaseError::fail(format!("{status}: reading the body failed: {e}")))?;
    let shown = String::from_utf8_lossy(body);
    prop_assert!(status < 500, "{path} answered {status} to {shown}: {text}");
    if status == 200 {
        if sse {
            parse_strict(&text)
                .map_err(|e| TestCaseError::fail(format!("bad SSE ({e}) for {shown}: {text}")))?;
        } else {
            let v: Value = serde_json::from_str(&text)
                .map_err(|e| TestCaseError::fail(format!("200 not JSON ({e}): {text}")))?;
            prop_assert!(v["choices"].is_array(), "200 without choices: {text}");
        }
    } else {
        let v: Value = serde_json::from_str(&text)
            .map_err(|e| TestCaseError::fail(format!("{status} not JSON ({e}): {text}")))?;
        let e = &v["error"];
        prop_assert!(
            e["message"].is_string() && e["type"].is_string() && e.get("param").is_some(),
            "{status} body is not OpenAI's error shape: {text}"
        );
    }
    Ok(())
}

/// Runs `cases` cases of one property (random seed; proptest shrinks a failure and
/// the panic shows the minimal body).
fn check_property<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    seen: &RefCell<BTreeMap<u16, usize>>,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    seen.borrow_mut().clear();
    let config = Config {
        cases,
        max_shrink_iters: 256,
        failure_persistence: None,
        ..Config::default()
    };
    let t0 = Instant::now();
    if let Err(e) = TestRunner::new(config).run(&strategy, test) {
        panic!("{name}: {e}");
    }
    println!(
        "{name}: {cases} cases in {:.1}s, statuses {:?}",
        t0.elapsed().as_secs_f64(),
        seen.borrow()
    );
}

#[test]
fn random_bodies_never_get_a_5xx_nor_kill_the_server() {
    let mut s = Server::start(&["--max-tokens-cap", "4", "--max-n", "4"]);
    let c = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let base = s.url.clone();
    let seen = RefCell::new(BTreeMap::new());
    let post = |(body, chat): (Vec<u8>, bool)| post_and_check(&c, &base, chat, &body, &seen);
    let random = (random_body(), any::<bool>());
    check_property("random JSON", 4000, random, &seen, post);
    let mutated = (mutated_body(), any::<bool>());
    check_property("mutated requests", 1500, mutated, &seen, post);
    let bytes = prop::collection::vec(any::<u8>(), 0..256);
    check_property("raw bytes", 2000, (bytes, any::<bool>()), &seen, post);

    assert!(s.is_running(), "the server process is gone");
    let health = c.get(format!("{base}/health")).send().expect("/health");
    assert_eq!(health.status(), 200, "/health after the properties");
    assert_eq!(s.logged_panic(), None, "the server panicked");
}
