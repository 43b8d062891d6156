//! Model output -> content plus tool calls, for every [`ToolFormat`].
//!
//! Recognised (tolerantly: whitespace, ```` ```json ```` fences, `arguments` or
//! `parameters`, arguments given as a JSON string, OpenAI's nested `function` shape):
//! - Hermes / Generic: `<tool_call>JSON</tool_call>` anywhere (the closing tag may be
//!   missing at the end of the output); JSON is one call or an array of calls.
//! - Llama3: after `<|python_tag|>` anywhere, calls separated by `;`.
//! - Mistral / MistralArgs: after each `[TOOL_CALLS]`, a JSON array (or object) of
//!   calls, or `name[ARGS]{..}` (optionally `name[CALL_ID]id[ARGS]{..}`).
//! - Llama3 and Generic also take a bare call object opening the output (after
//!   whitespace, possibly fenced), several separated by `;`.
//!
//! A call naming a tool the [`ToolSet`] does not allow, or one that does not parse,
//! stays in the content verbatim; the content is exactly the text outside recognised
//! calls, `None` when calls were found and nothing but whitespace is left.

use super::format::ToolFormat;
use super::json::{call_of, calls_of, value_prefix};
use super::request::ToolSet;

/// One tool call found in the output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCall {
    /// The function's name (one of the allowed tools).
    pub name: String,
    /// The arguments object as compact JSON text (key order kept).
    pub arguments: String,
}

/// Output split into content and calls.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Parsed {
    /// The text outside calls (`None`: calls were found and only whitespace is left).
    pub content: Option<String>,
    /// The calls, in output order.
    pub calls: Vec<ParsedCall>,
}

/// Splits the whole output `text` of a request with `tools`. With no active tools
/// (`tool_choice: none`, or none given) the text is all content.
pub fn parse(format: ToolFormat, text: &str, tools: &ToolSet) -> Parsed {
    let (content, calls) = split(format, text, tools, true);
    finalize(content, calls)
}

/// `content` as [`Parsed`] reports it.
pub(super) fn finalize(content: String, calls: Vec<ParsedCall>) -> Parsed {
    let content = if !calls.is_empty() && content.trim().is_empty() {
        None
    } else {
        Some(content)
    };
    Parsed { content, calls }
}

/// The content text and calls of `text`; `at_start`: `text` opens the output (where
/// a bare JSON call counts for Llama3 / Generic).
pub(super) fn split(
    format: ToolFormat,
    text: &str,
    tools: &ToolSet,
    at_start: bool,
) -> (String, Vec<ParsedCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    if !tools.active() {
        return (text.to_string(), calls);
    }
    let mut rest = text;
    if at_start
        && format.bare_json_at_start()
        && let Some((found, used)) = leading_calls(rest, tools)
    {
        calls.extend(found);
        rest = &rest[used..];
    }
    let opener = format.opener();
    while let Some(i) = rest.find(opener) {
        content.push_str(&rest[..i]);
        let after = &rest[i + opener.len()..];
        match block(format, after, tools) {
            Some((found, used)) => {
                calls.extend(found);
                rest = &after[used..];
            }
            None => {
                content.push_str(opener);
                rest = after;
            }
        }
    }
    content.push_str(rest);
    (content, calls)
}

/// The calls right after an opener and the bytes they span.
fn block(format: ToolFormat, after: &str, tools: &ToolSet) -> Option<(Vec<ParsedCall>, usize)> {
    match format {
        ToolFormat::Hermes | ToolFormat::Generic => hermes_block(after, tools),
        ToolFormat::Llama3 => call_sequence(after, tools),
        ToolFormat::Mistral | ToolFormat::MistralArgs => mistral_block(after, tools),
    }
}

/// `JSON</tool_call>` (or `JSON` up to the end), the JSON maybe fenced.
fn hermes_block(after: &str, tools: &ToolSet) -> Option<(Vec<ParsedCall>, usize)> {
    const CLOSE: &str = "</tool_call>";
    let (body, used) = match after.find(CLOSE) {
        Some(j) => (&after[..j], j + CLOSE.len()),
        None => (after, after.len()),
    };
    let (fenced, inner) = strip_fence(body);
    let (v, n) = value_prefix(inner)?;
    let tail = inner[n..].trim();
    let tail = if fenced {
        tail.strip_suffix("```").unwrap_or(tail).trim()
    } else {
        tail
    };
    if !tail.is_empty() {
        return None;
    }
    Some((calls_of(&v, tools)?, used))
}

/// `(true, text after "```json")` for a fenced body, else `(false, body)`.
fn strip_fence(body: &str) -> (bool, &str) {
    let t = body.trim_start();
    match t.strip_prefix("```") {
        Some(r) => (true, r.strip_prefix("json").unwrap_or(r)),
        None => (false, body),
    }
}

/// Calls separated by `;` (Llama 3): `{..}; {..}`. Ends before the first thing that is
/// not a call; `None` when the first is not.
fn call_sequence(text: &str, tools: &ToolSet) -> Option<(Vec<ParsedCall>, usize)> {
    let mut calls = Vec::new();
    let mut used = 0;
    loop {
        let rest = &text[used..];
        let Some((v, n)) = value_prefix(rest).filter(|(v, _)| v.is_object()) else {
            break;
        };
        let Some(call) = call_of(&v, tools) else {
            break;
        };
        calls.push(call);
        used += n;
        let after = &text[used..];
        let trimmed = after.trim_start();
        match trimmed.strip_prefix(';') {
            Some(r) if value_prefix(r).is_some_and(|(v, _)| call_of(&v, tools).is_some()) => {
                used += after.len() - r.len();
            }
            _ => break,
        }
    }
    (!calls.is_empty()).then_some((calls, used))
}

/// A bare call (or `;`-separated calls) opening the output, maybe fenced.
fn leading_calls(text: &str, tools: &ToolSet) -> Option<(Vec<ParsedCall>, usize)> {
    let (fenced, inner) = strip_fence(text);
    if !inner.trim_start().starts_with('{') {
        return None;
    }
    let (calls, n) = call_sequence(inner, tools)?;
    let mut used = text.len() - inner.len() + n;
    if fenced {
        let after = &text[used..];
        let t = after.trim_start();
        if let Some(r) = t.strip_prefix("```") {
            used += after.len() - r.len();
        }
    }
    Some((calls, used))
}

/// After `[TOOL_CALLS]`: `[..]` / `{..}` JSON calls, or `name[CALL_ID]id[ARGS]{..}`.
fn mistral_block(after: &str, tools: &ToolSet) -> Option<(Vec<ParsedCall>, usize)> {
    let t = after.trim_start();
    if t.starts_with('[') || t.starts_with('{') {
        let (v, n) = value_prefix(after)?;
        return Some((calls_of(&v, tools)?, n));
    }
    const ARGS: &str = "[ARGS]";
    let a = after.find(ARGS)?;
    let head = &after[..a];
    let name = head.split("[CALL_ID]").next().unwrap_or(head).trim();
    let args_at = a + ARGS.len();
    let (v, n) = value_prefix(&after[args_at..])?;
    let call = call_of(&serde_json::json!({"name": name, "arguments": v}), tools)?;
    Some((vec![call], args_at + n))
}

#[cfg(test)]
#[path = "parse_tests.rs"]
pub(super) mod tests;
