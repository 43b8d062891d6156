//! The Responses API's objects as the OpenAI SDK parses them: the `response` object,
//! its output items (`message` with `output_text` parts, `function_call`) and `usage`.
//! Built as JSON values: the shapes are wide and mostly echo the request.

use serde_json::{Value, json};

use crate::engine::types::{FinishReason, Usage};

/// What one response echoes of its request, and its identity.
#[derive(Debug, Clone)]
pub struct ResponseMeta {
    /// `resp_…`.
    pub id: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Served model id.
    pub model: String,
    /// Echoed fields (`instructions`, `tools`, `tool_choice`, `text`, `temperature`,
    /// `top_p`, `max_output_tokens`, `parallel_tool_calls`, `metadata`, `truncation`,
    /// `store`).
    pub echo: serde_json::Map<String, Value>,
}

/// One function call the model made.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionCall {
    /// `call_…`, what the client sends back in `function_call_output.call_id`.
    pub call_id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
}

/// The `usage` object.
pub fn usage(u: Usage) -> Value {
    json!({
        "input_tokens": u.prompt_tokens,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens": u.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": u.prompt_tokens + u.completion_tokens,
    })
}

/// An `output_text` content part.
pub fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

/// A `message` output item (`content` empty while in progress).
pub fn message_item(id: &str, text: Option<&str>, status: &str) -> Value {
    let content: Vec<Value> = text.map(text_part).into_iter().collect();
    json!({
        "type": "message",
        "id": id,
        "status": status,
        "role": "assistant",
        "content": content,
    })
}

/// A `function_call` output item.
pub fn function_item(id: &str, call: &FunctionCall, status: &str) -> Value {
    json!({
        "type": "function_call",
        "id": id,
        "call_id": call.call_id,
        "name": call.name,
        "arguments": call.arguments,
        "status": status,
    })
}

/// Item id of output `index` of response `resp_id` (`msg_…` / `fc_…`).
pub fn item_id(prefix: &str, resp_id: &str, index: usize) -> String {
    let tail = resp_id.trim_start_matches("resp_");
    format!("{prefix}_{tail}_{index}")
}

/// The whole `response` object. `status` is `in_progress`, `completed`, `incomplete`
/// or `failed`; `finish` decides `incomplete_details`.
pub fn response(
    meta: &ResponseMeta,
    status: &str,
    output: Vec<Value>,
    finish: Option<FinishReason>,
    usage_: Option<Usage>,
    error: Option<Value>,
) -> Value {
    let incomplete =
        (finish == Some(FinishReason::Length)).then(|| json!({"reason": "max_output_tokens"}));
    let mut obj = serde_json::Map::new();
    obj.insert("id".into(), meta.id.clone().into());
    obj.insert("object".into(), "response".into());
    obj.insert("created_at".into(), meta.created_at.into());
    obj.insert("status".into(), status.into());
    obj.insert("model".into(), meta.model.clone().into());
    obj.insert("output".into(), Value::Array(output));
    obj.insert("error".into(), error.unwrap_or(Value::Null));
    obj.insert(
        "incomplete_details".into(),
        incomplete.unwrap_or(Value::Null),
    );
    obj.insert("usage".into(), usage_.map(usage).unwrap_or(Value::Null));
    obj.insert("previous_response_id".into(), Value::Null);
    obj.insert("reasoning".into(), json!({"effort": null, "summary": null}));
    obj.insert("service_tier".into(), "default".into());
    for (k, v) in &meta.echo {
        obj.insert(k.clone(), v.clone());
    }
    Value::Object(obj)
}

/// The echoed request fields, with OpenAI's defaults where the request was silent.
pub fn echo(r: &super::request::ResponsesRequest, tools: Value) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert(
        "instructions".into(),
        r.instructions.clone().map_or(Value::Null, Value::from),
    );
    m.insert("tools".into(), tools);
    m.insert(
        "tool_choice".into(),
        r.tool_choice.clone().unwrap_or_else(|| "auto".into()),
    );
    m.insert(
        "parallel_tool_calls".into(),
        r.parallel_tool_calls.unwrap_or(true).into(),
    );
    m.insert(
        "text".into(),
        r.text
            .clone()
            .filter(|t| t.get("format").is_some())
            .unwrap_or_else(|| json!({"format": {"type": "text"}})),
    );
    m.insert("temperature".into(), r.temperature.unwrap_or(1.0).into());
    m.insert("top_p".into(), r.top_p.unwrap_or(1.0).into());
    m.insert(
        "max_output_tokens".into(),
        r.max_output_tokens.map_or(Value::Null, Value::from),
    );
    m.insert(
        "metadata".into(),
        r.metadata.clone().unwrap_or_else(|| json!({})),
    );
    m.insert(
        "truncation".into(),
        r.truncation
            .clone()
            .unwrap_or_else(|| "disabled".into())
            .into(),
    );
    m.insert("store".into(), r.store.unwrap_or(false).into());
    m
}
