//! Unit tests of `grammar`: every grammar compiles with llguidance; the recorded outputs
//! are accepted byte by byte (single-byte vocabulary: token id = byte), wrong names and
//! wrong argument types are rejected, and accepted text parses back.

use super::*;
use crate::api::tools::parse::parse;
use crate::api::tools::parse::tests::weather_tools;
use crate::api::tools::request::ToolChoice;
use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::ApproximateTokEnv;
use llguidance::{Matcher, ParserFactory};

/// A token of the test: a byte, or a special token id.
#[derive(Clone, Copy)]
enum Tok {
    Bytes(&'static str),
    Special(u32),
}

fn matcher(lark: &str) -> Matcher {
    let env = ApproximateTokEnv::single_byte_env();
    let mut factory = ParserFactory::new_simple(&env).expect("factory");
    factory.quiet();
    let parser = factory.create_parser(TopLevelGrammar::from_lark(lark.to_string()));
    let m = Matcher::new(parser);
    assert!(
        !m.is_error(),
        "grammar does not compile: {:?}\n{lark}",
        m.get_error()
    );
    m
}

/// Whether the grammar accepts exactly `toks` (each allowed by the mask, accepting at
/// the end).
fn accepts(lark: &str, toks: &[Tok]) -> bool {
    let mut m = matcher(lark);
    let ids: Vec<u32> = toks
        .iter()
        .flat_map(|t| match t {
            Tok::Bytes(s) => s.bytes().map(u32::from).collect::<Vec<_>>(),
            Tok::Special(id) => vec![*id],
        })
        .collect();
    for id in ids {
        let Ok(mask) = m.compute_mask() else {
            return false;
        };
        if !mask.is_allowed(id) || m.consume_token(id).is_err() {
            return false;
        }
    }
    m.is_accepting().unwrap_or(false)
}

fn text(lark: &str, s: &'static str) -> bool {
    accepts(lark, &[Tok::Bytes(s)])
}

fn forced(format: ToolFormat, parallel: bool) -> (String, ToolSet) {
    let mut tools = weather_tools();
    tools.choice = ToolChoice::Required;
    tools.parallel = parallel;
    (forced_lark(format, &tools, &SpecialMarkers::none()), tools)
}

fn parses_back(format: ToolFormat, s: &str, tools: &ToolSet, n: usize) {
    let p = parse(format, s, tools);
    assert_eq!(p.calls.len(), n, "{format:?}: {s}");
    assert_eq!(p.content, None, "{format:?}: {s}");
}

const HERMES: &str =
    "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
const HERMES_TWO: &str = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>";
const LLAMA: &str = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
const LLAMA_TWO: &str = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {"city": "Oslo"}}"#;
const MISTRAL: &str = r#"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]"#;
const MISTRAL_TWO: &str = r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"city": "Oslo"}}]"#;
const ARGS: &str = r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}"#;
const ARGS_TWO: &str =
    r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[ARGS]{"city": "Oslo"}"#;

#[test]
fn recorded_outputs_are_accepted_and_parse_back() {
    for (format, one, two) in [
        (ToolFormat::Hermes, HERMES, HERMES_TWO),
        (ToolFormat::Generic, HERMES, HERMES_TWO),
        (ToolFormat::Llama3, LLAMA, LLAMA_TWO),
        (ToolFormat::Mistral, MISTRAL, MISTRAL_TWO),
        (ToolFormat::MistralArgs, ARGS, ARGS_TWO),
    ] {
        let (lark, tools) = forced(format, true);
        assert!(text(&lark, one), "{format:?} rejects {one}\n{lark}");
        assert!(text(&lark, two), "{format:?} rejects {two}\n{lark}");
        parses_back(format, one, &tools, 1);
        parses_back(format, two, &tools, 2);
        let (single, _) = forced(format, false);
        assert!(text(&single, one), "{format:?} single rejects {one}");
        assert!(!text(&single, two), "{format:?} single accepts two calls");
        // Not a call at all, or an empty output.
        assert!(!text(&lark, "Hello"), "{format:?}");
        assert!(!text(&lark, ""), "{format:?}");
    }
}

#[test]
fn wrong_names_and_argument_types_are_rejected() {
    let (hermes, _) = forced(ToolFormat::Hermes, true);
    assert!(!text(
        &hermes,
        "<tool_call>\n{\"name\": \"get_stock\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>"
    ));
    assert!(!text(
        &hermes,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": 3}}\n</tool_call>"
    ));
    // `city` is required.
    assert!(!text(
        &hermes,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {}}\n</tool_call>"
    ));
    let (llama, _) = forced(ToolFormat::Llama3, true);
    assert!(!text(
        &llama,
        r#"{"name": "get_weather", "parameters": {"city": true}}"#
    ));
    assert!(!text(
        &llama,
        r#"{"name": "nope", "parameters": {"city": "Paris"}}"#
    ));
    let (args, _) = forced(ToolFormat::MistralArgs, true);
    assert!(!text(&args, r#"[TOOL_CALLS]nope[ARGS]{"city": "Paris"}"#));
    assert!(!text(
        &args,
        r#"[TOOL_CALLS]get_weather[ARGS]{"city": ["Paris"]}"#
    ));
}

#[test]
fn a_named_function_allows_only_it() {
    let mut tools = weather_tools();
    tools.choice = ToolChoice::Function("get_time".into());
    let lark = forced_lark(ToolFormat::Hermes, &tools, &SpecialMarkers::none());
    assert!(!text(&lark, HERMES));
    assert!(text(
        &lark,
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {\"city\": \"Oslo\"}}\n</tool_call>"
    ));
}

#[test]
fn special_markers_are_tokens_not_text() {
    // The single-byte test vocabulary has special tokens 256.. (`<|tool|>`, ...); stand
    // them in for Mistral's control tokens.
    let mut tools = weather_tools();
    tools.choice = ToolChoice::Required;
    let special = SpecialMarkers::none()
        .with("[TOOL_CALLS]", 256)
        .with("[ARGS]", 257);
    let lark = forced_lark(ToolFormat::MistralArgs, &tools, &special);
    let call = [
        Tok::Special(256),
        Tok::Bytes("get_weather"),
        Tok::Special(257),
        Tok::Bytes(r#"{"city": "Paris"}"#),
    ];
    assert!(accepts(&lark, &call), "{lark}");
    assert!(
        !text(&lark, ARGS),
        "the marker spelled as text is not the token"
    );
    let looked_up = SpecialMarkers::of(ToolFormat::MistralArgs, |m| (m == "[ARGS]").then_some(9));
    assert_eq!(looked_up, SpecialMarkers::none().with("[ARGS]", 9));
}

#[test]
fn parameters_with_defs_and_no_properties_compile() {
    let mut tools = weather_tools();
    tools.tools[0].parameters = serde_json::json!({
        "type": "object",
        "properties": {"unit": {"$ref": "#/$defs/Unit"}},
        "required": ["unit"],
        "$defs": {"Unit": {"type": "string", "enum": ["C", "F"]}}
    });
    tools.tools[1].parameters = serde_json::json!({"type": "object", "properties": {}});
    tools.choice = ToolChoice::Required;
    let lark = forced_lark(ToolFormat::Hermes, &tools, &SpecialMarkers::none());
    assert!(text(
        &lark,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"C\"}}\n</tool_call>"
    ));
    assert!(!text(
        &lark,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"unit\": \"K\"}}\n</tool_call>"
    ));
    assert!(text(
        &lark,
        "<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>"
    ));
}
