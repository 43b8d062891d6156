//! The conversation and tool list as the chat template gets them.
//!
//! [`ToolSupport::of`] reads, once per template, what its source handles (rules below);
//! [`prepare`] then adapts each request's messages:
//! - A template that uses `tools` gets OpenAI's chat-shape tool list
//!   ([`Prepared::tools_json`]).
//! - One that does not (SmolLM2, Gemma 2, ...) gets the Generic fallback: a system
//!   message (merged into the first one, or prepended) listing the tools as JSON and
//!   saying exactly how to call them, Hermes-style `<tool_call>{..}</tool_call>`.
//! - Assistant `tool_calls` become text in the model's own format in the assistant's
//!   content when the template never mentions `tool_calls`; `tool` messages become a
//!   user turn of `<tool_response>..</tool_response>` blocks (consecutive ones merged)
//!   when it handles no `tool` role.
//! - Mistral templates demand 9-character alphanumeric call ids: ids are mapped to
//!   such (the same id maps to the same short id in the call and its result).
//!
//! Source rules: `tools` = the variable `tools` is used ([`super::format::references_tools`]);
//! `tool_calls` = the text `tool_calls` appears and the template calls no `.append(`
//! (minijinja has no mutable lists, so such a template, Kimi K2's, fails on calls: they
//! go in as text instead); `tool` role = `"tool"`, `'tool'` or `ipython` appears;
//! `arguments` as a string = the template joins `arguments` with `+` (DeepSeek R1
//! distills, Functionary 3.2), so it gets OpenAI's JSON string rather than an object;
//! `content is none` tested (and no `== ''` test) = an assistant tool-call message without text shows its
//! content as `none` (DeepSeek R1 distills; elsewhere the empty string).

use serde_json::{Value, json};

use super::format::{ToolFormat, references_tools};
use super::request::{ToolChoice, ToolSet};
use crate::model::chat_template::{ChatMessage, ChatTemplate};

/// What a chat template can show, read from its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ToolSupport {
    /// The model's tool-call format.
    pub format: ToolFormat,
    /// The template renders the `tools` list.
    pub tools: bool,
    /// The template renders assistant `tool_calls`.
    pub tool_calls: bool,
    /// The template renders `tool` messages.
    pub tool_role: bool,
    /// Call ids must be 9 alphanumeric characters (Mistral).
    pub short_ids: bool,
    /// The template concatenates `arguments` as a string.
    pub string_arguments: bool,
    /// The template tests `content is none` (a tool-call message's content is shown
    /// as `none` when empty).
    pub none_content: bool,
}

impl ToolSupport {
    /// Reads `template`'s source; `has_token` says whether the vocabulary has a token
    /// spelled exactly so (see [`ToolFormat::detect`]).
    pub fn of(template: &ChatTemplate, has_token: impl Fn(&str) -> bool) -> Self {
        let src = template.source().unwrap_or("");
        let format = ToolFormat::detect(template.source(), has_token);
        Self {
            format,
            tools: references_tools(src),
            tool_calls: src.contains("tool_calls") && !src.contains(".append("),
            tool_role: src.contains("\"tool\"")
                || src.contains("'tool'")
                || src.contains("ipython"),
            short_ids: matches!(format, ToolFormat::Mistral | ToolFormat::MistralArgs)
                || src.contains("length != 9"),
            string_arguments: concatenates_arguments(src),
            none_content: none_content(src),
        }
    }
}

/// A conversation ready for `ChatTemplate::render_with`.
#[derive(Debug, Clone, PartialEq)]
pub struct Prepared {
    /// The messages to render.
    pub messages: Vec<ChatMessage>,
    /// The `tools` variable (`None`: leave it undefined).
    pub tools_json: Option<Value>,
    /// The format to parse the output with.
    pub format: ToolFormat,
}

