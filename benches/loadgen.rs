//! Load generator for an OpenAI-compatible server: N workers each loop sending streaming
//! `POST /v1/chat/completions` requests until the request budget is spent, then prints
//! aggregate output tok/s, TTFT and inter-token latency (ITL) percentiles. With
//! `--api ollama` the same load goes through Ollama's `POST /api/generate` (NDJSON; the
//! prompt is rendered with the same chat template, repeat_penalty 1 and `ignore_eos` so
//! both APIs generate the same tokens).
//!
//! `cargo bench --bench loadgen -- --url http://127.0.0.1:8080 --concurrency 8
//! --requests 32 --max-tokens 128 [--model NAME] [--warmup 2] [--json out.json]`.
//! Requests set `ignore_eos: true`, so each one generates exactly `max_tokens` tokens.
//! ITL is the gap between successive content chunks (one chunk is usually one token).
//! `benches/run_serving_bench.sh` drives this against `ferrite serve`.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use futures::StreamExt;
use serde_json::{Value, json};

const PROMPTS: &[&str] = &[
    "What are the main differences between a process and a thread in an operating system?",
    "Explain in simple terms how a hash table handles collisions, with a short example.",
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "What causes the seasons on Earth, and why are they reversed in the southern hemisphere?",
    "Give me three tips for writing clear documentation for a small open source library.",
    "How does compound interest work? Please walk through an example with 1000 dollars.",
    "Describe the water cycle and name the main processes that move water around the planet.",
    "Why is the sky blue during the day but red and orange at sunset? Keep it brief.",
];

/// Command line of the load generator.
#[derive(Parser, Debug)]
#[command(about = "Streaming chat-completions load generator")]
struct Args {
    /// Server base URL.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Number of concurrent workers (streams in flight).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency: u64,
    /// Measured requests in total, shared by all workers.
    #[arg(long, default_value_t = 32)]
    requests: usize,
    /// `max_tokens` of every request.
    #[arg(long, default_value_t = 128)]
    max_tokens: u32,
    /// Model id to send (default: the first id of `GET /v1/models`).
    #[arg(long)]
    model: Option<String>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 0.0)]
    temperature: f64,
    /// Requests run (at the same concurrency) and discarded before measuring.
    #[arg(long, default_value_t = 0)]
    warmup: usize,
    /// Per-request timeout in seconds.
    #[arg(long, default_value_t = 600)]
    timeout_secs: u64,
    /// Also write the results as JSON to this path.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Start every request's message with its own number, so no two prompts share
    /// more than the chat template's preamble (a server's prefix cache then only
    /// saves that part). Default: 8 fixed prompts, cycled.
    #[arg(long)]
    unique_prompts: bool,
    /// Append this many words (" the", one token for llama tokenizers and the synthetic
    /// one) to every prompt: long prompts for prefill-heavy runs.
    #[arg(long, default_value_t = 0)]
    prompt_words: usize,
    /// Which API to load: `openai` (`/v1/chat/completions`, SSE) or `ollama`
    /// (`/api/generate`, NDJSON).
    #[arg(long, default_value = "openai", value_parser = ["openai", "ollama"])]
    api: String,
    /// Constrain every OpenAI request's output with this JSON schema (sent as
    /// `response_format: {"type": "json_schema", ...}`), to measure the cost of
    /// constrained decoding.
    #[arg(long)]
    schema: Option<String>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// What one request observed.
#[derive(Debug, Default)]
struct Record {
    ttft: Option<Duration>,
    /// Arrival of the last content chunk, from the start of the request.
    last: Option<Duration>,
    itl_ms: Vec<f64>,
    chunks: u64,
    completion_tokens: Option<u64>,
    total: Duration,
    error: Option<String>,
}

/// Shared request settings.
struct Job {
    client: reqwest::Client,
    endpoint: String,
    model: String,
    args: Args,
    /// `--schema`, parsed.
    schema: Option<Value>,
}

