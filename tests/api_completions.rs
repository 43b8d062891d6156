//! `POST /v1/completions` through real HTTP on the default model: the non-streaming
//! body, the SSE stream byte for byte where OpenAI fixes its format, usage, the default
//! and explicit max_tokens, stop strings, seeds, `n`, logprobs, prompt arrays, and SSE
//! keep-alive comments.

mod common;

use std::time::Duration;

use common::sse::{
    BlockReader, STREAM_LIMIT, assert_usage_adds_up, completion_text, parse_strict, post_json,
    stream_raw,
};
use common::{MODEL, Server};
use serde_json::{Value, json};

const FRANCE: &str = "The capital of France is";
/// A prompt that keeps going, so small `max_tokens` always end with "length".
const STORY: &str = "Once upon a time, in a small village by the sea, there lived";

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
    format!("{}/v1/completions", s.url)
}

fn req(prompt: impl Into<Value>, extra: Value) -> Value {
    common::merged(
        json!({"model": MODEL, "prompt": prompt.into(), "temperature": 0}),
        extra,
    )
}

async fn ok(c: &reqwest::Client, s: &Server, body: &Value) -> Value {
    let (status, headers, v) = post_json(c, &url(s), body).await;
    assert_eq!(status, 200, "request {body} failed: {v}");
    assert!(
        headers.contains_key("x-request-id"),
        "no x-request-id on {body}"
    );
    v
}

fn text(v: &Value, i: usize) -> String {
    v["choices"][i]["text"]
        .as_str()
        .unwrap_or_else(|| panic!("no text in {v}"))
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_body_has_openai_shape_and_usage() {
    let s = server();
    let c = client();
    let v = ok(&c, s, &req(FRANCE, json!({"max_tokens": 6}))).await;
    assert!(
        v["id"].as_str().unwrap().starts_with("cmpl-"),
        "id {}",
        v["id"]
    );
    assert_eq!(v["object"], "text_completion");
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!(v["model"], MODEL);
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 1);
    assert_eq!(choices[0]["index"], 0);
    assert!(
        choices[0]["logprobs"].is_null(),
        "logprobs not asked for: {v}"
    );
    assert!(!text(&v, 0).is_empty());
    let finish = choices[0]["finish_reason"].as_str().unwrap();
    assert!(
        finish == "stop" || finish == "length",
        "finish_reason {finish}"
    );
    assert_usage_adds_up(&v["usage"]);
    let completion = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        (1..=6).contains(&completion),
        "completion_tokens {completion}"
    );
    println!("completion: {:?}", text(&v, 0));
}

