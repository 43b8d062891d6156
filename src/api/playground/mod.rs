//! `GET /` and the browser playground.
//!
//! `/` answers two kinds of callers: Ollama clients and load balancers check liveness
//! with `GET /` / `HEAD /` and expect `200 Ollama is running` (text/plain); a browser
//! (its navigation sends `Accept: text/html`) gets the playground. The playground is also
//! at `/playground` whatever the `Accept` header. `--no-playground` turns both pages off
//! (`/` then always answers the liveness text, `/playground` is a 404).
//!
//! The page (`index.html`) is built into the binary with `include_str!`, loads nothing
//! from elsewhere (no CDN: it works offline) and talks to the public API only: the model
//! list from `/v1/models`, chat over SSE from `/v1/chat/completions`, embeddings and
//! rerank from `/v1/embeddings` and `/v1/rerank`; with `--api-key` it asks for the key
//! and sends it as `Authorization: Bearer`. The pages themselves need no key (they hold
//! no data), so the guard lets `GET /` and `GET /playground` through unauthenticated.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::AppState;
use super::error::ApiError;

/// The page.
pub const PAGE: &str = include_str!("index.html");

/// Ollama's liveness answer.
pub const LIVENESS: &str = "Ollama is running";

/// The paths served without an API key (static, data-free).
pub const PUBLIC_PATHS: [&str; 2] = ["/", "/playground"];

/// `router` with `/` and `/playground`.
pub fn routes(router: Router<AppState>) -> Router<AppState> {
    router
        .route("/", get(root))
        .route("/playground", get(playground))
}

fn wants_html(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/html"))
}

fn page() -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /` (and `HEAD /`): the playground for browsers, else `Ollama is running`.
pub async fn root(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if state.web.playground && wants_html(&headers) {
        return page();
    }
    (
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        LIVENESS,
    )
        .into_response()
}

/// `GET /playground`.
pub async fn playground(State(state): State<AppState>) -> Response {
    if !state.web.playground {
        return ApiError::route_not_found("GET", "/playground").into_response();
    }
    page()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_testable() {
        for id in ["prompt", "send", "output"] {
            assert!(PAGE.contains(&format!("data-testid=\"{id}\"")), "{id}");
        }
        // Nothing is loaded from another origin.
        for remote in ["http://", "https://", "//cdn", "<link "] {
            assert!(!PAGE.contains(remote), "{remote}");
        }
    }

    #[test]
    fn browsers_are_told_apart_by_accept() {
        let mut h = HeaderMap::new();
        assert!(!wants_html(&h));
        h.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        assert!(!wants_html(&h));
        h.insert(
            header::ACCEPT,
            HeaderValue::from_static("text/html,application/xhtml+xml,*/*;q=0.8"),
        );
        assert!(wants_html(&h));
    }
}