impl Job {
    fn body(&self, i: usize) -> Value {
        let prompt = PROMPTS[i % PROMPTS.len()];
        let mut content = if self.args.unique_prompts {
            format!("Request {i}. {prompt}")
        } else {
            prompt.to_string()
        };
        content.push_str(&" the".repeat(self.args.prompt_words));
        if self.ollama() {
            return json!({
                "model": self.model,
                "prompt": content,
                "stream": true,
                "options": {"temperature": self.args.temperature, "top_k": 0, "top_p": 1,
                            "repeat_penalty": 1, "num_predict": self.args.max_tokens,
                            "ignore_eos": true},
            });
        }
        let mut body = json!({
            "model": self.model,
            "messages": [{"role": "user", "content": content}],
            "stream": true,
            "stream_options": {"include_usage": true},
            "temperature": self.args.temperature,
            "max_tokens": self.args.max_tokens,
            "ignore_eos": true,
        });
        if let Some(schema) = &self.schema {
            body["response_format"] =
                json!({"type": "json_schema", "json_schema": {"name": "bench", "schema": schema}});
        }
        body
    }

    fn ollama(&self) -> bool {
        self.args.api == "ollama"
    }

    /// Sends request `i` and records its timings; failures land in `Record::error`.
    async fn run_one(&self, i: usize) -> Record {
        let start = Instant::now();
        let mut rec = Record::default();
        if let Err(e) = self.stream_into(i, start, &mut rec).await {
            rec.error = Some(format!("{e:#}"));
        }
        rec.total = start.elapsed();
        rec
    }

    async fn stream_into(&self, i: usize, start: Instant, rec: &mut Record) -> Result<()> {
        let resp = self
            .client
            .post(&self.endpoint)
            .json(&self.body(i))
            .send()
            .await?;
        let status = resp.status();
        if status != reqwest::StatusCode::OK {
            let text = resp.text().await.unwrap_or_default();
            bail!(
                "HTTP {status}: {}",
                text.chars().take(200).collect::<String>()
            );
        }
        let mut stream = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        if self.ollama() {
            while let Some(bytes) = stream.next().await {
                let now = start.elapsed();
                buf.extend_from_slice(&bytes.context("reading the stream")?);
                while let Some(pos) = buf.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    if on_ollama_line(&line, now, rec)? {
                        return Ok(());
                    }
                }
            }
            bail!("stream ended without a done line");
        }
        while let Some(bytes) = stream.next().await {
            let now = start.elapsed();
            // Dropping `\r` (never raw inside JSON) turns `\r\n\r\n` into `\n\n`.
            let bytes = bytes.context("reading the stream")?;
            buf.extend(bytes.iter().filter(|&&b| b != b'\r'));
            while let Some(pos) = find_event_end(&buf) {
                let raw: Vec<u8> = buf.drain(..pos + 2).collect();
                let data = event_data(&String::from_utf8_lossy(&raw));
                match data.as_deref() {
                    None => {}
                    Some("[DONE]") => return Ok(()),
                    Some(d) => on_event(d, now, rec)?,
                }
            }
        }
        bail!("stream ended without [DONE]")
    }
}

/// Index of the first `\n\n`, the end of one SSE event.
fn find_event_end(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\n\n")
}

/// The joined `data:` lines of one SSE event; `None` for comment-only events.
fn event_data(raw: &str) -> Option<String> {
    let lines: Vec<&str> = raw
        .lines()
        .filter(|l| !l.starts_with(':'))
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

/// Applies one JSON event to the record.
fn on_event(data: &str, now: Duration, rec: &mut Record) -> Result<()> {
    let v: Value = serde_json::from_str(data).with_context(|| format!("bad event: {data}"))?;
    if let Some(err) = v.get("error") {
        bail!("error event: {err}");
    }
    if let Some(n) = v
        .pointer("/usage/completion_tokens")
        .and_then(Value::as_u64)
    {
        rec.completion_tokens = Some(n);
    }
    let has_content = v["choices"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| {
            c["delta"]["content"]
                .as_str()
                .is_some_and(|s| !s.is_empty())
        })
    });
    if has_content {
        match rec.last {
            None => rec.ttft = Some(now),
            Some(prev) => rec.itl_ms.push((now - prev).as_secs_f64() * 1e3),
        }
        rec.last = Some(now);
        rec.chunks += 1;
    }
    Ok(())
}

