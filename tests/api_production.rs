//! The production guards on the real binary: API-key auth (flags and `FERRITE_API_KEYS`,
//! keys never logged or shown in `--help`), per-key and per-IP rate limits, the
//! connection limit, per-request deadlines that free KV blocks, graceful shutdown on
//! SIGTERM (drain, grace period, abort, exit 0) and the response cache.

mod common;

use std::time::{Duration, Instant};

use common::sse::{BlockReader, metric, metric_sum, parse_strict, read_body, wait_idle};
use common::{Server, binary, chat_body};
use serde_json::{Value, json};

const ALPHA: &str = "sk-alpha-7f3e9c1d";
const BETA: &str = "sk-beta-2b8d41aa";
const KV: [&str; 2] = ["--kv-cache-memory", "256MiB"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap()
}

/// A generation far longer than any deadline or grace period used here.
fn long_body(stream: bool) -> Value {
    chat_body(
        "Count from one to one thousand in words.",
        json!({"max_tokens": 3000, "ignore_eos": true, "stream": stream}),
    )
}

async fn get(c: &reqwest::Client, url: &str, key: Option<&str>) -> reqwest::Response {
    let mut r = c.get(url);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

async fn post(
    c: &reqwest::Client,
    url: &str,
    key: Option<&str>,
    body: &Value,
) -> reqwest::Response {
    let mut r = c.post(url).json(body);
    if let Some(k) = key {
        r = r.bearer_auth(k);
    }
    r.send().await.unwrap_or_else(|e| panic!("POST {url}: {e}"))
}

/// Asserts `resp` is `status` with an OpenAI error body; returns the error object.
async fn error_of(resp: reqwest::Response, status: u16) -> (reqwest::header::HeaderMap, Value) {
    assert_eq!(resp.status().as_u16(), status);
    let headers = resp.headers().clone();
    assert!(headers.contains_key("x-request-id"));
    let v: Value = resp.json().await.expect("error body is JSON");
    let e = v["error"].clone();
    assert!(e["message"].is_string() && e["type"].is_string(), "{v}");
    let obj = e.as_object().unwrap();
    assert!(obj.contains_key("param") && obj.contains_key("code"), "{v}");
    (headers, e)
}

/// Server A: two keys and a response cache with a 3 s TTL (shared by two tests).
fn keyed_server() -> &'static Server {
    Server::shared(&[
        "--api-key",
        ALPHA,
        "--api-key",
        BETA,
        "--response-cache-entries",
        "8",
        "--response-cache-ttl-secs",
        "3",
        KV[0],
        KV[1],
    ])
}

#[tokio::test(flavor = "multi_thread")]
async fn every_route_but_health_needs_a_valid_key() {
    let s = keyed_server();
    let c = client();
    let models = format!("{}/v1/models", s.url);
    assert_eq!(
        get(&c, &format!("{}/health", s.url), None).await.status(),
        200
    );

    let (headers, e) = error_of(get(&c, &models, None).await, 401).await;
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["code"], "invalid_api_key");
    assert!(e["param"].is_null());
    let wrong = "sk-wrong-55aa11";
    let (_, e) = error_of(get(&c, &models, Some(wrong)).await, 401).await;
    assert_eq!(e["code"], "invalid_api_key");
    assert!(!e["message"].as_str().unwrap().contains(wrong), "{e}");
    let basic = c
        .get(&models)
        .basic_auth("user", Some(ALPHA))
        .send()
        .await
        .unwrap();
    error_of(basic, 401).await;

    for key in [ALPHA, BETA] {
        let r = get(&c, &models, Some(key)).await;
        assert_eq!(r.status(), 200, "key {key}");
    }
    let chat = format!("{}/v1/chat/completions", s.url);
    // Sampled, so it stays out of the response cache the other test of this server counts.
    let body = chat_body("Hi", json!({"max_tokens": 2, "temperature": 1.0}));
    error_of(post(&c, &chat, None, &body).await, 401).await;
    assert_eq!(post(&c, &chat, Some(BETA), &body).await.status(), 200);

    // /metrics is not public by default; unknown routes answer 401 before 404.
    let metrics = format!("{}/metrics", s.url);
    error_of(get(&c, &metrics, None).await, 401).await;
    assert_eq!(get(&c, &metrics, Some(ALPHA)).await.status(), 200);
    let nowhere = format!("{}/v1/nowhere", s.url);
    error_of(get(&c, &nowhere, None).await, 401).await;
    error_of(get(&c, &nowhere, Some(ALPHA)).await, 404).await;

    let log = plain_log(s);
    for secret in [ALPHA, BETA, wrong] {
        assert!(!log.contains(secret), "a key reached the log");
    }
    assert!(log.contains("api_keys=2"), "the key count is logged");
}

