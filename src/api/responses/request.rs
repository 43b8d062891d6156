//! The body of `POST /v1/responses` and its translation onto the chat pipeline: `input`
//! (a string, or message / `function_call` / `function_call_output` items) plus
//! `instructions` become chat messages; sampling fields go through the same
//! `validate::common` as chat completions; `text.format` is the same grammar as chat's
//! `response_format`. Stateless: `store: true` is served but nothing is stored
//! (documented), `previous_response_id` and `conversation` are refused with a 400.

use serde::Deserialize;
use serde_json::{Value, json};

use crate::api::ApiLimits;
use crate::api::error::ApiError;
use crate::api::openai::CommonFields;
use crate::api::output_format::{self, OutputGrammar};
use crate::api::tools::ToolSet;
use crate::api::tools::request::{Shape, ToolFields, tool_set};
use crate::api::validate::{self, Checked};
use crate::model::chat_template::ChatMessage;

/// `POST /v1/responses`.
#[derive(Debug, Deserialize)]
pub struct ResponsesRequest {
    /// Model id (absent: the served model).
    pub model: Option<String>,
    /// A string, or an array of input items.
    pub input: Value,
    /// A system message placed first.
    pub instructions: Option<String>,
    /// Function tools (flat shape: `{"type": "function", "name", "parameters", ...}`).
    pub tools: Option<Value>,
    /// `none` / `auto` / `required` / `{"type": "function", "name": ...}`.
    pub tool_choice: Option<Value>,
    /// Whether several calls may be made in one turn (default true).
    pub parallel_tool_calls: Option<bool>,
    /// `{"format": {"type": "text" | "json_object" | "json_schema", ...}}`.
    pub text: Option<Value>,
    /// Generated token limit.
    pub max_output_tokens: Option<i64>,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus mass.
    pub top_p: Option<f64>,
    /// Stream events.
    pub stream: Option<bool>,
    /// Accepted; nothing is stored.
    pub store: Option<bool>,
    /// Refused: this server keeps no state.
    pub previous_response_id: Option<Value>,
    /// Refused: this server keeps no state.
    pub conversation: Option<Value>,
    /// Echoed back.
    pub metadata: Option<Value>,
    /// Refused unless absent or null (no reasoning models are served).
    pub reasoning: Option<Value>,
    /// `auto` or `disabled`; accepted and echoed.
    pub truncation: Option<String>,
    /// Accepted and ignored.
    pub user: Option<Value>,
    /// Extension shared with chat completions.
    pub seed: Option<serde_json::Number>,
}

/// A checked Responses request, ready for the chat pipeline.
#[derive(Debug)]
pub struct CheckedResponses {
    /// Sampling, limits and the output grammar.
    pub checked: Checked,
    /// The conversation for the chat template.
    pub messages: Vec<ChatMessage>,
    /// Function tools, when given.
    pub tools: Option<ToolSet>,
}

fn bad(msg: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(msg, Some(param))
}

/// Validates a Responses body for the model served as `served`.
pub fn check(
    r: &ResponsesRequest,
    served: &str,
    limits: &ApiLimits,
) -> Result<CheckedResponses, ApiError> {
    validate::model(r.model.as_deref(), served)?;
    if r.previous_response_id
        .as_ref()
        .is_some_and(|v| !v.is_null())
    {
        return Err(bad(
            "`previous_response_id` is not supported: this server is stateless and stores no \
             responses. Send the whole conversation in `input` instead.",
            "previous_response_id",
        )
        .with_code("unsupported_parameter"));
    }
    if r.conversation.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(bad(
            "`conversation` is not supported: this server is stateless. Send the whole \
             conversation in `input` instead.",
            "conversation",
        )
        .with_code("unsupported_parameter"));
    }
    if r.reasoning
        .as_ref()
        .is_some_and(|v| !v.is_null() && v != &json!({}))
    {
        return Err(ApiError::unsupported(
            "reasoning",
            " (no reasoning model is served)",
        ));
    }
    let common = CommonFields {
        model: r.model.clone(),
        max_tokens: r.max_output_tokens,
        temperature: r.temperature,
        top_p: r.top_p,
        seed: r.seed.clone(),
        stream: r.stream,
        ..CommonFields::default()
    };
    let max = r.max_output_tokens.map(|m| (m, "max_output_tokens"));
    let mut checked = validate::common(&common, max, None, limits)?;
    checked.grammar = text_format(r.text.as_ref())?;
    let messages = input_messages(&r.input, r.instructions.as_deref())?;
    let parallel = r.parallel_tool_calls.map(Value::Bool);
    let fields = ToolFields {
        tools: r.tools.as_ref(),
        tool_choice: r.tool_choice.as_ref(),
        parallel_tool_calls: parallel.as_ref(),
        ..ToolFields::default()
    };
    let tools = tool_set(&fields, Shape::Responses)?;
    crate::api::check::forced_tools_alone(tools.as_ref(), &checked)?;
    Ok(CheckedResponses {
        checked,
        messages,
        tools,
    })
}

