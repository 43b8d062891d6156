//! The tool fields of a request -> a validated [`ToolSet`].
//!
//! Accepted: `tools` (chat shape `{"type":"function","function":{...}}`, or the
//! Responses API's flat `{"type":"function","name":...}` with [`Shape::Responses`]),
//! `tool_choice` (`"none"`, `"auto"`, `"required"`, `{"type":"function","function":
//! {"name":..}}` or flat `{"type":"function","name":..}`), `parallel_tool_calls`
//! (default true), and the legacy `functions` / `function_call` mapped onto the same.
//!
//! Rules: names match `[A-Za-z0-9_-]{1,64}` and are unique; `parameters` is a JSON
//! object (default `{"type":"object","properties":{}}`); `tool_choice` naming a tool
//! not in `tools` is a 400, and so is `required` / a named function without tools.
//! Every error is `ApiError::invalid` naming the parameter at fault.

use serde_json::{Map, Value, json};

use crate::api::error::ApiError;

/// One function tool.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionTool {
    /// The function's name (`[A-Za-z0-9_-]{1,64}`).
    pub name: String,
    /// What it does, for the model.
    pub description: Option<String>,
    /// JSON schema of the arguments object.
    pub parameters: Value,
    /// OpenAI's `strict` flag (the arguments are constrained either way when forced).
    pub strict: bool,
}

/// What the model may or must do with the tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ToolChoice {
    /// Never call a tool; output is plain content.
    None,
    /// The model decides.
    Auto,
    /// At least one call to any tool.
    Required,
    /// A call to this function.
    Function(String),
}

/// The validated tools of one request.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSet {
    /// The tools, in request order (possibly empty with `ToolChoice::None`/`Auto`).
    pub tools: Vec<FunctionTool>,
    /// `tool_choice` (default `Auto`).
    pub choice: ToolChoice,
    /// `parallel_tool_calls` (default true): whether more than one call may be made.
    pub parallel: bool,
}

/// Which request shape the tools come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Chat completions: `{"type":"function","function":{"name",...}}`.
    Chat,
    /// Responses API: `{"type":"function","name",...}`.
    Responses,
}

/// The request's raw tool fields (absent ones `None`).
#[derive(Debug, Clone, Copy, Default)]
pub struct ToolFields<'a> {
    /// `tools`.
    pub tools: Option<&'a Value>,
    /// `tool_choice`.
    pub tool_choice: Option<&'a Value>,
    /// `parallel_tool_calls`.
    pub parallel_tool_calls: Option<&'a Value>,
    /// Legacy `functions` (chat only).
    pub functions: Option<&'a Value>,
    /// Legacy `function_call` (chat only).
    pub function_call: Option<&'a Value>,
}

impl ToolSet {
    /// The tool named `name`.
    pub fn get(&self, name: &str) -> Option<&FunctionTool> {
        self.tools.iter().find(|t| t.name == name)
    }

    /// The tools a call may name: the chosen function only, or all of them.
    pub fn allowed(&self) -> Vec<&FunctionTool> {
        match &self.choice {
            ToolChoice::Function(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            ToolChoice::None => Vec::new(),
            _ => self.tools.iter().collect(),
        }
    }

    /// Whether a call is mandatory (`required` or a named function): constrain with
    /// [`super::grammar::forced_lark`].
    pub fn forced(&self) -> bool {
        matches!(self.choice, ToolChoice::Required | ToolChoice::Function(_))
    }

    /// Whether the output should be searched for calls (tools given, choice not `none`).
    pub fn active(&self) -> bool {
        self.choice != ToolChoice::None && !self.tools.is_empty()
    }

    /// The tool list as chat templates expect it: OpenAI's chat-shape JSON array.
    pub fn to_chat_json(&self) -> Value {
        Value::Array(
            self.tools
                .iter()
                .map(|t| {
                    let mut f = Map::new();
                    f.insert("name".into(), t.name.clone().into());
                    if let Some(d) = &t.description {
                        f.insert("description".into(), d.clone().into());
                    }
                    f.insert("parameters".into(), t.parameters.clone());
                    json!({"type": "function", "function": f})
                })
                .collect(),
        )
    }
}

/// Parses and validates the tool fields. `None`: no tools and nothing forced (the
/// request is a plain chat request).
pub fn tool_set(fields: &ToolFields, shape: Shape) -> Result<Option<ToolSet>, ApiError> {
    fn given(v: Option<&Value>) -> Option<&Value> {
        v.filter(|v| !v.is_null())
    }
    let (tools, choice, legacy) = match (given(fields.tools), given(fields.functions)) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "Give `tools` or the deprecated `functions`, not both.",
                Some("functions"),
            ));
        }
        (None, Some(f)) => (functions(f)?, given(fields.function_call), true),
        (t, None) => (
            t.map(|t| tools(t, shape)).transpose()?.unwrap_or_default(),
            given(fields.tool_choice),
            false,
        ),
    };
    let choice_param = if legacy {
        "function_call"
    } else {
        "tool_choice"
    };
    let choice = match choice {
        None => ToolChoice::Auto,
        Some(c) => tool_choice(c, choice_param)?,
    };
    if let ToolChoice::Function(name) = &choice
        && !tools.iter().any(|t| &t.name == name)
    {
        let msg = if tools.is_empty() {
            format!("`{choice_param}` names the function `{name}`, but no tools were given.")
        } else {
            format!("`{choice_param}` names the function `{name}`, which is not in `tools`.")
        };
        return Err(ApiError::invalid(msg, Some(choice_param)));
    }
    if choice == ToolChoice::Required && tools.is_empty() {
        return Err(ApiError::invalid(
            format!("`{choice_param}` is `required`, but no tools were given."),
            Some(choice_param),
        ));
    }
    let parallel = match given(fields.parallel_tool_calls) {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(ApiError::invalid(
                "`parallel_tool_calls` must be a boolean.",
                Some("parallel_tool_calls"),
            ));
        }
    };
    if tools.is_empty() && matches!(choice, ToolChoice::Auto | ToolChoice::None) {
        return Ok(None);
    }
    Ok(Some(ToolSet {
        tools,
        choice,
        parallel,
    }))
}