/// Applies one NDJSON line of `/api/generate`; `true` on the final (`done`) line.
fn on_ollama_line(line: &[u8], now: Duration, rec: &mut Record) -> Result<bool> {
    let v: Value = serde_json::from_slice(line)
        .with_context(|| format!("bad line: {}", String::from_utf8_lossy(line)))?;
    if let Some(err) = v.get("error") {
        bail!("error line: {err}");
    }
    if v["response"].as_str().is_some_and(|s| !s.is_empty()) {
        match rec.last {
            None => rec.ttft = Some(now),
            Some(prev) => rec.itl_ms.push((now - prev).as_secs_f64() * 1e3),
        }
        rec.last = Some(now);
        rec.chunks += 1;
    }
    if v["done"] == true {
        rec.completion_tokens = v["eval_count"].as_u64();
        return Ok(true);
    }
    Ok(false)
}

/// Runs `total` requests on `concurrency` workers; returns records and wall time.
async fn run_phase(job: &Arc<Job>, total: usize, concurrency: usize) -> (Vec<Record>, Duration) {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency.min(total.max(1)))
        .map(|_| {
            let (job, next) = (job.clone(), next.clone());
            tokio::spawn(async move {
                let mut out = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= total {
                        return out;
                    }
                    out.push(job.run_one(i).await);
                }
            })
        })
        .collect();
    let mut records = Vec::with_capacity(total);
    for w in workers {
        match w.await {
            Ok(recs) => records.extend(recs),
            Err(e) => records.push(Record {
                error: Some(format!("worker panicked: {e}")),
                ..Record::default()
            }),
        }
    }
    (records, start.elapsed())
}

/// Nearest-rank percentile of an ascending slice (`NaN` when empty).
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// Aggregates the records of the measured phase into the reported numbers.
fn summarize(args: &Args, model: &str, records: &[Record], wall: Duration) -> Value {
    let ok: Vec<&Record> = records.iter().filter(|r| r.error.is_none()).collect();
    let tokens = |r: &Record| r.completion_tokens.unwrap_or(r.chunks);
    let total_tokens: u64 = ok.iter().map(|r| tokens(r)).sum();
    let ttft = sorted(
        ok.iter()
            .filter_map(|r| r.ttft)
            .map(|d| d.as_secs_f64() * 1e3)
            .collect(),
    );
    let itl = sorted(ok.iter().flat_map(|r| r.itl_ms.iter().copied()).collect());
    let decode: Vec<f64> = ok
        .iter()
        .filter_map(|r| {
            let span = (r.last? - r.ttft?).as_secs_f64();
            (tokens(r) > 1 && span > 0.0).then(|| (tokens(r) - 1) as f64 / span)
        })
        .collect();
    let mean = |v: &[f64]| {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        }
    };
    let latency = sorted(ok.iter().map(|r| r.total.as_secs_f64() * 1e3).collect());
    let wall_s = wall.as_secs_f64();
    json!({
        "url": args.url,
        "model": model,
        "concurrency": args.concurrency,
        "requests": records.len(),
        "max_tokens": args.max_tokens,
        "temperature": args.temperature,
        "errors": records.len() - ok.len(),
        "missing_usage": ok.iter().filter(|r| r.completion_tokens.is_none()).count(),
        "short_requests": ok.iter().filter(|r| tokens(r) != u64::from(args.max_tokens)).count(),
        "wall_s": wall_s,
        "output_tokens": total_tokens,
        // ITL is measured between content chunks: tokens without text (special tokens
        // generated under ignore_eos) merge into the next chunk's gap.
        "content_chunks": ok.iter().map(|r| r.chunks).sum::<u64>(),
        "agg_tok_s": total_tokens as f64 / wall_s,
        "req_s": ok.len() as f64 / wall_s,
        "per_stream_decode_tok_s_mean": mean(&decode),
        "ttft_ms_p50": percentile(&ttft, 50.0),
        "ttft_ms_p99": percentile(&ttft, 99.0),
        "ttft_ms_mean": mean(&ttft),
        "itl_ms_p50": percentile(&itl, 50.0),
        "itl_ms_p99": percentile(&itl, 99.0),
        "itl_ms_mean": mean(&itl),
        "latency_ms_p50": percentile(&latency, 50.0),
        "latency_ms_p99": percentile(&latency, 99.0),
    })
}

