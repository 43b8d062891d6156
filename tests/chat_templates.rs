//! Every real chat template llama.cpp ships (`models/templates/*.jinja`, from the
//! `llama-cpp-python` sdist) renders a system + user + assistant + user conversation
//! with the generation prompt, and, where the template knows about tools, a tool list.
//! With tools, a tool round trip (tools + an assistant tool call + a tool result, as
//! OpenAI clients send them) renders through `api::tools::render::prepare` for every
//! template, natively or through the generic fallback, and the known families are
//! detected as their native tool-call format.

mod common;

use std::path::PathBuf;

use common::llama_cpp::models_dir;
use ferrite::api::tools::ToolFormat;
use ferrite::api::tools::render::{ToolSupport, prepare};
use ferrite::api::tools::request::{Shape, ToolFields, ToolSet, tool_set};
use ferrite::api::validate;
use ferrite::model::chat_template::{ChatMessage, ChatTemplate};
use serde_json::json;

fn templates() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(models_dir().join("templates"))
        .expect("templates dir")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "jinja"))
        .collect();
    files.sort();
    files
}

fn conversation() -> Vec<ChatMessage> {
    vec![
        ChatMessage::text("system", "SYSTEM-TEXT be brief"),
        ChatMessage::text("user", "FIRST-QUESTION hello"),
        ChatMessage::text("assistant", "ASSISTANT-ANSWER hi there"),
        ChatMessage::text("user", "SECOND-QUESTION how are you"),
    ]
}

fn tools() -> serde_json::Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Weather in a city",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string", "description": "City name"}},
                "required": ["city"]
            }
        }
    }])
}

/// Templates that read a variable of their vendor's own API besides the standard ones:
/// the caller passes it through `render_with`'s `extra` (Jinja2 fails on them too).
fn extra_for(name: &str) -> serde_json::Map<String, serde_json::Value> {
    let mut extra = serde_json::Map::new();
    if name == "fireworks-ai-llama-3-firefunction-v2.jinja" {
        // Fireworks passes the function specs as a JSON string named `functions`, and
        // the date as `datetime`.
        extra.insert("functions".into(), tools().to_string().into());
        extra.insert("datetime".into(), "26 Jul 2024".into());
    }
    extra
}

/// Renders one template; `Err` describes what went wrong.
fn check(path: &PathBuf) -> Result<(), String> {
    let source = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let t = ChatTemplate::new(&source, "<s>", "</s>").map_err(|e| format!("compile: {e}"))?;
    let none = extra_for(&path.file_name().unwrap().to_string_lossy());
    let out = t
        .render_with(&conversation(), None, true, &none)
        .map_err(|e| format!("render: {e}"))?;
    for needle in [
        "SYSTEM-TEXT",
        "FIRST-QUESTION",
        "ASSISTANT-ANSWER",
        "SECOND-QUESTION",
    ] {
        if !out.contains(needle) {
            return Err(format!("output lacks {needle}:\n{out}"));
        }
    }
    if out.rfind("SECOND-QUESTION") < out.rfind("ASSISTANT-ANSWER") {
        return Err(format!("turns out of order:\n{out}"));
    }
    if source.contains("tools") {
        let tools = tools();
        let out = t
            .render_with(&conversation(), Some(&tools), true, &none)
            .map_err(|e| format!("render with tools: {e}"))?;
        if !out.contains("get_weather") {
            return Err(format!("tools given but not rendered:\n{out}"));
        }
    }
    Ok(())
}

#[test]
fn every_llama_cpp_chat_template_renders_a_conversation() {
    let files = templates();
    assert!(
        files.len() >= 50,
        "expected llama.cpp's templates, found {}",
        files.len()
    );
    let mut failed = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match check(path) {
            Ok(()) => eprintln!("pass  {name}"),
            Err(why) => {
                eprintln!("FAIL  {name}: {why}");
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} templates fail: {failed:?}",
        failed.len(),
        files.len()
    );
}

fn tool_set_of(tools: &serde_json::Value) -> ToolSet {
    let fields = ToolFields {
        tools: Some(tools),
        ..ToolFields::default()
    };
    tool_set(&fields, Shape::Chat)
        .expect("valid tools")
        .expect("tools given")
}

