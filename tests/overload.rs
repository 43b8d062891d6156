//! Overload: a server that holds 4 running + 4 waiting sequences (`--max-num-seqs 4
//! --max-waiting 4`) is driven by 48 clients at once for a fixed time (6x what it can
//! hold), with streaming and plain chat and text completions, some with `n = 2`.
//!
//! What must hold: only 200s and 429s (no 5xx, no other status, no broken connection);
//! every 429 has `Retry-After` and OpenAI's error shape; every accepted request completes
//! with its full output (`max_tokens` tokens per choice, `finish_reason: length`, a
//! well-formed SSE body ending in `[DONE]`); afterwards 0 running, 0 waiting, 0 KV
//! blocks; and the server's resident memory is back near its idle level.
//!
//! The memory bound: RSS after the overload, once idle, may exceed the idle RSS measured
//! after a warm-up at full capacity by at most `RSS_SLACK_KIB` (allocator caches and
//! arena growth; what would fail it is memory that grows with the number of requests).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::sse::{metric, parse_strict, scrape, wait_idle};
use common::{MODEL, Server, chat_body};
use serde_json::{Value, json};
use tokio::sync::Mutex;

const CLIENTS: usize = 48;
const DRIVE_FOR: Duration = Duration::from_secs(20);
const MAX_TOKENS: u64 = 12;
const RSS_SLACK_KIB: u64 = 64 * 1024;

/// What one request is.
#[derive(Debug, Clone, Copy)]
struct Shape {
    chat: bool,
    stream: bool,
    n: u64,
}

impl Shape {
    fn of(i: usize) -> Self {
        Shape {
            chat: i.is_multiple_of(2),
            stream: !i.is_multiple_of(3),
            n: if i.is_multiple_of(7) { 2 } else { 1 },
        }
    }

    fn body(self, i: usize) -> (&'static str, Value) {
        let extra = json!({
            "max_tokens": MAX_TOKENS, "ignore_eos": true, "n": self.n, "temperature": 0.8,
            "seed": i, "stream": self.stream, "stream_options": if self.stream {
                json!({"include_usage": true}) } else { Value::Null },
        });
        if self.chat {
            (
                "/v1/chat/completions",
                chat_body(&format!("Count to {i}."), extra),
            )
        } else {
            let mut b = common::merged(
                json!({"model": MODEL, "prompt": format!("{i} apples and")}),
                extra,
            );
            if !self.stream {
                b.as_object_mut().unwrap().remove("stream_options");
            }
            ("/v1/completions", b)
        }
    }
}

/// Tally of the overload run.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    rejected: usize,
    problems: Vec<String>,
}

/// Checks an accepted response is complete: every choice has `MAX_TOKENS` tokens and
/// finished for `length`.
fn check_complete(shape: Shape, body: &str) -> Result<(), String> {
    let (usage, finishes) = if shape.stream {
        let sse = parse_strict(body)?;
        let usage = sse
            .events
            .iter()
            .rev()
            .find(|e| !e["usage"].is_null())
            .map(|e| e["usage"].clone())
            .ok_or("no usage chunk")?;
        if let Some(err) = sse.events.iter().find(|e| e.get("error").is_some()) {
            return Err(format!("error event {err}"));
        }
        let finishes: Vec<Value> = sse
            .events
            .iter()
            .flat_map(|e| e["choices"].as_array().cloned().unwrap_or_default())
            .filter(|c| !c["finish_reason"].is_null())
            .map(|c| c["finish_reason"].clone())
            .collect();
        (usage, finishes)
    } else {
        let v: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
        let finishes = v["choices"]
            .as_array()
            .ok_or("no choices")?
            .iter()
            .map(|c| c["finish_reason"].clone())
            .collect();
        (v["usage"].clone(), finishes)
    };
    let want = MAX_TOKENS * shape.n;
    if usage["completion_tokens"].as_u64() != Some(want) {
        return Err(format!("usage {usage}, expected {want} completion tokens"));
    }
    if finishes.len() as u64 != shape.n || finishes.iter().any(|f| f != "length") {
        return Err(format!("finish reasons {finishes:?}"));
    }
    Ok(())
}

