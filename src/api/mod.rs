//! The OpenAI-compatible HTTP edge: routes, request validation, SSE streaming and the
//! single `ApiError` -> status mapping. The engine only ever sees validated token ids
//! and resolved sampling parameters; everything client-shaped stays here.
//!
//! Routes: `POST /v1/chat/completions`, `POST /v1/completions` (the LLM),
//! `POST /v1/embeddings`, `POST /rerank` (TEI shape), `POST /v1/rerank` (Cohere/Jina
//! shape), `POST /predict` (TEI) and `POST /v1/classify` (vLLM) for classifiers,
//! `POST /v1/ner` for token classifiers (the encoder), `GET /v1/models`,
//! `GET /v1/models/{id}`, `GET /health`, `GET /metrics`; anything else is a 404 or 405 in OpenAI's error shape. Every response carries `x-request-id`.
//! Ollama's API (`ollama`: `/api/chat`, `/api/generate`, `/api/embed`, `/api/tags`, ...)
//! is a second adapter over the same validation and engine; `GET /` is Ollama's liveness
//! answer or, for browsers, the playground (`playground`).
//!
//! Layers, outermost first: CORS (`cors`, only with `--allowed-origins`; preflights are
//! answered before auth, and every response, errors and streams included, carries the
//! headers), the Ollama error reshaping for `/api/*`, the request context, the guard.
//!
//! Production layers (`guard`, one router layer over every route): API-key auth, rate
//! limits, per-request deadlines, the shutdown drain/abort and the response cache;
//! `connections` bounds open connections at the listener.

pub mod auth;
mod body;
pub mod chat_turn;
pub mod check;
pub mod chunks;
mod completions;
pub mod connections;
pub mod cors;
pub mod deadline;
pub mod encoder;
pub mod error;
pub mod events;
mod generate;
pub mod guard;
pub mod in_flight;
mod info;
pub mod middleware;
pub mod ollama;
pub mod openai;
pub mod output_format;
pub mod playground;
mod prompt;
pub mod rate_limit;
pub mod response_cache;
pub mod responses;
pub mod serve;
pub mod shaper;
pub mod sse;
pub mod tools;
pub mod validate;

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use metrics_exporter_prometheus::PrometheusHandle;

pub use crate::registry::{EncoderLimits, EncoderReady, Ready};
use crate::registry::{Lease, Registry, Route};
use error::ApiError;

/// Shared state of every handler. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    /// Every served model: the HTTP layer resolves `model` through it.
    pub registry: Arc<Registry>,
    /// Device name shown by `/health` while nothing is loaded, e.g. `cpu`.
    pub device: String,
    /// Renders `/metrics`.
    pub metrics: PrometheusHandle,
    /// Request limits.
    pub limits: ApiLimits,
    /// CORS and the playground.
    pub web: WebSettings,
}

/// What the browser- and Ollama-facing parts need from the flags.
#[derive(Debug, Clone)]
pub struct WebSettings {
    /// The CORS layer (`None`: no `--allowed-origins`, no CORS headers).
    pub cors: Option<tower_http::cors::CorsLayer>,
    /// Serve the playground at `/` (to browsers) and `/playground`.
    pub playground: bool,
}

impl Default for WebSettings {
    /// No CORS, the playground on.
    fn default() -> Self {
        Self {
            cors: None,
            playground: true,
        }
    }
}

impl WebSettings {
    /// From the `serve` flags; a malformed origin is an error.
    pub fn from_args(a: &crate::config::WebArgs) -> Result<Self, String> {
        Ok(Self {
            cors: cors::layer(&a.allowed_origins)?,
            playground: !a.no_playground,
        })
    }
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

impl Default for ApiLimits {
    /// The `ferrite serve` defaults: 4 MiB bodies, `n` up to 8, no `max_tokens` cap,
    /// keep-alives every 15 s.
    fn default() -> Self {
        Self {
            max_body_bytes: 4 << 20,
            max_n: 8,
            max_tokens_cap: None,
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

impl AppState {
    /// A lease on the LLM a request names (`None`: the first LLM), loading it on
    /// demand; 503 while it loads at start-up, 404 when unknown, 400 when it is not an
    /// LLM.
    pub async fn llm(&self, asked: Option<&str>) -> Result<Lease, ApiError> {
        self.registry.acquire(asked, Route::Generate).await
    }

    /// A lease on the encoder a request names for `route` (`None`: the first that
    /// serves it).
    pub async fn encoder(&self, asked: Option<&str>, route: Route) -> Result<Lease, ApiError> {
        self.registry.acquire(asked, route).await
    }
}

/// Every route plus the request-id / metrics / error-shape middleware, ready to serve,
/// with no production guard (no auth, limits, deadline or cache).
pub fn router(state: AppState) -> Router {
    router_with(state, guard::Guard::default())
}

/// `router` behind the production `guard` layer (auth, rate limit, deadline, shutdown,
/// response cache), which covers every route and the fallbacks.
pub fn router_with(state: AppState, guard: guard::Guard) -> Router {
    let cors = state.web.cors.clone();
    let app = ollama::routes(playground::routes(Router::new()))
        .route("/v1/chat/completions", post(completions::chat))
        .route("/v1/completions", post(completions::completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/embeddings", post(encoder::embeddings::embeddings))
        .route("/rerank", post(encoder::rerank::rerank_tei))
        .route("/v1/rerank", post(encoder::rerank::rerank_cohere))
        .route("/predict", post(encoder::classify::predict))
        .route("/v1/classify", post(encoder::classify::classify))
        .route("/v1/ner", post(encoder::ner::ner))
        .route("/v1/models", get(info::list_models))
        .route("/v1/models/{*id}", get(info::get_model))
        .route("/health", get(info::health))
        .route("/metrics", get(info::metrics))
        .fallback(info::not_found)
        .method_not_allowed_fallback(info::method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(guard),
            guard::layer,
        ))
        .layer(axum::middleware::from_fn(middleware::request_context))
        .layer(axum::middleware::from_fn(ollama::error::reshape))
        .with_state(state);
    match cors {
        Some(cors) => app.layer(cors),
        None => app,
    }
}
