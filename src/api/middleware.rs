//! The middleware every request passes through: it assigns the request id (echoing a
//! sane `x-request-id`, else a new UUID) and sets it on every response, records
//! `ferrite_requests_total{status}`, and rewrites any plain-text error that axum itself
//! produced into OpenAI's error shape.
//!
//! Streaming responses carry a `DeferredStatus` marker: their final status (200, 500 for
//! a stream that ended with an error event, 499 for a client that left) is only known
//! when the stream ends, so the stream records it through its own `StatusRecorder`.

use std::time::Instant;

use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use crate::metrics::REQUESTS_TOTAL;

/// Name of the request id header.
pub const REQUEST_ID: &str = "x-request-id";

/// Per-request context, available to handlers as a request extension.
#[derive(Debug, Clone)]
pub struct RequestCtx {
    /// The request id sent back in `x-request-id`.
    pub id: String,
    /// When the request arrived.
    pub arrival: Instant,
}

/// Response extension: the handler (a stream) records the final status itself.
#[derive(Debug, Clone, Copy)]
pub struct DeferredStatus;

/// Records one `ferrite_requests_total` sample: the status given to `finish`, or
/// "499" (client closed the request) if dropped before that.
#[derive(Debug)]
pub struct StatusRecorder {
    armed: bool,
}

impl StatusRecorder {
    /// A recorder that counts 499 unless finished or disarmed.
    pub fn new() -> Self {
        Self { armed: true }
    }

    /// Counts the request under `status`.
    pub fn finish(mut self, status: u16) {
        self.armed = false;
        record(status);
    }

    /// Counts nothing (someone else records this request).
    pub fn disarm(mut self) {
        self.armed = false;
    }
}

impl Default for StatusRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for StatusRecorder {
    fn drop(&mut self) {
        if self.armed {
            record(499);
        }
    }
}

fn record(status: u16) {
    metrics::counter!(REQUESTS_TOTAL, "status" => status.to_string()).increment(1);
}

/// An incoming id is echoed if it is 1..=128 characters of `[A-Za-z0-9._:-]`.
pub fn sane_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b));
    ok.then(|| s.to_string())
}

/// The middleware function (install with `axum::middleware::from_fn`).
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(sane_request_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    req.extensions_mut().insert(RequestCtx {
        id: id.clone(),
        arrival: Instant::now(),
    });
    // Probes and scrapes are not API traffic.
    let counted = !matches!(req.uri().path(), "/health" | "/metrics");
    let recorder = counted.then(StatusRecorder::new);

    let mut resp = json_errors(next.run(req).await).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    if let Some(recorder) = recorder {
        if resp.extensions().get::<DeferredStatus>().is_some() {
            recorder.disarm();
        } else {
            recorder.finish(resp.status().as_u16());
        }
    }
    resp
}

/// Error responses that are not JSON (axum's own rejections) become OpenAI errors.
async fn json_errors(resp: Response) -> Response {
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    let retry_after = resp.headers().get(header::RETRY_AFTER).cloned();
    let text = axum::body::to_bytes(resp.into_body(), 4096)
        .await
        .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        .unwrap_or_default();
    let message = if text.is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text
    };
    let mut out = ApiError::new(status, message).into_response();
    if let Some(v) = retry_after {
        out.headers_mut().insert(header::RETRY_AFTER, v);
    }
    out
}

/// Response of a request whose status is decided later (used by the SSE path).
pub fn deferred(mut resp: Response) -> Response {
    resp.extensions_mut().insert(DeferredStatus);
    resp
}
