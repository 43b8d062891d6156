//! `POST /v1/chat/completions` and `POST /v1/completions`: parse, validate, tokenize,
//! submit, then stream SSE chunks or drain into one JSON body. Both endpoints share one
//! pipeline (`run`); they differ in how the prompt is built and in response shapes.
//! The guard layer's `Hooks` reach `run`: streams get the request's cutoff, and greedy
//! non-streaming requests go through the response cache when it is on.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::body::read_bytes;
use super::check::{self, CheckedChat, CheckedCompletion};
use super::chunks::ChunkBuilder;
use super::error::ApiError;
use super::generate::{self, ChoiceOutput, Generation, PromptJob};
use super::guard::{Hooks, json_response};
use super::middleware::RequestCtx;
use super::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, ChatTokenLogprob, Completion,
    CompletionChoice, CompletionLogprobs, UsageBody,
};
use super::output_format;
use super::prompt;
use super::sse;
use super::validate::{self, Checked, Endpoint};
use super::{AppState, Ready};
use crate::structured::CompiledGrammar;

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

/// What a handler knows of its request besides the body.
pub(crate) struct Call {
    /// Id and arrival time.
    pub(crate) request: RequestCtx,
    /// The guard's hooks (cutoff, caller, cache), when the guard ran.
    pub(crate) hooks: Option<Hooks>,
}

/// The request context and hooks of `req` (a fresh context when the middleware did not run).
pub(crate) fn ctx_of(req: &Request) -> Call {
    let request = req
        .extensions()
        .get::<RequestCtx>()
        .cloned()
        .unwrap_or_else(|| RequestCtx {
            id: uuid::Uuid::new_v4().to_string(),
            arrival: Instant::now(),
        });
    Call {
        request,
        hooks: Hooks::of(req),
    }
}

async fn chat_inner(state: &AppState, ctx: Call, req: Request) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let bytes = read_bytes(req, state.limits.max_body_bytes).await?;
    let CheckedChat { checked, messages } =
        check::chat(&bytes, &ready.model.info.id, &state.limits)?;
    let model = ready.model.clone();
    let grammar = checked.grammar.clone();
    let (ids, grammar) = prompt::blocking(move || {
        let ids = prompt::chat_ids(&model, &messages)?;
        Ok((ids, output_format::compile(&model, grammar.as_ref())?))
    })
    .await?;
    run(
        state,
        ready,
        &ctx,
        Endpoint::Chat,
        vec![ids],
        checked,
        grammar,
    )
    .await
}

async fn completions_inner(
    state: &AppState,
    ctx: Call,
    req: Request,
) -> Result<Response, ApiError> {
    let ready = state.ready()?;
    let bytes = read_bytes(req, state.limits.max_body_bytes).await?;
    let CheckedCompletion {
        checked,
        prompt: input,
    } = check::completion(&bytes, &ready.model.info.id, &state.limits)?;
    let model = ready.model.clone();
    let grammar = checked.grammar.clone();
    let (prompts, grammar) = prompt::blocking(move || {
        let prompts = prompt::completion_ids(&model, input)?;
        Ok((prompts, output_format::compile(&model, grammar.as_ref())?))
    })
    .await?;
    let endpoint = Endpoint::Completion;
    run(state, ready, &ctx, endpoint, prompts, checked, grammar).await
}

/// Resolves max_tokens per prompt, submits, and answers as SSE or one JSON body.
async fn run(
    state: &AppState,
    ready: &Ready,
    ctx: &Call,
    endpoint: Endpoint,
    prompts: Vec<Vec<u32>>,
    checked: Checked,
    grammar: Option<CompiledGrammar>,
) -> Result<Response, ApiError> {
    let info = &ready.model.info;
    output_format::check_bias_ids(
        &checked.params.logit_bias,
        ready.model.tokenizer.vocab_size(),
    )?;
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
            Ok(PromptJob {
                ids,
                params,
                grammar: grammar.clone(),
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let hooks = ctx.hooks.as_ref();
    let cache_key =
        hooks.and_then(|h| h.cache_key(&info.id, endpoint, checked.n, &jobs, checked.stream));
    if let Some(body) = cache_key.and_then(|k| hooks?.cached(&k)) {
        return Ok(json_response(body, Some("hit")));
    }
    let (id, arrival) = (&ctx.request.id, ctx.request.arrival);
    let generation = Generation::start(&ready.engine, &jobs, checked.n, id, arrival)?;
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
        let cutoff = hooks.map(|h| &h.cutoff);
        let shape = sse::Shape {
            logprobs,
            n: checked.n,
            shapers: Vec::new(),
        };
        return Ok(sse::response(generation, chunks, shape, keep_alive, cutoff));
    }
    let outputs = generate::collect(generation).await?;
    let usage = UsageBody::from_choices(
        &outputs.iter().map(|o| o.usage).collect::<Vec<_>>(),
        checked.n,
    );
    let body = match endpoint {
        Endpoint::Chat => serde_json::to_vec(&chat_body(meta, outputs, logprobs, usage)),
        Endpoint::Completion => {
            serde_json::to_vec(&completion_body(meta, outputs, logprobs, usage))
        }
    };
    let body = Bytes::from(body.map_err(|e| ApiError::internal(format!("encoding: {e}")))?);
    if let (Some(h), Some(k)) = (hooks, cache_key) {
        h.store(k, body.clone());
    }
    Ok(json_response(body, cache_key.map(|_| "miss")))
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
                content: Some(o.text),
                tool_calls: None,
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