/// `text.format` -> the output grammar.
fn text_format(text: Option<&Value>) -> Result<Option<OutputGrammar>, ApiError> {
    let Some(format) = text.and_then(|t| t.get("format")).filter(|f| !f.is_null()) else {
        return Ok(None);
    };
    let param = "text.format";
    Ok(output_format::response_format_spec(format, param)?
        .map(|spec| OutputGrammar { spec, param }))
}

/// `instructions` + `input` -> chat messages (in the chat completions' JSON shape, then
/// through the same `validate::messages`).
pub fn input_messages(
    input: &Value,
    instructions: Option<&str>,
) -> Result<Vec<ChatMessage>, ApiError> {
    let mut chat: Vec<Value> = Vec::new();
    if let Some(i) = instructions.filter(|i| !i.is_empty()) {
        chat.push(json!({"role": "system", "content": i}));
    }
    match input {
        Value::String(s) => chat.push(json!({"role": "user", "content": s})),
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                push_item(&mut chat, item, i)?;
            }
        }
        _ => {
            return Err(bad(
                "`input` must be a string or an array of input items.",
                "input",
            ));
        }
    }
    validate::messages(&chat).map_err(|mut e| {
        e.param = Some("input".into());
        e
    })
}

fn push_item(chat: &mut Vec<Value>, item: &Value, i: usize) -> Result<(), ApiError> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => {
            let role = item.get("role").cloned().unwrap_or(Value::Null);
            let content = message_content(item.get("content"), i)?;
            chat.push(json!({"role": role, "content": content}));
        }
        "function_call" => {
            let call_id = item.get("call_id").cloned().unwrap_or(Value::Null);
            let call = json!({
                "id": call_id,
                "type": "function",
                "function": {"name": item.get("name"), "arguments": item.get("arguments")},
            });
            // Consecutive calls belong to one assistant turn.
            match chat.last_mut() {
                Some(last) if last["role"] == "assistant" && last.get("tool_calls").is_some() => {
                    if let Some(calls) = last["tool_calls"].as_array_mut() {
                        calls.push(call);
                    }
                }
                _ => chat.push(json!({"role": "assistant", "content": null, "tool_calls": [call]})),
            }
        }
        "function_call_output" => {
            let output = match item.get("output") {
                Some(Value::String(s)) => Value::String(s.clone()),
                Some(other) => message_content(Some(other), i)?,
                None => Value::String(String::new()),
            };
            chat.push(json!({
                "role": "tool",
                "tool_call_id": item.get("call_id"),
                "content": output,
            }));
        }
        other => {
            return Err(bad(
                format!(
                    "input[{i}] has type `{other}`; supported: message, function_call, function_call_output."
                ),
                "input",
            ));
        }
    }
    Ok(())
}

/// A message's content: a string, or parts (`input_text` / `output_text` / `text`).
fn message_content(v: Option<&Value>, i: usize) -> Result<Value, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(Value::String(String::new())),
        Some(Value::String(s)) => Ok(Value::String(s.clone())),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("input_text" | "output_text" | "text") => {
                        text.push_str(p.get("text").and_then(Value::as_str).unwrap_or(""));
                    }
                    Some(other) => {
                        return Err(bad(
                            format!(
                                "input[{i}].content[{j}] has type `{other}`; only text parts are supported."
                            ),
                            "input",
                        ));
                    }
                    None => {
                        return Err(bad(
                            format!("input[{i}].content[{j}].type must be a string."),
                            "input",
                        ));
                    }
                }
            }
            Ok(Value::String(text))
        }
        Some(_) => Err(bad(
            format!("input[{i}].content must be a string or an array of parts."),
            "input",
        )),
    }
}
