//! `POST /api/chat` and `POST /api/generate`: Ollama's bodies parsed and checked here,
//! then the same pipeline as the OpenAI routes: `validate::messages` and
//! `validate::common` (through `options`), the chat template and tokenizer (`prompt`),
//! `Generation::start` on the shared engine, and `ndjson` over the shared drain.
//!
//! `/api/generate` renders `system` + `prompt` with the model's chat template, or with
//! `raw: true` sends the prompt as the model's whole input. Refused with a 400: `suffix`,
//! `template`, `context`, `images`, `tools`, `think: true` and (for now) `format`. A
//! request with no prompt or no messages answers Ollama's `done_reason: "load"` reply.

use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::models;
use super::ndjson;
use super::options::{self, Resolved, refuse_if, structured_output};
use super::request::{ChatRequest, GenerateRequest};
use super::response::{Kind, Timings};
use crate::api::body::{parse_json, read_bytes};
use crate::api::completions::{Call, ctx_of};
use crate::api::error::ApiError;
use crate::api::generate::{Generation, PromptJob};
use crate::api::output_format;
use crate::api::prompt;
use crate::api::validate::{self, PromptInput};
use crate::api::{AppState, Ready};
use crate::model::chat_template::ChatMessage;
use crate::structured::CompiledGrammar;

/// `POST /api/chat`.
pub async fn chat(State(state): State<AppState>, req: Request) -> Response {
    let call = ctx_of(&req);
    chat_inner(&state, call, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /api/generate`.
pub async fn generate(State(state): State<AppState>, req: Request) -> Response {
    let call = ctx_of(&req);
    generate_inner(&state, call, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn chat_inner(state: &AppState, call: Call, req: Request) -> Result<Response, ApiError> {
    let body: ChatRequest = parse_json(&read_bytes(req, state.limits.max_body_bytes).await?)?;
    let lease = models::llm(state, &body.model).await?;
    let ready = lease.llm()?;
    let format = structured_output(body.format.as_ref())?;
    refuse_if(body.tools.as_ref(), "tools", "")?;
    refuse_if(body.think.as_ref(), "think", " (this model does not think)")?;
    let opts = options::resolve(body.options.as_ref(), body.stream, &state.limits)?;
    if body.messages.is_empty() {
        return Ok(ndjson::loaded(Kind::Chat, &body.model, opts.checked.stream));
    }
    let messages = chat_messages(&body.messages)?;
    let model = ready.model.clone();
    let (ids, grammar) = prompt::blocking(move || {
        let ids = prompt::chat_ids(&model, &messages)?;
        Ok((ids, output_format::compile(&model, format.as_ref())?))
    })
    .await?;
    let job = Submit { ids, grammar };
    let resp = run(state, ready, &call, Kind::Chat, &body.model, job, &opts).await?;
    Ok(lease.hold(resp))
}

/// Ollama's messages: text only (a message with `images` is refused), roles as OpenAI's.
fn chat_messages(messages: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    for (i, m) in messages.iter().enumerate() {
        refuse_if(
            m.get("images"),
            "images",
            &format!(" (messages[{i}]: text only)"),
        )?;
        refuse_if(m.get("tool_calls"), "tool_calls", "")?;
    }
    validate::messages(messages)
}

async fn generate_inner(state: &AppState, call: Call, req: Request) -> Result<Response, ApiError> {
    let body: GenerateRequest = parse_json(&read_bytes(req, state.limits.max_body_bytes).await?)?;
    let lease = models::llm(state, &body.model).await?;
    let ready = lease.llm()?;
    let format = structured_output(body.format.as_ref())?;
    let string = |s: &Option<String>| s.clone().map(Value::String);
    refuse_if(
        string(&body.suffix).as_ref(),
        "suffix",
        " (no fill-in-the-middle)",
    )?;
    refuse_if(
        string(&body.template).as_ref(),
        "template",
        " (the model's own chat template is used)",
    )?;
    refuse_if(
        body.context.as_ref(),
        "context",
        " (send the conversation to /api/chat instead)",
    )?;
    refuse_if(body.images.as_ref(), "images", " (text only)")?;
    refuse_if(body.think.as_ref(), "think", " (this model does not think)")?;
    let opts = options::resolve(body.options.as_ref(), body.stream, &state.limits)?;
    let text = body.prompt.unwrap_or_default();
    if text.is_empty() {
        return Ok(ndjson::loaded(
            Kind::Generate,
            &body.model,
            opts.checked.stream,
        ));
    }
    let model = ready.model.clone();
    let raw = body.raw == Some(true);
    let system = body.system.filter(|s| !s.is_empty());
    let (ids, grammar) = prompt::blocking(move || {
        let ids = if raw {
            let mut all = prompt::completion_ids(&model, PromptInput::Texts(vec![text]))?;
            all.pop().unwrap_or_default()
        } else {
            let mut messages = Vec::new();
            if let Some(system) = system {
                messages.push(ChatMessage::text("system", &system));
            }
            messages.push(ChatMessage::text("user", &text));
            prompt::chat_ids(&model, &messages)?
        };
        Ok((ids, output_format::compile(&model, format.as_ref())?))
    })
    .await?;
    let job = Submit { ids, grammar };
    let resp = run(state, ready, &call, Kind::Generate, &body.model, job, &opts).await?;
    Ok(lease.hold(resp))
}

/// One prompt's token ids and its compiled `format`, if any.
struct Submit {
    ids: Vec<u32>,
    grammar: Option<CompiledGrammar>,
}

/// Submits one prompt and answers as an NDJSON stream or one body.
async fn run(
    state: &AppState,
    ready: &Ready,
    call: &Call,
    kind: Kind,
    model: &str,
    Submit { ids, grammar }: Submit,
    opts: &Resolved,
) -> Result<Response, ApiError> {
    let context = ready.model.info.context_length;
    let mut params = opts.checked.params.clone();
    params.max_tokens = opts.max_tokens(ids.len(), context, state.limits.max_tokens_cap)?;
    let job = PromptJob {
        ids,
        params,
        grammar,
    };
    let (id, arrival) = (&call.request.id, call.request.arrival);
    let generation = Generation::start(&ready.engine, &[job], 1, id, arrival)?;
    let timings = Timings::new(arrival);
    if opts.checked.stream {
        let cutoff = call.hooks.as_ref().map(|h| &h.cutoff);
        return Ok(ndjson::stream(
            generation,
            kind,
            model.to_string(),
            timings,
            cutoff,
        ));
    }
    ndjson::collect(generation, kind, model, timings).await
}
