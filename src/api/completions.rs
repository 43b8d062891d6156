//! `POST /v1/chat/completions` and `POST /v1/completions`: parse, validate, tokenize,
//! submit, then stream SSE chunks or drain into one JSON body. Both endpoints share one
//! pipeline (`run`); they differ in how the prompt is built and in response shapes.
//! The guard layer's `Hooks` reach `run`: streams get the request's cutoff, and greedy
//! non-streaming requests go through the response cache when it is on.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};

use super::body::{peek_model, read_bytes};
use super::chat_turn::prepare_turn;
use super::check::{self, CheckedChat, CheckedCompletion};
use super::chunks::ChunkBuilder;
use super::error::ApiError;
use super::generate::{self, ChoiceOutput, Generation, PromptJob};
use super::guard::{Hooks, json_response};
use super::middleware::RequestCtx;
use super::openai::{
    AssistantMessage, ChatChoice, ChatCompletion, ChatLogprobs, ChatTokenLogprob, Completion,
    CompletionChoice, CompletionLogprobs, ToolCallBody, UsageBody,
};
use super::output_format;
use super::prompt;
use super::shaper::{Shaped, Shaper};
use super::sse;
use super::tools::{ToolFormat, ToolSet};
use super::validate::{self, Checked, Endpoint};
use super::{AppState, Ready};
use crate::engine::types::FinishReason;
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
    let bytes = read_bytes(req, state.limits.max_body_bytes).await?;
    let asked = peek_model(&bytes);
    let lease = state.llm(asked.as_deref()).await?;
    let ready = lease.llm()?;
    let served = asked.unwrap_or_else(|| ready.model.info.id.clone());
    let CheckedChat {
        mut checked,
        messages,
        tools,
    } = check::chat(&bytes, &served, &state.limits)?;
    let model = ready.model.clone();
    let (grammar, tool_set) = (checked.grammar.clone(), tools.clone());
    let turn = prompt::blocking(move || {
        prepare_turn(&model, messages, tool_set.as_ref(), grammar.as_ref())
    })
    .await?;
    checked.params.visible_control = turn.visible;
    let sub = Submission {
        prompts: vec![turn.ids],
        grammar: turn.grammar,
        tools: tools.filter(ToolSet::active).map(|t| (turn.format, t)),
    };
    let resp = run(state, ready, &ctx, Endpoint::Chat, sub, checked).await?;
    Ok(lease.hold(resp))
}

async fn completions_inner(
    state: &AppState,
    ctx: Call,
    req: Request,
) -> Result<Response, ApiError> {
    let bytes = read_bytes(req, state.limits.max_body_bytes).await?;
    let asked = peek_model(&bytes);
    let lease = state.llm(asked.as_deref()).await?;
    let ready = lease.llm()?;
    let served = asked.unwrap_or_else(|| ready.model.info.id.clone());
    let CheckedCompletion {
        checked,
        prompt: input,
    } = check::completion(&bytes, &served, &state.limits)?;
    let model = ready.model.clone();
    let grammar = checked.grammar.clone();
    let (prompts, grammar) = prompt::blocking(move || {
        let prompts = prompt::completion_ids(&model, input)?;
        Ok((prompts, output_format::compile(&model, grammar.as_ref())?))
    })
    .await?;
    let sub = Submission {
        prompts,
        grammar,
        tools: None,
    };
    let resp = run(state, ready, &ctx, Endpoint::Completion, sub, checked).await?;
    Ok(lease.hold(resp))
}

/// What a request submits: its prompts, their grammar, and the tools to parse for.
struct Submission {
    prompts: Vec<Vec<u32>>,
    grammar: Option<CompiledGrammar>,
    /// Active tools and the model's call format (chat only).
    tools: Option<(ToolFormat, ToolSet)>,
}

impl Submission {
    fn shaper(&self) -> Shaper {
        match &self.tools {
            Some((format, tools)) => Shaper::new(*format, Some(tools)),
            None => Shaper::default(),
        }
    }
}

/// Resolves max_tokens per prompt, submits, and answers as SSE or one JSON body.
async fn run(
    state: &AppState,
    ready: &Ready,
    ctx: &Call,
    endpoint: Endpoint,
    sub: Submission,
    checked: Checked,
) -> Result<Response, ApiError> {
    let grammar = sub.grammar.clone();
    let info = &ready.model.info;
    output_format::check_bias_ids(
        &checked.params.logit_bias,
        ready.model.tokenizer.vocab_size(),
    )?;
    let jobs = sub
        .prompts
        .iter()
        .cloned()
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
    // Tool requests are shaped by their tool set, which the key does not hold.
    let cache_key = hooks
        .filter(|_| sub.tools.is_none())
        .and_then(|h| h.cache_key(&info.id, endpoint, checked.n, &jobs, checked.stream));
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
            shapers: (0..generation.len()).map(|_| sub.shaper()).collect(),
        };
        return Ok(sse::response(generation, chunks, shape, keep_alive, cutoff));
    }
    let outputs = generate::collect(generation).await?;
    let usage = UsageBody::from_choices(
        &outputs.iter().map(|o| o.usage).collect::<Vec<_>>(),
        checked.n,
    );
    let body = match endpoint {
        Endpoint::Chat => {
            let shaped = outputs
                .iter()
                .map(|o| sub.shaper().shape_all(&o.text))
                .collect();
            serde_json::to_vec(&chat_body(meta, outputs, shaped, logprobs, usage))
        }
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
    shaped: Vec<Shaped>,
    logprobs: bool,
    usage: UsageBody,
) -> ChatCompletion {
    let choices = outputs
        .into_iter()
        .zip(shaped)
        .enumerate()
        .map(|(index, (o, shaped))| {
            let called = !shaped.calls.is_empty();
            let content = (!called || !shaped.content.trim().is_empty()).then_some(shaped.content);
            let tool_calls =
                called.then(|| shaped.calls.iter().map(ToolCallBody::from_call).collect());
            let finish = if called {
                Some(FinishReason::ToolCalls)
            } else {
                o.finish_reason
            };
            ChatChoice {
                index,
                logprobs: logprobs.then(|| ChatLogprobs {
                    content: o.logprobs.iter().map(ChatTokenLogprob::from).collect(),
                }),
                message: AssistantMessage {
                    role: "assistant",
                    content,
                    tool_calls,
                },
                finish_reason: finish.map(|f| f.as_str()),
            }
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
