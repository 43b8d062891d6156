//! The model-free half of the two completion handlers as pure functions: body bytes in,
//! a checked request (or the `ApiError` the client gets) out. The handlers call these
//! before tokenizing; the fuzz target `fuzz/fuzz_targets/request_parsing.rs` and the
//! request-parsing tests call them directly, which is why they are public.
//!
//! Invariants: nothing here panics on any input, and every error is a client error
//! (4xx): parsing and validation never produce a 5xx.

use super::ApiLimits;
use super::body::parse_json;
use super::error::ApiError;
use super::openai::{ChatRequest, CompletionRequest};
use super::tools::ToolSet;
use super::tools::request::{Shape, ToolFields, tool_set};
use super::validate::{self, Checked, PromptInput};
use crate::model::chat_template::ChatMessage;

/// A `/v1/chat/completions` body that passed every check that needs no model.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedChat {
    /// Sampling parameters, limits and streaming flags.
    pub checked: Checked,
    /// The conversation, roles normalised, ready for the chat template.
    pub messages: Vec<ChatMessage>,
    /// The request's tools, when it gave any (or forced one).
    pub tools: Option<ToolSet>,
}

/// A `/v1/completions` body that passed every check that needs no model.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedCompletion {
    /// Sampling parameters, limits and streaming flags.
    pub checked: Checked,
    /// The prompt(s), as text or token ids (ids are range-checked against the
    /// vocabulary later, when the model is known).
    pub prompt: PromptInput,
}

/// Parses and validates a chat request body for the model served as `served`.
pub fn chat(body: &[u8], served: &str, limits: &ApiLimits) -> Result<CheckedChat, ApiError> {
    let body: ChatRequest = parse_json(body)?;
    validate::model(body.common.model.as_deref(), served)?;
    validate::chat_unsupported(&body)?;
    let logprobs = validate::chat_logprobs(body.logprobs, body.top_logprobs)?;
    let max_tokens = match (body.max_completion_tokens, body.common.max_tokens) {
        (Some(m), _) => Some((m, "max_completion_tokens")),
        (None, Some(m)) => Some((m, "max_tokens")),
        (None, None) => None,
    };
    let checked = validate::common(&body.common, max_tokens, logprobs, limits)?;
    let messages = validate::messages(&body.messages)?;
    let fields = ToolFields {
        tools: body.tools.as_ref(),
        tool_choice: body.tool_choice.as_ref(),
        parallel_tool_calls: body.parallel_tool_calls.as_ref(),
        functions: body.functions.as_ref(),
        function_call: body.function_call.as_ref(),
    };
    let tools = tool_set(&fields, Shape::Chat)?;
    forced_tools_alone(tools.as_ref(), &checked)?;
    Ok(CheckedChat {
        checked,
        messages,
        tools,
    })
}

/// 400 when a forced tool call (its own grammar) meets another output constraint.
pub fn forced_tools_alone(tools: Option<&ToolSet>, checked: &Checked) -> Result<(), ApiError> {
    match (tools.filter(|t| t.forced()), &checked.grammar) {
        (Some(_), Some(g)) => Err(ApiError::invalid(
            format!(
                "`{}` cannot be combined with a forced tool call (`tool_choice` required or                  a named function): the call's arguments follow the function's schema.",
                g.param
            ),
            Some(g.param),
        )),
        _ => Ok(()),
    }
}

/// Parses and validates a text completion request body for the model served as `served`.
pub fn completion(
    body: &[u8],
    served: &str,
    limits: &ApiLimits,
) -> Result<CheckedCompletion, ApiError> {
    let body: CompletionRequest = parse_json(body)?;
    validate::model(body.common.model.as_deref(), served)?;
    validate::completion_unsupported(&body)?;
    let logprobs = validate::completion_logprobs(body.logprobs)?;
    let max_tokens = body.common.max_tokens.map(|m| (m, "max_tokens"));
    let checked = validate::common(&body.common, max_tokens, logprobs, limits)?;
    let prompt = validate::prompt(&body.prompt)?;
    Ok(CheckedCompletion { checked, prompt })
}
