//! Errors, loading, queue full, engine failures, client disconnects, keep-alive,
//! metrics and request ids.

use std::time::Duration;

use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn loading_answers_503() {
    let s = start(false, 8).await;
    let h = s.get("/health").await;
    assert_eq!(h.status().as_u16(), 503);
    let v: Value = h.json().await.unwrap();
    assert_eq!(v["status"], "loading");
    assert_eq!(v["model"], "tiny");
    assert_eq!(v["models"][0]["name"], "tiny");
    assert_eq!(v["models"][0]["status"], "loading");
    let e = error_of(
        s.post("/v1/chat/completions", chat_body(json!({}))).await,
        503,
    )
    .await;
    assert_eq!(e["code"], "model_loading");
    error_of(s.get("/v1/models").await, 503).await;
}

#[tokio::test]
async fn info_routes() {
    let s = start(true, 8).await;
    let h: Value = s.get("/health").await.json().await.unwrap();
    assert_eq!(
        (h["status"].as_str(), h["device"].as_str()),
        (Some("ok"), Some("cpu"))
    );
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
    assert_eq!(
        metrics.headers()["content-type"],
        "text/plain; version=0.0.4"
    );
    error_of(s.get("/nope").await, 404).await;
    let e = error_of(s.get("/v1/chat/completions").await, 405).await;
    assert_eq!(e["code"], "method_not_allowed");
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
    let e = error_of(
        raw(r#"{"messages": [], "temperature": "hot"}"#)
            .await
            .unwrap(),
        400,
    )
    .await;
    assert!(
        e["message"].as_str().unwrap().contains("invalid type"),
        "{e}"
    );
    let e = error_of(
        s.post("/v1/chat/completions", chat_body(json!({"model": "gpt-4"})))
            .await,
        404,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
    let e = error_of(
        s.post(
            "/v1/chat/completions",
            chat_body(json!({"tools": [{"type": "function"}]})),
        )
        .await,
        400,
    )
    .await;
    assert_eq!(e["param"], "tools");
    let big = "x".repeat(5000);
    let e = error_of(s.post("/v1/completions", json!({"prompt": big})).await, 413).await;
    assert_eq!(e["code"], "request_too_large");
    let e = error_of(
        s.post(
            "/v1/completions",
            json!({"prompt": [1, 2], "max_tokens": 2047}),
        )
        .await,
        400,
    )
    .await;
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("you requested 2049 tokens (2 in the prompt, 2047 for the completion)")
    );
    let e = error_of(
        s.post("/v1/completions", json!({"prompt": [100000]})).await,
        400,
    )
    .await;
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
    let data = sse_data(
        &s.post("/v1/chat/completions", body)
            .await
            .text()
            .await
            .unwrap(),
    );
    let n = data.len();
    assert_eq!(data[n - 1], "[DONE]");
    let err: Value = serde_json::from_str(&data[n - 2]).unwrap();
    assert_eq!(err["error"]["type"], "server_error");
    // Non-streaming: a 500 in the same shape.
    error_of(
        s.post("/v1/chat/completions", chat_body(json!({"stop": FAIL})))
            .await,
        500,
    )
    .await;
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

#[tokio::test]
async fn keep_alive_comments_while_waiting() {
    let s = start(true, 8).await;
    let body = json!({"prompt": "x", "max_tokens": DELAYED, "stream": true});
    let text = s.post("/v1/completions", body).await.text().await.unwrap();
    assert!(text.starts_with(": keep-alive\n\n"), "{text:?}");
    assert!(text.ends_with("data: [DONE]\n\n"));
}

#[tokio::test]
async fn request_metrics_by_status() {
    let handle = crate::metrics::install();
    let s = start_with(true, 8, Some(handle)).await;
    let ok = s
        .post("/v1/completions", json!({"prompt": "x", "max_tokens": 2}))
        .await;
    assert_eq!(ok.status().as_u16(), 200);
    error_of(
        s.post("/v1/completions", json!({"prompt": "x", "n": 9}))
            .await,
        400,
    )
    .await;
    let stream = json!({"prompt": "x", "max_tokens": 2, "stream": true, "stop": [FAIL]});
    s.post("/v1/completions", stream)
        .await
        .text()
        .await
        .unwrap();
    let slow = s
        .client
        .post(format!("{}/v1/completions", s.base))
        .timeout(Duration::from_millis(100))
        .json(&json!({"prompt": "x", "max_tokens": SLOW}))
        .send();
    assert!(slow.await.is_err());
    wait_aborted(&s.seen, 1).await;
    let text = s.get("/metrics").await.text().await.unwrap();
    for status in ["200", "400", "500", "499"] {
        let line = format!("ferrite_requests_total{{status=\"{status}\"}}");
        assert!(text.contains(&line), "missing {line} in\n{text}");
    }
    assert!(
        text.contains("ferrite_time_to_first_token_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("ferrite_inter_token_latency_seconds_bucket"),
        "{text}"
    );
    assert!(
        text.contains("ferrite_request_duration_seconds_bucket"),
        "{text}"
    );
}

#[test]
fn request_ids_are_sanitized() {
    use axum::http::HeaderValue;
    use middleware::sane_request_id;
    assert_eq!(
        sane_request_id(&HeaderValue::from_static("a-B_1.2:3")),
        Some("a-B_1.2:3".into())
    );
    assert_eq!(
        sane_request_id(&HeaderValue::from_static("has space")),
        None
    );
    assert_eq!(sane_request_id(&HeaderValue::from_static("")), None);
    let long = "x".repeat(129);
    assert_eq!(
        sane_request_id(&HeaderValue::from_str(&long).unwrap()),
        None
    );
}
