//! Ollama's API on the real binary and model: the official `ollama` Python client (PyPI,
//! in a venv under `target/py-ollama-venv`) and JavaScript client (npm, installed under
//! `target/js-ollama`) run unchanged against it; NDJSON framing checked byte by byte on
//! real output; 16 concurrent `/api/generate` streams run batched (they overlap in time,
//! `/metrics` shows more than one running, and the engine takes fewer steps than tokens).

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::sse::{metric, read_body, scrape, wait_idle};
use common::{MODEL, Server};
use serde_json::{Value, json};

const ALIAS: &str = "smollm2:135m";
const ENCODER: &str = "all-MiniLM-L6-v2";

fn server() -> &'static Server {
    let encoder = common::default_encoder();
    let encoder: &'static str = Box::leak(encoder.display().to_string().into_boxed_str());
    Server::shared(&["--model-alias", ALIAS, "--encoder", encoder])
}

fn run_check(mut cmd: Command, what: &str, marker: &str) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains(marker), "{stdout}");
}

#[test]
fn official_python_client_works_unchanged() {
    let python = common::python_venv("py-ollama-venv", &["ollama"]);
    let s = server();
    let script = common::repo_root().join("tests/python/ollama_client_check.py");
    let mut cmd = Command::new(&python);
    cmd.arg(&script)
        .args([s.url.as_str(), MODEL, ALIAS, ENCODER]);
    run_check(
        cmd,
        "the ollama Python client",
        "all ollama Python client checks passed",
    );
}

/// `target/js-ollama` with the `ollama` npm package installed (once per stamp).
fn js_client_dir() -> PathBuf {
    let dir = common::repo_root().join("target").join("js-ollama");
    if !dir.join("node_modules/ollama/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("package.json"),
            r#"{"private":true,"type":"module"}"#,
        )
        .unwrap();
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "ollama"])
            .current_dir(&dir)
            .output()
            .expect("running npm (node 20 and npm are needed)");
        assert!(
            out.status.success(),
            "npm install ollama failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    dir
}

#[test]
fn official_javascript_client_works_unchanged() {
    let dir = js_client_dir();
    // Node resolves `import "ollama"` from the script's folder: run a copy from there.
    let script = dir.join("ollama_client_check.mjs");
    std::fs::copy(
        common::repo_root().join("tests/js/ollama_client_check.mjs"),
        &script,
    )
    .unwrap();
    let s = server();
    let mut cmd = Command::new("node");
    cmd.arg(&script)
        .args([s.url.as_str(), MODEL, ALIAS, ENCODER]);
    run_check(
        cmd,
        "the ollama JavaScript client",
        "all ollama JavaScript client checks passed",
    );
}

/// Checks Ollama's documented stream framing on `body` and returns its objects: each line
/// one compact JSON object ended by `\n`; every line but the last `done: false` with
/// exactly `model, created_at, <text field>, done`; the last `done: true` with the counters.
fn check_framing(body: &str, text_field: &str) -> Vec<Value> {
    assert!(body.ends_with("}\n"), "{body:?}");
    assert!(!body.contains("\n\n") && !body.contains('\r') && !body.contains("data:"));
    let lines: Vec<(Value, Vec<String>)> = body
        .split_terminator('\n')
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}"));
            // Compact: re-serialising gives back as many bytes (serde_json sorts keys).
            let compact = serde_json::to_string(&v).unwrap();
            assert_eq!(compact.len(), l.len(), "one compact object per line: {l}");
            (v, wire_keys(l))
        })
        .collect();
    assert!(lines.len() >= 3, "{body}");
    let (last, rest) = lines.split_last().unwrap();
    for (l, keys) in rest {
        assert_eq!(keys, &["model", "created_at", text_field, "done"], "{l}");
        assert_eq!(l["done"], false);
    }
    assert_eq!(
        last.1,
        [
            "model",
            "created_at",
            text_field,
            "done",
            "done_reason",
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration"
        ]
    );
    let last = &last.0;
    assert_eq!(last["done"], true);
    for k in ["total_duration", "prompt_eval_duration", "eval_duration"] {
        assert!(last[k].as_u64().unwrap() > 0, "{k}: {last}");
    }
    lines.into_iter().map(|(v, _)| v).collect()
}

