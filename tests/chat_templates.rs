//! Every real chat template llama.cpp ships (`models/templates/*.jinja`, from the
//! `llama-cpp-python` sdist) renders a system + user + assistant + user conversation
//! with the generation prompt, and, where the template knows about tools, a tool list.

mod common;

use std::path::PathBuf;

use common::llama_cpp::models_dir;
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
