//! Chat-template outcomes at the HTTP edge: a model without a template, and a template
//! that refuses the conversation, both answer 400 in OpenAI's shape; completions still work.

use serde_json::json;

use super::*;

#[tokio::test]
async fn a_model_without_a_template_refuses_chat_but_serves_completions() {
    let s = start_full(true, 8, None, ChatTemplate::missing()).await;
    let e = error_of(
        s.post("/v1/chat/completions", chat_body(json!({}))).await,
        400,
    )
    .await;
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("no chat template") && msg.contains("/v1/completions"),
        "{msg}"
    );
    assert_eq!(e["param"], "messages");
    let r = s
        .post(
            "/v1/completions",
            json!({"model": "tiny", "prompt": "hi", "max_tokens": 3}),
        )
        .await;
    assert_eq!(r.status().as_u16(), 200);
}

#[tokio::test]
async fn a_template_that_raises_answers_400_with_its_reason() {
    let src = "{% if messages[-1]['role'] != 'user' %}{{ raise_exception('Conversation must end with a user turn') }}{% endif %}{{ messages[-1]['content'] }}";
    let s = start_full(true, 8, None, ChatTemplate::new(src, "", "").unwrap()).await;
    let body = json!({"model": "tiny", "max_tokens": 3, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]});
    let e = error_of(s.post("/v1/chat/completions", body).await, 400).await;
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("Conversation must end with a user turn"),
        "{msg}"
    );
    assert_eq!(e["type"], "invalid_request_error");
}
