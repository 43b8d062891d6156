//! Structured outputs, tool calling and the Responses API against a running server with
//! the default model: the official OpenAI Python SDK (`tests/python/structured_check.py`)
//! and LangChain (`tests/python/langchain_check.py`) in virtual environments under
//! `target/`, plus raw-HTTP checks of what the SDKs do not reach (vLLM's guided fields,
//! `logit_bias`, Ollama's `format`, many constrained streams at once, 400s).

mod common;

use std::process::Command;

use common::{MODEL, Server};
use serde_json::{Value, json};

fn run_script(venv: &str, packages: &[&str], script: &str, s: &Server, marker: &str) {
    let python = common::python_venv(venv, packages);
    let path = common::repo_root()
        .join("tests")
        .join("python")
        .join(script);
    let out = Command::new(&python)
        .arg(&path)
        .args([s.url.as_str(), MODEL])
        .output()
        .expect("running the script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success() && stdout.contains(marker),
        "{script} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
}

#[test]
fn openai_sdk_structured_outputs_tools_and_responses() {
    let s = Server::start(&[]);
    run_script(
        "py-openai-venv",
        &["openai"],
        "structured_check.py",
        &s,
        "all structured-output checks passed",
    );
}

#[test]
fn langchain_structured_output_and_bind_tools() {
    let s = Server::start(&[]);
    run_script(
        "py-langchain-venv",
        &["langchain-openai"],
        "langchain_check.py",
        &s,
        "all LangChain checks passed",
    );
}

fn post(s: &Server, path: &str, body: Value) -> (u16, Value) {
    let resp = reqwest::blocking::Client::new()
        .post(format!("{}{path}", s.url))
        .json(&body)
        .timeout(std::time::Duration::from_secs(300))
        .send()
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

fn content(v: &Value) -> &str {
    v["choices"][0]["message"]["content"].as_str().unwrap_or("")
}

#[test]
fn guided_fields_logit_bias_and_ollama_format_constrain_the_output() {
    let s = Server::start(&[]);
    let msgs = json!([{"role": "user", "content": "Pick a number"}]);
    let (st, v) = post(
        &s,
        "/v1/chat/completions",
        json!({
            "messages": msgs, "guided_regex": "[0-9]{3}-[a-z]{2}", "max_tokens": 20, "temperature": 1.0, "seed": 1
        }),
    );
    assert_eq!(st, 200, "{v}");
    let t = content(&v);
    let (a, b) = t.split_once('-').expect(t);
    assert!(a.len() == 3 && a.bytes().all(|c| c.is_ascii_digit()), "{t}");
    assert!(
        b.len() == 2 && b.bytes().all(|c| c.is_ascii_lowercase()),
        "{t}"
    );

    let (st, v) = post(
        &s,
        "/v1/completions",
        json!({
            "prompt": "The sky is", "guided_choice": ["blue", "green", "on fire"], "max_tokens": 10
        }),
    );
    assert_eq!(st, 200, "{v}");
    let t = v["choices"][0]["text"].as_str().unwrap();
    assert!(["blue", "green", "on fire"].contains(&t), "{t}");

    let lark = "start: \"[\" item (\", \" item)* \"]\"\nitem: /[a-z]{1,8}/\n";
    let (st, v) = post(
        &s,
        "/v1/chat/completions",
        json!({
            "messages": msgs, "structured_outputs": {"grammar": lark}, "max_tokens": 60, "temperature": 0
        }),
    );
    assert_eq!(st, 200, "{v}");
    let t = content(&v);
    assert!(
        t.starts_with('[') && (t.ends_with(']') || v["choices"][0]["finish_reason"] == "length"),
        "{t}"
    );

    // logit_bias: +100 on one ordinary token makes it the next token whatever the prompt.
    let one = |prompt: &str, bias: Value| {
        let body = json!({"prompt": prompt, "max_tokens": 1, "temperature": 0, "logit_bias": bias});
        let (st, v) = post(&s, "/v1/completions", body);
        assert_eq!(st, 200, "{v}");
        v["choices"][0]["text"].as_str().unwrap().to_string()
    };
    let a = one("Once upon a time", json!({"1000": 100}));
    let b = one("The capital of France is", json!({"1000": 100}));
    assert!(!a.is_empty() && a == b, "{a:?} vs {b:?}");
    assert_ne!(
        one("Once upon a time", json!({})),
        a,
        "without the bias, token 1000 is not greedy"
    );

    // Ollama's `format`.
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"], "additionalProperties": false});
    let (st, v) = post(
        &s,
        "/api/chat",
        json!({
            "model": MODEL, "messages": msgs, "format": schema, "stream": false, "options": {"num_predict": 40}
        }),
    );
    assert_eq!(st, 200, "{v}");
    let parsed: Value = serde_json::from_str(v["message"]["content"].as_str().unwrap()).unwrap();
    assert!(parsed["n"].is_i64(), "{parsed}");
    let (st, v) = post(
        &s,
        "/api/generate",
        json!({
            "model": MODEL, "prompt": "JSON please", "format": "json", "stream": false, "options": {"num_predict": 60}
        }),
    );
    assert_eq!(st, 200, "{v}");
    let text = v["response"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(text).is_ok_and(|v| v.is_object())
            || v["done_reason"] == "length",
        "{text}"
    );
}

#[test]
fn thirty_two_constrained_streams_at_once_all_validate() {
    let s = Server::start(&[]);
    let schema = json!({
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 12}, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
        "required": ["name", "age"], "additionalProperties": false
    });
    let handles: Vec<_> = (0..32)
        .map(|i| {
            let url = s.url.clone();
            let schema = schema.clone();
            std::thread::spawn(move || {
                let body = json!({
                    "messages": [{"role": "user", "content": format!("Person number {i} as JSON")}],
                    "response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": schema}},
                    "max_tokens": 80, "temperature": 1.0, "seed": i,
                });
                let v: Value = reqwest::blocking::Client::new()
                    .post(format!("{url}/v1/chat/completions"))
                    .json(&body)
                    .timeout(std::time::Duration::from_secs(600))
                    .send()
                    .unwrap()
                    .json()
                    .unwrap();
                v
            })
        })
        .collect();
    for h in handles {
        let v = h.join().unwrap();
        let t = content(&v);
        let p: Value = serde_json::from_str(t).unwrap_or_else(|e| panic!("{t}: {e}"));
        assert!(
            p["name"].as_str().is_some_and(|n| n.chars().count() <= 12),
            "{t}"
        );
        assert!(
            p["age"].as_i64().is_some_and(|a| (0..=120).contains(&a)),
            "{t}"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    }
}

