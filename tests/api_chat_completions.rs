//! `POST /v1/chat/completions` through real HTTP on the default model: the
//! non-streaming body, the SSE stream byte for byte where OpenAI fixes its format,
//! usage, max_tokens, stop strings, seeds, `n`, logprobs, and SSE keep-alive comments.

mod common;

use std::time::Duration;

use common::sse::{
    BlockReader, STREAM_LIMIT, SseItem, assert_usage_adds_up, chat_content, parse_strict,
    post_json, stream_raw,
};
use common::{MODEL, Server, chat_body as chat};
use serde_json::{Value, json};

/// A question with a short factual answer.
const QUESTION: &str = "What is the capital of France?";
/// A prompt whose answer is long, so small `max_tokens` always end with "length".
const STORY: &str = "Write a long story about a dragon who lives in a cave.";

fn server() -> &'static Server {
    Server::shared(&[])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

fn url(s: &Server) -> String {
    format!("{}/v1/chat/completions", s.url)
}

/// Non-streaming request that must succeed; returns the body.
async fn ok(c: &reqwest::Client, s: &Server, body: &Value) -> Value {
    let (status, headers, v) = post_json(c, &url(s), body).await;
    assert_eq!(status, 200, "request {body} failed: {v}");
    assert!(
        headers.contains_key("x-request-id"),
        "no x-request-id on {body}"
    );
    v
}

