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
use crate::registry::spec::SpecKind;
use crate::registry::{Entry, Loaded};

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

/// Every loaded model (aliases as their own cards); 503 while a model named at
/// start-up is still loading.
fn cards(state: &AppState) -> Result<Vec<ModelCard>, ApiError> {
    if state.registry.starting() {
        return Err(ApiError::loading());
    }
    let mut cards = Vec::new();
    for (entry, loaded) in state.registry.loaded() {
        let base = match &loaded {
            Loaded::Llm(r) => card(r),
            Loaded::Encoder(e) => encoder_card(e),
        };
        let names = std::iter::once(entry.name()).chain(entry.aliases().iter().map(String::as_str));
        for name in names {
            cards.push(ModelCard {
                id: name.to_string(),
                ..base.clone()
            });
        }
    }
    Ok(cards)
}

/// `GET /v1/models`: the loaded models (503 while loading at start-up).
pub async fn list_models(State(state): State<AppState>) -> Result<Json<ModelList>, ApiError> {
    Ok(Json(ModelList {
        object: "list",
        data: cards(&state)?,
    }))
}

/// `GET /v1/models/{id}`: a loaded model, or 404.
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

/// `GET /health`: 200 once every model named at start-up is loaded, 503 while loading
/// or when an engine thread has died. The top level describes the first LLM and the
/// first encoder (as a single-model server always did); `models` lists every model the
/// registry knows with its kind, state, memory and counters.
pub async fn health(State(state): State<AppState>) -> Response {
    let loaded = state.registry.loaded();
    let models = model_statuses(&state, &loaded);
    if state.registry.starting() {
        let first = |kind| {
            state
                .registry
                .list()
                .into_iter()
                .find(|e| e.spec().kind == kind)
                .map(|e| e.name().to_string())
        };
        let body = json!({
            "status": "loading",
            "model": first(SpecKind::Llm),
            "encoder": first(SpecKind::Encoder),
            "device": state.device,
            "models": models,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    if let Some((_, l)) = loaded.iter().find(|(_, l)| !l.handle().is_alive()) {
        let why = l.handle().device().health().death();
        let body = json!({
            "status": "failed",
            "error": format!(
                "the engine thread stopped{}; restart the server",
                why.map_or(String::new(), |w| format!(" ({w})"))
            ),
            "models": models,
        });
        return (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response();
    }
    let llm = loaded.iter().find_map(|(_, l)| match l {
        Loaded::Llm(r) => Some(r.clone()),
        Loaded::Encoder(_) => None,
    });
    let encoder = loaded.iter().find_map(|(_, l)| match l {
        Loaded::Encoder(e) => Some(e.clone()),
        Loaded::Llm(_) => None,
    });
    let s = llm.as_ref().map(|r| r.engine.stats()).unwrap_or_default();
    // Once loaded, where the LLM really runs (an `auto` load may fall back to the CPU).
    let device = llm.as_ref().map_or(&state.device, |r| &r.model.info.device);
    let mut body = json!({
        "status": "ok",
        "device": device,
        "model": llm.as_ref().map(|r| r.model.info.id.clone()),
        "requests_running": s.running,
        "requests_waiting": s.waiting,
        "kv_blocks_used": s.blocks_used,
        "kv_blocks_total": s.blocks_total,
        "admission_paused": s.admission_paused,
    });
    if let Some(r) = &llm {
        body["context_length"] = json!(r.model.info.context_length);
    }
    body["encoder"] = match &encoder {
        Some(e) => {
            let card = encoder_card(e);
            json!({
                "model": card.id,
                "task": card.task,
                "rerank_mode": card.rerank_mode,
                "dimensions": card.dimensions,
                "max_input_tokens": card.max_model_len,
                "inputs_waiting": e.engine.stats().encoder_waiting,
            })
        }
        None => Value::Null,
    };
    body["memory_budget_bytes"] = json!(state.registry.budget());
    body["models"] = models;
    (StatusCode::OK, Json(body)).into_response()
}

/// Every model's registry status plus, for loaded ones, its engine counters.
fn model_statuses(state: &AppState, loaded: &[(std::sync::Arc<Entry>, Loaded)]) -> Value {
    let rows = state.registry.statuses().into_iter().map(|st| {
        let mut row = json!(st);
        if let Some((_, l)) = loaded.iter().find(|(e, _)| e.name() == st.name) {
            let s = l.handle().stats();
            match l {
                Loaded::Llm(r) => {
                    row["device"] = json!(r.model.info.device);
                    row["context_length"] = json!(r.model.info.context_length);
                    row["requests_running"] = json!(s.running);
                    row["requests_waiting"] = json!(s.waiting);
                    row["kv_blocks_used"] = json!(s.blocks_used);
                    row["kv_blocks_total"] = json!(s.blocks_total);
                }
                Loaded::Encoder(_) => row["inputs_waiting"] = json!(s.encoder_waiting),
            }
        }
        row
    });
    Value::Array(rows.collect())
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