fn print_summary(s: &Value, records: &[Record]) {
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    let u = |k: &str| s[k].as_u64().unwrap_or(0);
    println!(
        "loadgen: {} | model {} | concurrency {} | {} requests x {} max_tokens",
        s["url"].as_str().unwrap_or(""),
        s["model"].as_str().unwrap_or(""),
        u("concurrency"),
        u("requests"),
        u("max_tokens")
    );
    println!("  wall time            {:>10.2} s", f("wall_s"));
    println!("  output tokens        {:>10}", u("output_tokens"));
    println!(
        "  aggregate throughput {:>10.1} tok/s  ({:.2} req/s)",
        f("agg_tok_s"),
        f("req_s")
    );
    println!(
        "  per-stream decode    {:>10.1} tok/s (mean)",
        f("per_stream_decode_tok_s_mean")
    );
    println!(
        "  TTFT      p50 {:>9.1} ms   p99 {:>9.1} ms",
        f("ttft_ms_p50"),
        f("ttft_ms_p99")
    );
    println!(
        "  ITL       p50 {:>9.2} ms   p99 {:>9.2} ms",
        f("itl_ms_p50"),
        f("itl_ms_p99")
    );
    println!(
        "  latency   p50 {:>9.1} ms   p99 {:>9.1} ms",
        f("latency_ms_p50"),
        f("latency_ms_p99")
    );
    println!(
        "  errors {}   short requests {}   missing usage {}",
        u("errors"),
        u("short_requests"),
        u("missing_usage")
    );
    for (i, e) in records
        .iter()
        .filter_map(|r| r.error.as_ref())
        .take(5)
        .enumerate()
    {
        println!("  error[{i}]: {e}");
    }
}

/// The model to request: `--model`, else the first id listed by `GET /v1/models`.
async fn pick_model(client: &reqwest::Client, base: &str, model: Option<&str>) -> Result<String> {
    if let Some(m) = model {
        return Ok(m.to_string());
    }
    let v: Value = client
        .get(format!("{base}/v1/models"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
        .context("parsing /v1/models")?;
    v.pointer("/data/0/id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .context("no model listed by /v1/models; pass --model")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Args::parse();
    let base = args.url.trim_end_matches('/').to_string();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs))
        .pool_max_idle_per_host(args.concurrency as usize)
        .build()?;
    let model = pick_model(&client, &base, args.model.as_deref()).await?;
    let concurrency = args.concurrency as usize;
    let schema = args
        .schema
        .as_deref()
        .map(serde_json::from_str::<Value>)
        .transpose()
        .context("--schema must be JSON")?;
    let job = Arc::new(Job {
        schema,
        client,
        endpoint: match args.api.as_str() {
            "ollama" => format!("{base}/api/generate"),
            _ => format!("{base}/v1/chat/completions"),
        },
        model: model.clone(),
        args,
    });
    if job.args.warmup > 0 {
        let (warm, _) = run_phase(&job, job.args.warmup, concurrency).await;
        let failed = warm.iter().filter(|r| r.error.is_some()).count();
        eprintln!(
            "loadgen: warmup {} requests done ({failed} failed)",
            warm.len()
        );
    }
    let (records, wall) = run_phase(&job, job.args.requests, concurrency).await;
    let summary = summarize(&job.args, &model, &records, wall);
    print_summary(&summary, &records);
    if let Some(path) = &job.args.json {
        std::fs::write(path, serde_json::to_string_pretty(&summary)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if !records.is_empty() && records.iter().all(|r| r.error.is_some()) {
        bail!("every request failed");
    }
    Ok(())
}
