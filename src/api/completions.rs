//! `POST /v1/chat/completions` and `POST /v1/completions`: parse, validate, tokenize,
//! submit, then stream SSE chunks or drain into one JSON body. Both endpoints share one
//! pipeline (`run`); they differ in how the prompt is built and in response shapes.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::body::read_json;
use super::chunks::ChunkBuilder;
use super::error::ApiError;
use super::generate::{self, ChoiceOutput, Generation, PromptJob};
use super::middleware::RequestCtx;
use super::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, ChatRequest, ChatTokenLogprob,
    Completion, CompletionChoice, CompletionLogprobs, CompletionRequest, UsageBody,
};
use super::prompt;
use super::sse;
use super::validate::{self, Checked, Endpoint};
use super::{AppState, Ready};

/// `POST /v1/chat/completions`.
pub async fn chat(State(state): State<AppState>, req: Request) -> Response {
    let ctx = ctx_of(&req);
    chat_inner(&state, ctx, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/completions`.
pub async fn completions(State(state): State<AppState>, req: Request) -> Response {
    let ctx = ctx_of(&req);
    completions_inner(&state, ctx, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

fn ctx_of(req: &Request) -> RequestCtx {
    req.extensions()
        .get::<RequestCtx>()
        .cloned()
        .unwrap_or_else(|| RequestCtx {
            id: uuid::Uuid::new_v4().to_string(),
            arrival: Instant::now(),
        })
}

async fn chat_inner(state: &AppState, ctx: RequestCtx, req: Request) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let body: ChatRequest = read_json(req, state.limits.max_body_bytes).await?;
    validate::model(body.common.model.as_deref(), &ready.model.info.id)?;
    validate::chat_unsupported(&body)?;
    let logprobs = validate::chat_logprobs(body.logprobs, body.top_logprobs)?;
    let max_tokens = match (body.max_completion_tokens, body.common.max_tokens) {
        (Some(m), _) => Some((m, "max_completion_tokens")),
        (None, Some(m)) => Some((m, "max_tokens")),
        (None, None) => None,
    };
    let checked = validate::common(&body.common, max_tokens, logprobs, &state.limits)?;
    let messages = validate::messages(&body.messages)?;
    let model = ready.model.clone();
    let ids = prompt::blocking(move || prompt::chat_ids(&model, &messages)).await?;
    run(state, ready, &ctx, Endpoint::Chat, vec![ids], checked).await
}

async fn completions_inner(
    state: &AppState,
    ctx: RequestCtx,
    req: Request,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let body: CompletionRequest = read_json(req, state.limits.max_body_bytes).await?;
    validate::model(body.common.model.as_deref(), &ready.model.info.id)?;
    validate::completion_unsupported(&body)?;
    let logprobs = validate::completion_logprobs(body.logprobs)?;
    let max_tokens = body.common.max_tokens.map(|m| (m, "max_tokens"));
    let checked = validate::common(&body.common, max_tokens, logprobs, &state.limits)?;
    let input = validate::prompt(&body.prompt)?;
    let model = ready.model.clone();
    let prompts = prompt::blocking(move || prompt::completion_ids(&model, input)).await?;
    run(state, ready, &ctx, Endpoint::Completion, prompts, checked).await
}

/// Resolves max_tokens per prompt, submits, and answers as SSE or one JSON body.
async fn run(
    state: &AppState,
    ready: &Ready,
    ctx: &RequestCtx,
    endpoint: Endpoint,
    prompts: Vec<Vec<u32>>,
    checked: Checked,
) -> Result<Response, ApiError> {
    let info = &ready.model.info;
    let jobs = prompts
        .into_iter()
        .map(|ids| {
            let cap = state.limits.max_tokens_cap;
            let m = validate::max_tokens(
                ids.len(),
                checked.max_tokens,
                endpoint,
                info.context_length,
                cap,
            )?;
            let mut params = checked.params.clone();
            params.max_tokens = m;
            Ok(PromptJob { ids, params })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let generation = Generation::start(&ready.engine, &jobs, checked.n, &ctx.id, ctx.arrival)?;
    let prefix = match endpoint {
        Endpoint::Chat => "chatcmpl",
        Endpoint::Completion => "cmpl",
    };
    let meta = ResponseMeta {
        id: format!("{prefix}-{}", uuid::Uuid::new_v4().simple()),
        created: unix_now(),
        model: info.id.clone(),
    };
    let logprobs = checked.params.logprobs.is_some();
    if checked.stream {
        let chunks = ChunkBuilder {
            id: meta.id,
            created: meta.created,
            model: meta.model,
            endpoint,
            include_usage: checked.include_usage,
        };
        let keep_alive = state.limits.sse_keep_alive;
        return Ok(sse::response(
            generation, chunks, logprobs, checked.n, keep_alive,
        ));
    }
    let outputs = generate::collect(generation).await?;
    let usage = UsageBody::from_choices(
        &outputs.iter().map(|o| o.usage).collect::<Vec<_>>(),
        checked.n,
    );
    Ok(match endpoint {
        Endpoint::Chat => Json(chat_body(meta, outputs, logprobs, usage)).into_response(),
        Endpoint::Completion => {
            Json(completion_body(meta, outputs, logprobs, usage)).into_response()
        }
    })
}

/// Identity shared by a response and its chunks.
struct ResponseMeta {
    id: String,
    created: u64,
    model: String,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn chat_body(
    meta: ResponseMeta,
    outputs: Vec<ChoiceOutput>,
    logprobs: bool,
    usage: UsageBody,
) -> ChatCompletion {
    let choices = outputs
        .into_iter()
        .enumerate()
        .map(|(index, o)| ChatChoice {
            index,
            logprobs: logprobs.then(|| ChatLogprobs {
                content: o.logprobs.iter().map(ChatTokenLogprob::from).collect(),
            }),
            message: AssistantMessage {
                role: "assistant",
                content: o.text,
            },
            finish_reason: o.finish_reason.map(|f| f.as_str()),
        })
        .collect();
    ChatCompletion {
        id: meta.id,
        object: "chat.completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage,
    }
}

fn completion_body(
    meta: ResponseMeta,
    outputs: Vec<ChoiceOutput>,
    logprobs: bool,
    usage: UsageBody,
) -> Completion {
    let choices = outputs
        .into_iter()
        .enumerate()
        .map(|(index, o)| CompletionChoice {
            index,
            logprobs: logprobs.then(|| {
                let mut c = CompletionLogprobs::default();
                o.logprobs.iter().fold(0, |offset, lp| c.push(lp, offset));
                c
            }),
            text: o.text,
            finish_reason: o.finish_reason.map(|f| f.as_str()),
        })
        .collect();
    Completion {
        id: meta.id,
        object: "text_completion",
        created: meta.created,
        model: meta.model,
        choices,
        usage: Some(Some(usage)),
    }
}
