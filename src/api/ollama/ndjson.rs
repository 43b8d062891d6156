//! Ollama's answers from a submitted generation, streamed as NDJSON (one JSON object and
//! `\n` per line, `application/x-ndjson`) or collected into one body. Both read the
//! engine through the shared `events::Drain`; they differ only in framing.
//!
//! Stream: a line per piece of text, then the final `done: true` line with the counters.
//! A mid-stream failure (engine error, deadline, shutdown) is one `{"error": "..."}`
//! line, after which the stream ends, as Ollama does. A client that disconnects drops
//! the body and with it the drain, which aborts the sequence in the engine.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::response::{Kind, Line, Timings, done_reason, error_json};
use crate::api::deadline::Cutoff;
use crate::api::error::ApiError;
use crate::api::events::{Drain, Step};
use crate::api::generate::Generation;
use crate::api::guard::json_response;
use crate::api::middleware::deferred;

/// The content type of Ollama's streams.
pub const NDJSON: &str = "application/x-ndjson";

/// Streaming state: the drain, what to answer with, lines ready to send.
struct Stream {
    drain: Drain,
    kind: Kind,
    model: String,
    timings: Timings,
    queue: VecDeque<String>,
    finished: bool,
}

impl Stream {
    async fn next_line(&mut self) -> Option<Bytes> {
        loop {
            if let Some(mut line) = self.queue.pop_front() {
                line.push('\n');
                return Some(Bytes::from(line));
            }
            if self.finished {
                return None;
            }
            self.advance().await;
        }
    }

    async fn advance(&mut self) {
        let line = |s: &Self, text, last| Line::new(s.kind, &s.model, text, last).to_json();
        match self.drain.next().await {
            Some(Step::Token { text, .. }) => {
                self.timings.token();
                if !text.is_empty() {
                    self.queue.push_back(line(self, text, None));
                }
            }
            Some(Step::Done {
                text,
                finish_reason,
                usage,
                ..
            }) => {
                if !text.is_empty() {
                    self.queue.push_back(line(self, text, None));
                }
                let last = self.timings.finish(done_reason(finish_reason), usage);
                self.queue.push_back(line(self, String::new(), Some(last)));
            }
            Some(Step::Failed(e)) => {
                self.queue.push_back(error_json(&e.message));
                self.finished = true;
            }
            Some(Step::End) | None => self.finished = true,
        }
    }
}

/// The NDJSON stream of a one-choice generation; `model` is echoed on every line.
pub fn stream(
    generation: Generation,
    kind: Kind,
    model: String,
    timings: Timings,
    cutoff: Option<&Cutoff>,
) -> Response {
    let state = Stream {
        drain: Drain::new(generation, cutoff),
        kind,
        model,
        timings,
        queue: VecDeque::new(),
        finished: false,
    };
    let body = futures::stream::unfold(state, |mut s| async move {
        s.next_line().await.map(|b| (Ok::<Bytes, Infallible>(b), s))
    });
    let mut resp = Body::from_stream(body).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    deferred(resp)
}

/// Drains a one-choice generation into one body with all the text (`stream: false`).
pub async fn collect(
    generation: Generation,
    kind: Kind,
    model: &str,
    mut timings: Timings,
) -> Result<Response, ApiError> {
    let mut drain = Drain::collecting(generation);
    let mut text = String::new();
    let mut last = None;
    while let Some(step) = drain.next().await {
        match step {
            Step::Token { text: t, .. } => {
                timings.token();
                text.push_str(&t);
            }
            Step::Done {
                text: t,
                finish_reason,
                usage,
                ..
            } => {
                text.push_str(&t);
                last = Some(timings.finish(done_reason(finish_reason), usage));
            }
            Step::Failed(e) => return Err(e),
            Step::End => break,
        }
    }
    let last = last.ok_or_else(|| ApiError::internal("the generation ended without a result"))?;
    let body = Line::new(kind, model, text, Some(last)).to_json();
    Ok(json_response(Bytes::from(body), None))
}

/// The answer to a request with nothing to generate (no prompt, no messages): Ollama's
/// "load the model" reply, `done_reason: "load"`, as one line or one body.
pub fn loaded(kind: Kind, model: &str, stream: bool) -> Response {
    let mut last = Timings::new(std::time::Instant::now()).finish("load", Default::default());
    last.total_duration = 0;
    let mut body = Line::new(kind, model, String::new(), Some(last)).to_json();
    if !stream {
        return json_response(Bytes::from(body), None);
    }
    body.push('\n');
    ([(header::CONTENT_TYPE, NDJSON)], body).into_response()
}
