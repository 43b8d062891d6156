//! Unit tests of `validate`: each bad input maps to the right status and `param`.

use super::*;
use serde_json::json;
use std::time::Duration;

fn limits() -> ApiLimits {
    ApiLimits {
        max_body_bytes: 1 << 20,
        max_n: 4,
        max_tokens_cap: None,
        sse_keep_alive: Duration::from_secs(15),
    }
}

fn common_of(v: Value) -> Result<Checked, ApiError> {
    let c: CommonFields = serde_json::from_value(v).unwrap();
    let mt = c.max_tokens.map(|m| (m, "max_tokens"));
    common(&c, mt, None, &limits())
}

fn assert_400(r: Result<impl std::fmt::Debug, ApiError>, param: &str) {
    let e = r.expect_err("expected an error");
    assert_eq!(e.status.as_u16(), 400, "{e}");
    assert_eq!(e.param.as_deref(), Some(param), "{e}");
}

#[test]
fn defaults() {
    let c = common_of(json!({})).unwrap();
    assert_eq!(c.n, 1);
    assert!(!c.stream);
    assert!(!c.include_usage);
    assert_eq!(c.max_tokens, None);
    assert_eq!(c.params.temperature, 1.0);
    assert_eq!(c.params.top_k, 0);
    assert!(c.params.stop.is_empty());
}

#[test]
fn accepts_valid_values() {
    let c = common_of(json!({
        "temperature": 0, "top_p": 1, "top_k": -1, "min_p": 0.5, "seed": -1, "n": 4,
        "stop": ["a", "", "b"], "presence_penalty": -2, "frequency_penalty": 2,
        "max_tokens": 5, "stream": true, "stream_options": {"include_usage": true},
        "ignore_eos": true, "user": "u1", "logit_bias": {}
    }))
    .unwrap();
    assert_eq!(c.params.temperature, 0.0);
    assert_eq!(c.params.top_k, 0);
    assert_eq!(c.params.seed, Some(u64::MAX));
    assert_eq!(c.params.stop, vec!["a".to_string(), "b".to_string()]);
    assert_eq!(c.max_tokens, Some(5));
    assert!(c.stream && c.include_usage && c.params.ignore_eos);
}

#[test]
fn rejects_out_of_range_values() {
    assert_400(common_of(json!({"temperature": 2.5})), "temperature");
    assert_400(common_of(json!({"temperature": -0.1})), "temperature");
    assert_400(common_of(json!({"top_p": 0})), "top_p");
    assert_400(common_of(json!({"top_p": 1.1})), "top_p");
    assert_400(common_of(json!({"top_k": -2})), "top_k");
    assert_400(common_of(json!({"min_p": 1.5})), "min_p");
    assert_400(
        common_of(json!({"presence_penalty": 3})),
        "presence_penalty",
    );
    assert_400(
        common_of(json!({"frequency_penalty": -2.1})),
        "frequency_penalty",
    );
    assert_400(common_of(json!({"n": 0})), "n");
    assert_400(common_of(json!({"n": 5})), "n");
    assert_400(common_of(json!({"max_tokens": 0})), "max_tokens");
    assert_400(common_of(json!({"max_tokens": -3})), "max_tokens");
    assert_400(
        common_of(json!({"stop": ["a", "b", "c", "d", "e"]})),
        "stop",
    );
    assert_400(common_of(json!({"stop": 3})), "stop");
    assert_400(common_of(json!({"stop": [1]})), "stop");
    assert_400(common_of(json!({"seed": 1.5})), "seed");
    assert_400(common_of(json!({"logit_bias": {"1": 500}})), "logit_bias");
}

