//! Unit tests of `render`: the fallback for a template without tools, the native path,
//! and id shortening.

use super::*;
use crate::api::tools::parse::tests::weather_tools;

fn round_trip() -> Vec<ChatMessage> {
    vec![
        ChatMessage::text("user", "Weather in Paris?"),
        ChatMessage {
            role: "assistant".into(),
            tool_calls: Some(json!([{"id": "call_abc123XYZ789", "type": "function",
                "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}])),
            ..ChatMessage::default()
        },
        ChatMessage {
            role: "tool".into(),
            content: "18C and sunny".into(),
            tool_call_id: Some("call_abc123XYZ789".into()),
            name: Some("get_weather".into()),
            ..ChatMessage::default()
        },
        ChatMessage {
            role: "tool".into(),
            content: "second result".into(),
            tool_call_id: Some("call_abc123XYZ789".into()),
            ..ChatMessage::default()
        },
    ]
}

#[test]
fn chatml_gets_the_generic_fallback() {
    let t = ChatTemplate::chatml("", "");
    let support = ToolSupport::of(&t, |_| false);
    assert_eq!(support.format, ToolFormat::Generic);
    assert!(!support.tools && !support.tool_calls && !support.tool_role);
    let p = prepare(&support, round_trip(), Some(&weather_tools()));
    assert_eq!(p.tools_json, None);
    assert_eq!(p.messages[0].role, "system");
    assert!(p.messages[0].content.contains("\"name\":\"get_weather\""));
    assert!(p.messages[0].content.contains("<tool_call>"));
    assert_eq!(p.messages[2].role, "assistant");
    assert_eq!(p.messages[2].tool_calls, None);
    assert_eq!(
        p.messages[2].content,
        "<tool_call>\n{\"name\":\"get_weather\",\"arguments\":{\"city\":\"Paris\"}}\n</tool_call>"
    );
    // The two results became one user turn.
    assert_eq!(p.messages.len(), 4);
    assert_eq!(p.messages[3].role, "user");
    assert_eq!(
        p.messages[3].content,
        "<tool_response>\n18C and sunny\n</tool_response>\n<tool_response>\nsecond result\n</tool_response>"
    );
    let out = t.render(&p.messages, true).unwrap();
    assert!(out.contains("get_weather") && out.contains("Paris") && out.contains("18C"));
    // The text the model is told to print parses back.
    let parsed = crate::api::tools::parse(p.format, &p.messages[2].content, &weather_tools());
    assert_eq!(parsed.calls[0].name, "get_weather");
}

#[test]
fn fallback_merges_into_a_system_message_and_states_the_choice() {
    let t = ChatTemplate::chatml("", "");
    let mut tools = weather_tools();
    tools.choice = ToolChoice::Function("get_time".into());
    tools.parallel = false;
    let msgs = vec![
        ChatMessage::text("system", "Be brief."),
        ChatMessage::text("user", "hi"),
    ];
    let p = prepare_for(&t, msgs, Some(&tools));
    assert_eq!(p.messages.len(), 2);
    assert!(p.messages[0].content.starts_with("Be brief.\n\n# Tools"));
    assert!(
        p.messages[0]
            .content
            .contains("You must call the function `get_time`.")
    );
    assert!(p.messages[0].content.contains("at most one"));
    // `none`: no instructions at all.
    tools.choice = ToolChoice::None;
    let msgs = vec![ChatMessage::text("user", "hi")];
    assert_eq!(prepare_for(&t, msgs.clone(), Some(&tools)).messages, msgs);
}

#[test]
fn native_templates_get_the_list_and_keep_messages() {
    let src = "{% for m in messages %}{{ m.role }}{% if m.tool_calls %}{{ m.tool_calls|tojson }}{% endif %}{% if m.role == 'tool' %}{{ m.content }}{% endif %}{% endfor %}{% for t in tools %}{{ t.function.name }}{% endfor %}<tool_call>";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let support = ToolSupport::of(&t, |_| false);
    assert_eq!(support.format, ToolFormat::Hermes);
    assert!(support.tools && support.tool_calls && support.tool_role && !support.short_ids);
    let p = prepare(&support, round_trip(), Some(&weather_tools()));
    assert_eq!(p.messages, round_trip());
    assert_eq!(p.tools_json, Some(weather_tools().to_chat_json()));
}

#[test]
fn mistral_ids_are_shortened_consistently() {
    assert_eq!(short_id("call_abc123XYZ789"), "123XYZ789");
    assert_eq!(short_id("ab"), "0000000ab");
    let src = "{% if tools %}[TOOL_CALLS]{% endif %}{{ messages|tojson }} tool_calls 'tool'";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let p = prepare_for(&t, round_trip(), Some(&weather_tools()));
    assert_eq!(p.format, ToolFormat::Mistral);
    assert_eq!(
        p.messages[1].tool_calls.as_ref().unwrap()[0]["id"],
        "123XYZ789"
    );
    assert_eq!(p.messages[2].tool_call_id.as_deref(), Some("123XYZ789"));
}

#[test]
fn call_text_in_each_format_parses_back() {
    let calls = vec![("get_weather".to_string(), json!({"city": "Paris"}))];
    for f in [
        ToolFormat::Hermes,
        ToolFormat::Llama3,
        ToolFormat::Mistral,
        ToolFormat::MistralArgs,
        ToolFormat::Generic,
    ] {
        let text = call_text(f, &calls);
        let p = crate::api::tools::parse(f, &text, &weather_tools());
        assert_eq!(p.calls.len(), 1, "{f:?}: {text}");
        assert_eq!(p.calls[0].arguments, r#"{"city":"Paris"}"#);
    }
}

#[test]
fn templates_that_concatenate_arguments_get_strings() {
    assert!(concatenates_arguments(
        "{{ '\\n' + tool['function']['arguments'] + '\\n' }}"
    ));
    assert!(concatenates_arguments("{{ tool_call.arguments + 'x' }}"));
    assert!(!concatenates_arguments(
        "{{ tool_call.arguments | tojson }}"
    ));
    assert!(!concatenates_arguments(
        "{{ 'x' + tool_call.arguments|tojson }}"
    ));
    assert!(!concatenates_arguments(
        "{{ '\"arguments\": ' + x|tojson }}"
    ));
    let src = "{% for m in messages %}{% for c in m.tool_calls %}{{ c.function.name + c.function.arguments }}{% endfor %}{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let support = ToolSupport::of(&t, |_| false);
    assert!(support.string_arguments && support.tool_calls);
    let p = prepare(&support, round_trip(), None);
    assert_eq!(
        p.messages[1].tool_calls.as_ref().unwrap()[0]["function"]["arguments"],
        json!("{\"city\":\"Paris\"}")
    );
    assert_eq!(
        t.render(&p.messages, false).unwrap(),
        "get_weather{\"city\":\"Paris\"}"
    );
}

#[test]
fn none_content_only_for_templates_that_test_it_alone() {
    assert!(none_content("{% if message['content'] is none %}"));
    assert!(!none_content(
        "{% if message['content'] is none or message['content'] == '' %}"
    ));
    assert!(!none_content("{{ message.content }}"));
    let src = "{% for m in messages %}{% if m.content is none %}NONE{% else %}[{{ m.content }}]{% endif %}{% endfor %} tool_calls";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let p = prepare(&ToolSupport::of(&t, |_| false), round_trip(), None);
    let out = t.render(&p.messages, false).unwrap();
    assert!(out.starts_with("[Weather in Paris?]NONE["), "{out}");
}
