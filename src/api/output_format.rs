//! What a request asks its output to look like, read from the API's fields into one
//! [`GrammarSpec`]: OpenAI `response_format` (`text`, `json_object`, `json_schema`),
//! vLLM's `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar` and its
//! newer `structured_outputs` object, Ollama's `format`; plus OpenAI `logit_bias`.
//! Compiling (in [`compile`]) happens before the engine, so a schema llguidance cannot
//! compile is a 400 naming the parameter.
//!
//! Invariants: at most one constraint per request (two are a 400, never a silent
//! choice); every error names the parameter at fault.

use serde_json::Value;

use super::error::ApiError;
use crate::model::ServedModel;
use crate::structured::{CompileError, CompiledGrammar, GrammarSpec};

/// A request's output constraint and the parameter it came from (for errors).
#[derive(Debug, Clone, PartialEq)]
pub struct OutputGrammar {
    /// What the output must match.
    pub spec: GrammarSpec,
    /// The request parameter that asked for it.
    pub param: &'static str,
}

/// The vLLM-style fields (`guided_*`, `structured_outputs`) of a request.
#[derive(Debug, Default, Clone, Copy)]
pub struct Guided<'a> {
    /// `guided_json`: a JSON schema (object) or its text.
    pub json: Option<&'a Value>,
    /// `guided_regex`.
    pub regex: Option<&'a Value>,
    /// `guided_choice`: an array of strings.
    pub choice: Option<&'a Value>,
    /// `guided_grammar`: a Lark grammar.
    pub grammar: Option<&'a Value>,
    /// `structured_outputs`: `{"json" | "regex" | "choice" | "grammar": …}`.
    pub structured_outputs: Option<&'a Value>,
}

fn bad(msg: impl Into<String>, param: &str) -> ApiError {
    ApiError::invalid(msg, Some(param))
}

fn given(v: Option<&Value>) -> Option<&Value> {
    v.filter(|v| !v.is_null())
}