#[tokio::test(flavor = "multi_thread")]
async fn max_tokens_default_is_16_and_explicit_is_honored() {
    let s = server();
    let c = client();
    let v = ok(&c, s, &req(STORY, json!({}))).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(
        v["usage"]["completion_tokens"], 16,
        "OpenAI's default max_tokens for completions is 16: {v}"
    );
    let v = ok(&c, s, &req(STORY, json!({"max_tokens": 3}))).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 3, "{v}");
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_format_is_openai_and_equals_non_streaming() {
    let s = server();
    let c = client();
    let body = req(STORY, json!({"max_tokens": 6, "logprobs": 1}));
    let plain = ok(&c, s, &body).await;
    assert_eq!(plain["choices"][0]["finish_reason"], "length", "{plain}");

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    sbody["stream_options"] = json!({"include_usage": true});
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
    let (usage_chunk, choice_chunks) = ev.split_last().unwrap();
    assert!(!choice_chunks.is_empty(), "{raw}");
    let id = ev[0]["id"].as_str().unwrap();
    assert!(id.starts_with("cmpl-"), "id {id}");
    for e in ev {
        assert_eq!(e["object"], "text_completion", "{e}");
        assert_eq!(e["id"], id, "id changes mid-stream: {e}");
        assert_eq!(e["model"], MODEL);
        assert!(
            e.as_object().unwrap().contains_key("usage"),
            "chunk without `usage` key: {e}"
        );
    }
    let mut tokens = 0;
    for (k, e) in choice_chunks.iter().enumerate() {
        assert!(
            e["usage"].is_null(),
            "usage not null before the final chunk: {e}"
        );
        let ch = &e["choices"][0];
        assert_eq!(e["choices"].as_array().unwrap().len(), 1, "{e}");
        assert_eq!(ch["index"], 0);
        assert!(ch["text"].is_string(), "chunk without text: {e}");
        if k + 1 < choice_chunks.len() {
            assert!(ch["finish_reason"].is_null(), "finish before the end: {e}");
            let lp = &ch["logprobs"];
            tokens += lp["tokens"].as_array().map_or(0, Vec::len);
        }
    }
    let fin = &choice_chunks[choice_chunks.len() - 1]["choices"][0];
    assert_eq!(fin["finish_reason"], "length", "{fin}");
    assert_eq!(fin["text"], "", "the finish chunk carries no text: {fin}");
    assert_eq!(usage_chunk["choices"], json!([]), "{usage_chunk}");
    assert_usage_adds_up(&usage_chunk["usage"]);
    assert_eq!(
        usage_chunk["usage"], plain["usage"],
        "streamed usage != non-streaming usage"
    );
    assert_eq!(usage_chunk["usage"]["completion_tokens"], 6);
    assert_eq!(tokens, 6, "one streamed logprob token per generated token");
    assert_eq!(
        completion_text(ev, 0),
        text(&plain, 0),
        "streamed != non-streamed text"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stream_without_include_usage_has_no_usage_field() {
    let s = server();
    let c = client();
    let (_, raw) = stream_raw(
        &c,
        &url(s),
        &req(FRANCE, json!({"max_tokens": 4, "stream": true})),
    )
    .await;
    let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("bad SSE: {e}\nbody:\n{raw}"));
    for e in &sse.events {
        assert!(e.get("usage").is_none(), "usage without include_usage: {e}");
        assert_eq!(e["choices"].as_array().unwrap().len(), 1, "{e}");
    }
    let last = &sse.events[sse.events.len() - 1]["choices"][0];
    assert!(
        last["finish_reason"].is_string(),
        "last chunk must finish: {last}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_string_is_cut_and_not_returned() {
    let s = server();
    let c = client();
    let full = text(&ok(&c, s, &req(STORY, json!({"max_tokens": 12}))).await, 0);
    let chars: Vec<char> = full.chars().collect();
    assert!(chars.len() >= 10, "greedy output too short: {full:?}");
    let mut start = chars.len() / 2;
    while start + 4 < chars.len() && chars[start].is_whitespace() {
        start += 1;
    }
    let stop: String = chars[start..start + 4].iter().collect();
    let expected = &full[..full.find(&stop).unwrap()];
    println!("full: {full:?}\nstop: {stop:?}\nexpected: {expected:?}");

    let body = req(STORY, json!({"max_tokens": 12, "stop": stop}));
    let v = ok(&c, s, &body).await;
    assert_eq!(text(&v, 0), expected);
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");

    let mut sbody = body.clone();
    sbody["stream"] = json!(true);
    let (_, raw) = stream_raw(&c, &url(s), &sbody).await;
    let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("bad SSE: {e}\nbody:\n{raw}"));
    assert_eq!(
        completion_text(&sse.events, 0),
        expected,
        "streamed text with stop {stop:?}"
    );
    assert_eq!(
        sse.events[sse.events.len() - 1]["choices"][0]["finish_reason"],
        "stop"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn seed_makes_sampling_reproducible() {
    let s = server();
    let c = client();
    let r = |seed: u64| {
        req(
            STORY,
            json!({"max_tokens": 6, "temperature": 1.0, "seed": seed}),
        )
    };
    let a = text(&ok(&c, s, &r(99)).await, 0);
    let b = text(&ok(&c, s, &r(99)).await, 0);
    assert_eq!(a, b, "same seed, different output");
    let mut others = Vec::new();
    for seed in [1, 2] {
        others.push(text(&ok(&c, s, &r(seed)).await, 0));
    }
    assert!(
        others.iter().any(|o| *o != a),
        "three seeds at temperature 1 all gave {a:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn n_gives_indexed_choices() {
    let s = server();
    let c = client();
    let v = ok(
        &c,
        s,
        &req(
            STORY,
            json!({"max_tokens": 3, "n": 3, "temperature": 1.0, "seed": 3, "ignore_eos": true}),
        ),
    )
    .await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 3, "{v}");
    for (i, ch) in choices.iter().enumerate() {
        assert_eq!(ch["index"], i);
        assert!(ch["text"].is_string());
        assert_eq!(ch["finish_reason"], "length", "{ch}");
    }
    assert_eq!(
        v["usage"]["completion_tokens"], 9,
        "usage sums the 3 choices: {v}"
    );
    assert_usage_adds_up(&v["usage"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn logprobs_have_openai_shape() {
    let s = server();
    let c = client();
    let v = ok(&c, s, &req(STORY, json!({"max_tokens": 4, "logprobs": 2}))).await;
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tokens = lp["tokens"]
        .as_array()
        .unwrap_or_else(|| panic!("logprobs.tokens missing: {v}"));
    let token_logprobs = lp["token_logprobs"].as_array().expect("token_logprobs");
    let top = lp["top_logprobs"].as_array().expect("top_logprobs");
    let offsets = lp["text_offset"].as_array().expect("text_offset");
    assert_eq!(tokens.len(), 4);
    assert_eq!(token_logprobs.len(), 4);
    assert_eq!(top.len(), 4);
    assert_eq!(offsets.len(), 4);
    let full = text(&v, 0);
    let mut pos = 0;
    for i in 0..4 {
        let tok = tokens[i].as_str().unwrap();
        let l = token_logprobs[i].as_f64().unwrap();
        assert!(l <= 0.0, "logprob {l} > 0");
        assert_eq!(offsets[i], pos, "text_offset[{i}]");
        pos += tok.chars().count();
        let alts = top[i]
            .as_object()
            .unwrap_or_else(|| panic!("top_logprobs[{i}] not an object: {}", top[i]));
        assert!(
            (1..=2).contains(&alts.len()),
            "logprobs 2 gives up to 2 alternatives: {}",
            top[i]
        );
        let best = alts
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!(
            (best - l).abs() < 1e-4,
            "greedy token {tok:?} ({l}) is not the best alternative {}",
            top[i]
        );
        assert!(
            alts.contains_key(tok),
            "greedy token {tok:?} missing from its alternatives {}",
            top[i]
        );
    }
    let joined: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(joined, full, "tokens do not spell the text");
}

#[tokio::test(flavor = "multi_thread")]
async fn prompt_array_gives_one_choice_per_prompt() {
    let s = server();
    let c = client();
    let prompts = [FRANCE, "1, 2, 3, 4,"];
    let mut alone = Vec::new();
    for p in prompts {
        alone.push(text(&ok(&c, s, &req(p, json!({"max_tokens": 4}))).await, 0));
    }
    let v = ok(&c, s, &req(json!(prompts), json!({"max_tokens": 4}))).await;
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 2, "{v}");
    for (i, ch) in choices.iter().enumerate() {
        assert_eq!(ch["index"], i);
        assert_eq!(
            ch["text"],
            alone[i].as_str(),
            "choice {i} differs from prompt {i} run alone"
        );
    }
    assert_usage_adds_up(&v["usage"]);
}

/// With one running slot and keep-alives every second, a stream queued behind a running
/// generation receives a `:` comment before its first data event (text completions
/// have no role chunk, so the first data event is the first token).
#[tokio::test(flavor = "multi_thread")]
async fn keep_alive_comment_before_first_event() {
    let s = Server::shared(&["--sse-keep-alive-secs", "1", "--max-num-seqs", "1"]);
    let c = client();
    let long = req(
        STORY,
        json!({"max_tokens": 2000, "ignore_eos": true, "stream": true}),
    );
    let blocker = c.post(url(s)).json(&long).send().await.unwrap();
    assert_eq!(blocker.status(), 200);
    let mut blocker = BlockReader::new(blocker);
    // Wait until it generates (its own keep-alives may come first).
    while !blocker
        .next_block(STREAM_LIMIT)
        .await
        .expect("blocker ended")
        .starts_with("data: ")
    {}

    let queued = c
        .post(url(s))
        .json(&req(FRANCE, json!({"max_tokens": 4, "stream": true})))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), 200);
    let mut queued = BlockReader::new(queued);
    let block = queued.next_block(Duration::from_secs(10)).await.unwrap();
    assert!(
        block.starts_with(':'),
        "first block of a queued stream is not a keep-alive comment: {block}"
    );
}
