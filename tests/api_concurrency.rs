//! Many clients at once through real HTTP: 32 concurrent streams each produce exactly
//! what the same request produces alone (batch invariance end to end) while `/metrics`
//! shows them batched; clients that vanish (dropped streams, a non-streaming client
//! that times out) get their sequences aborted and their KV blocks freed. Also the
//! shapes of `GET /v1/models` and `GET /health`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::sse::{
    BlockReader, chat_content, metric, parse_strict, post_json, read_body, scrape, wait_idle,
};
use common::{MODEL, Server, chat_body as chat};
use serde_json::{Value, json};

const PROMPTS: [&str; 4] = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "Name three primary colors.",
    "Explain what a computer is in one sentence.",
];

/// Tests that read engine-wide counters run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn server() -> &'static Server {
    Server::shared(&[])
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_streams_match_solo_runs_and_are_batched() {
    let _serial = SERIAL.lock().await;
    let s = server();
    let c = client();
    let url = format!("{}/v1/chat/completions", s.url);
    const MAX: u64 = 12;

    // Each prompt alone first.
    let mut solo = Vec::new();
    for p in PROMPTS {
        let (status, _, v) = post_json(&c, &url, &chat(p, json!({"max_tokens": MAX}))).await;
        assert_eq!(status, 200, "{v}");
        solo.push(
            v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;
    let before = scrape(&c, &s.url).await;
    let steps_before = metric(&before, "ferrite_batch_tokens_count").unwrap_or(0.0);

    // Watch /metrics while the streams run.
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (c, base, stop) = (c.clone(), s.url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut max_running: f64 = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let text = scrape(&c, &base).await;
                max_running =
                    max_running.max(metric(&text, "ferrite_requests_running").unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            max_running
        })
    };

    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..32 {
        let (c, url) = (c.clone(), url.clone());
        let body = chat(
            PROMPTS[i % PROMPTS.len()],
            json!({"max_tokens": MAX, "stream": true}),
        );
        tasks.push(tokio::spawn(async move {
            let r = c.post(url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 200);
            read_body(r, Duration::from_secs(280)).await
        }));
    }
    let mut mismatches = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let raw = t.await.unwrap();
        let sse = parse_strict(&raw).unwrap_or_else(|e| panic!("stream {i}: bad SSE: {e}\n{raw}"));
        let last = &sse.events[sse.events.len() - 1]["choices"][0];
        assert!(
            last["finish_reason"].is_string(),
            "stream {i} did not finish: {raw}"
        );
        let got = chat_content(&sse.events, 0);
        let want = &solo[i % PROMPTS.len()];
        if got != *want {
            mismatches.push(format!(
                "stream {i} (prompt {}): got {got:?}, alone {want:?}",
                i % PROMPTS.len()
            ));
        }
    }
    println!(
        "32 streams of {MAX} tokens in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    stop.store(true, Ordering::Relaxed);
    let max_running = watcher.await.unwrap();
    assert!(
        mismatches.is_empty(),
        "batched output differs from solo output:\n{}",
        mismatches.join("\n")
    );
    assert!(
        max_running > 1.0,
        "ferrite_requests_running never exceeded 1 (max {max_running}): not batched"
    );

    let after = scrape(&c, &s.url).await;
    let steps_after =
        metric(&after, "ferrite_batch_tokens_count").expect("ferrite_batch_tokens histogram");
    assert!(
        steps_after > steps_before,
        "ferrite_batch_tokens_count did not grow ({steps_before} -> {steps_after})"
    );
    // Fewer engine steps than tokens streamed: the streams shared steps.
    assert!(
        steps_after - steps_before < (32 * MAX) as f64,
        "{} steps for 32 x {MAX} tokens: not batched",
        steps_after - steps_before
    );
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dropped_streams_free_their_blocks() {
    let _serial = SERIAL.lock().await;
    let s = server();
    let c = client();
    let url = format!("{}/v1/chat/completions", s.url);
    wait_idle(&c, &s.url, Duration::from_secs(30)).await;
    let cancelled_before = metric(
        &scrape(&c, &s.url).await,
        "ferrite_sequences_cancelled_total",
    )
    .unwrap_or(0.0);

    let sends = (0..8).map(|i| {
        let body = chat(
            PROMPTS[i % PROMPTS.len()],
            json!({"max_tokens": 2000, "ignore_eos": true, "stream": true}),
        );
        c.post(url.clone()).json(&body).send()
    });
    let mut readers = Vec::new();
    for r in futures::future::join_all(sends).await {
        let r = r.unwrap();
        assert_eq!(r.status(), 200);
        readers.push(BlockReader::new(r));
    }
    // Read until each stream has produced generated text (so it holds KV blocks).
    for (i, rd) in readers.iter_mut().enumerate() {
        loop {
            let block = rd
                .next_block(Duration::from_secs(60))
                .await
                .expect("stream ended early");
            let v: Value = serde_json::from_str(block.strip_prefix("data: ").unwrap()).unwrap();
            if v["choices"][0]["delta"]["content"]
                .as_str()
                .is_some_and(|t| !t.is_empty())
            {
                break;
            }
            assert!(
                v["choices"][0]["finish_reason"].is_null(),
                "stream {i} finished early: {v}"
            );
        }
    }
    let busy = scrape(&c, &s.url).await;
    assert_eq!(
        metric(&busy, "ferrite_requests_running"),
        Some(8.0),
        "8 streams running:\n{busy}"
    );
    assert!(
        metric(&busy, "ferrite_kv_cache_blocks_used").unwrap() > 0.0,
        "running streams hold blocks"
    );

    drop(readers);
    let t0 = Instant::now();
    wait_cancelled(&c, &s.url, cancelled_before + 8.0, Duration::from_secs(10)).await;
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;
    println!(
        "8 dropped streams freed in {:.2}s",
        t0.elapsed().as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn non_streaming_client_timeout_frees_blocks() {
    let _serial = SERIAL.lock().await;
    let s = server();
    let c = client();
    wait_idle(&c, &s.url, Duration::from_secs(30)).await;
    let cancelled_before = metric(
        &scrape(&c, &s.url).await,
        "ferrite_sequences_cancelled_total",
    )
    .unwrap_or(0.0);

    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let body = chat(PROMPTS[0], json!({"max_tokens": 2000, "ignore_eos": true}));
    let err = impatient
        .post(format!("{}/v1/chat/completions", s.url))
        .json(&body)
        .send()
        .await
        .expect_err("a 2000-token answer cannot arrive within 300 ms");
    assert!(err.is_timeout(), "expected a client timeout, got {err}");
    drop(impatient);

    // Gauges are published after each engine step, so first wait for the abort itself.
    wait_cancelled(&c, &s.url, cancelled_before + 1.0, Duration::from_secs(10)).await;
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;
}

/// Polls until `ferrite_sequences_cancelled_total` reaches `target` (panics after
/// `limit`, or if it goes past it).
async fn wait_cancelled(c: &reqwest::Client, url: &str, target: f64, limit: Duration) {
    let t0 = Instant::now();
    loop {
        let got = metric(&scrape(c, url).await, "ferrite_sequences_cancelled_total").unwrap_or(0.0);
        assert!(
            got <= target,
            "ferrite_sequences_cancelled_total is {got}, expected {target}"
        );
        if got == target {
            return;
        }
        assert!(
            t0.elapsed() < limit,
            "ferrite_sequences_cancelled_total still {got} after {limit:?}, expected {target}: \
             the abandoned request was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn models_and_health_shapes() {
    let s = server();
    let c = client();
    let r = c.get(format!("{}/v1/models", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["object"], "list", "{v}");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "{v}");
    let card = &data[0];
    assert_eq!(card["id"], MODEL);
    assert_eq!(card["object"], "model");
    assert!(card["created"].as_u64().is_some(), "{card}");
    assert!(card["owned_by"].is_string(), "{card}");

    let r = c
        .get(format!("{}/v1/models/{MODEL}", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let one: Value = r.json().await.unwrap();
    assert_eq!(&one, card, "GET /v1/models/{{id}} returns the same card");

    let r = c.get(format!("{}/health", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["model"], MODEL, "{h}");
    assert!(
        h["device"].as_str().is_some_and(|d| !d.is_empty()),
        "health lacks device: {h}"
    );
}