#[test]
fn bad_constraints_and_tools_get_openai_shaped_400s() {
    let s = Server::start(&[]);
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (
            json!({"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {"a": {"$ref": "#/missing"}}}}}}),
            "response_format",
        ),
        (
            json!({"messages": msgs, "guided_regex": "("}),
            "guided_regex",
        ),
        (
            json!({"messages": msgs, "guided_grammar": "start: nope"}),
            "guided_grammar",
        ),
        (
            json!({"messages": msgs, "logit_bias": {"99999999": 1}}),
            "logit_bias",
        ),
        (
            json!({"messages": msgs, "response_format": {"type": "json_object"}, "guided_regex": "a"}),
            "guided_regex",
        ),
        (
            json!({"messages": msgs, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
            "tool_choice",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x"}, {"role": "tool", "tool_call_id": "call_1", "content": "r"}]}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let (st, v) = post(&s, "/v1/chat/completions", body.clone());
        assert_eq!(st, 400, "{body} -> {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert_eq!(v["error"]["param"], param, "{body} -> {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{v}"
        );
    }
    // The server keeps serving.
    let (st, _) = post(
        &s,
        "/v1/chat/completions",
        json!({"messages": msgs, "max_tokens": 2}),
    );
    assert_eq!(st, 200);
}