/// The one output constraint of `response_format` and the guided fields, if any.
pub fn requested(
    response_format: Option<&Value>,
    guided: Guided<'_>,
) -> Result<Option<OutputGrammar>, ApiError> {
    let mut found: Vec<OutputGrammar> = Vec::new();
    if let Some(rf) = given(response_format)
        && let Some(spec) = response_format_spec(rf, "response_format")?
    {
        found.push(OutputGrammar {
            spec,
            param: "response_format",
        });
    }
    let fields: [(Option<&Value>, &'static str, &str); 4] = [
        (guided.json, "guided_json", "json"),
        (guided.regex, "guided_regex", "regex"),
        (guided.choice, "guided_choice", "choice"),
        (guided.grammar, "guided_grammar", "grammar"),
    ];
    for (v, param, kind) in fields {
        if let Some(v) = given(v) {
            found.push(OutputGrammar {
                spec: guided_spec(kind, v, param)?,
                param,
            });
        }
    }
    if let Some(so) = given(guided.structured_outputs) {
        let param = "structured_outputs";
        let obj = so
            .as_object()
            .ok_or_else(|| bad("`structured_outputs` must be an object.", param))?;
        for kind in ["json", "regex", "choice", "grammar"] {
            if let Some(v) = given(obj.get(kind)) {
                found.push(OutputGrammar {
                    spec: guided_spec(kind, v, param)?,
                    param,
                });
            }
        }
    }
    match found.len() {
        0 | 1 => Ok(found.pop()),
        _ => {
            let names: Vec<&str> = found.iter().map(|g| g.param).collect();
            Err(bad(
                format!(
                    "Only one output constraint may be given, got {}.",
                    names.join(", ")
                ),
                found[1].param,
            ))
        }
    }
}

/// OpenAI's `response_format` (chat) or the Responses API's `text.format` (same
/// shapes, with the schema's fields either nested under `json_schema` or flat).
pub fn response_format_spec(rf: &Value, param: &str) -> Result<Option<GrammarSpec>, ApiError> {
    let kind = rf.get("type").and_then(Value::as_str).ok_or_else(|| {
        bad(
            format!("`{param}.type` must be one of `text`, `json_object`, `json_schema`."),
            param,
        )
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => Ok(Some(GrammarSpec::JsonObject)),
        "json_schema" => {
            let holder = rf.get("json_schema").unwrap_or(rf);
            match holder.get("schema") {
                None | Some(Value::Null) => Ok(Some(GrammarSpec::JsonObject)),
                Some(s @ Value::Object(_)) => Ok(Some(GrammarSpec::JsonSchema(s.clone()))),
                Some(Value::Bool(true)) => Ok(Some(GrammarSpec::JsonObject)),
                Some(_) => Err(bad(
                    format!("`{param}` json_schema `schema` must be a JSON Schema object."),
                    param,
                )),
            }
        }
        other => Err(bad(
            format!(
                "`{param}.type` `{other}` is not supported (use `text`, `json_object` or `json_schema`)."
            ),
            param,
        )),
    }
}

fn guided_spec(kind: &str, v: &Value, param: &str) -> Result<GrammarSpec, ApiError> {
    match (kind, v) {
        ("json", Value::Object(_)) => Ok(GrammarSpec::JsonSchema(v.clone())),
        ("json", Value::String(s)) => match serde_json::from_str::<Value>(s) {
            Ok(schema @ Value::Object(_)) => Ok(GrammarSpec::JsonSchema(schema)),
            _ => Err(bad(
                format!("`{param}` must be a JSON Schema object (or its JSON text)."),
                param,
            )),
        },
        ("regex", Value::String(s)) if !s.is_empty() => Ok(GrammarSpec::Regex(s.clone())),
        ("grammar", Value::String(s)) if !s.trim().is_empty() => Ok(GrammarSpec::Lark(s.clone())),
        ("choice", Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|c| c.as_str().filter(|s| !s.is_empty()).map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .map(GrammarSpec::Choice)
            .ok_or_else(|| {
                bad(
                    format!("`{param}` choices must be non-empty strings."),
                    param,
                )
            }),
        ("json", _) => Err(bad(
            format!("`{param}` must be a JSON Schema object."),
            param,
        )),
        ("choice", _) => Err(bad(
            format!("`{param}` must be a non-empty array of strings."),
            param,
        )),
        _ => Err(bad(format!("`{param}` must be a non-empty string."), param)),
    }
}

/// Ollama's `format`: `"json"` (any JSON object) or a JSON schema object.
pub fn ollama_format(format: Option<&Value>) -> Result<Option<OutputGrammar>, ApiError> {
    let param = "format";
    let spec = match given(format) {
        None => return Ok(None),
        Some(Value::String(s)) if s.is_empty() => return Ok(None),
        Some(Value::String(s)) if s == "json" => GrammarSpec::JsonObject,
        Some(schema @ Value::Object(_)) => GrammarSpec::JsonSchema(schema.clone()),
        Some(_) => {
            return Err(bad(
                "`format` must be \"json\" or a JSON schema object.",
                param,
            ));
        }
    };
    Ok(Some(OutputGrammar { spec, param }))
}

/// OpenAI `logit_bias`: an object mapping token ids (as strings) to a bias in
/// [-100, 100]. Ids are checked against the vocabulary by [`check_bias_ids`].
pub fn logit_bias(v: Option<&Value>) -> Result<Vec<(u32, f32)>, ApiError> {
    let param = "logit_bias";
    let map = match given(v) {
        None => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(bad(
                "`logit_bias` must be an object mapping token ids to biases.",
                param,
            ));
        }
    };
    let mut out = Vec::with_capacity(map.len());
    for (k, b) in map {
        let id: u32 = k.trim().parse().map_err(|_| {
            bad(
                format!("`logit_bias` key `{k}` is not a token id (a non-negative integer)."),
                param,
            )
        })?;
        let bias = b
            .as_f64()
            .filter(|b| (-100.0..=100.0).contains(b))
            .ok_or_else(|| {
                bad(
                    format!("`logit_bias` of token {id} must be a number in [-100, 100], got {b}."),
                    param,
                )
            })?;
        out.push((id, bias as f32));
    }
    out.sort_by_key(|&(id, _)| id);
    Ok(out)
}

/// 400 when a biased token id is outside the vocabulary of `vocab` tokens.
pub fn check_bias_ids(bias: &[(u32, f32)], vocab: usize) -> Result<(), ApiError> {
    match bias.iter().find(|&&(id, _)| id as usize >= vocab) {
        Some((id, _)) => Err(bad(
            format!("`logit_bias` token id {id} is out of range (vocabulary size {vocab})."),
            "logit_bias",
        )),
        None => Ok(()),
    }
}

/// Compiles `grammar` for `model` (CPU work: call it from a blocking task).
pub fn compile(
    model: &ServedModel,
    grammar: Option<&OutputGrammar>,
) -> Result<Option<CompiledGrammar>, ApiError> {
    let Some(g) = grammar else {
        return Ok(None);
    };
    match model.grammar.compile(&g.spec) {
        Ok(c) => Ok(Some(CompiledGrammar::new(c))),
        Err(CompileError::Invalid(why)) => Err(bad(
            format!(
                "`{}` cannot be used for constrained decoding: {why}",
                g.param
            ),
            g.param,
        )),
        Err(e @ CompileError::Setup(_)) => Err(ApiError::internal(e.to_string())),
    }
}

#[cfg(test)]
mod tests;
