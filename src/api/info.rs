//! The small routes: `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`,
//! `GET /metrics`, and the 404 / 405 fallbacks (OpenAI error shape).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ApiError;
use super::openai::{ModelCard, ModelList};
use super::{AppState, Ready};

fn card(ready: &Ready) -> ModelCard {
    let info = &ready.model.info;
    ModelCard {
        id: info.id.clone(),
        object: "model",
        created: info.created,
        owned_by: "ferrite",
        max_model_len: info.context_length,
    }
}

/// `GET /v1/models`: the served model (503 while loading).
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    let ready = state.ready()?;
    Ok(Json(ModelList {
        object: "list",
        data: vec![card(ready)],
    }))
}

/// `GET /v1/models/{id}`: the served model, or 404.
pub async fn get_model(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelCard>, ApiError> {
    let ready = state.ready()?;
    let Path(id) = id.map_err(|e| ApiError::invalid(e.body_text(), Some("model")))?;
    if id != ready.model.info.id {
        return Err(ApiError::model_not_found(&id));
    }
    Ok(Json(card(ready)))
}

/// `GET /health`: 200 with engine counters when ready, 503 while loading.
pub async fn health(State(state): State<AppState>) -> Response {
    match state.ready.get() {
        Some(ready) => {
            let s = ready.engine.stats();
            let body = json!({
                "status": "ok",
                "model": ready.model.info.id,
                "device": state.device,
                "context_length": ready.model.info.context_length,
                "requests_running": s.running,
                "requests_waiting": s.waiting,
                "kv_blocks_used": s.blocks_used,
                "kv_blocks_total": s.blocks_total,
            });
            (StatusCode::OK, Json(body)).into_response()
        }
        None => {
            let body =
                json!({"status": "loading", "model": state.loading_model, "device": state.device});
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    state.metrics.run_upkeep();
    let text = state.metrics.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Fallback for unknown paths.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::route_not_found(method.as_str(), uri.path())
}

/// Fallback for known paths with the wrong method.
pub async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    ApiError::method_not_allowed(method.as_str(), uri.path())
}
