//! Unit tests of `parse`: recorded outputs of each model family, as the models print
//! them, and the tolerances.

use super::*;
use crate::api::tools::request::{FunctionTool, ToolChoice};
use serde_json::json;

pub(crate) fn weather_tools() -> ToolSet {
    let tool = |name: &str| FunctionTool {
        name: name.into(),
        description: None,
        parameters: json!({"type": "object", "properties": {"city": {"type": "string"}},
                           "required": ["city"]}),
        strict: false,
    };
    ToolSet {
        tools: vec![tool("get_weather"), tool("get_time")],
        choice: ToolChoice::Auto,
        parallel: true,
    }
}

fn call(name: &str, arguments: &str) -> ParsedCall {
    ParsedCall {
        name: name.into(),
        arguments: arguments.into(),
    }
}

const PARIS: &str = r#"{"city":"Paris"}"#;

fn calls_only(format: ToolFormat, text: &str, want: &[ParsedCall]) {
    let p = parse(format, text, &weather_tools());
    assert_eq!(p.calls, want, "{format:?} {text:?}");
    assert_eq!(p.content, None, "{format:?} {text:?}");
}

#[test]
fn hermes_qwen_outputs() {
    let one = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    calls_only(ToolFormat::Hermes, one, &[call("get_weather", PARIS)]);
    let two = format!(
        "{one}\n<tool_call>\n{{\"name\": \"get_time\", \"arguments\": {{\"city\": \"Tokyo\"}}}}\n</tool_call>"
    );
    calls_only(
        ToolFormat::Hermes,
        &two,
        &[
            call("get_weather", PARIS),
            call("get_time", r#"{"city":"Tokyo"}"#),
        ],
    );
    // Qwen3 thinks first; text around calls is content.
    let text = format!("<think>\nThe user wants weather.\n</think>\n\nLet me check.\n{one}");
    let p = parse(ToolFormat::Hermes, &text, &weather_tools());
    assert_eq!(p.calls, [call("get_weather", PARIS)]);
    assert_eq!(
        p.content.as_deref(),
        Some("<think>\nThe user wants weather.\n</think>\n\nLet me check.\n")
    );
    // No closing tag at the end of the output; fenced JSON; arguments as a string.
    calls_only(
        ToolFormat::Hermes,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
        &[call("get_weather", PARIS)],
    );
    calls_only(
        ToolFormat::Hermes,
        "<tool_call>\n```json\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n```\n</tool_call>",
        &[call("get_weather", PARIS)],
    );
    calls_only(
        ToolFormat::Hermes,
        r#"<tool_call>{"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}</tool_call>"#,
        &[call("get_weather", PARIS)],
    );
}

#[test]
fn unknown_or_broken_calls_stay_content() {
    for text in [
        "<tool_call>\n{\"name\": \"launch_rockets\", \"arguments\": {}}\n</tool_call>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \n</tool_call>",
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": [1]}\n</tool_call>",
        "<tool_call>\nnot json\n</tool_call>",
    ] {
        let p = parse(ToolFormat::Hermes, text, &weather_tools());
        assert!(p.calls.is_empty(), "{text}");
        assert_eq!(p.content.as_deref(), Some(text));
    }
    // A bad block does not hide a good one after it.
    let text = "<tool_call>oops</tool_call> then <tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>";
    let p = parse(ToolFormat::Hermes, text, &weather_tools());
    assert_eq!(p.calls, [call("get_time", "{}")]);
    assert_eq!(
        p.content.as_deref(),
        Some("<tool_call>oops</tool_call> then ")
    );
}

#[test]
fn llama3_outputs() {
    let bare = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}"#;
    calls_only(ToolFormat::Llama3, bare, &[call("get_weather", PARIS)]);
    calls_only(
        ToolFormat::Llama3,
        &format!("<|python_tag|>{bare}"),
        &[call("get_weather", PARIS)],
    );
    let two = r#"{"name": "get_weather", "parameters": {"city": "Paris"}}; {"name": "get_time", "parameters": {"city": "Tokyo"}}"#;
    calls_only(
        ToolFormat::Llama3,
        two,
        &[
            call("get_weather", PARIS),
            call("get_time", r#"{"city":"Tokyo"}"#),
        ],
    );
    let p = parse(
        ToolFormat::Llama3,
        &format!("Let me look that up.<|python_tag|>{bare}"),
        &weather_tools(),
    );
    assert_eq!(p.calls, [call("get_weather", PARIS)]);
    assert_eq!(p.content.as_deref(), Some("Let me look that up."));
    // A JSON object in the middle of prose is not a call without the tag.
    let prose = format!("Here is the format: {bare}");
    let p = parse(ToolFormat::Llama3, &prose, &weather_tools());
    assert!(p.calls.is_empty());
    assert_eq!(p.content.as_deref(), Some(prose.as_str()));
    // A plain JSON answer that is not a call stays content.
    let p = parse(ToolFormat::Llama3, r#"{"answer": 42}"#, &weather_tools());
    assert!(p.calls.is_empty());
    calls_only(
        ToolFormat::Llama3,
        &format!("```json\n{bare}\n```"),
        &[call("get_weather", PARIS)],
    );
}

#[test]
fn mistral_outputs() {
    let v3 = r#"[TOOL_CALLS] [{"name": "get_weather", "arguments": {"city": "Paris"}}]"#;
    calls_only(ToolFormat::Mistral, v3, &[call("get_weather", PARIS)]);
    let v3_two = r#"[TOOL_CALLS][{"name": "get_weather", "arguments": {"city": "Paris"}}, {"name": "get_time", "arguments": {"city": "Tokyo"}}]"#;
    calls_only(
        ToolFormat::Mistral,
        v3_two,
        &[
            call("get_weather", PARIS),
            call("get_time", r#"{"city":"Tokyo"}"#),
        ],
    );
    let v11 = r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}"#;
    calls_only(ToolFormat::MistralArgs, v11, &[call("get_weather", PARIS)]);
    calls_only(ToolFormat::Mistral, v11, &[call("get_weather", PARIS)]);
    let v11_two = r#"[TOOL_CALLS]get_weather[ARGS]{"city": "Paris"}[TOOL_CALLS]get_time[CALL_ID]a1b2c3d4e[ARGS]{"city": "Tokyo"}"#;
    calls_only(
        ToolFormat::MistralArgs,
        v11_two,
        &[
            call("get_weather", PARIS),
            call("get_time", r#"{"city":"Tokyo"}"#),
        ],
    );
    let p = parse(
        ToolFormat::MistralArgs,
        &format!("I will check the weather.{v11}"),
        &weather_tools(),
    );
    assert_eq!(p.calls, [call("get_weather", PARIS)]);
    assert_eq!(p.content.as_deref(), Some("I will check the weather."));
    let unknown = r#"[TOOL_CALLS]nope[ARGS]{"city": "Paris"}"#;
    let p = parse(ToolFormat::MistralArgs, unknown, &weather_tools());
    assert!(p.calls.is_empty());
    assert_eq!(p.content.as_deref(), Some(unknown));
}

#[test]
fn generic_outputs() {
    let tagged = "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    calls_only(ToolFormat::Generic, tagged, &[call("get_weather", PARIS)]);
    calls_only(
        ToolFormat::Generic,
        r#"  {"name": "get_weather", "arguments": {"city": "Paris"}}"#,
        &[call("get_weather", PARIS)],
    );
    calls_only(
        ToolFormat::Generic,
        r#"{"function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}"#,
        &[call("get_weather", PARIS)],
    );
    let p = parse(ToolFormat::Generic, "Just text.", &weather_tools());
    assert_eq!(
        p,
        Parsed {
            content: Some("Just text.".into()),
            calls: vec![]
        }
    );
}

#[test]
fn inactive_tools_leave_everything_content() {
    let mut tools = weather_tools();
    tools.choice = ToolChoice::None;
    let text = "<tool_call>{\"name\": \"get_weather\", \"arguments\": {}}</tool_call>";
    let p = parse(ToolFormat::Hermes, text, &tools);
    assert!(p.calls.is_empty());
    assert_eq!(p.content.as_deref(), Some(text));
    // A named choice allows only that tool.
    tools.choice = ToolChoice::Function("get_time".into());
    assert!(parse(ToolFormat::Hermes, text, &tools).calls.is_empty());
}