/// A tool round trip as an OpenAI client sends it (OpenAI-style call id).
fn round_trip() -> Vec<ChatMessage> {
    validate::messages(&[
        json!({"role": "system", "content": "SYSTEM-TEXT be brief"}),
        json!({"role": "user", "content": "FIRST-QUESTION weather?"}),
        json!({"role": "assistant", "content": null, "tool_calls": [{
            "id": "call_abc123XYZ789", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\": \"ARG-PARIS\"}"}
        }]}),
        json!({"role": "tool", "tool_call_id": "call_abc123XYZ789", "content": "TOOL-RESULT 18C"}),
    ])
    .expect("valid messages")
}

/// Renders the round trip through `prepare`; `Err` describes what went wrong.
fn check_tools(path: &PathBuf) -> Result<(), String> {
    let source = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let t = ChatTemplate::new(&source, "<s>", "</s>").map_err(|e| format!("compile: {e}"))?;
    let extra = extra_for(&path.file_name().unwrap().to_string_lossy());
    let support = ToolSupport::of(&t, |_| false);
    let tools = tool_set_of(&tools());
    let p = prepare(&support, round_trip(), Some(&tools));
    if support.tools != p.tools_json.is_some() {
        return Err(format!("{support:?} but tools_json {:?}", p.tools_json));
    }
    let out = t
        .render_with(&p.messages, p.tools_json.as_ref(), true, &extra)
        .map_err(|e| format!("render ({support:?}): {e}"))?;
    for needle in ["get_weather", "ARG-PARIS", "TOOL-RESULT", "FIRST-QUESTION"] {
        if !out.contains(needle) {
            return Err(format!("output lacks {needle} ({support:?}):\n{out}"));
        }
    }
    Ok(())
}

#[test]
fn every_llama_cpp_chat_template_renders_a_tool_round_trip() {
    let files = templates();
    assert!(files.len() >= 50, "found {} templates", files.len());
    let mut failed = Vec::new();
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match check_tools(path) {
            Ok(()) => eprintln!("pass  {name}"),
            Err(why) => {
                eprintln!("FAIL  {name}: {why}");
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {} templates fail the tool round trip: {failed:?}",
        failed.len(),
        files.len()
    );
}

#[test]
fn known_templates_are_detected_as_their_tool_format() {
    let dir = models_dir().join("templates");
    for (file, want) in [
        ("Qwen-Qwen2.5-7B-Instruct.jinja", ToolFormat::Hermes),
        ("Qwen-Qwen3-0.6B.jinja", ToolFormat::Hermes),
        ("Qwen-QwQ-32B.jinja", ToolFormat::Hermes),
        (
            "NousResearch-Hermes-2-Pro-Llama-3-8B-tool_use.jinja",
            ToolFormat::Hermes,
        ),
        (
            "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja",
            ToolFormat::Hermes,
        ),
        ("meta-llama-Llama-3.1-8B-Instruct.jinja", ToolFormat::Llama3),
        ("meta-llama-Llama-3.2-3B-Instruct.jinja", ToolFormat::Llama3),
        (
            "meta-llama-Llama-3.3-70B-Instruct.jinja",
            ToolFormat::Llama3,
        ),
        (
            "mistralai-Mistral-Nemo-Instruct-2407.jinja",
            ToolFormat::Mistral,
        ),
        (
            "Mistral-Small-3.2-24B-Instruct-2506.jinja",
            ToolFormat::MistralArgs,
        ),
        (
            "unsloth-mistral-Devstral-Small-2507.jinja",
            ToolFormat::MistralArgs,
        ),
        ("google-gemma-2-2b-it.jinja", ToolFormat::Generic),
        ("microsoft-Phi-3.5-mini-instruct.jinja", ToolFormat::Generic),
    ] {
        let source = std::fs::read_to_string(dir.join(file)).expect(file);
        let t = ChatTemplate::new(&source, "<s>", "</s>").expect(file);
        let support = ToolSupport::of(&t, |_| false);
        assert_eq!(support.format, want, "{file}");
        // Templates of a native format render the tool list themselves.
        assert_eq!(support.tools, want != ToolFormat::Generic, "{file}");
    }
}
