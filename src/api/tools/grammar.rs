//! The grammar that forces a tool call (`tool_choice` `required` or a named function):
//! a Lark grammar in llguidance's dialect accepting exactly the model's native format,
//! with `name` one of the allowed tools and the arguments matching that tool's
//! `parameters` schema (`%json`). `parallel_tool_calls: true` allows one or more calls,
//! `false` exactly one.
//!
//! The accepted text per format (`P` = the arguments, compact-but-natural JSON with
//! `": "` and `", "` as separators, no other whitespace):
//! - Hermes / Generic: `<tool_call>\n{"name": "f", "arguments": P}\n</tool_call>`,
//!   several joined by `\n`.
//! - Llama3: `{"name": "f", "parameters": P}`, several joined by `; `.
//! - Mistral: `[TOOL_CALLS]` + optional space + `[{"name": "f", "arguments": P}, ..]`.
//! - MistralArgs: `[TOOL_CALLS]f[ARGS]P`, repeated per call.
//!
//! Markers that are control (special) tokens in the vocabulary — `[TOOL_CALLS]` and
//! `[ARGS]` in Mistral's, `<tool_call>` where a vocabulary marks it so — cannot be
//! produced as text: give their ids in [`SpecialMarkers`] and the grammar uses
//! llguidance's `<[id]>` token syntax for them (the decoder must then keep those
//! tokens' text for the parser). Markers absent from it are plain text.
//!
//! `$defs` / `definitions` of a `parameters` schema are hoisted to the root of the call
//! schema so `#/$defs/..` references still resolve; other `#/..` references do not.

use serde_json::{Map, Value, json};

use super::format::ToolFormat;
use super::request::{FunctionTool, ToolSet};

/// Marker strings that are control tokens, with their ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpecialMarkers {
    ids: Vec<(String, u32)>,
}

impl SpecialMarkers {
    /// No marker is a control token: all are text.
    pub fn none() -> Self {
        Self::default()
    }

    /// `marker` is the control token `id`.
    pub fn with(mut self, marker: &str, id: u32) -> Self {
        self.ids.push((marker.to_string(), id));
        self
    }

    /// The markers of `format` that `control_id` reports as control tokens (it
    /// returns the id of the control token spelled so, `None` for text or absent).
    pub fn of(format: ToolFormat, control_id: impl Fn(&str) -> Option<u32>) -> Self {
        let mut s = Self::none();
        for m in format.markers() {
            if let Some(id) = control_id(m) {
                s = s.with(m, id);
            }
        }
        s
    }

    /// `marker` as a Lark terminal: `<[id]>` or a quoted literal.
    fn lit(&self, marker: &str) -> String {
        match self.ids.iter().find(|(m, _)| m == marker) {
            Some((_, id)) => format!("<[{id}]>"),
            None => quote(marker),
        }
    }
}

/// The Lark grammar of a forced call to one of `tools.allowed()` (all tools when the
/// choice names none) in `format`.
pub fn forced_lark(format: ToolFormat, tools: &ToolSet, special: &SpecialMarkers) -> String {
    let mut allowed = tools.allowed();
    if allowed.is_empty() {
        allowed = tools.tools.iter().collect();
    }
    let mut g = String::new();
    let repeat = |call: &str, sep: &str| {
        if tools.parallel {
            format!("start: {call} ({sep} {call})*\n")
        } else {
            format!("start: {call}\n")
        }
    };
    let key = if format == ToolFormat::Llama3 {
        "parameters"
    } else {
        "arguments"
    };
    let alternatives: Vec<String> = (0..allowed.len()).map(|i| format!("call_{i}")).collect();
    match format {
        ToolFormat::Hermes | ToolFormat::Generic => {
            g.push_str(&repeat("tagged", &quote("\n")));
            g.push_str(&format!(
                "tagged: {} {} call {} {}\n",
                special.lit("<tool_call>"),
                quote("\n"),
                quote("\n"),
                special.lit("</tool_call>")
            ));
        }
        ToolFormat::Llama3 => g.push_str(&repeat("call", &quote("; "))),
        ToolFormat::Mistral => {
            let list = if tools.parallel {
                format!("call ({} call)*", quote(", "))
            } else {
                "call".to_string()
            };
            g.push_str(&format!(
                "start: {} \" \"? \"[\" {list} \"]\"\n",
                special.lit("[TOOL_CALLS]")
            ));
        }
        ToolFormat::MistralArgs => {
            g.push_str(&repeat("call", ""));
            for (i, t) in allowed.iter().enumerate() {
                g.push_str(&format!(
                    "call_{i}: {} {} {} %json {}\n",
                    special.lit("[TOOL_CALLS]"),
                    quote(&t.name),
                    special.lit("[ARGS]"),
                    schema_json(&args_schema(t))
                ));
            }
        }
    }
    g.push_str(&format!("call: {}\n", alternatives.join(" | ")));
    if format != ToolFormat::MistralArgs {
        for (i, t) in allowed.iter().enumerate() {
            g.push_str(&format!(
                "call_{i}: %json {}\n",
                schema_json(&call_schema(t, key))
            ));
        }
    }
    g
}

/// JSON options of every embedded schema: natural separators, no free whitespace.
fn guidance() -> Value {
    json!({"whitespace_flexible": false, "key_separator": ": ", "item_separator": ", "})
}

/// `{"name": <const>, key: <parameters>}` in that order, nothing else.
fn call_schema(t: &FunctionTool, key: &str) -> Value {
    let (params, defs) = split_defs(&t.parameters);
    let mut props = Map::new();
    props.insert("name".into(), json!({"const": t.name}));
    props.insert(key.into(), params);
    let mut root = Map::new();
    root.insert("type".into(), "object".into());
    root.insert("properties".into(), Value::Object(props));
    root.insert("required".into(), json!(["name", key]));
    root.insert("additionalProperties".into(), false.into());
    root.extend(defs);
    root.insert("x-guidance".into(), guidance());
    Value::Object(root)
}

/// The tool's parameters schema with the JSON options added.
fn args_schema(t: &FunctionTool) -> Value {
    let mut s = match &t.parameters {
        Value::Object(o) => o.clone(),
        _ => Map::new(),
    };
    s.insert("x-guidance".into(), guidance());
    Value::Object(s)
}

/// `schema` without its `$defs` / `definitions`, and those entries.
fn split_defs(schema: &Value) -> (Value, Map<String, Value>) {
    let mut s = schema.clone();
    let mut defs = Map::new();
    if let Value::Object(o) = &mut s {
        for k in ["$defs", "definitions"] {
            if let Some(d) = o.remove(k) {
                defs.insert(k.into(), d);
            }
        }
    }
    (s, defs)
}

fn schema_json(v: &Value) -> String {
    v.to_string()
}

/// A Lark string literal (llguidance reads them as JSON strings).
fn quote(s: &str) -> String {
    Value::String(s.to_string()).to_string()
}

#[cfg(test)]
#[path = "grammar_tests.rs"]
mod tests;
