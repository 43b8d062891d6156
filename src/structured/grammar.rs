//! What a request constrains its output to, independent of the API that asked, and how
//! each kind becomes an llguidance grammar.
//!
//! JSON is generated compactly but readably (`{"a": 1, "b": [2, 3]}`: `", "` and `": "`
//! separators, no free whitespace), unless the schema carries its own `x-guidance`
//! options: free whitespace lets a small model wander into endless newlines, and the
//! output parses the same either way.

use llguidance::api::TopLevelGrammar;
use serde_json::{Value, json};

/// A constraint on the generated text.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (OpenAI `{"type": "json_object"}`).
    JsonObject,
    /// JSON matching this schema (OpenAI `json_schema`, vLLM `guided_json`).
    JsonSchema(Value),
    /// Text matching this regular expression in full (vLLM `guided_regex`).
    Regex(String),
    /// Exactly one of these strings (vLLM `guided_choice`).
    Choice(Vec<String>),
    /// A grammar in llguidance's Lark dialect (vLLM `guided_grammar`).
    Lark(String),
}

/// The JSON layout options (see the module docs).
pub fn json_options() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ", ",
        "key_separator": ": ",
    })
}

/// `schema` with [`json_options`] unless it sets its own.
pub fn with_json_options(mut schema: Value) -> Value {
    if let Some(obj) = schema.as_object_mut()
        && !obj.contains_key("x-guidance")
    {
        obj.insert("x-guidance".into(), json_options());
    }
    schema
}

impl GrammarSpec {
    /// Whether the output is JSON (or a grammar embedding JSON, like a tool call), so
    /// that it can be steered shut at the end of the token budget.
    pub fn is_json(&self) -> bool {
        match self {
            GrammarSpec::JsonObject | GrammarSpec::JsonSchema(_) => true,
            GrammarSpec::Lark(src) => src.contains("%json"),
            GrammarSpec::Regex(_) | GrammarSpec::Choice(_) => false,
        }
    }

    /// The llguidance grammar of this spec.
    pub fn to_grammar(&self) -> TopLevelGrammar {
        match self {
            GrammarSpec::JsonObject => {
                TopLevelGrammar::from_json_schema(with_json_options(json!({"type": "object"})))
            }
            GrammarSpec::JsonSchema(schema) => {
                TopLevelGrammar::from_json_schema(with_json_options(schema.clone()))
            }
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Choice(choices) => TopLevelGrammar::from_lark(choice_lark(choices)),
            GrammarSpec::Lark(src) => TopLevelGrammar::from_lark(src.clone()),
        }
    }
}

/// `start: "a" | "b" | …` with each choice as a JSON-escaped literal.
fn choice_lark(choices: &[String]) -> String {
    let alts: Vec<String> = choices
        .iter()
        .map(|c| serde_json::to_string(c).expect("a string serializes"))
        .collect();
    format!("start: {}\n", alts.join(" | "))
}
