//! JSON helpers shared by the parsers: reading one JSON value off the front of a text,
//! and turning a decoded call object into a [`ParsedCall`] (name + compact arguments).

use serde_json::Value;

use super::parse::ParsedCall;
use super::request::ToolSet;

/// The JSON value at the start of `text` (after whitespace) and the bytes it spans
/// (leading whitespace included); `None` when no complete value starts there.
pub fn value_prefix(text: &str) -> Option<(Value, usize)> {
    let start = text.len() - text.trim_start().len();
    let mut it = serde_json::Deserializer::from_str(&text[start..]).into_iter::<Value>();
    match it.next() {
        Some(Ok(v)) => Some((v, start + it.byte_offset())),
        _ => None,
    }
}

/// `text` without a surrounding Markdown code fence (```` ```json ... ``` ````), trimmed.
pub fn unfence(text: &str) -> &str {
    let t = text.trim();
    let Some(rest) = t.strip_prefix("```") else {
        return t;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

/// A call object `{"name": .., "arguments"|"parameters": ..}` naming one of the allowed
/// tools -> the call, arguments as compact JSON. Arguments may be an object, a JSON
/// string holding one, or absent/null (`{}`); anything else is not a call.
pub fn call_of(v: &Value, tools: &ToolSet) -> Option<ParsedCall> {
    let obj = v.as_object()?;
    // Some models nest the call under "function" like OpenAI's own shape.
    if let Some(f) = obj.get("function").filter(|f| f.is_object())
        && !obj.contains_key("name")
    {
        return call_of(f, tools);
    }
    let name = obj.get("name")?.as_str()?;
    if !tools.allowed().iter().any(|t| t.name == name) {
        return None;
    }
    let args = obj.get("arguments").or_else(|| obj.get("parameters"));
    let arguments = arguments(args)?;
    Some(ParsedCall {
        name: name.to_string(),
        arguments,
    })
}

/// Arguments as compact JSON text (an object), or `None` when they are not an object.
pub fn arguments(v: Option<&Value>) -> Option<String> {
    match v {
        None | Some(Value::Null) => Some("{}".into()),
        Some(o @ Value::Object(_)) => serde_json::to_string(o).ok(),
        Some(Value::String(s)) => match serde_json::from_str::<Value>(unfence(s)) {
            Ok(o @ Value::Object(_)) => serde_json::to_string(&o).ok(),
            _ => None,
        },
        Some(_) => None,
    }
}

/// One call or an array of calls; `None` unless every element is a call.
pub fn calls_of(v: &Value, tools: &ToolSet) -> Option<Vec<ParsedCall>> {
    match v {
        Value::Array(items) if !items.is_empty() => {
            items.iter().map(|i| call_of(i, tools)).collect()
        }
        Value::Object(_) => Some(vec![call_of(v, tools)?]),
        _ => None,
    }
}