/// Adapts `messages` (and `tools`) to what the template handles; see the module docs.
pub fn prepare(
    support: &ToolSupport,
    messages: Vec<ChatMessage>,
    tools: Option<&ToolSet>,
) -> Prepared {
    let mut messages = messages;
    if support.short_ids {
        shorten_ids(&mut messages);
    }
    for m in &mut messages {
        if !support.tool_calls {
            calls_to_text(m, support.format);
        } else {
            if support.string_arguments {
                arguments_to_strings(m);
            }
            m.content_none = support.none_content && m.tool_calls.is_some();
        }
    }
    if !support.tool_role {
        messages = results_to_user_turns(messages);
    }
    let tools = tools.filter(|t| !t.tools.is_empty());
    let tools_json = match tools {
        Some(t) if support.tools => Some(t.to_chat_json()),
        Some(t) if t.choice != ToolChoice::None => {
            add_system(&mut messages, &fallback_instructions(t));
            None
        }
        _ => None,
    };
    Prepared {
        messages,
        tools_json,
        format: support.format,
    }
}

/// [`prepare`] for `template` without a vocabulary at hand (the format from the
/// template alone). Servers should compute [`ToolSupport`] once per model instead.
pub fn prepare_for(
    template: &ChatTemplate,
    messages: Vec<ChatMessage>,
    tools: Option<&ToolSet>,
) -> Prepared {
    prepare(&ToolSupport::of(template, |_| false), messages, tools)
}

/// The Generic fallback's system text: the tools and how to call them.
pub fn fallback_instructions(tools: &ToolSet) -> String {
    let list: Vec<String> = match tools.to_chat_json() {
        Value::Array(a) => a.iter().map(Value::to_string).collect(),
        _ => Vec::new(),
    };
    let mut s = format!(
        "# Tools\n\nYou may call one or more functions to assist with the user query. \
         The functions are listed as JSON schemas within <tools></tools> tags:\n<tools>\n{}\n</tools>\n\n\
         To call a function, reply with a JSON object holding the function name and its \
         arguments within <tool_call></tool_call> tags, one block per call:\n\
         <tool_call>\n{{\"name\": <function-name>, \"arguments\": <args-json-object>}}\n</tool_call>",
        list.join("\n")
    );
    match &tools.choice {
        ToolChoice::Required => s.push_str("\n\nYou must call at least one function."),
        ToolChoice::Function(n) => s.push_str(&format!("\n\nYou must call the function `{n}`.")),
        _ => {}
    }
    if !tools.parallel {
        s.push_str("\nCall at most one function.");
    }
    s
}

/// Appends `text` to the first system message, or prepends one.
fn add_system(messages: &mut Vec<ChatMessage>, text: &str) {
    match messages.first_mut() {
        Some(m) if m.role == "system" => {
            if !m.content.is_empty() {
                m.content.push_str("\n\n");
            }
            m.content.push_str(text);
        }
        _ => messages.insert(0, ChatMessage::text("system", text)),
    }
}

/// An assistant message's `tool_calls` moved into its content as `format` text.
fn calls_to_text(m: &mut ChatMessage, format: ToolFormat) {
    let Some(Value::Array(calls)) = m.tool_calls.take() else {
        return;
    };
    let calls: Vec<(String, Value)> = calls
        .iter()
        .map(|c| {
            let f = c.get("function").unwrap_or(c);
            let name = f.get("name").and_then(Value::as_str).unwrap_or("");
            let args = f.get("arguments").cloned().unwrap_or_else(|| json!({}));
            (name.to_string(), args)
        })
        .collect();
    let text = call_text(format, &calls);
    if !m.content.is_empty() {
        m.content.push('\n');
    }
    m.content.push_str(&text);
}

