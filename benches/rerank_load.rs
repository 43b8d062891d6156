//! Load generator for rerank: N workers each loop sending `POST /v1/rerank` (Cohere
//! shape) with one query and `--docs` documents of about `--doc-tokens` tokens, until
//! `--requests` are spent, `--duration-secs` pass, or `--stop-file` appears (each
//! worker finishes the request it is in), then print latency p50/p99, requests/s and
//! documents/s. With `--route embeddings` it sends `POST /v1/embeddings` of `--docs`
//! inputs instead; `--model` names the model (the multi-model bench loads several).
//!
//! `cargo bench --bench rerank_load -- --url http://127.0.0.1:8080 --concurrency 8
//! --requests 64 --docs 20 [--doc-tokens 100] [--duration-secs 0] [--json out.json]`.
//! `benches/run_rerank_bench.sh` drives this (and the chat loadgen beside it).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{Value, json};

const WORDS: &[&str] = &[
    "river",
    "mountain",
    "engine",
    "battery",
    "contract",
    "protein",
    "satellite",
    "harbor",
    "algorithm",
    "vaccine",
    "orchestra",
    "glacier",
    "market",
    "language",
    "reactor",
    "forest",
    "telescope",
    "insurance",
    "bridge",
    "volcano",
    "library",
    "enzyme",
    "currency",
    "desert",
    "the",
    "of",
    "and",
    "a",
    "in",
    "is",
    "for",
    "with",
    "on",
    "that",
    "by",
    "from",
    "which",
];

/// Command line of the rerank load generator.
#[derive(Parser, Debug)]
#[command(about = "Rerank load generator")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent workers.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Requests in total (ignored when --duration-secs is set).
    #[arg(long, default_value_t = 32)]
    requests: usize,
    /// Run for this many seconds instead of a request count (0: use --requests).
    #[arg(long, default_value_t = 0)]
    duration_secs: u64,
    /// Documents per request.
    #[arg(long, default_value_t = 20)]
    docs: usize,
    /// Approximate tokens per document (one word is about 1.3 tokens).
    #[arg(long, default_value_t = 100)]
    doc_tokens: usize,
    /// Warm-up requests before measuring.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Stop (after the requests in progress) once this file exists: lets a script
    /// run rerank load exactly as long as another measurement.
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// The `model` to send (default: none, the server's first model for the route).
    #[arg(long)]
    model: Option<String>,
    /// What to send: `rerank` (`/v1/rerank`, a query and `--docs` documents) or
    /// `embeddings` (`/v1/embeddings`, `--docs` inputs).
    #[arg(long, default_value = "rerank", value_parser = ["rerank", "embeddings"])]
    route: String,
}

fn document(seed: usize, words: usize) -> String {
    let mut x = seed as u64 * 0x9E37_79B9_7F4A_7C15 + 1;
    (0..words)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            WORDS[(x % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn body(args: &Args, i: usize) -> Value {
    let words = args.doc_tokens * 10 / 13;
    let docs: Vec<String> = (0..args.docs)
        .map(|d| document(i * 1000 + d, words))
        .collect();
    let mut body = if args.route == "embeddings" {
        json!({"input": docs})
    } else {
        json!({"query": document(i, 12), "documents": docs, "top_n": 5})
    };
    if let Some(m) = &args.model {
        body["model"] = json!(m);
    }
    body
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

async fn one(client: &reqwest::Client, url: &str, body: &Value) -> Result<f64> {
    let t0 = Instant::now();
    let r = client.post(url).json(body).send().await?;
    let status = r.status();
    let v: Value = r.json().await?;
    if !status.is_success() {
        anyhow::bail!("{status}: {v}");
    }
    Ok(t0.elapsed().as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let path = if args.route == "embeddings" {
        "v1/embeddings"
    } else {
        "v1/rerank"
    };
    let url = format!("{}/{path}", args.url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()?;
    for i in 0..args.warmup {
        one(&client, &url, &body(&args, i))
            .await
            .context("warm-up request")?;
    }
    let next = Arc::new(AtomicUsize::new(0));
    let deadline =
        (args.duration_secs > 0).then(|| Instant::now() + Duration::from_secs(args.duration_secs));
    let t0 = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (args, next, client, url) = (args.clone(), next.clone(), client.clone(), url.clone());
        workers.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0usize);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let done = match deadline {
                    Some(d) => Instant::now() >= d,
                    None => i >= args.requests,
                } || args.stop_file.as_ref().is_some_and(|f| f.exists());
                if done {
                    break;
                }
                match one(&client, &url, &body(&args, 100 + i)).await {
                    Ok(ms) => lat.push(ms),
                    Err(e) => {
                        errors += 1;
                        eprintln!("request failed: {e:#}");
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut lat, mut errors) = (Vec::new(), 0);
    for w in workers {
        let (l, e) = w.await?;
        lat.extend(l);
        errors += e;
    }
    let wall = t0.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    let summary = json!({
        "concurrency": args.concurrency,
        "docs": args.docs,
        "doc_tokens": args.doc_tokens,
        "requests": lat.len(),
        "errors": errors,
        "wall_s": wall,
        "req_s": lat.len() as f64 / wall,
        "docs_s": (lat.len() * args.docs) as f64 / wall,
        "latency_ms_p50": percentile(&lat, 0.50),
        "latency_ms_p99": percentile(&lat, 0.99),
    });
    let text = serde_json::to_string_pretty(&summary)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, text)?;
    }
    Ok(())
}
