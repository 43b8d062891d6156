//! The shape of the prompt-carrying parameters: chat `messages` (roles, text parts) and
//! completions `prompt` (strings or token ids). Errors name the parameter.

use serde_json::Value;

use super::ApiError;
use crate::model::chat_template::ChatMessage;

/// The `prompt` of a text completion request.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptInput {
    /// One or more strings to tokenize.
    Texts(Vec<String>),
    /// One or more pre-tokenized prompts.
    Ids(Vec<Vec<u32>>),
}

/// `messages` -> template messages: roles system/developer/user/assistant/tool, content
/// a string, `null`, or an array of `{"type":"text","text":...}` parts.
///
/// Tool calling: an assistant message may carry `tool_calls` (OpenAI's array; content
/// may then be `null`); each call's `function.arguments`, a JSON string on the wire, is
/// handed to the template parsed into an object (kept as the string when it is not
/// JSON), since templates print it with `tojson` or iterate it. A `tool` message needs
/// a `tool_call_id` matching a call of an earlier assistant message; it gets that
/// call's function name as `name`.
pub fn messages(values: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let bad = |msg: String| ApiError::invalid(msg, Some("messages"));
    if values.is_empty() {
        return Err(bad("`messages` must contain at least one message.".into()));
    }
    // (call id, function name) of every assistant tool call so far.
    let mut calls: Vec<(String, String)> = Vec::new();
    let mut out = Vec::with_capacity(values.len());
    for (i, m) in values.iter().enumerate() {
        let Some(obj) = m.as_object() else {
            return Err(bad(format!("messages[{i}] must be an object.")));
        };
        let role = match obj.get("role").and_then(Value::as_str) {
            Some("system" | "developer") => "system",
            Some("user") => "user",
            Some("assistant") => "assistant",
            Some("tool") => "tool",
            Some(other) => {
                return Err(bad(format!(
                    "messages[{i}].role `{other}` is not supported (use system, developer, user, assistant or tool)."
                )));
            }
            None => return Err(bad(format!("messages[{i}].role must be a string."))),
        };
        let mut msg = ChatMessage::text(role, &content(obj.get("content"), i)?);
        match role {
            "assistant" => {
                if let Some(tc) = obj.get("tool_calls").filter(|v| !v.is_null()) {
                    msg.tool_calls = Some(tool_calls(tc, i, &mut calls)?);
                }
            }
            "tool" => {
                let Some(id) = obj.get("tool_call_id").and_then(Value::as_str) else {
                    return Err(bad(format!(
                        "messages[{i}].tool_call_id must be a string: a `tool` message answers a tool call."
                    )));
                };
                let Some((_, name)) = calls.iter().find(|(c, _)| c == id) else {
                    return Err(bad(format!(
                        "messages[{i}].tool_call_id `{id}` does not match any tool call of an earlier assistant message."
                    )));
                };
                msg.name = Some(name.clone());
                msg.tool_call_id = Some(id.to_string());
            }
            _ => {}
        }
        out.push(msg);
    }
    Ok(out)
}

/// An assistant's `tool_calls` as the template gets them (arguments decoded), recording
/// each (id, name) in `seen`.
fn tool_calls(v: &Value, i: usize, seen: &mut Vec<(String, String)>) -> Result<Value, ApiError> {
    let bad = |msg: String| ApiError::invalid(msg, Some("messages"));
    let Some(items) = v.as_array() else {
        return Err(bad(format!("messages[{i}].tool_calls must be an array.")));
    };
    let mut out = Vec::with_capacity(items.len());
    for (j, call) in items.iter().enumerate() {
        let at = format!("messages[{i}].tool_calls[{j}]");
        let Some(id) = call.get("id").and_then(Value::as_str) else {
            return Err(bad(format!("{at}.id must be a string.")));
        };
        if let Some(t) = call.get("type").and_then(Value::as_str)
            && t != "function"
        {
            return Err(bad(format!(
                "{at}.type `{t}` is not supported; only `function`."
            )));
        }
        let Some(function) = call.get("function").and_then(Value::as_object) else {
            return Err(bad(format!("{at}.function must be an object.")));
        };
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            return Err(bad(format!("{at}.function.name must be a string.")));
        };
        let arguments = match function.get("arguments") {
            None | Some(Value::Null) => Value::Object(Default::default()),
            Some(Value::String(s)) => serde_json::from_str(s).unwrap_or_else(|_| s.clone().into()),
            Some(other) => other.clone(),
        };
        seen.push((id.to_string(), name.to_string()));
        out.push(serde_json::json!({
            "id": id,
            "type": "function",
            "function": {"name": name, "arguments": arguments},
        }));
    }
    Ok(Value::Array(out))
}

fn content(v: Option<&Value>, i: usize) -> Result<String, ApiError> {
    let bad = |msg: String| ApiError::invalid(msg, Some("messages"));
    match v {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (j, p) in parts.iter().enumerate() {
                match p.get("type").and_then(Value::as_str) {
                    Some("text") => match p.get("text").and_then(Value::as_str) {
                        Some(t) => text.push_str(t),
                        None => {
                            return Err(bad(format!(
                                "messages[{i}].content[{j}].text must be a string."
                            )));
                        }
                    },
                    Some(other) => {
                        return Err(bad(format!(
                            "messages[{i}].content[{j}] has type `{other}`; only `text` parts are supported."
                        )));
                    }
                    None => {
                        return Err(bad(format!(
                            "messages[{i}].content[{j}].type must be a string."
                        )));
                    }
                }
            }
            Ok(text)
        }
        Some(_) => Err(bad(format!(
            "messages[{i}].content must be a string or an array of parts."
        ))),
    }
}

/// `prompt`: a string, array of strings, array of token ids, or array of id arrays.
/// Empty prompts are rejected; ids are checked against the vocabulary later.
pub fn prompt(v: &Value) -> Result<PromptInput, ApiError> {
    let bad = |msg: &str| ApiError::invalid(msg, Some("prompt"));
    let shape = "`prompt` must be a string, an array of strings, an array of token ids, or an array of token-id arrays.";
    let empty = "`prompt` must not be empty.";
    let ids = |a: &[Value]| -> Result<Vec<u32>, ApiError> {
        let ids: Vec<u32> = a
            .iter()
            .map(|x| {
                x.as_u64()
                    .and_then(|i| u32::try_from(i).ok())
                    .ok_or_else(|| bad(shape))
            })
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            Err(bad(empty))
        } else {
            Ok(ids)
        }
    };
    let input = match v {
        Value::String(s) => PromptInput::Texts(vec![s.clone()]),
        Value::Array(a) if a.is_empty() => return Err(bad(empty)),
        Value::Array(a) => match &a[0] {
            Value::String(_) => PromptInput::Texts(
                a.iter()
                    .map(|x| x.as_str().map(str::to_string).ok_or_else(|| bad(shape)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Number(_) => PromptInput::Ids(vec![ids(a)?]),
            Value::Array(_) => PromptInput::Ids(
                a.iter()
                    .map(|x| x.as_array().ok_or_else(|| bad(shape)).and_then(|x| ids(x)))
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(bad(shape)),
        },
        _ => return Err(bad(shape)),
    };
    if let PromptInput::Texts(t) = &input
        && t.iter().any(String::is_empty)
    {
        return Err(bad(empty));
    }
    Ok(input)
}