#[test]
fn logprobs_rules() {
    assert_eq!(chat_logprobs(None, None).unwrap(), None);
    assert_eq!(chat_logprobs(Some(true), None).unwrap(), Some(0));
    assert_eq!(chat_logprobs(Some(true), Some(20)).unwrap(), Some(20));
    assert_400(chat_logprobs(Some(true), Some(21)), "top_logprobs");
    assert_400(chat_logprobs(Some(false), Some(2)), "top_logprobs");
    assert_eq!(completion_logprobs(Some(5)).unwrap(), Some(5));
    assert_eq!(completion_logprobs(Some(0)).unwrap(), Some(0));
    assert_400(completion_logprobs(Some(6)), "logprobs");
    assert_400(completion_logprobs(Some(-1)), "logprobs");
}

fn chat(extra: Value) -> ChatRequest {
    let mut v = json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]});
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        o.extend(e.clone());
    }
    serde_json::from_value(v).unwrap()
}

#[test]
fn unsupported_chat_features_name_the_param() {
    for (field, value) in [
        ("audio", json!({"voice": "x"})),
        ("modalities", json!(["text", "audio"])),
        ("prediction", json!({"type": "content", "content": "x"})),
    ] {
        let e = chat_unsupported(&chat(json!({ field: value }))).expect_err(field);
        assert_eq!(e.status.as_u16(), 400);
        assert_eq!(e.param.as_deref(), Some(field));
        assert!(e.message.contains(field), "{}", e.message);
    }
    let fine = json!({"tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                      "modalities": ["text"], "audio": null});
    chat_unsupported(&chat(fine)).unwrap();
}

#[test]
fn unsupported_completion_features_name_the_param() {
    let req = |extra: Value| -> CompletionRequest {
        let mut v = json!({"prompt": "x"});
        if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
            o.extend(e.clone());
        }
        serde_json::from_value(v).unwrap()
    };
    assert_400(completion_unsupported(&req(json!({"echo": true}))), "echo");
    assert_400(
        completion_unsupported(&req(json!({"suffix": "end"}))),
        "suffix",
    );
    assert_400(
        completion_unsupported(&req(json!({"best_of": 2}))),
        "best_of",
    );
    completion_unsupported(&req(json!({"echo": false, "suffix": null, "best_of": 1}))).unwrap();
}

#[test]
fn model_must_match() {
    model(None, "m").unwrap();
    model(Some("m"), "m").unwrap();
    let e = model(Some("gpt-4"), "m").unwrap_err();
    assert_eq!(e.status.as_u16(), 404);
    assert_eq!(e.code, Some("model_not_found"));
}

#[test]
fn messages_parse_and_reject() {
    let ok = messages(&[
        json!({"role": "developer", "content": "be brief"}),
        json!({"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}),
        json!({"role": "assistant", "content": null}),
    ])
    .unwrap();
    assert_eq!(ok[0].role, "system");
    assert_eq!(ok[1].content, "ab");
    assert_eq!(ok[2].content, "");
    assert_400(messages(&[]), "messages");
    assert_400(
        messages(&[json!({"role": "tool", "content": "x"})]),
        "messages",
    );
    assert_400(messages(&[json!({"content": "x"})]), "messages");
    assert_400(messages(&[json!("hi")]), "messages");
    assert_400(
        messages(&[json!({"role": "user", "content": 3})]),
        "messages",
    );
    let image =
        json!({"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]});
    let e = messages(&[image]).unwrap_err();
    assert!(e.message.contains("image_url"), "{}", e.message);
}

#[test]
fn tool_round_trip_messages() {
    let got = messages(&[
        json!({"role": "user", "content": "Weather in Paris?"}),
        json!({"role": "assistant", "content": null, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\"}"}},
            {"id": "call_2", "type": "function",
             "function": {"name": "get_time", "arguments": "not json"}}
        ]}),
        json!({"role": "tool", "tool_call_id": "call_1", "content": "18C"}),
        json!({"role": "tool", "tool_call_id": "call_2",
               "content": [{"type": "text", "text": "noon"}]}),
    ])
    .unwrap();
    let calls = got[1].tool_calls.as_ref().unwrap();
    assert_eq!(calls[0]["function"]["arguments"], json!({"city": "Paris"}));
    assert_eq!(calls[1]["function"]["arguments"], json!("not json"));
    assert_eq!(calls[0]["id"], "call_1");
    assert_eq!(got[1].content, "");
    assert_eq!(got[2].role, "tool");
    assert_eq!(got[2].tool_call_id.as_deref(), Some("call_1"));
    assert_eq!(got[2].name.as_deref(), Some("get_weather"));
    assert_eq!(got[3].content, "noon");
    assert_eq!(got[3].name.as_deref(), Some("get_time"));
    // Plain messages carry no tool fields.
    assert_eq!(got[0].tool_calls, None);
    assert_eq!(got[0].name, None);
}

#[test]
fn tool_messages_need_a_matching_call() {
    let call = json!({"role": "assistant", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]});
    let e = messages(&[
        json!({"role": "user", "content": "x"}),
        call.clone(),
        json!({"role": "tool", "tool_call_id": "call_9", "content": "r"}),
    ])
    .unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    assert_eq!(e.param.as_deref(), Some("messages"));
    assert!(e.message.contains("call_9"), "{}", e.message);
    // The result must come after its call.
    assert_400(
        messages(&[
            json!({"role": "tool", "tool_call_id": "call_1", "content": "r"}),
            call.clone(),
        ]),
        "messages",
    );
    for bad_calls in [
        json!("x"),
        json!([{"type": "function", "function": {"name": "f"}}]),
        json!([{"id": "c", "type": "function"}]),
        json!([{"id": "c", "type": "function", "function": {"arguments": "{}"}}]),
        json!([{"id": "c", "type": "code", "function": {"name": "f"}}]),
    ] {
        assert_400(
            messages(&[json!({"role": "assistant", "tool_calls": bad_calls})]),
            "messages",
        );
    }
}

#[test]
fn prompt_shapes() {
    assert_eq!(
        prompt(&json!("hi")).unwrap(),
        PromptInput::Texts(vec!["hi".into()])
    );
    assert_eq!(
        prompt(&json!(["a", "b"])).unwrap(),
        PromptInput::Texts(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        prompt(&json!([1, 2])).unwrap(),
        PromptInput::Ids(vec![vec![1, 2]])
    );
    assert_eq!(
        prompt(&json!([[1], [2, 3]])).unwrap(),
        PromptInput::Ids(vec![vec![1], vec![2, 3]])
    );
    for bad in [
        json!(""),
        json!([]),
        json!([""]),
        json!([[]]),
        json!([1, "a"]),
        json!([-1]),
        json!([4294967296u64]),
        json!({"a": 1}),
        json!(3),
        json!(null),
    ] {
        assert_400(prompt(&bad), "prompt");
    }
}

#[test]
fn max_tokens_resolution() {
    use Endpoint::{Chat, Completion};
    assert_eq!(max_tokens(10, None, Chat, 100, None).unwrap(), 90);
    assert_eq!(max_tokens(10, None, Chat, 100, Some(20)).unwrap(), 20);
    assert_eq!(max_tokens(10, None, Completion, 100, None).unwrap(), 16);
    assert_eq!(max_tokens(95, None, Completion, 100, None).unwrap(), 5);
    assert_eq!(max_tokens(10, Some(50), Completion, 100, None).unwrap(), 50);
    assert_eq!(max_tokens(10, Some(500), Chat, 100, Some(30)).unwrap(), 30);
    let e = max_tokens(1000, Some(8000), Chat, 8192, None).unwrap_err();
    assert_eq!(e.status.as_u16(), 400);
    assert!(
        e.message.contains("maximum context length is 8192 tokens. However, you requested 9000 tokens (1000 in the prompt, 8000 for the completion)"),
        "{}",
        e.message
    );
    assert_eq!(e.param.as_deref(), Some("messages"));
    assert_400(max_tokens(100, None, Completion, 100, None), "prompt");
    assert_400(max_tokens(120, None, Chat, 100, None), "messages");
}