fn tools(v: &Value, shape: Shape) -> Result<Vec<FunctionTool>, ApiError> {
    let bad = |m: String| ApiError::invalid(m, Some("tools"));
    let Some(items) = v.as_array() else {
        return Err(bad("`tools` must be an array.".into()));
    };
    let mut out: Vec<FunctionTool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(obj) = item.as_object() else {
            return Err(bad(format!("tools[{i}] must be an object.")));
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("function") => {}
            Some(other) => {
                return Err(bad(format!(
                    "tools[{i}].type `{other}` is not supported; only `function` tools are."
                )));
            }
            None => return Err(bad(format!("tools[{i}].type must be `function`."))),
        }
        let (spec, at) = match shape {
            Shape::Chat => match obj.get("function").and_then(Value::as_object) {
                Some(f) => (f, format!("tools[{i}].function")),
                None => return Err(bad(format!("tools[{i}].function must be an object."))),
            },
            Shape::Responses => (obj, format!("tools[{i}]")),
        };
        let tool = function(spec, &at, "tools")?;
        if out.iter().any(|t| t.name == tool.name) {
            return Err(bad(format!(
                "tools[{i}]: the function name `{}` is used twice.",
                tool.name
            )));
        }
        out.push(tool);
    }
    Ok(out)
}

/// Legacy `functions`: an array of bare function specs.
fn functions(v: &Value) -> Result<Vec<FunctionTool>, ApiError> {
    let bad = |m: String| ApiError::invalid(m, Some("functions"));
    let Some(items) = v.as_array() else {
        return Err(bad("`functions` must be an array.".into()));
    };
    let mut out: Vec<FunctionTool> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let Some(spec) = item.as_object() else {
            return Err(bad(format!("functions[{i}] must be an object.")));
        };
        let tool = function(spec, &format!("functions[{i}]"), "functions")?;
        if out.iter().any(|t| t.name == tool.name) {
            return Err(bad(format!(
                "functions[{i}]: the function name `{}` is used twice.",
                tool.name
            )));
        }
        out.push(tool);
    }
    Ok(out)
}

/// One function spec (`name`, `description`, `parameters`, `strict`) found at `at`.
fn function(spec: &Map<String, Value>, at: &str, param: &str) -> Result<FunctionTool, ApiError> {
    let bad = |m: String| ApiError::invalid(m, Some(param));
    let name = match spec.get("name") {
        Some(Value::String(s)) => s.clone(),
        _ => return Err(bad(format!("{at}.name must be a string."))),
    };
    check_name(&name).map_err(|why| bad(format!("{at}.name `{name}` {why}")))?;
    let description = match spec.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(bad(format!("{at}.description must be a string."))),
    };
    let parameters = match spec.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            return Err(bad(format!(
                "{at}.parameters must be a JSON schema object."
            )));
        }
    };
    let strict = match spec.get("strict") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad(format!("{at}.strict must be a boolean."))),
    };
    Ok(FunctionTool {
        name,
        description,
        parameters,
        strict,
    })
}

/// `Err(why)` unless `name` matches `[A-Za-z0-9_-]{1,64}`.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 64 {
        return Err("must be 1 to 64 characters long.");
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !name.chars().all(ok) {
        return Err("may contain only letters, digits, `_` and `-`.");
    }
    Ok(())
}

fn tool_choice(v: &Value, param: &str) -> Result<ToolChoice, ApiError> {
    let bad = |m: String| ApiError::invalid(m, Some(param));
    let named = |name: Option<&Value>| match name {
        Some(Value::String(n)) => Ok(ToolChoice::Function(n.clone())),
        _ => Err(bad(format!(
            "`{param}` names no function (`name` missing)."
        ))),
    };
    match v {
        Value::String(s) => match s.as_str() {
            "none" => Ok(ToolChoice::None),
            "auto" => Ok(ToolChoice::Auto),
            "required" => Ok(ToolChoice::Required),
            other => Err(bad(format!(
                "`{param}` `{other}` is not one of `none`, `auto`, `required` or a function."
            ))),
        },
        // Legacy `function_call`: `{"name": ..}`.
        Value::Object(o) if param == "function_call" => named(o.get("name")),
        Value::Object(o) => {
            if o.get("type").and_then(Value::as_str) != Some("function") {
                return Err(bad(format!(
                    "`{param}` must have `type: \"function\"` (other tool types are not supported)."
                )));
            }
            // Chat nests the name under `function`; the Responses API puts it flat
            // (accepted in both).
            match o.get("function") {
                Some(f) => named(f.get("name")),
                None => named(o.get("name")),
            }
        }
        _ => Err(bad(format!("`{param}` must be a string or an object."))),
    }
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
