//! Bad input through real HTTP: every case gets OpenAI's error shape
//! `{"error":{"message","type","param","code"}}` with the right status (and the
//! parameter at fault where there is one), and the server keeps serving afterwards with
//! every KV block back in the pool. Also 413, 404s, 429 with `Retry-After`, and the 503
//! while the model loads.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::sse::{metric_sum, post_json, scrape, wait_idle};
use common::{MODEL, Server, chat_body};
use serde_json::{Value, json};

/// Context of 64 tokens (a one-word chat prompt is ~31), bodies up to 1 KiB, n up to 4.
fn server() -> &'static Server {
    Server::shared(&[
        "--max-model-len",
        "64",
        "--max-body",
        "1KiB",
        "--max-n",
        "4",
    ])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn chat(extra: Value) -> Value {
    common::merged(chat_body("Hi", json!({"max_tokens": 2})), extra)
}

/// Checks OpenAI's error shape; returns the error object.
fn error_object(
    status: u16,
    headers: &reqwest::header::HeaderMap,
    text: &str,
) -> Result<Value, String> {
    if !headers.contains_key("x-request-id") {
        return Err("no x-request-id header".into());
    }
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("application/json") {
        return Err(format!("content-type {ct:?}"));
    }
    let v: Value =
        serde_json::from_str(text).map_err(|e| format!("body is not JSON ({e}): {text:?}"))?;
    let obj = v.as_object().ok_or("body is not an object")?;
    if obj.len() != 1 || !obj.contains_key("error") {
        return Err(format!("body must be exactly {{\"error\": ...}}: {v}"));
    }
    let e = &v["error"];
    let keys = e.as_object().ok_or("`error` is not an object")?;
    for k in ["message", "type", "param", "code"] {
        if !keys.contains_key(k) {
            return Err(format!("error lacks `{k}`: {v}"));
        }
    }
    if e["message"].as_str().is_none_or(str::is_empty) {
        return Err(format!("empty or non-string message: {v}"));
    }
    if !e["type"].is_string() || !(e["param"].is_string() || e["param"].is_null()) {
        return Err(format!(
            "type must be a string, param a string or null: {v}"
        ));
    }
    if !(e["code"].is_string() || e["code"].is_null()) {
        return Err(format!("code must be a string or null: {v}"));
    }
    let want_type = match status {
        429 => "rate_limit_error",
        500..=599 => "server_error",
        _ => "invalid_request_error",
    };
    if e["type"] != want_type {
        return Err(format!("type for {status} should be {want_type}: {v}"));
    }
    Ok(e.clone())
}

/// One bad request: its path, raw body, expected status and expected `param`.
struct Case {
    name: &'static str,
    path: &'static str,
    body: String,
    status: u16,
    /// `Some(Some(p))`: param must be `p`; `Some(None)`: must be null; `None`: any.
    param: Option<Option<&'static str>>,
}

fn case(name: &'static str, body: Value, status: u16, param: Option<&'static str>) -> Case {
    Case {
        name,
        path: "/v1/chat/completions",
        body: body.to_string(),
        status,
        param: Some(param),
    }
}