/// Calls written the way a model of `format` prints them.
pub fn call_text(format: ToolFormat, calls: &[(String, Value)]) -> String {
    let obj = |n: &str, a: &Value, key: &str| {
        let mut o = serde_json::Map::new();
        o.insert("name".into(), n.into());
        o.insert(key.into(), a.clone());
        Value::Object(o).to_string()
    };
    match format {
        ToolFormat::Hermes | ToolFormat::Generic => calls
            .iter()
            .map(|(n, a)| format!("<tool_call>\n{}\n</tool_call>", obj(n, a, "arguments")))
            .collect::<Vec<_>>()
            .join("\n"),
        ToolFormat::Llama3 => calls
            .iter()
            .map(|(n, a)| obj(n, a, "parameters"))
            .collect::<Vec<_>>()
            .join("; "),
        ToolFormat::Mistral => {
            let list: Vec<String> = calls.iter().map(|(n, a)| obj(n, a, "arguments")).collect();
            format!("[TOOL_CALLS][{}]", list.join(", "))
        }
        ToolFormat::MistralArgs => calls
            .iter()
            .map(|(n, a)| format!("[TOOL_CALLS]{n}[ARGS]{a}"))
            .collect(),
    }
}

/// Whether the template tells a tool-call message by `content is none` and has no
/// test for the empty string (which it would then prefer).
fn none_content(src: &str) -> bool {
    let tests_none = src.contains("content'] is none") || src.contains("content is none");
    let tests_empty = src.contains("content'] == ''") || src.contains("content == ''");
    tests_none && !tests_empty
}

/// Each call's decoded `arguments` back to a JSON string.
fn arguments_to_strings(m: &mut ChatMessage) {
    let Some(Value::Array(calls)) = &mut m.tool_calls else {
        return;
    };
    for c in calls {
        if let Some(a) = c.pointer_mut("/function/arguments")
            && !a.is_string()
        {
            *a = Value::String(a.to_string());
        }
    }
}

/// Whether `src` has `+` right before or after an expression ending in `arguments`
/// (`x + tool['function']['arguments']`, `tool_call.arguments + y`).
fn concatenates_arguments(src: &str) -> bool {
    let path = |c: char| c.is_ascii_alphanumeric() || "_.[]'\"".contains(c);
    src.match_indices("arguments").any(|(i, w)| {
        let before = src[..i].trim_end_matches(path).trim_end();
        let after = src[i + w.len()..]
            .trim_start_matches(['\'', '"', ']'])
            .trim_start();
        // A filter (`|tojson`, `|string`) makes it a string first.
        !after.starts_with('|') && (before.ends_with('+') || after.starts_with('+'))
    })
}

/// `tool` messages -> user turns of `<tool_response>` blocks, consecutive ones merged.
fn results_to_user_turns(messages: Vec<ChatMessage>) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::with_capacity(messages.len());
    let mut prev_tool = false;
    for m in messages {
        if m.role != "tool" {
            prev_tool = false;
            out.push(m);
            continue;
        }
        let block = format!("<tool_response>\n{}\n</tool_response>", m.content);
        match out.last_mut() {
            Some(last) if prev_tool => {
                last.content.push('\n');
                last.content.push_str(&block);
            }
            _ => out.push(ChatMessage::text("user", &block)),
        }
        prev_tool = true;
    }
    out
}

/// Every call id (and `tool_call_id`) as 9 alphanumeric characters: the id's last 9
/// letters and digits, left-padded with `0`.
fn shorten_ids(messages: &mut [ChatMessage]) {
    for m in messages {
        if let Some(id) = &m.tool_call_id {
            m.tool_call_id = Some(short_id(id));
        }
        if let Some(Value::Array(calls)) = &mut m.tool_calls {
            for c in calls {
                if let Some(id) = c.get("id").and_then(Value::as_str) {
                    let short = short_id(id);
                    c["id"] = short.into();
                }
            }
        }
    }
}

/// A call id as Mistral's templates require it.
pub fn short_id(id: &str) -> String {
    let alnum: Vec<char> = id.chars().filter(char::is_ascii_alphanumeric).collect();
    let tail: String = alnum[alnum.len().saturating_sub(9)..].iter().collect();
    format!("{tail:0>9}")
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
