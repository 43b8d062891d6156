//! The OpenAI-compatible HTTP edge: routes, request validation, SSE streaming and the
//! single `ApiError` -> status mapping. The engine only ever sees validated token ids
//! and resolved sampling parameters; everything client-shaped stays here.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`,
//! `GET /v1/models/{id}`, `GET /health`, `GET /metrics`; anything else is a 404 or 405
//! in OpenAI's error shape. Every response carries `x-request-id`.

mod body;
pub mod chunks;
mod completions;
pub mod error;
mod generate;
mod info;
pub mod middleware;
pub mod openai;
mod prompt;
pub mod sse;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

use crate::engine::handle::EngineHandle;
use crate::model::ServedModel;
use error::ApiError;

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Set once the model is loaded; generation routes answer 503 until then.
    pub ready: Arc<OnceLock<Ready>>,
    /// Model path or name shown by `/health` while loading.
    pub loading_model: String,
    /// Device name shown by `/health`, e.g. `cpu`.
    pub device: String,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Request limits.
    pub limits: ApiLimits,
}

/// What the routes need once the model is up.
pub struct Ready {
    /// Model identity, tokenizer and chat template.
    pub model: Arc<ServedModel>,
    /// The engine's submission handle.
    pub engine: EngineHandle,
}

/// Operator limits on requests.
#[derive(Debug, Clone)]
pub struct ApiLimits {
    /// Bodies above this many bytes get 413.
    pub max_body_bytes: usize,
    /// Largest accepted `n`.
    pub max_n: usize,
    /// Upper bound on `max_tokens` (`None`: the context length).
    pub max_tokens_cap: Option<usize>,
    /// Interval of SSE keep-alive comments (zero disables them).
    pub sse_keep_alive: Duration,
}

impl AppState {
    /// The loaded model and engine, or 503 while loading.
    pub fn ready(&self) -> Result<&Ready, ApiError> {
        self.ready.get().ok_or_else(ApiError::loading)
    }
}

/// Every route plus the request-id / metrics / error-shape middleware, ready to serve.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/models", get(info::list_models))
        .route("/v1/models/{*id}", get(info::get_model))
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .fallback(info::not_found)
        .method_not_allowed_fallback(info::method_not_allowed)
        .layer(axum::middleware::from_fn(middleware::request_context))
        .with_state(state)
}
