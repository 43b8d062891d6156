//! The small routes: `GET /v1/models`, `GET /v1/models/{id}`, `GET /health`,
//! `GET /metrics`, and the 404 / 405 fallbacks (OpenAI error shape).

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::encoder::rerank::Mode;
use super::error::ApiError;
use super::openai::{ModelCard, ModelList};
use super::{AppState, EncoderReady, Ready};
use crate::model::encoder::config::Task;

fn card(ready: &Ready) -> ModelCard {
    let info = &ready.model.info;
    ModelCard {
        id: info.id.clone(),
        object: "model",
        created: info.created,
        owned_by: "ferrite",
        max_model_len: info.context_length,
        task: None,
        rerank_mode: None,
        dimensions: None,
    }
}

fn encoder_card(ready: &EncoderReady) -> ModelCard {
    let info = &ready.encoder.info;
    let dimensions = match info.task {
        Task::Embedding(_) => Some(info.dims),
        _ => None,
    };
    ModelCard {
        id: info.id.clone(),
        object: "model",
        created: info.created,
        owned_by: "ferrite",
        max_model_len: info.max_len,
        task: Some(info.task.name()),
        rerank_mode: Mode::of(info.task).map(Mode::name),
        dimensions,
    }
}

/// Every served model that is loaded; 503 while any is still loading.
fn cards(state: &AppState) -> Result<Vec<ModelCard>, ApiError> {
    let mut cards = Vec::new();
    if state.serving.llm {
        cards.push(card(state.ready()?));
    }
    if state.serving.encoder.is_some() {
        cards.push(encoder_card(state.encoder()?));
    }
    Ok(cards)
}

/// `GET /v1/models`: the served models (503 while loading).
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    Ok(Json(ModelList {
        object: "list",
        data: cards(&state)?,
    }))
}

/// `GET /v1/models/{id}`: a served model, or 404.
pub async fn get_model(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Json<ModelCard>, ApiError> {
    let cards = cards(&state)?;
    let Path(id) = id.map_err(|e| ApiError::invalid(e.body_text(), Some("model")))?;
    cards
        .into_iter()
        .find(|c| c.id == id)
        .map(Json)
        .ok_or_else(|| ApiError::model_not_found(&id))
}

/// `GET /health`: 200 with engine counters once every served model is loaded, 503
/// while loading. Says which models are served and, for the encoder, its rerank mode.
pub async fn health(State(state): State<AppState>) -> Response {
    let llm = state.ready.get();
    let encoder = state.serving.encoder_ready.get();
    let loaded = (!state.serving.llm || llm.is_some())
        && (state.serving.encoder.is_none() || encoder.is_some());
    if !loaded {
        let body = json!({
            "status": "loading",
            "model": state.serving.llm.then_some(&state.loading_model),
            "encoder": state.serving.encoder,
            "device": state.device,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let engine = llm
        .map(|r| &r.engine)
        .or(encoder.map(|e| &e.engine))
        .expect("at least one model is served");
    let s = engine.stats();
    // Once loaded, where the LLM really runs (an `auto` load may fall back to the CPU).
    let device = llm.map_or(&state.device, |r| &r.model.info.device);
    let mut body = json!({
        "status": "ok",
        "device": device,
        "model": llm.map(|r| r.model.info.id.clone()),
        "requests_running": s.running,
        "requests_waiting": s.waiting,
        "kv_blocks_used": s.blocks_used,
        "kv_blocks_total": s.blocks_total,
        "admission_paused": s.admission_paused,
    });
    if let Some(r) = llm {
        body["context_length"] = json!(r.model.info.context_length);
    }
    body["encoder"] = match encoder {
        Some(e) => {
            let card = encoder_card(e);
            json!({
                "model": card.id,
                "task": card.task,
                "rerank_mode": card.rerank_mode,
                "dimensions": card.dimensions,
                "max_input_tokens": card.max_model_len,
                "inputs_waiting": s.encoder_waiting,
            })
        }
        None => Value::Null,
    };
    (StatusCode::OK, Json(body)).into_response()
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