/// (hits, misses) of the response cache.
async fn cache_counters(c: &reqwest::Client, base: &str) -> (f64, f64) {
    let text = get(c, &format!("{base}/metrics"), Some(ALPHA))
        .await
        .text()
        .await
        .unwrap();
    let m = |n| metric(&text, n).unwrap_or_else(|| panic!("{n} missing"));
    (
        m("ferrite_cache_hits_total"),
        m("ferrite_cache_misses_total"),
    )
}

/// The server log without terminal colour codes.
fn plain_log(s: &Server) -> String {
    let mut out = String::new();
    let mut chars = s.log_text().chars().collect::<Vec<_>>().into_iter();
    while let Some(ch) = chars.next() {
        if ch == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(ch);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn response_cache_hits_misses_expires_and_never_crosses_keys() {
    let s = keyed_server();
    let c = client();
    let url = format!("{}/v1/chat/completions", s.url);
    let counters = async || cache_counters(&c, &s.url).await;
    let send = |key: &'static str, body: Value| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let r = post(&c, &url, Some(key), &body).await;
            assert_eq!(r.status(), 200);
            let cache = r
                .headers()
                .get("x-ferrite-cache")
                .map(|v| v.to_str().unwrap().to_string());
            (cache, r.bytes().await.unwrap())
        }
    };
    let body = chat_body("Name one primary color.", json!({"max_tokens": 8}));
    let (h0, m0) = counters().await;

    let (cache, first) = send(ALPHA, body.clone()).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    // Fields that cannot change a greedy answer share the entry.
    let respelled = common::merged(
        body.clone(),
        json!({"user": "u-1", "seed": 7, "top_p": 0.5}),
    );
    let (cache, again) = send(ALPHA, respelled).await;
    assert_eq!(cache.as_deref(), Some("hit"));
    assert_eq!(again, first, "a hit returns the stored body byte for byte");

    let (cache, other) = send(BETA, body.clone()).await;
    assert_eq!(
        cache.as_deref(),
        Some("miss"),
        "never served across API keys"
    );
    let text = |b: &[u8]| {
        let v: Value = serde_json::from_slice(b).unwrap();
        (
            v["id"].clone(),
            v["choices"][0]["message"]["content"].clone(),
        )
    };
    assert_ne!(
        text(&other).0,
        text(&first).0,
        "a fresh completion has a fresh id"
    );
    assert_eq!(text(&other).1, text(&first).1, "greedy output is the same");
    assert_eq!(counters().await, (h0 + 1.0, m0 + 2.0));

    // Streaming and sampled requests bypass the cache: no lookup, no header.
    let r = post(
        &c,
        &url,
        Some(ALPHA),
        &common::merged(body.clone(), json!({"stream": true})),
    )
    .await;
    assert!(r.headers().get("x-ferrite-cache").is_none());
    parse_strict(&read_body(r, Duration::from_secs(60)).await).unwrap();
    let sampled = common::merged(body.clone(), json!({"temperature": 0.9}));
    let r = post(&c, &url, Some(ALPHA), &sampled).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-ferrite-cache").is_none());
    assert_eq!(counters().await, (h0 + 1.0, m0 + 2.0));

    // After the TTL (3 s) the entry is stale.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    let (cache, _) = send(ALPHA, body).await;
    assert_eq!(cache.as_deref(), Some("miss"));
    assert_eq!(counters().await, (h0 + 1.0, m0 + 3.0));
}