async fn send_case(c: &reqwest::Client, base: &str, k: &Case) -> Result<Value, String> {
    let r = c
        .post(format!("{base}{}", k.path))
        .header("content-type", "application/json")
        .body(k.body.clone())
        .send()
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.map_err(|e| format!("body: {e}"))?;
    if status != k.status {
        return Err(format!(
            "status {status}, expected {}; body {text}",
            k.status
        ));
    }
    let e = error_object(status, &headers, &text)?;
    if let Some(p) = k.param
        && e["param"] != json!(p)
    {
        return Err(format!("param {}, expected {p:?}; error {e}", e["param"]));
    }
    Ok(e)
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_openai_errors_and_server_keeps_serving() {
    let s = server();
    let c = client();
    let many_stops = json!(["a", "b", "c", "d", "e"]);
    let mut cases = vec![
        Case {
            name: "malformed JSON",
            path: "/v1/chat/completions",
            body: r#"{"model": "x", "messages": [{"role": "user""#.into(),
            status: 400,
            param: None,
        },
        Case {
            name: "empty body",
            path: "/v1/chat/completions",
            body: String::new(),
            status: 400,
            param: None,
        },
        Case {
            name: "max_tokens wrong type",
            path: "/v1/chat/completions",
            body: chat(json!({"max_tokens": "ten"})).to_string(),
            status: 400,
            param: None,
        },
        Case {
            name: "messages wrong type",
            path: "/v1/chat/completions",
            body: chat(json!({"messages": 5})).to_string(),
            status: 400,
            param: None,
        },
        case(
            "max_tokens 0",
            chat(json!({"max_tokens": 0})),
            400,
            Some("max_tokens"),
        ),
        case(
            "max_tokens negative",
            chat(json!({"max_tokens": -3})),
            400,
            Some("max_tokens"),
        ),
        case(
            "temperature 2.5",
            chat(json!({"temperature": 2.5})),
            400,
            Some("temperature"),
        ),
        case("top_p 0", chat(json!({"top_p": 0})), 400, Some("top_p")),
        case("top_p 1.5", chat(json!({"top_p": 1.5})), 400, Some("top_p")),
        case("n above --max-n", chat(json!({"n": 5})), 400, Some("n")),
        case("n 0", chat(json!({"n": 0})), 400, Some("n")),
        case(
            "5 stop strings",
            chat(json!({"stop": many_stops})),
            400,
            Some("stop"),
        ),
        case(
            "empty messages",
            chat(json!({"messages": []})),
            400,
            Some("messages"),
        ),
        case(
            "unknown role",
            chat(json!({"messages": [{"role": "wizard", "content": "hi"}]})),
            400,
            Some("messages"),
        ),
        case(
            "tools",
            chat(
                json!({"tools": [{"type": "function", "function": {"name": "not a name", "parameters": {}}}]}),
            ),
            400,
            Some("tools"),
        ),
        case(
            "tool_choice naming no tool",
            chat(json!({
                "tools": [{"type": "function", "function": {"name": "f"}}],
                "tool_choice": {"type": "function", "function": {"name": "g"}}
            })),
            400,
            Some("tool_choice"),
        ),
        case(
            "response_format yaml",
            chat(json!({"response_format": {"type": "yaml"}})),
            400,
            Some("response_format"),
        ),
        case(
            "top_logprobs 21",
            chat(json!({"logprobs": true, "top_logprobs": 21})),
            400,
            Some("top_logprobs"),
        ),
        case(
            "unknown model",
            chat(json!({"model": "gpt-17"})),
            404,
            Some("model"),
        ),
    ];
    let completion = |name, body: Value, status, param| Case {
        name,
        path: "/v1/completions",
        body: body.to_string(),
        status,
        param: Some(param),
    };
    cases.push(completion(
        "completions logprobs 6",
        json!({"model": MODEL, "prompt": "a", "max_tokens": 1, "logprobs": 6}),
        400,
        Some("logprobs"),
    ));
    cases.push(completion(
        "completions empty prompt",
        json!({"model": MODEL, "prompt": "", "max_tokens": 1}),
        400,
        Some("prompt"),
    ));
    cases.push(completion(
        "completions prompt wrong type",
        json!({"model": MODEL, "prompt": {"text": "a"}, "max_tokens": 1}),
        400,
        Some("prompt"),
    ));
    cases.push(completion(
        "completions token id out of vocabulary",
        json!({"model": MODEL, "prompt": [1, 2, 999999999], "max_tokens": 1}),
        400,
        Some("prompt"),
    ));
    cases.push(completion(
        "completions unknown model",
        json!({"model": "nope", "prompt": "a", "max_tokens": 1}),
        404,
        Some("model"),
    ));

    let mut failures = Vec::new();
    for k in &cases {
        match send_case(&c, &s.url, k).await {
            Ok(e) => {
                if k.name == "tools" && !e["message"].as_str().unwrap().contains("tools") {
                    failures.push(format!("{}: message does not name `tools`: {e}", k.name));
                }
                if k.name == "response_format yaml"
                    && !e["message"].as_str().unwrap().contains("response_format")
                {
                    failures.push(format!(
                        "{}: message does not name `response_format`: {e}",
                        k.name
                    ));
                }
                if k.name.contains("unknown model") && e["code"] != "model_not_found" {
                    failures.push(format!("{}: code should be model_not_found: {e}", k.name));
                }
                println!("ok   {:40} {}", k.name, e["message"]);
            }
            Err(msg) => failures.push(format!("{}: {msg}", k.name)),
        }
    }

    // An unknown extra field is ignored.
    let (status, _, v) = post_json(
        &c,
        &format!("{}/v1/chat/completions", s.url),
        &chat(json!({"frobnicate": {"x": 1}})),
    )
    .await;
    if status != 200 {
        failures.push(format!("unknown extra field: status {status}, body {v}"));
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len() + 1,
        failures.join("\n")
    );

    // Still serving, and nothing leaked.
    let (status, _, v) = post_json(
        &c,
        &format!("{}/v1/chat/completions", s.url),
        &chat(json!({})),
    )
    .await;
    assert_eq!(status, 200, "good request after the bad ones: {v}");
    assert!(v["choices"][0]["message"]["content"].is_string());
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;
}

/// serde's own messages for wrong types should still say which field is wrong, in the
/// message or in `param`.
#[tokio::test(flavor = "multi_thread")]
async fn type_errors_name_the_field() {
    let s = server();
    let c = client();
    let mut failures = Vec::new();
    for (field, body) in [
        ("max_tokens", chat(json!({"max_tokens": "ten"}))),
        ("messages", chat(json!({"messages": 5}))),
        ("temperature", chat(json!({"temperature": "hot"}))),
    ] {
        let (status, _, v) = post_json(&c, &format!("{}/v1/chat/completions", s.url), &body).await;
        assert_eq!(status, 400, "{v}");
        let e = &v["error"];
        let named = e["param"] == field || e["message"].as_str().is_some_and(|m| m.contains(field));
        if !named {
            failures.push(format!("{field}: neither message nor param names it: {e}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_plus_max_tokens_over_context_is_400_with_both_numbers() {
    let s = server();
    let c = client();
    let (status, headers, v) = post_json(
        &c,
        &format!("{}/v1/chat/completions", s.url),
        &chat(json!({"max_tokens": 100})),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    let e = error_object(400, &headers, &v.to_string()).unwrap();
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("64"),
        "message lacks the context length 64: {msg}"
    );
    assert!(
        msg.contains("100"),
        "message lacks the requested max_tokens 100: {msg}"
    );
    assert_eq!(e["code"], "context_length_exceeded", "{e}");
    // The same through completions, with a prompt alone longer than the context.
    let long = "word ".repeat(80);
    let (status, _, v) = post_json(
        &c,
        &format!("{}/v1/completions", s.url),
        &json!({"model": MODEL, "prompt": long, "max_tokens": 1}),
    )
    .await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["error"]["code"], "context_length_exceeded", "{v}");
    assert_eq!(v["error"]["param"], "prompt", "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn body_over_max_body_is_413() {
    let s = server();
    let c = client();
    let big = chat(json!({"messages": [{"role": "user", "content": "x".repeat(2000)}]}));
    let url = format!("{}/v1/chat/completions", s.url);
    let (status, headers, text) = send(c.post(&url).json(&big)).await;
    assert_eq!(status, 413, "{text}");
    error_object(413, &headers, &text).unwrap();
    // Without Content-Length (chunked) the limit holds too.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![Ok(big.to_string().into_bytes())];
    let body = reqwest::Body::wrap_stream(futures::stream::iter(chunks));
    let chunked = c
        .post(&url)
        .header("content-type", "application/json")
        .body(body);
    let (status, headers, text) = send(chunked).await;
    assert_eq!(status, 413, "chunked body: {text}");
    error_object(413, &headers, &text).unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_and_methods_use_the_error_shape() {
    let s = server();
    let c = client();
    for (method, path, status) in [
        ("GET", "/v1/nothing-here", 404),
        ("POST", "/v1/engines/davinci/completions", 404),
        ("GET", "/v1/chat/completions", 405),
        ("GET", "/v1/models/not-a-model", 404),
    ] {
        let r = c
            .request(method.parse().unwrap(), format!("{}{path}", s.url))
            .send()
            .await
            .unwrap();
        let got = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await.unwrap();
        assert_eq!(got, status, "{method} {path}: {text}");
        error_object(got, &headers, &text).unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    }
}

/// One running slot and one waiting slot: of five simultaneous requests at least one
/// gets 429 with `Retry-After`, every other one succeeds.
#[tokio::test(flavor = "multi_thread")]
async fn full_queue_is_429_with_retry_after() {
    let s = Server::shared(&["--max-num-seqs", "1", "--max-waiting", "1"]);
    let c = client();
    let url = format!("{}/v1/chat/completions", s.url);
    let body = chat(
        json!({"max_tokens": 6, "ignore_eos": true, "messages": [{"role": "user", "content": "Tell me a story."}]}),
    );
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let (c, url, body) = (c.clone(), url.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let headers = r.headers().clone();
            (status, headers, r.text().await.unwrap())
        }));
    }
    let mut rejected = 0;
    for t in tasks {
        let (status, headers, text) = t.await.unwrap();
        match status {
            200 => {}
            429 => {
                rejected += 1;
                let ra = headers
                    .get("retry-after")
                    .unwrap_or_else(|| panic!("429 without Retry-After: {text}"));
                let secs: u64 = ra
                    .to_str()
                    .unwrap()
                    .parse()
                    .expect("Retry-After is delay-seconds");
                assert!(secs >= 1, "Retry-After {secs}");
                error_object(429, &headers, &text).unwrap();
            }
            other => panic!("status {other}: {text}"),
        }
    }
    assert!(
        rejected >= 1,
        "no 429 with 1 running + 1 waiting slot and 5 simultaneous requests"
    );
    assert!(
        rejected < 5,
        "all 5 rejected: the first request always finds the queue empty"
    );
    // The rejections leave nothing behind and the server still serves.
    wait_idle(&c, &s.url, Duration::from_secs(30)).await;
    let (status, _, v) = post_json(&c, &url, &chat(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    let metrics = scrape(&c, &s.url).await;
    assert!(
        metric_sum(&metrics, "ferrite_requests_total") >= 6.0,
        "requests_total counts them:\n{metrics}"
    );
}

/// Kills a directly spawned server on drop.
struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Right after the port is bound the model is still loading: generation routes and
/// `/health` answer 503 (the window is short; if the model is already loaded by the
/// time the request lands, the 503 checks are skipped and say so).
#[tokio::test(flavor = "multi_thread")]
async fn loading_is_503_in_the_error_shape() {
    let model = common::default_model();
    let mut child = Command::new(common::binary())
        .args(["serve", "--host", "127.0.0.1", "--port", "0", "--model"])
        .arg(&model)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let guard = Kill(child);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(i) = line.find("listening on http://") {
                let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("server address");
    let c = client();
    let r = c
        .post(format!("{url}/v1/chat/completions"))
        .json(&chat(json!({})))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let text = r.text().await.unwrap();
    if status == 503 {
        let e = error_object(503, &headers, &text).unwrap();
        assert_eq!(e["code"], "model_loading", "{e}");
        println!("got the loading 503: {e}");
    } else {
        assert_eq!(status, 200, "{text}");
        println!("model was already loaded when the request landed; 503 not observed");
    }
    // It becomes ready and serves.
    let t0 = std::time::Instant::now();
    loop {
        let r = c.get(format!("{url}/health")).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert_eq!(r.status(), 503, "health while loading");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["status"], "loading", "{v}");
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "never became ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, v) =
        post_json(&c, &format!("{url}/v1/chat/completions"), &chat(json!({}))).await;
    assert_eq!(status, 200, "{v}");
    drop(guard);
}

/// Sends a request and returns (status, headers, body text).
async fn send(rb: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, String) {
    let r = rb.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}
