//! A disconnect storm: 100 streaming requests, each cut by its client in the middle of
//! generation (after it has received 1 to 3 tokens of a 2000-token answer), all within
//! a moment of each other. Afterwards the engine must hold nothing: every sequence
//! counted as cancelled, 0 running, 0 waiting, 0 KV blocks in use, within a deadline;
//! and the server must still answer a normal request in full, without having panicked.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::sse::{BlockReader, metric, post_json, scrape, wait_idle};
use common::{Server, chat_body};
use serde_json::{Value, json};

const STREAMS: usize = 100;
/// From the last cut to an idle engine.
const DRAIN_DEADLINE: Duration = Duration::from_secs(30);

const PROMPTS: [&str; 5] = [
    "Tell me a long story about a dragon.",
    "Explain how a steam engine works, in detail.",
    "List every country you know with its capital.",
    "Write a very long poem about the ocean.",
    "Describe the history of computing from the abacus onwards.",
];

/// Reads SSE blocks until `tokens` content deltas have arrived; returns how many did.
async fn read_tokens(rd: &mut BlockReader, tokens: usize, i: usize) -> usize {
    let mut got = 0;
    while got < tokens {
        let block = rd
            .next_block(Duration::from_secs(120))
            .await
            .unwrap_or_else(|| panic!("stream {i} ended before {tokens} tokens"));
        if block.starts_with(':') {
            continue; // keep-alive
        }
        let data = block.strip_prefix("data: ").expect("a data event");
        let v: Value = serde_json::from_str(data).expect("event JSON");
        assert!(v.get("error").is_none(), "stream {i} got an error: {v}");
        let choice = &v["choices"][0];
        assert!(
            choice["finish_reason"].is_null(),
            "stream {i} finished: {v}"
        );
        if choice["delta"]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
        {
            got += 1;
        }
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_streams_cut_mid_generation_leave_nothing_behind() {
    let mut s = Server::start(&["--max-num-seqs", "128", "--max-waiting", "256"]);
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let url = format!("{}/v1/chat/completions", s.url);
    let before = scrape(&c, &s.url).await;
    let cancelled_before = metric(&before, "ferrite_sequences_cancelled_total").unwrap_or(0.0);

    // Every stream reads a few tokens, then waits at the barrier; the main task looks at
    // the engine while all 100 are mid-generation, then releases them to cut at once.
    let ready = Arc::new(tokio::sync::Barrier::new(STREAMS + 1));
    let cut = Arc::new(tokio::sync::Barrier::new(STREAMS + 1));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..STREAMS)
        .map(|i| {
            let (c, url, ready, cut) = (c.clone(), url.clone(), ready.clone(), cut.clone());
            tokio::spawn(async move {
                let body = chat_body(
                    PROMPTS[i % PROMPTS.len()],
                    json!({"max_tokens": 2000, "ignore_eos": true, "stream": true}),
                );
                let r = c.post(&url).json(&body).send().await.expect("POST stream");
                assert_eq!(r.status(), 200, "stream {i}");
                let mut rd = BlockReader::new(r);
                let got = read_tokens(&mut rd, 1 + i % 3, i).await;
                ready.wait().await;
                cut.wait().await;
                drop(rd); // the client goes away mid-generation
                got
            })
        })
        .collect();
    ready.wait().await;
    let busy = scrape(&c, &s.url).await;
    let running = metric(&busy, "ferrite_requests_running").unwrap_or(0.0);
    let waiting = metric(&busy, "ferrite_requests_waiting").unwrap_or(0.0);
    let blocks = metric(&busy, "ferrite_kv_cache_blocks_used").unwrap_or(0.0);
    println!(
        "all {STREAMS} streams mid-generation after {:.1}s: running={running} waiting={waiting} blocks={blocks}",
        t0.elapsed().as_secs_f64()
    );
    assert_eq!(
        running + waiting,
        STREAMS as f64,
        "every stream is in the engine:\n{busy}"
    );
    assert!(blocks > 0.0, "mid-generation streams hold KV blocks");
    cut.wait().await;
    let mut tokens = 0;
    for t in tasks {
        tokens += t.await.expect("stream task");
    }
    let cut_at = Instant::now();
    assert!(
        tokens >= STREAMS,
        "every stream received tokens before its cut"
    );

    // Every cut stream is aborted and everything it held is freed.
    let target = cancelled_before + STREAMS as f64;
    let mut cancelled = 0.0;
    while cut_at.elapsed() < DRAIN_DEADLINE {
        cancelled = metric(
            &scrape(&c, &s.url).await,
            "ferrite_sequences_cancelled_total",
        )
        .unwrap_or(0.0);
        if cancelled >= target {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cancelled, target, "cancelled sequences after the storm");
    wait_idle(&c, &s.url, DRAIN_DEADLINE.saturating_sub(cut_at.elapsed())).await;
    let idle = scrape(&c, &s.url).await;
    assert_eq!(
        metric(&idle, "ferrite_requests_waiting"),
        Some(0.0),
        "{idle}"
    );
    println!(
        "drained in {:.2}s: cancelled +{STREAMS}, running 0, waiting 0, blocks 0",
        cut_at.elapsed().as_secs_f64()
    );

    // Still serving, in full.
    let health = c.get(format!("{}/health", s.url)).send().await.unwrap();
    assert_eq!(health.status(), 200, "/health after the storm");
    let body = chat_body("Say hello.", json!({"max_tokens": 8, "ignore_eos": true}));
    let (status, _, v) = post_json(&c, &url, &body).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["usage"]["completion_tokens"], 8, "{v}");
    assert_eq!(v["choices"][0]["finish_reason"], "length", "{v}");
    assert!(s.is_running(), "the server died");
    assert_eq!(s.logged_panic(), None, "the server panicked");
}