#[tokio::test(flavor = "multi_thread")]
async fn env_keys_public_metrics_and_per_key_rate_limits() {
    let s = Server::start_with_env(
        &[
            "--metrics-public",
            "--rate-limit",
            "0.2",
            "--rate-limit-burst",
            "2",
            KV[0],
            KV[1],
        ],
        &[("FERRITE_API_KEYS", "sk-gamma-01, sk-delta-02")],
    );
    let c = client();
    let models = format!("{}/v1/models", s.url);
    assert_eq!(
        get(&c, &format!("{}/metrics", s.url), None).await.status(),
        200
    );

    assert_eq!(get(&c, &models, Some("sk-gamma-01")).await.status(), 200);
    assert_eq!(get(&c, &models, Some("sk-gamma-01")).await.status(), 200);
    let (headers, e) = error_of(get(&c, &models, Some("sk-gamma-01")).await, 429).await;
    // One token takes 5 s at 0.2/s, less what has refilled since the first request.
    let retry = &headers["retry-after"];
    assert!(retry == "5" || retry == "4", "Retry-After {retry:?}");
    assert_eq!(e["type"], "rate_limit_error");
    assert_eq!(e["code"], "rate_limit_exceeded");
    // Another key has its own bucket.
    assert_eq!(get(&c, &models, Some("sk-delta-02")).await.status(), 200);
    // Callers without a valid key share their IP's bucket, charged before the 401.
    error_of(get(&c, &models, Some("sk-guess-1")).await, 401).await;
    error_of(get(&c, &models, None).await, 401).await;
    error_of(get(&c, &models, Some("sk-guess-2")).await, 429).await;
    // Probes and scrapes are never limited.
    for _ in 0..4 {
        assert_eq!(
            get(&c, &format!("{}/health", s.url), None).await.status(),
            200
        );
        assert_eq!(
            get(&c, &format!("{}/metrics", s.url), None).await.status(),
            200
        );
    }
    assert!(
        !s.log_text().contains("sk-gamma-01"),
        "a key reached the log"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn per_ip_rate_limit_without_keys() {
    let s = Server::start(&[
        "--rate-limit",
        "0.5",
        "--rate-limit-burst",
        "3",
        KV[0],
        KV[1],
    ]);
    let c = client();
    let models = format!("{}/v1/models", s.url);
    for i in 0..3 {
        assert_eq!(get(&c, &models, None).await.status(), 200, "request {i}");
    }
    let (headers, _) = error_of(get(&c, &models, None).await, 429).await;
    let retry = &headers["retry-after"];
    assert!(retry == "2" || retry == "1", "Retry-After {retry:?}");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert_eq!(
        get(&c, &models, None).await.status(),
        200,
        "refilled after Retry-After"
    );
    let text = get(&c, &format!("{}/metrics", s.url), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(r#"ferrite_requests_total{status="429"} 1"#),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn help_lists_every_production_flag_and_hides_env_keys() {
    let out = std::process::Command::new(binary())
        .args(["serve", "--help"])
        .env("FERRITE_API_KEYS", "sk-hidden-in-help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for (flag, var) in [
        ("--api-key", "FERRITE_API_KEYS"),
        ("--metrics-public", "FERRITE_METRICS_PUBLIC"),
        ("--rate-limit ", "FERRITE_RATE_LIMIT="),
        ("--rate-limit-burst", "FERRITE_RATE_LIMIT_BURST"),
        ("--trust-forwarded-for", "FERRITE_TRUST_FORWARDED_FOR"),
        ("--max-connections", "FERRITE_MAX_CONNECTIONS"),
        ("--header-read-timeout", "FERRITE_HEADER_READ_TIMEOUT"),
        ("--request-timeout", "FERRITE_REQUEST_TIMEOUT"),
        ("--shutdown-grace-secs", "FERRITE_SHUTDOWN_GRACE_SECS"),
        ("--response-cache-entries", "FERRITE_RESPONSE_CACHE_ENTRIES"),
        (
            "--response-cache-ttl-secs",
            "FERRITE_RESPONSE_CACHE_TTL_SECS",
        ),
    ] {
        assert!(help.contains(flag), "{flag} missing from --help");
        assert!(
            help.contains(var.trim_end_matches('=')),
            "{var} missing from --help"
        );
    }
    assert!(!help.contains("sk-hidden-in-help"), "--help printed a key");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_over_the_limit_wait_until_one_closes() {
    let s = Server::start(&["--max-connections", "2", KV[0], KV[1]]);
    let addr = s.url.trim_start_matches("http://").to_string();
    // Two idle connections take both slots.
    let a = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let b = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = client();
    let health = format!("{}/health", s.url);
    let held = c
        .get(&health)
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(
        held.is_err(),
        "a third connection was served: {:?}",
        held.map(|r| r.status())
    );
    drop(a);
    let r = c
        .get(&health)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "served once a slot freed");
    drop(b);
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_header_clients_are_cut_off_but_long_streams_are_not() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start(&[
        "--max-connections",
        "1",
        "--header-read-timeout",
        "1",
        KV[0],
        KV[1],
    ]);
    let addr = s.url.trim_start_matches("http://").to_string();
    // A slowloris client takes the only slot and never finishes its request head.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let t0 = Instant::now();
    let c = client();
    let r = c
        .get(format!("{}/health", s.url))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("served once the slow connection is closed");
    assert_eq!(r.status(), 200);
    assert!(
        t0.elapsed() >= Duration::from_millis(500),
        "{:?}",
        t0.elapsed()
    );
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the slow connection was closed");
    drop(r);
    // A stream far longer than the header timeout runs to the end.
    let body = chat_body(
        "Tell me a long story.",
        json!({"max_tokens": 300, "ignore_eos": true, "stream": true}),
    );
    let t1 = Instant::now();
    let text = c
        .post(format!("{}/v1/chat/completions", s.url))
        .json(&body)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let sse = parse_strict(&text).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sse.events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "length"),
        "stream cut short after {:?}",
        t1.elapsed()
    );
    assert!(t1.elapsed() > Duration::from_secs(1), "{:?}", t1.elapsed());
}

#[tokio::test(flavor = "multi_thread")]
async fn deadline_stops_generation_and_frees_kv_blocks() {
    let s = Server::start(&["--request-timeout", "2", KV[0], KV[1]]);
    let c = client();
    let url = format!("{}/v1/chat/completions", s.url);
    let short = chat_body("Hi", json!({"max_tokens": 4}));
    assert_eq!(post(&c, &url, None, &short).await.status(), 200);

    let t0 = Instant::now();
    let (_, e) = error_of(post(&c, &url, None, &long_body(false)).await, 504).await;
    let took = t0.elapsed();
    assert_eq!(e["code"], "request_timeout");
    assert_eq!(e["type"], "server_error");
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;

    let t0 = Instant::now();
    let r = post(&c, &url, None, &long_body(true)).await;
    assert_eq!(r.status(), 200);
    let body = read_body(r, Duration::from_secs(30)).await;
    let took = t0.elapsed();
    let sse = parse_strict(&body).unwrap_or_else(|e| panic!("{e}"));
    let (last, before) = sse.events.split_last().expect("events");
    assert_eq!(last["error"]["code"], "request_timeout", "{last}");
    assert!(before.iter().all(|e| e.get("error").is_none()));
    assert!(
        before
            .iter()
            .any(|e| e["choices"][0]["delta"]["content"].is_string())
    );
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(6),
        "{took:?}"
    );
    wait_idle(&c, &s.url, Duration::from_secs(10)).await;
    let text = get(&c, &format!("{}/metrics", s.url), None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metric_sum(&text, "ferrite_sequences_cancelled_total") >= 2.0,
        "{text}"
    );
    assert!(
        text.contains(r#"ferrite_requests_total{status="504"} 2"#),
        "{text}"
    );
}

/// Opens a stream and waits for its first content chunk.
async fn running_stream(c: &reqwest::Client, url: &str, body: &Value) -> BlockReader {
    let r = post(c, url, None, body).await;
    assert_eq!(r.status(), 200);
    let mut reader = BlockReader::new(r);
    loop {
        let block = reader
            .next_block(Duration::from_secs(60))
            .await
            .expect("stream ended early");
        if block.contains("\"content\":\"") && !block.contains("\"content\":\"\"") {
            return reader;
        }
    }
}

async fn rest_of(mut reader: BlockReader) -> String {
    while reader.next_block(Duration::from_secs(60)).await.is_some() {}
    reader.raw
}

/// Polls `/health` on fresh connections until it says 503 draining (the listener stays
/// open while requests are in flight, so load balancers' probes see the 503).
async fn wait_drained(base: &str, limit: Duration) {
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let t0 = Instant::now();
    while t0.elapsed() < limit {
        let r = fresh
            .get(format!("{base}/health"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .expect("the listener stays open while requests are in flight");
        if r.status() == 503 {
            let v: Value = r.json().await.unwrap();
            assert_eq!(v["status"], "draining");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("/health still 200 {limit:?} after SIGTERM");
}

/// Waits (off the async threads) up to `limit` for the server process to exit.
async fn exit_of(mut s: Server, limit: Duration) -> (Option<std::process::ExitStatus>, Server) {
    tokio::task::spawn_blocking(move || (s.wait_exit(limit), s))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_drains_finishes_short_requests_aborts_long_ones_and_exits_zero() {
    let grace = Duration::from_secs(5);
    let s = Server::start(&["--shutdown-grace-secs", "5", KV[0], KV[1]]);
    let c = client();
    let url = format!("{}/v1/chat/completions", s.url);
    let long = running_stream(&c, &url, &long_body(true)).await;
    let short_body = chat_body(
        "Say hello.",
        json!({"max_tokens": 24, "ignore_eos": true, "stream": true}),
    );
    let short = running_stream(&c, &url, &short_body).await;

    s.signal("TERM");
    let t_signal = Instant::now();
    let (long, short) = (tokio::spawn(rest_of(long)), tokio::spawn(rest_of(short)));
    wait_drained(&s.url, Duration::from_secs(2)).await;
    // A request arriving while draining is refused at once, in OpenAI's shape.
    let late = reqwest::Client::new()
        .post(&url)
        .json(&short_body)
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), 503);
    let v: Value = late.json().await.unwrap();
    assert_eq!(v["error"]["code"], "server_shutting_down", "{v}");

    let short = short.await.unwrap();
    let sse = parse_strict(&short).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        sse.events.iter().all(|e| e.get("error").is_none()),
        "short stream aborted"
    );
    assert!(
        sse.events
            .iter()
            .any(|e| e["choices"][0]["finish_reason"] == "length")
    );
    assert!(
        t_signal.elapsed() < grace,
        "short stream did not finish within the grace period"
    );

    let long = long.await.unwrap();
    let aborted_after = t_signal.elapsed();
    let sse = parse_strict(&long).unwrap_or_else(|e| panic!("{e}"));
    let last = sse.events.last().unwrap();
    assert_eq!(last["error"]["code"], "server_shutting_down", "{last}");
    assert!(
        aborted_after >= grace - Duration::from_millis(200),
        "{aborted_after:?}"
    );

    let (status, s) = exit_of(s, Duration::from_secs(5)).await;
    let exited_after = t_signal.elapsed();
    let status = status.unwrap_or_else(|| panic!("still running {exited_after:?} after SIGTERM"));
    assert!(
        status.success(),
        "exit status {status:?}; log: {}",
        s.log_text()
    );
    assert!(
        exited_after < grace + Duration::from_secs(4),
        "{exited_after:?}"
    );
}

/// Regression: whoever started the server may be gone (its stderr closed) when the
/// SIGTERM comes, as with the harness's own kill-on-exit watchdog. Logging the signal
/// must not panic the shutdown task and leave the server running.
#[test]
fn sigterm_exits_zero_even_with_stderr_closed() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(binary())
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            KV[0],
            KV[1],
            "--model",
        ])
        .arg(common::default_model())
        .env("FERRITE_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l.contains(" ready"));
    drop(lines);
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let t0 = Instant::now();
    let mut exited = None;
    while exited.is_none() && t0.elapsed() < Duration::from_secs(5) {
        exited = child.try_wait().unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    if exited.is_none() {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(ready, "server did not get ready");
    let exited = exited.expect("server still running 5 s after SIGTERM with its stderr closed");
    assert!(status.success() && exited.success(), "exit {status:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_server_exits_zero_at_once_on_sigterm_and_sigint() {
    for sig in ["TERM", "INT"] {
        let s = Server::start(&[KV[0], KV[1]]);
        s.signal(sig);
        let t0 = Instant::now();
        let (status, s) = exit_of(s, Duration::from_secs(5)).await;
        let status = status.unwrap_or_else(|| panic!("SIG{sig}: still running after 5 s"));
        assert!(
            status.success(),
            "SIG{sig}: exit {status:?}; log: {}",
            s.log_text()
        );
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "SIG{sig}: {:?}",
            t0.elapsed()
        );
    }
}