fn content(v: &Value, i: usize) -> String {
    v["choices"][i]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("no content in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_body_has_openai_shape_and_usage() {
    let s = server();
    let c = client();
    let r = c
        .post(url(s))
        .json(&chat(QUESTION, json!({"max_tokens": 8})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert!(
        v["id"].as_str().unwrap().starts_with("chatcmpl-"),
        "id {}",
        v["id"]
    );
    assert_eq!(v["object"], "chat.completion");
    assert!(
        v["created"].as_u64().unwrap() > 1_600_000_000,
        "created {}",
        v["created"]
    );
    assert_eq!(v["model"], MODEL);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert_eq!(choices[0]["message"]["role"], "assistant");
    assert!(!content(&v, 0).is_empty(), "empty answer: {v}");
    let finish = choices[0]["finish_reason"].as_str().unwrap();
    assert!(
        finish == "stop" || finish == "length",
        "finish_reason {finish}"
    );
    assert_usage_adds_up(&v["usage"]);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        (1..=8).contains(&completion),
        "completion_tokens {completion} outside 1..=8"
    );
    if finish == "length" {
        assert_eq!(
            completion, 8,
            "finish length but completion_tokens {completion}"
        );
    }
    println!("answer: {:?}", content(&v, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn request_id_is_echoed() {
    let s = server();
    let c = client();
    let r = c
        .post(url(s))
        .header("x-request-id", "test-req-42")
        .json(&chat(QUESTION, json!({"max_tokens": 1})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-request-id"], "test-req-42");
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_format_is_openai_and_equals_non_streaming() {
    let s = server();
    let c = client();
    let body = chat(QUESTION, json!({"max_tokens": 8}));
    let plain = ok(&c, s, &body).await;

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (headers, raw) = stream_raw(&c, &url(s), &sbody).await;
    let ct = headers["content-type"].to_str().unwrap();
    assert!(ct.starts_with("text/event-stream"), "content-type {ct}");
    assert_eq!(
        headers
            .get("x-accel-buffering")
            .map(|v| v.to_str().unwrap()),
        Some("no")
    );
    assert!(headers.contains_key("x-request-id"));

    let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("bad SSE: {e}\nbody:\n{raw}"));
    let ev = &sse.events;
    assert!(
        ev.len() >= 2,
        "need at least a role and a finish chunk: {raw}"
    );
    let id = ev[0]["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("chatcmpl-"), "id {id}");
    for e in ev {
        assert_eq!(e["object"], "chat.completion.chunk", "{e}");
        assert_eq!(e["id"], id.as_str(), "id changes mid-stream: {e}");
        assert_eq!(e["created"], ev[0]["created"], "{e}");
        assert_eq!(e["model"], MODEL, "{e}");
        assert!(e.get("usage").is_none(), "usage without include_usage: {e}");
        assert_eq!(e["choices"].as_array().unwrap().len(), 1, "{e}");
        assert_eq!(e["choices"][0]["index"], 0, "{e}");
    }
    // First chunk: the role.
    assert_eq!(
        ev[0]["choices"][0]["delta"]["role"], "assistant",
        "first chunk {}",
        ev[0]
    );
    assert!(ev[0]["choices"][0]["finish_reason"].is_null());
    // Middle chunks: content, no role, no finish.
    for e in &ev[1..ev.len() - 1] {
        let ch = &e["choices"][0];
        assert!(
            ch["delta"]["content"].is_string(),
            "content chunk without delta.content: {e}"
        );
        assert!(ch["delta"].get("role").is_none(), "role repeated: {e}");
        assert!(ch["finish_reason"].is_null(), "finish before the end: {e}");
    }
    // Last chunk: empty delta and the finish reason.
    let last = &ev[ev.len() - 1]["choices"][0];
    assert_eq!(
        last["delta"],
        json!({}),
        "last chunk delta not empty: {last}"
    );
    let finish = last["finish_reason"]
        .as_str()
        .unwrap_or_else(|| panic!("no finish_reason: {last}"));
    assert_eq!(
        finish,
        plain["choices"][0]["finish_reason"].as_str().unwrap()
    );

    assert_eq!(
        chat_content(ev, 0),
        content(&plain, 0),
        "streamed != non-streamed content"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_include_usage_nulls_then_usage_chunk() {
    let s = server();
    let c = client();
    let body = chat(STORY, json!({"max_tokens": 6, "logprobs": true}));
    let plain = ok(&c, s, &body).await;
    assert_eq!(
        plain["choices"][0]["finish_reason"], "length",
        "story prompt must run to max_tokens: {plain}"
    );

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
    let (_, raw) = stream_raw(&c, &url(s), &sbody).await;
    let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("bad SSE: {e}\nbody:\n{raw}"));
    let ev = &sse.events;
    let (last, rest) = ev.split_last().unwrap();
    for e in rest {
        assert!(
            e.as_object().unwrap().contains_key("usage"),
            "chunk without `usage` key: {e}"
        );
        assert!(
            e["usage"].is_null(),
            "usage not null before the final chunk: {e}"
        );
        assert_eq!(e["choices"].as_array().unwrap().len(), 1, "{e}");
    }
    assert_eq!(
        last["choices"],
        json!([]),
        "final usage chunk must have no choices: {last}"
    );
    assert_eq!(last["object"], "chat.completion.chunk");
    let usage = &last["usage"];
    assert_usage_adds_up(usage);
    // One logprob entry per generated token.
    let tokens: usize = rest
        .iter()
        .filter_map(|e| e["choices"][0]["logprobs"]["content"].as_array())
        .map(Vec::len)
        .sum();
    assert_eq!(usage["completion_tokens"], 6, "usage {usage}");
    assert_eq!(
        usage["completion_tokens"].as_u64().unwrap() as usize,
        tokens,
        "tokens streamed vs usage"
    );
    assert_eq!(
        usage, &plain["usage"],
        "streamed usage != non-streaming usage"
    );
    // The chunk before the usage chunk ends the choice.
    let fin = &rest[rest.len() - 1]["choices"][0];
    assert_eq!(fin["finish_reason"], "length");
    assert_eq!(fin["delta"], json!({}));
    assert_eq!(chat_content(ev, 0), content(&plain, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tokens_is_honored_with_length() {
    let s = server();
    let c = client();
    let v = ok(&c, s, &chat(STORY, json!({"max_tokens": 3}))).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
    // `max_completion_tokens` is the newer spelling and wins over `max_tokens`.
    let v = ok(
        &c,
        s,
        &chat(STORY, json!({"max_tokens": 9, "max_completion_tokens": 2})),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 2, "{v}");
}

/// A substring of `text` of about 4 characters starting near its middle, on char
/// boundaries and not starting with whitespace.
fn pick_stop(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    assert!(
        chars.len() >= 10,
        "greedy output too short to pick a stop string: {text:?}"
    );
    let mut start = chars.len() / 2;
    while start + 4 < chars.len() && chars[start].is_whitespace() {
        start += 1;
    }
    chars[start..start + 4].iter().collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_string_is_cut_and_not_returned() {
    let s = server();
    let c = client();
    let full = content(&ok(&c, s, &chat(STORY, json!({"max_tokens": 12}))).await, 0);
    let stop = pick_stop(&full);
    let expected = &full[..full.find(&stop).unwrap()];
    println!("full: {full:?}\nstop: {stop:?}\nexpected: {expected:?}");

    let body = chat(
        STORY,
        json!({"max_tokens": 12, "stop": [stop.clone(), "zzzzqqq"]}),
    );
    let v = ok(&c, s, &body).await;
    assert_eq!(
        content(&v, 0),
        expected,
        "non-streaming content with stop {stop:?}"
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");

    // Streaming: the held-back text of a partial match never leaks.
    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (_, raw) = stream_raw(&c, &url(s), &sbody).await;
    let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("bad SSE: {e}\nbody:\n{raw}"));
    assert_eq!(
        chat_content(&sse.events, 0),
        expected,
        "streamed content with stop {stop:?}"
    );
    let last = &sse.events[sse.events.len() - 1]["choices"][0];
    assert_eq!(last["finish_reason"], "stop");
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_makes_sampling_reproducible() {
    let s = server();
    let c = client();
    let req = |seed: u64| {
        chat(
            "Tell me a story.",
            json!({"max_tokens": 6, "temperature": 1.0, "seed": seed}),
        )
    };
    let a = content(&ok(&c, s, &req(1234)).await, 0);
    let b = content(&ok(&c, s, &req(1234)).await, 0);
    assert_eq!(a, b, "same seed, different output");
    // The seed actually steers sampling: two other seeds do not both agree with it.
    let mut others = Vec::new();
    for seed in [1, 2] {
        others.push(content(&ok(&c, s, &req(seed)).await, 0));
    }
    assert!(
        others.iter().any(|o| *o != a),
        "three seeds at temperature 1 all gave {a:?}; is the seed/temperature ignored?"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn n_gives_indexed_choices() {
    let s = server();
    let c = client();
    let one = ok(&c, s, &chat("Tell me a story.", json!({"max_tokens": 1}))).await;
    let v = ok(
        &c,
        s,
        &chat(
            "Tell me a story.",
            json!({"max_tokens": 4, "n": 3, "temperature": 1.0, "seed": 7}),
        ),
    )
    .await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    for (i, ch) in choices.iter().enumerate() {
        assert_eq!(ch["index"], i, "{v}");
        assert_eq!(ch["message"]["role"], "assistant");
        assert!(ch["message"]["content"].is_string());
        assert!(ch["finish_reason"].is_string());
    }
    assert_usage_adds_up(&v["usage"]);
    assert_eq!(
        v["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"],
        "prompt counted once for n=3"
    );
    assert!(
        v["usage"]["completion_tokens"].as_u64().unwrap() >= 3,
        "completion tokens summed over choices"
    );

    // Streaming with n = 2: each choice opens with its role chunk and ends once.
    let mut sbody = chat(
        "Tell me a story.",
        json!({"max_tokens": 3, "n": 2, "temperature": 1.0, "seed": 7}),
    );
    sbody["stream"] = json!(true);
    let (_, raw) = stream_raw(&c, &url(s), &sbody).await;
    let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("bad SSE: {e}\nbody:\n{raw}"));
    for i in 0..2u64 {
        let mine: Vec<&Value> = sse
            .events
            .iter()
            .map(|e| &e["choices"][0])
            .filter(|ch| ch["index"] == i)
            .collect();
        assert!(mine.len() >= 2, "choice {i} has too few chunks: {raw}");
        assert_eq!(
            mine[0]["delta"]["role"], "assistant",
            "choice {i} does not open with its role"
        );
        let finishes = mine
            .iter()
            .filter(|ch| !ch["finish_reason"].is_null())
            .count();
        assert_eq!(finishes, 1, "choice {i} must finish exactly once");
        assert!(
            !mine.last().unwrap()["finish_reason"].is_null(),
            "choice {i}: chunk after its finish"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn logprobs_have_openai_shape() {
    let s = server();
    let c = client();
    let v = ok(
        &c,
        s,
        &chat(
            STORY,
            json!({"max_tokens": 4, "logprobs": true, "top_logprobs": 2}),
        ),
    )
    .await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let entries = v["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap_or_else(|| panic!("choices[0].logprobs.content missing: {v}"));
    assert_eq!(entries.len(), 4, "one entry per token");
    let mut joined = String::new();
    for e in entries {
        let keys: Vec<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        for k in ["token", "logprob", "bytes", "top_logprobs"] {
            assert!(keys.contains(&k), "entry lacks `{k}`: {e}");
        }
        let token = e["token"].as_str().unwrap();
        joined.push_str(token);
        let lp = e["logprob"].as_f64().unwrap();
        assert!(lp <= 0.0, "logprob {lp} > 0");
        let bytes: Vec<u8> = e["bytes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b.as_u64().unwrap() as u8)
            .collect();
        if let Ok(text) = String::from_utf8(bytes) {
            assert_eq!(text, token, "bytes do not spell the token");
        }
        let top = e["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2, "top_logprobs 2 gives 2 alternatives: {e}");
        for t in top {
            assert!(
                t["token"].is_string() && t["logprob"].is_number() && t["bytes"].is_array(),
                "alt shape {t}"
            );
        }
        let (a, b) = (
            top[0]["logprob"].as_f64().unwrap(),
            top[1]["logprob"].as_f64().unwrap(),
        );
        assert!(a >= b, "alternatives not sorted best first: {e}");
        // Greedy: the sampled token is the best alternative.
        assert_eq!(
            top[0]["token"], e["token"],
            "temperature 0 picked a non-argmax token: {e}"
        );
        assert!(
            (a - lp).abs() < 1e-4,
            "sampled logprob {lp} != best alternative {a}"
        );
    }
    assert_eq!(joined, content(&v, 0), "tokens do not spell the content");
    // Without `logprobs` the field is null.
    let v = ok(&c, s, &chat(STORY, json!({"max_tokens": 1}))).await;
    assert!(v["choices"][0]["logprobs"].is_null(), "{v}");
}

/// With one running slot and keep-alives every second, a stream queued behind a running
/// generation receives a `:` comment right after its role chunk, before any content.
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_comment_while_queued() {
    let s = Server::shared(&["--sse-keep-alive-secs", "1", "--max-num-seqs", "1"]);
    let c = client();
    // Occupy the only slot with a stream that would run for a long time.
    let long = chat(
        STORY,
        json!({"max_tokens": 2000, "ignore_eos": true, "stream": true}),
    );
    let blocker = c.post(url(s)).json(&long).send().await.unwrap();
    assert_eq!(blocker.status(), 200);
    let mut blocker = BlockReader::new(blocker);
    // Wait until it generates (its own keep-alives may come first).
    loop {
        let block = blocker
            .next_block(STREAM_LIMIT)
            .await
            .expect("blocker ended");
        if block.starts_with("data: ")
            && block.contains("\"content\":\"")
            && !block.contains("\"content\":\"\"")
        {
            break;
        }
    }

    let body = chat(QUESTION, json!({"max_tokens": 4, "stream": true}));
    let queued = c.post(url(s)).json(&body).send().await.unwrap();
    assert_eq!(queued.status(), 200);
    let mut queued = BlockReader::new(queued);
    let role = queued.next_block(Duration::from_secs(10)).await.unwrap();
    assert!(
        role.starts_with("data: ") && role.contains("\"role\":\"assistant\""),
        "first block: {role}"
    );
    let next = queued.next_block(Duration::from_secs(10)).await.unwrap();
    assert!(
        next.starts_with(':'),
        "expected a keep-alive comment while queued behind a running request, got: {next}"
    );
    // Dropping both readers closes both connections.
}

/// The strict SSE parser used above rejects what it must (no server needed).
#[test]
fn sse_parser_is_strict() {
    let ok = "data: {\"a\":1}\n\n: keep-alive\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
    let b = parse_strict(ok).unwrap();
    assert_eq!(b.events.len(), 2);
    assert_eq!(
        b.items,
        vec![SseItem::Data(0), SseItem::Comment, SseItem::Data(1)]
    );
    for bad in [
        "data: {}\n\ndata: [DONE]\n",
        "data: [DONE]\n\ndata: [DONE]\n\n",
        "data:{}\n\ndata: [DONE]\n\n",
        "event: x\ndata: {}\n\ndata: [DONE]\n\n",
        "data: {\n\ndata: [DONE]\n\n",
        "data: {}\n\n\ndata: [DONE]\n\n",
    ] {
        assert!(parse_strict(bad).is_err(), "accepted {bad:?}");
    }
}
