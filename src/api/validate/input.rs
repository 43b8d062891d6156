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

/// `messages` -> template messages: roles system/developer/user/assistant, content a
/// string, `null`, or an array of `{"type":"text","text":...}` parts.
pub fn messages(values: &[Value]) -> Result<Vec<ChatMessage>, ApiError> {
    let bad = |msg: String| ApiError::invalid(msg, Some("messages"));
    if values.is_empty() {
        return Err(bad("`messages` must contain at least one message.".into()));
    }
    values
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Some(obj) = m.as_object() else {
                return Err(bad(format!("messages[{i}] must be an object.")));
            };
            let role = match obj.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => "system",
                Some("user") => "user",
                Some("assistant") => "assistant",
                Some(other) => {
                    return Err(bad(format!(
                        "messages[{i}].role `{other}` is not supported (use system, developer, user or assistant)."
                    )));
                }
                None => return Err(bad(format!("messages[{i}].role must be a string."))),
            };
            let content = content(obj.get("content"), i)?;
            Ok(ChatMessage::text(role, &content))
        })
        .collect()
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
