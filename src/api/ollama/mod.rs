//! Ollama's API, an adapter over the same validation, engine and drain as the OpenAI
//! routes: `POST /api/chat`, `POST /api/generate` (NDJSON streams by default,
//! `stream: false` for one body), `POST /api/embed`, `POST /api/embeddings`,
//! `GET /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`. Errors leave
//! in Ollama's `{"error": "..."}` shape (`error::reshape`). Auth, limits, deadlines,
//! metrics and the drain apply unchanged: these routes sit under the same layers.
//!
//! Files: `request` (bodies), `options` (options → sampling, refused features),
//! `models` (names and the listing routes), `generate` (chat and generate), `ndjson`
//! (streams and bodies), `response` (line shapes, timings), `embed`, `error`.

pub mod embed;
pub mod error;
pub mod generate;
pub mod models;
pub mod ndjson;
pub mod options;
pub mod request;
pub mod response;

use axum::Router;
use axum::routing::{get, post};

use super::AppState;

/// `router` with the Ollama routes added.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/api/chat", post(generate::chat))
        .route("/api/generate", post(generate::generate))
        .route("/api/embed", post(embed::embed_route))
        .route("/api/embeddings", post(embed::embeddings_route))
        .route("/api/tags", get(models::tags))
        .route("/api/show", post(models::show))
        .route("/api/ps", get(models::ps))
        .route("/api/version", get(models::version))
}