/// One request; records its outcome. Returns whether it was rejected.
async fn one(c: &reqwest::Client, base: &str, i: usize, tally: &Mutex<Tally>) -> bool {
    let shape = Shape::of(i);
    let (path, body) = shape.body(i);
    let outcome = async {
        let r = c.post(format!("{base}{path}")).json(&body).send().await;
        let r = r.map_err(|e| format!("request failed: {e}"))?;
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").cloned();
        let text = r
            .text()
            .await
            .map_err(|e| format!("{status} body failed: {e}"))?;
        match status {
            200 => check_complete(shape, &text).map(|()| false),
            429 => {
                let v: Value =
                    serde_json::from_str(&text).map_err(|e| format!("429 not JSON: {e}"))?;
                if retry_after.is_none() || v["error"]["type"] != "rate_limit_error" {
                    return Err(format!("429 without Retry-After or error shape: {text}"));
                }
                Ok(true)
            }
            other => Err(format!("status {other}: {text}")),
        }
    }
    .await;
    let mut t = tally.lock().await;
    match outcome {
        Ok(true) => t.rejected += 1,
        Ok(false) => t.ok += 1,
        Err(ref e) => t.problems.push(format!("request {i} ({shape:?}): {e}")),
    }
    matches!(outcome, Ok(true))
}

/// `clients` concurrent loops of requests until `for_` has passed (or `each` requests
/// per client when given).
async fn drive(s: &Server, clients: usize, for_: Duration, each: Option<usize>) -> Tally {
    let c = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|w| {
            let (c, base, tally, stop) = (c.clone(), s.url.clone(), tally.clone(), stop.clone());
            tokio::spawn(async move {
                for k in 0.. {
                    if each.is_some_and(|e| k >= e)
                        || stop.load(Ordering::Relaxed)
                        || t0.elapsed() > for_
                    {
                        break;
                    }
                    if one(&c, &base, w + k * clients, &tally).await {
                        // A short pause, not the advertised second: keep the pressure on.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        if t.await.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
    }
    Arc::try_unwrap(tally).expect("tasks done").into_inner()
}

async fn settled_rss(s: &Server, c: &reqwest::Client) -> u64 {
    wait_idle(c, &s.url, Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.rss_kib().expect("reading the server's VmRSS")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_times_capacity_gives_only_200_and_429_and_returns_to_idle() {
    let mut s = Server::start(&[
        "--max-num-seqs",
        "4",
        "--max-waiting",
        "4",
        "--kv-cache-memory",
        "256MiB",
    ]);
    let c = reqwest::Client::new();

    // Warm-up within capacity (2 clients: at most 4 sequences, `n = 2` included), every
    // request shape once or more: all accepted.
    let warm = drive(&s, 2, Duration::from_secs(120), Some(6)).await;
    assert!(warm.problems.is_empty(), "warm-up: {:#?}", warm.problems);
    assert_eq!(
        (warm.ok, warm.rejected),
        (12, 0),
        "warm-up at capacity: {warm:?}"
    );
    let idle_rss = settled_rss(&s, &c).await;

    let t0 = Instant::now();
    let tally = drive(&s, CLIENTS, DRIVE_FOR, None).await;
    let took = t0.elapsed();
    let after = scrape(&c, &s.url).await;
    println!(
        "{CLIENTS} clients for {:.1}s: {} accepted and complete, {} rejected with 429, {} problems; preemptions {:?}",
        took.as_secs_f64(),
        tally.ok,
        tally.rejected,
        tally.problems.len(),
        metric(&after, "ferrite_preemptions_total"),
    );
    assert!(
        tally.problems.is_empty(),
        "{:#?}",
        &tally.problems[..tally.problems.len().min(10)]
    );
    assert!(
        tally.ok >= 8,
        "too few requests accepted under overload: {tally:?}"
    );
    assert!(
        tally.rejected > tally.ok,
        "the load never exceeded capacity: {tally:?}"
    );

    let after_rss = settled_rss(&s, &c).await;
    let idle = scrape(&c, &s.url).await;
    assert_eq!(
        metric(&idle, "ferrite_requests_waiting"),
        Some(0.0),
        "{idle}"
    );
    println!(
        "RSS: idle {} MiB, after overload {} MiB (bound: idle + {} MiB)",
        idle_rss / 1024,
        after_rss / 1024,
        RSS_SLACK_KIB / 1024
    );
    assert!(
        after_rss <= idle_rss + RSS_SLACK_KIB,
        "RSS did not return near idle: {idle_rss} KiB idle, {after_rss} KiB after"
    );
    assert!(s.is_running(), "the server died");
    assert_eq!(s.logged_panic(), None, "the server panicked");
}
