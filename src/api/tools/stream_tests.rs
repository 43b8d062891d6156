//! Unit tests of `stream`: for every text and every chunking, streamed content plus
//! `finish` equals `parse`, and nothing that becomes a call is streamed.

use super::*;
use crate::api::tools::parse::parse;
use crate::api::tools::parse::tests::weather_tools;

const CASES: &[(ToolFormat, &str)] = &[
    (
        ToolFormat::Hermes,
        "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>",
    ),
    (
        ToolFormat::Hermes,
        "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\nDone.",
    ),
    (
        ToolFormat::Hermes,
        "\n\n<tool_call>{\"name\": \"get_time\", \"arguments\": {}}</tool_call>\n",
    ),
    (
        ToolFormat::Hermes,
        "Plain answer with a < sign and <tool but no call.",
    ),
    (
        ToolFormat::Hermes,
        "<tool_call>{\"name\": \"nope\"}</tool_call> after",
    ),
    (
        ToolFormat::Llama3,
        "{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
    ),
    (
        ToolFormat::Llama3,
        "<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
    ),
    (
        ToolFormat::Llama3,
        "Sure.<|python_tag|>{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}",
    ),
    (ToolFormat::Llama3, "```python\nprint(1)\n```"),
    (
        ToolFormat::Llama3,
        "```json\n{\"name\": \"get_weather\", \"parameters\": {\"city\": \"Paris\"}}\n```",
    ),
    (ToolFormat::Llama3, "{\"answer\": 1} is JSON"),
    (
        ToolFormat::Mistral,
        "[TOOL_CALLS] [{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}]",
    ),
    (
        ToolFormat::MistralArgs,
        "Checking. [TOOL_CALLS]get_weather[ARGS]{\"city\": \"Paris\"}[TOOL_CALLS]get_time[ARGS]{\"city\": \"Oslo\"}",
    ),
    (
        ToolFormat::MistralArgs,
        "An answer with [brackets] and [TOOL_ but no call",
    ),
    (
        ToolFormat::Generic,
        "  {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}",
    ),
    (
        ToolFormat::Generic,
        "Hi there! <tool_call>{\"name\": \"get_time\", \"arguments\": {\"city\": \"Oslo\"}}</tool_call>",
    ),
    (ToolFormat::Generic, "`code` first"),
    (ToolFormat::Generic, "   "),
    (ToolFormat::Generic, ""),
];

fn run(format: ToolFormat, chunks: &[&str]) -> (String, Parsed) {
    let mut s = ToolStream::new(format, &weather_tools());
    let mut streamed = String::new();
    for c in chunks {
        streamed.push_str(&s.push(c));
    }
    (streamed, s.finish())
}

fn chunkings(text: &str) -> Vec<Vec<&str>> {
    let mut out = vec![vec![text]];
    for size in [1, 2, 3, 7] {
        let mut chunks = Vec::new();
        let mut start = 0;
        while start < text.len() {
            let mut end = (start + size).min(text.len());
            while !text.is_char_boundary(end) {
                end += 1;
            }
            chunks.push(&text[start..end]);
            start = end;
        }
        out.push(chunks);
    }
    out
}

#[test]
fn streamed_plus_finish_equals_parse() {
    for &(format, text) in CASES {
        let whole = parse(format, text, &weather_tools());
        for chunks in chunkings(text) {
            let (streamed, fin) = run(format, &chunks);
            let got = format!("{streamed}{}", fin.content.as_deref().unwrap_or(""));
            assert_eq!(
                got,
                whole.content.clone().unwrap_or_default(),
                "{format:?} {text:?} in {} chunks",
                chunks.len()
            );
            assert_eq!(fin.calls, whole.calls, "{format:?} {text:?}");
            if !whole.calls.is_empty() {
                // No call text leaks into what was streamed.
                assert!(
                    !streamed.contains("get_"),
                    "{format:?} streamed {streamed:?}"
                );
            }
        }
    }
}

#[test]
fn content_streams_before_a_call_and_markers_are_held() {
    let mut s = ToolStream::new(ToolFormat::Hermes, &weather_tools());
    assert_eq!(s.push("Hello <tool"), "Hello ");
    assert_eq!(s.push("_call>{\"name\": \"get_time\", "), "");
    assert_eq!(s.push("\"arguments\": {}}</tool_call>"), "");
    let fin = s.finish();
    assert_eq!(fin.calls.len(), 1);
    assert_eq!(fin.content, None);
    // A held prefix that turns out not to be a marker is released.
    let mut s = ToolStream::new(ToolFormat::Hermes, &weather_tools());
    assert_eq!(s.push("a <tool"), "a ");
    assert_eq!(s.push("box"), "<toolbox");
    // Llama 3: a leading `{` is held to the end; prose streams.
    let mut s = ToolStream::new(ToolFormat::Llama3, &weather_tools());
    assert_eq!(s.push(" {\"name\""), "");
    let mut s = ToolStream::new(ToolFormat::Llama3, &weather_tools());
    assert_eq!(s.push("The weather"), "The weather");
    assert_eq!(s.push(" is {nice}"), " is {nice}");
}

#[test]
fn inactive_tools_stream_everything() {
    let mut tools = weather_tools();
    tools.choice = crate::api::tools::ToolChoice::None;
    let mut s = ToolStream::new(ToolFormat::Hermes, &tools);
    assert_eq!(s.push("<tool_call>{}"), "<tool_call>{}");
    assert_eq!(s.finish().content, None);
}
