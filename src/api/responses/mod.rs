//! `POST /v1/responses`: OpenAI's Responses API over the same pipeline as chat
//! completions (template, tokenizer, grammar, engine), answered as one `response`
//! object or as the Responses event stream. Stateless: nothing is stored, so
//! `previous_response_id` is a 400 that says to send the conversation instead.

pub mod object;
pub mod request;
mod stream;

use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::body::{parse_json, peek_model, read_bytes};
use super::chat_turn::prepare_turn;
use super::completions::{Call, ctx_of};
use super::error::ApiError;
use super::generate::{self, Generation, PromptJob};
use super::guard::json_response;
use super::prompt;
use super::shaper::Shaper;
use super::validate::{self, Endpoint};
use super::{AppState, Ready};
use crate::engine::types::FinishReason;
use object::ResponseMeta;
use request::{CheckedResponses, ResponsesRequest};

/// `POST /v1/responses`.
pub async fn create(State(state): State<AppState>, req: Request) -> Response {
    let call = ctx_of(&req);
    create_inner(&state, call, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `completed`, or `incomplete` when the token limit cut the output.
pub(crate) fn status(finish: FinishReason) -> &'static str {
    match finish {
        FinishReason::Length => "incomplete",
        _ => "completed",
    }
}

async fn create_inner(state: &AppState, call: Call, req: Request) -> Result<Response, ApiError> {
    let bytes = read_bytes(req, state.limits.max_body_bytes).await?;
    let asked = peek_model(&bytes);
    let lease = state.llm(asked.as_deref()).await?;
    let ready: &Ready = lease.llm()?;
    let served = asked.unwrap_or_else(|| ready.model.info.id.clone());
    let body: ResponsesRequest = parse_json(&bytes)?;
    let CheckedResponses {
        checked,
        messages,
        tools,
    } = request::check(&body, &served, &state.limits)?;
    let model = ready.model.clone();
    let (grammar, tool_set) = (checked.grammar.clone(), tools.clone());
    let turn = prompt::blocking(move || {
        prepare_turn(&model, messages, tool_set.as_ref(), grammar.as_ref())
    })
    .await?;
    let (ids, grammar) = (turn.ids, turn.grammar);
    let info = &ready.model.info;
    let mut params = checked.params.clone();
    params.visible_control = turn.visible;
    params.max_tokens = validate::max_tokens(
        ids.len(),
        checked.max_tokens,
        Endpoint::Chat,
        info.context_length,
        state.limits.max_tokens_cap,
    )?;
    let job = PromptJob {
        ids,
        params,
        grammar,
    };
    let (id, arrival) = (&call.request.id, call.request.arrival);
    let generation = Generation::start(&ready.engine, &[job], 1, id, arrival)?;
    let meta = ResponseMeta {
        id: format!("resp_{}", uuid::Uuid::new_v4().simple()),
        created_at: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        model: info.id.clone(),
        echo: object::echo(
            &body,
            body.tools.clone().unwrap_or(Value::Array(Vec::new())),
        ),
    };
    let shaper = Shaper::new(turn.format, tools.as_ref());
    if checked.stream {
        let cutoff = call.hooks.as_ref().map(|h| &h.cutoff);
        let keep_alive = state.limits.sse_keep_alive;
        let resp = stream::response(generation, meta, shaper, keep_alive, cutoff);
        return Ok(lease.hold(resp));
    }
    let out = generate::collect(generation)
        .await?
        .pop()
        .ok_or_else(|| ApiError::internal("the generation produced no choice"))?;
    let shaped = shaper.shape_all(&out.text);
    let content = shaped.content;
    let mut output = Vec::new();
    if !content.trim().is_empty() || shaped.calls.is_empty() {
        let msg_id = object::item_id("msg", &meta.id, 0);
        output.push(object::message_item(&msg_id, Some(&content), "completed"));
    }
    for c in &shaped.calls {
        let fc_id = object::item_id("fc", &meta.id, output.len());
        output.push(object::function_item(&fc_id, c, "completed"));
    }
    let finish = out.finish_reason.unwrap_or(FinishReason::Stop);
    let resp = object::response(
        &meta,
        status(finish),
        output,
        Some(finish),
        Some(out.usage),
        None,
    );
    let body = serde_json::to_vec(&resp).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(lease.hold(json_response(Bytes::from(body), None)))
}
