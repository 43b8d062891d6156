//! Ollama's error shape, `{"error": "message"}`, for every error under `/api/`: one
//! middleware rewrites the OpenAI-shaped bodies that the shared layers (body limits,
//! validation, auth, rate limit, drain, deadline, 404 / 405 fallbacks) produce, keeping
//! the status and headers. Handlers therefore return the same `ApiError` as the OpenAI
//! routes; only the rendering differs. Streams are not touched (a mid-stream error is
//! already an `{"error": ...}` line).

use axum::body::Body;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

use super::response::error_json;

/// Largest error body rewritten (ferrite's are far smaller).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// The middleware (install with `axum::middleware::from_fn`).
pub async fn reshape(req: Request, next: Next) -> Response {
    let ollama = req.uri().path().starts_with("/api/");
    let resp = next.run(req).await;
    let status = resp.status();
    if !ollama || !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !is_json {
        return resp;
    }
    let (mut parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let message = ollama_message(&bytes).unwrap_or_else(|| {
        status
            .canonical_reason()
            .unwrap_or("error")
            .to_ascii_lowercase()
    });
    let out = error_json(&message);
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Response::from_parts(parts, Body::from(out))
}

/// The message of an OpenAI-shaped (`{"error":{"message":...}}`) or already
/// Ollama-shaped (`{"error":"..."}`) body.
fn ollama_message(body: &[u8]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    match &v["error"] {
        serde_json::Value::String(s) => Some(s.clone()),
        e => e["message"].as_str().map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_come_out_of_either_shape() {
        let openai = br#"{"error":{"message":"model 'x' not found","type":"invalid_request_error","param":"model","code":"model_not_found"}}"#;
        assert_eq!(
            ollama_message(openai).as_deref(),
            Some("model 'x' not found")
        );
        assert_eq!(
            ollama_message(br#"{"error":"boom"}"#).as_deref(),
            Some("boom")
        );
        assert_eq!(ollama_message(b"not json"), None);
    }
}
