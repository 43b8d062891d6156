use super::*;

fn msg(role: &str, content: &str) -> ChatMessage {
    ChatMessage::text(role, content)
}

#[test]
fn chatml_renders_generation_prompt() {
    let t = ChatTemplate::chatml("", "");
    let out = t.render(&[msg("user", "hi")], true).unwrap();
    assert_eq!(
        out,
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    );
}

#[test]
fn python_methods_and_raise_exception_work() {
    let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first must be user') }}{% endif %}{{ messages[0]['content'].strip() }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(t.render(&[msg("user", "  x  ")], false).unwrap(), "x");
    let err = t.render(&[msg("assistant", "x")], false).unwrap_err();
    assert!(
        matches!(&err, TemplateError::Rejected(m) if m == "first must be user"),
        "{err:?}"
    );
}

#[test]
fn a_missing_template_says_so() {
    let err = ChatTemplate::missing()
        .render(&[msg("user", "hi")], true)
        .unwrap_err();
    assert!(matches!(err, TemplateError::Missing));
    assert!(err.to_string().contains("/v1/completions"), "{err}");
}

#[test]
fn system_is_folded_into_the_first_user_turn_when_the_template_refuses_it() {
    let src = "{% for m in messages %}{% if m.role == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}[{{ m.role }}:{{ m.content }}]{% endfor %}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let out = t
        .render(&[msg("system", "be brief"), msg("user", "hi")], false)
        .unwrap();
    assert_eq!(out, "[user:be brief\n\nhi]");
}

#[test]
fn tojson_prints_like_python_and_tools_and_extra_reach_the_template() {
    let src = "{{ tools | tojson }}|{{ tools[0] | tojson(indent=2) }}|{{ flag }}|{{ messages[0].tool_calls is defined }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    let tools = serde_json::json!([{"args": [1, "<a&b>"]}]);
    let extra = serde_json::json!({"flag": true});
    let out = t
        .render_with(
            &[msg("user", "x")],
            Some(&tools),
            false,
            extra.as_object().unwrap(),
        )
        .unwrap();
    assert_eq!(
        out,
        "[{\"args\": [1, \"<a&b>\"]}]|{\n  \"args\": [\n    1,\n    \"<a&b>\"\n  ]\n}|True|False"
    );
}

#[test]
fn namespace_loop_controls_and_strftime_now_are_available() {
    let src = "{% set ns = namespace(n=0) %}{% for m in messages %}{% if loop.index > 1 %}{% break %}{% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}{{ ns.n }} {{ strftime_now('%Y') | length }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(&[msg("user", "a"), msg("user", "b")], false)
            .unwrap(),
        "1 4"
    );
}

#[test]
fn generation_tags_are_dropped_and_none_is_not_iterable() {
    let src = "{% for m in messages %}{%- generation -%}{{ m.content }}{%- endgeneration -%}{% endfor %}|{{ tools is iterable }}";
    let t = ChatTemplate::new(src, "", "").unwrap();
    assert_eq!(
        t.render(&[msg("user", "a"), msg("user", "b")], false)
            .unwrap(),
        "ab|False"
    );
}