/// The keys of a JSON object line in the order they appear on the wire.
fn wire_keys(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    use serde::Deserializer as _;
    serde_json::Deserializer::from_str(line)
        .deserialize_map(Keys)
        .expect("a JSON object")
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn ndjson_framing_matches_ollamas_docs_on_real_output() {
    let s = server();
    let c = client();
    let opts = json!({"num_predict": 8, "temperature": 0});
    let r = c
        .post(format!("{}/api/generate", s.url))
        .json(&json!({"model": ALIAS, "prompt": "Why is the sky blue?", "options": opts}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let body = read_body(r, Duration::from_secs(120)).await;
    let lines = check_framing(&body, "response");
    let last = lines.last().unwrap();
    assert_eq!(last["model"], ALIAS);
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 8);
    let streamed: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    // The same request unstreamed, and through the OpenAI route: one engine, one answer.
    let one: Value = c
        .post(format!("{}/api/generate", s.url))
        .json(
            &json!({"model": ALIAS, "prompt": "Why is the sky blue?", "stream": false,
                      "options": opts}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["response"].as_str(), Some(streamed.as_str()));
    let openai: Value = c
        .post(format!("{}/v1/chat/completions", s.url))
        .json(&json!({"model": MODEL, "max_tokens": 8, "temperature": 0,
                      "repetition_penalty": 1.1,
                      "messages": [{"role": "user", "content": "Why is the sky blue?"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        openai["choices"][0]["message"]["content"].as_str(),
        Some(streamed.as_str()),
        "both APIs run the same validated request"
    );

    let r = c
        .post(format!("{}/api/chat", s.url))
        .json(&json!({"model": MODEL, "options": opts,
                      "messages": [{"role": "user", "content": "Say hi."}]}))
        .send()
        .await
        .unwrap();
    let lines = check_framing(&read_body(r, Duration::from_secs(120)).await, "message");
    assert_eq!(lines[0]["message"]["role"], "assistant");
}

#[tokio::test(flavor = "multi_thread")]
async fn sixteen_generate_streams_run_batched() {
    let s = server();
    let c = client();
    wait_idle(&c, &s.url, Duration::from_secs(60)).await;
    let steps_before =
        metric(&scrape(&c, &s.url).await, "ferrite_batch_tokens_count").unwrap_or(0.0);
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (c, base, stop) = (c.clone(), s.url.clone(), stop.clone());
        tokio::spawn(async move {
            let mut peak: f64 = 0.0;
            while !stop.load(Ordering::Relaxed) {
                let text = scrape(&c, &base).await;
                peak = peak.max(metric(&text, "ferrite_requests_running").unwrap_or(0.0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            peak
        })
    };
    const N: usize = 16;
    const TOKENS: u64 = 24;
    let t0 = Instant::now();
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (c, url) = (c.clone(), format!("{}/api/generate", s.url));
            tokio::spawn(async move {
                let body = json!({"model": ALIAS, "prompt": format!("Count to ten, take {i}."),
                                  "options": {"num_predict": TOKENS, "temperature": 0, "ignore_eos": true}});
                let r = c.post(url).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let start = t0.elapsed();
                let body = read_body(r, Duration::from_secs(280)).await;
                (start, t0.elapsed(), body)
            })
        })
        .collect();
    let mut windows = Vec::new();
    for t in tasks {
        let (start, end, body) = t.await.unwrap();
        let lines = check_framing(&body, "response");
        assert_eq!(lines.last().unwrap()["eval_count"], TOKENS, "{body}");
        windows.push((start, end));
    }
    stop.store(true, Ordering::Relaxed);
    let peak = watcher.await.unwrap();
    let steps =
        metric(&scrape(&c, &s.url).await, "ferrite_batch_tokens_count").unwrap() - steps_before;
    // Overlap: the last stream to start started before the first one ended.
    let last_start = windows.iter().map(|w| w.0).max().unwrap();
    let first_end = windows.iter().map(|w| w.1).min().unwrap();
    println!(
        "{N} streams: peak running {peak}, {steps} steps, overlap {last_start:?} < {first_end:?}"
    );
    assert!(
        last_start < first_end,
        "streams did not overlap: serialised"
    );
    assert!(
        peak > 1.0,
        "ferrite_requests_running never exceeded 1 (peak {peak})"
    );
    assert!(
        steps < (N as u64 * TOKENS) as f64,
        "{steps} engine steps for {N} x {TOKENS} tokens: not batched"
    );
}
