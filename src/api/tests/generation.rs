//! Happy paths: chat and completions, streaming and not, n > 1, logprobs.

use serde_json::{Value, json};

use super::*;

#[tokio::test]
async fn chat_non_streaming() {
    let s = start(true, 8).await;
    let resp = s
        .client
        .post(format!("{}/v1/chat/completions", s.base))
        .header("x-request-id", "abc-123")
        .json(&chat_body(json!({"logprobs": true, "top_logprobs": 2})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-request-id"], "abc-123");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["model"], "tiny");
    let c = &v["choices"][0];
    assert_eq!(
        c["message"],
        json!({"role": "assistant", "content": "abab!"})
    );
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(c["logprobs"]["content"].as_array().unwrap().len(), 3);
    assert_eq!(
        c["logprobs"]["content"][0]["top_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let prompt = v["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(prompt > 2);
    assert_eq!(v["usage"]["completion_tokens"], 3);
    assert_eq!(v["usage"]["total_tokens"], prompt + 3);
    assert_eq!(s.seen.requests.lock().unwrap()[0].0, "abc-123");
}

#[tokio::test]
async fn chat_streaming_follows_openai() {
    let s = start(true, 8).await;
    let body = chat_body(json!({"stream": true, "stream_options": {"include_usage": true}}));
    let resp = s.post("/v1/chat/completions", body).await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-accel-buffering"], "no");
    assert_eq!(resp.headers()["cache-control"], "no-cache");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    // 3 tokens, the second with empty text (skipped), then the final held-back "!".
    let texts: Vec<&str> = chunks[1..4]
        .iter()
        .map(|c| c["choices"][0]["delta"]["content"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["ab", "ab", "!"]);
    assert_eq!(chunks[4]["choices"][0]["delta"], json!({}));
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert!(chunks[..5].iter().all(|c| c["usage"].is_null()));
    assert_eq!(chunks[5]["choices"], json!([]));
    assert_eq!(chunks[5]["usage"]["completion_tokens"], 3);
    assert_eq!(chunks.len(), 6);
}

#[tokio::test]
async fn completions_n_and_prompts() {
    let s = start(true, 8).await;
    let body = json!({"model": "tiny", "prompt": [[1, 2, 3], [4, 5]], "n": 2, "seed": 10, "max_tokens": 2});
    let v: Value = s.post("/v1/completions", body).await.json().await.unwrap();
    assert_eq!(v["object"], "text_completion");
    let choices = v["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    for (i, c) in choices.iter().enumerate() {
        assert_eq!(c["index"], i);
        assert_eq!(c["text"], "ab!");
    }
    assert_eq!(
        v["usage"],
        json!({"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13})
    );
    let mut seen = s.seen.requests.lock().unwrap().clone();
    seen.sort();
    let seeds: Vec<_> = seen.iter().map(|(_, len, seed)| (*len, *seed)).collect();
    assert_eq!(
        seeds,
        [(3, Some(10)), (3, Some(11)), (2, Some(10)), (2, Some(11))]
    );
}

#[tokio::test]
async fn completions_streaming_with_logprobs_keeps_empty_tokens() {
    let s = start(true, 8).await;
    let body = json!({"prompt": "hello", "max_tokens": 3, "stream": true, "logprobs": 1});
    let data = sse_data(&s.post("/v1/completions", body).await.text().await.unwrap());
    let chunks: Vec<Value> = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    // 3 token chunks (one with empty text), "!" chunk, finish chunk; no usage key.
    assert_eq!(chunks.len(), 5);
    assert_eq!(chunks[1]["choices"][0]["text"], "");
    assert_eq!(
        chunks[2]["choices"][0]["logprobs"]["text_offset"],
        json!([4])
    );
    assert_eq!(chunks[4]["choices"][0]["finish_reason"], "length");
    assert!(
        chunks
            .iter()
            .all(|c| !c.as_object().unwrap().contains_key("usage"))
    );
}
