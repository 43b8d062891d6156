//! Helpers of the HTTP-level tests: a strict parser of OpenAI-style SSE bodies (every
//! event `data: <json>\n\n`, comments `:...\n\n`, then exactly `data: [DONE]\n\n` at the
//! end), a Prometheus text reader, and a few request shortcuts.

use std::time::{Duration, Instant};

use serde_json::Value;

/// A parsed SSE body.
#[derive(Debug, Clone, Default)]
pub struct SseBody {
    /// The JSON of every `data:` event before `[DONE]`, in order.
    pub events: Vec<Value>,
    /// Comment lines (keep-alives), without the leading `:`.
    pub comments: Vec<String>,
    /// Everything in arrival order: `Data(i)` is `events[i]`.
    pub items: Vec<SseItem>,
}

/// One block of an SSE body.
#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    /// A comment block.
    Comment,
    /// The `i`-th data event.
    Data(usize),
}

/// Parses a complete SSE body strictly, returning a description of the first violation:
/// every block ends with a blank line; a block is either comment lines (`:`) or exactly
/// one `data: ` line holding one-line JSON; the last block is `data: [DONE]` and nothing
/// follows it.
pub fn parse_strict(body: &str) -> Result<SseBody, String> {
    if !body.ends_with("data: [DONE]\n\n") {
        let tail: String = body
            .chars()
            .rev()
            .take(120)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        return Err(format!(
            "body does not end with exactly `data: [DONE]\\n\\n`; tail: {tail:?}"
        ));
    }
    let mut out = SseBody::default();
    let mut rest = body;
    let mut done = false;
    while !rest.is_empty() {
        let Some(end) = rest.find("\n\n") else {
            return Err(format!("unterminated event (no blank line): {rest:?}"));
        };
        let block = &rest[..end];
        rest = &rest[end + 2..];
        if done {
            return Err(format!("event after [DONE]: {block:?}"));
        }
        if block.is_empty() {
            return Err("empty event (three newlines in a row)".into());
        }
        if block.lines().all(|l| l.starts_with(':')) {
            out.comments
                .extend(block.lines().map(|l| l[1..].to_string()));
            out.items.push(SseItem::Comment);
            continue;
        }
        if block.contains('\n') {
            return Err(format!("event is not a single `data:` line: {block:?}"));
        }
        let Some(data) = block.strip_prefix("data: ") else {
            return Err(format!("event does not start with `data: `: {block:?}"));
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(data)
            .map_err(|e| format!("event data is not JSON ({e}): {data:?}"))?;
        out.items.push(SseItem::Data(out.events.len()));
        out.events.push(v);
    }
    if !done {
        return Err("no [DONE] event".into());
    }
    Ok(out)
}

/// Reads a whole streamed response into a string, failing after `limit`.
pub async fn read_body(resp: reqwest::Response, limit: Duration) -> String {
    use futures::StreamExt;
    let t0 = Instant::now();
    let mut stream = resp.bytes_stream();
    let mut buf = Vec::new();
    loop {
        let left = limit.saturating_sub(t0.elapsed());
        match tokio::time::timeout(left, stream.next()).await {
            Ok(Some(Ok(chunk))) => buf.extend_from_slice(&chunk),
            Ok(Some(Err(e))) => panic!("stream failed after {} bytes: {e}", buf.len()),
            Ok(None) => break,
            Err(_) => panic!(
                "stream not finished after {limit:?}; got so far: {}",
                String::from_utf8_lossy(&buf)
            ),
        }
    }
    String::from_utf8(buf).expect("SSE body is UTF-8")
}

/// The value of `name` in Prometheus text, summed over its label sets (engine metrics
/// carry a `model` label per served model); `None` when no sample of it is present.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    let values: Vec<f64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            (n.split('{').next()? == name)
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .collect();
    (!values.is_empty()).then(|| values.iter().sum())
}

/// Sum of all samples of `name` whatever their labels (`name` or `name{...}`).
pub fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            let base = n.split('{').next()?;
            (base == name)
                .then(|| v.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// `GET /metrics` as text.
pub async fn scrape(client: &reqwest::Client, url: &str) -> String {
    let r = client
        .get(format!("{url}/metrics"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(r.status(), 200, "/metrics status");
    r.text().await.expect("/metrics body")
}

/// Polls `/metrics` until `ferrite_requests_running` and `ferrite_kv_cache_blocks_used`
/// are both 0, or panics after `limit` with the last values seen.
pub async fn wait_idle(client: &reqwest::Client, url: &str, limit: Duration) {
    let t0 = Instant::now();
    let mut last = (None, None, None);
    while t0.elapsed() < limit {
        let text = scrape(client, url).await;
        last = (
            metric(&text, "ferrite_requests_running"),
            metric(&text, "ferrite_requests_waiting"),
            metric(&text, "ferrite_kv_cache_blocks_used"),
        );
        if last.0 == Some(0.0) && last.2 == Some(0.0) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "server not idle after {limit:?}: requests_running={:?} requests_waiting={:?} kv_cache_blocks_used={:?}",
        last.0, last.1, last.2
    );
}

/// POSTs JSON and returns status, headers and the body parsed as JSON (panics on a
/// body that is not JSON, quoting it).
pub async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (reqwest::StatusCode, reqwest::header::HeaderMap, Value) {
    let r = client
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = r.status();
    let headers = r.headers().clone();
    let text = r.text().await.expect("response body");
    let v = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status} body is not JSON ({e}): {text:?}"));
    (status, headers, v)
}

/// Concatenated `delta.content` of choice `index` in chat chunks.
pub fn chat_content(events: &[Value], index: u64) -> String {
    events
        .iter()
        .flat_map(|e| e["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["delta"]["content"].as_str().map(str::to_string))
        .collect()
}

/// Concatenated `text` of choice `index` in text-completion chunks.
pub fn completion_text(events: &[Value], index: u64) -> String {
    events
        .iter()
        .flat_map(|e| e["choices"].as_array().cloned().unwrap_or_default())
        .filter(|c| c["index"] == index)
        .filter_map(|c| c["text"].as_str().map(str::to_string))
        .collect()
}

/// Reads an SSE response block by block (a block is the text before a blank line).
pub struct BlockReader {
    stream: std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<Vec<u8>>> + Send>>,
    buf: String,
    /// Every byte read so far, for failure messages.
    pub raw: String,
}

impl BlockReader {
    /// Wraps a streaming response.
    pub fn new(resp: reqwest::Response) -> Self {
        use futures::StreamExt;
        Self {
            stream: Box::pin(resp.bytes_stream().map(|r| r.map(|b| b.to_vec()))),
            buf: String::new(),
            raw: String::new(),
        }
    }

    /// The next block (without its blank line), `None` at the end of the body; panics
    /// if none completes within `limit`.
    pub async fn next_block(&mut self, limit: Duration) -> Option<String> {
        use futures::StreamExt;
        let t0 = Instant::now();
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block = self.buf[..end].to_string();
                self.buf.drain(..end + 2);
                return Some(block);
            }
            let left = limit.saturating_sub(t0.elapsed());
            match tokio::time::timeout(left, self.stream.next()).await {
                Ok(Some(Ok(chunk))) => {
                    let text = String::from_utf8(chunk).expect("UTF-8 chunk");
                    self.raw.push_str(&text);
                    self.buf.push_str(&text);
                }
                Ok(Some(Err(e))) => panic!("stream failed: {e}; read so far: {}", self.raw),
                Ok(None) => {
                    assert!(
                        self.buf.is_empty(),
                        "body ends inside a block: {:?}",
                        self.buf
                    );
                    return None;
                }
                Err(_) => panic!(
                    "no complete SSE block within {limit:?}; read so far: {}",
                    self.raw
                ),
            }
        }
    }
}

/// How long a whole test stream may take.
pub const STREAM_LIMIT: Duration = Duration::from_secs(90);

/// POSTs a streaming `body` to `url`, asserts 200 and returns (headers, raw body).
pub async fn stream_raw(
    c: &reqwest::Client,
    url: &str,
    body: &Value,
) -> (reqwest::header::HeaderMap, String) {
    let r = c.post(url).json(body).send().await.expect("POST stream");
    assert_eq!(r.status(), 200, "stream request {body} failed");
    let headers = r.headers().clone();
    (headers, read_body(r, STREAM_LIMIT).await)
}

/// Asserts `usage` has positive prompt tokens and prompt + completion == total.
pub fn assert_usage_adds_up(u: &Value) {
    let get = |k: &str| u[k].as_u64().unwrap_or_else(|| panic!("usage.{k} in {u}"));
    let (p, c, t) = (
        get("prompt_tokens"),
        get("completion_tokens"),
        get("total_tokens"),
    );
    assert!(p > 0, "prompt_tokens must be positive: {u}");
    assert_eq!(p + c, t, "prompt + completion != total: {u}");
}
