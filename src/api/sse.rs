//! OpenAI streaming responses: `response` turns a `Generation` into an SSE body: role chunks
//! first (chat), then content as tokens arrive, a finish chunk per choice, an optional
//! usage chunk, then `data: [DONE]`.
//! A mid-stream engine error becomes one `data: {"error":{...}}` event, then `[DONE]`.
//! Keep-alive comments go out while the engine is silent. Reading the engine (and the
//! cutoff race) is `events::Drain`, shared with Ollama's NDJSON streams.
//! When the request's `Cutoff` fires (deadline passed, or the shutdown grace period is
//! over) the stream ends the same way: one error event (504 / 503 shaped), then `[DONE]`,
//! and the receivers are dropped so the engine frees the sequences' KV blocks.
//!
//! When the client disconnects, hyper drops the body, which drops the `Generation`
//! and with it every event receiver: the engine aborts those sequences.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};

use super::chunks::ChunkBuilder;
use super::deadline::Cutoff;
use super::events::{Drain, Step};
use super::generate::Generation;
use super::middleware::deferred;
use super::openai::UsageBody;
use crate::engine::types::Usage;

/// Per-response streaming state, advanced one engine step at a time.
struct StreamState {
    drain: Drain,
    chunks: ChunkBuilder,
    queue: VecDeque<Event>,
    usages: Vec<Usage>,
    offsets: Vec<usize>,
    logprobs: bool,
    n: usize,
    finished: bool,
}

impl StreamState {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queue.pop_front() {
                return Some(event);
            }
            if self.finished {
                return None;
            }
            self.advance().await;
        }
    }

    fn push(&mut self, data: String) {
        self.queue.push_back(Event::default().data(data));
    }

    async fn advance(&mut self) {
        match self.drain.next().await {
            Some(Step::Token {
                index: i,
                text,
                logprob,
            }) => {
                if !text.is_empty() || self.logprobs {
                    let offset = self.offsets.get(i).copied().unwrap_or(0);
                    let data = self.chunks.content(i, text, logprob.as_ref(), offset);
                    if let (Some(o), Some(lp)) = (self.offsets.get_mut(i), logprob.as_ref()) {
                        *o += lp.token.chars().count();
                    }
                    self.push(data);
                }
            }
            Some(Step::Done {
                index: i,
                text,
                finish_reason,
                usage,
            }) => {
                if !text.is_empty() {
                    let data = self.chunks.content(i, text, None, 0);
                    self.push(data);
                }
                let data = self.chunks.finish(i, finish_reason);
                self.push(data);
                if let Some(u) = self.usages.get_mut(i) {
                    *u = usage;
                }
            }
            Some(Step::Failed(e)) => {
                self.push(e.to_json());
                self.end();
            }
            Some(Step::End) => {
                if self.chunks.include_usage {
                    let data = self
                        .chunks
                        .usage(UsageBody::from_choices(&self.usages, self.n));
                    self.push(data);
                }
                self.end();
            }
            None => self.finished = true,
        }
    }

    /// Queues `[DONE]`; the drain has already released the receivers.
    fn end(&mut self) {
        self.push("[DONE]".to_string());
        self.finished = true;
    }
}

/// The SSE response of a submitted generation. `logprobs` keeps empty-text token
/// chunks (they carry a logprob); `n` is choices per prompt (for usage totals);
/// `cutoff` ends the stream early with an error event.
pub fn response(
    generation: Generation,
    chunks: ChunkBuilder,
    logprobs: bool,
    n: usize,
    keep_alive: Duration,
    cutoff: Option<&Cutoff>,
) -> Response {
    let total = generation.len();
    let mut state = StreamState {
        drain: Drain::new(generation, cutoff),
        chunks,
        queue: VecDeque::new(),
        usages: vec![Usage::default(); total],
        offsets: vec![0; total],
        logprobs,
        n,
        finished: false,
    };
    for i in 0..total {
        if let Some(data) = state.chunks.role(i) {
            state.push(data);
        }
    }
    let stream = futures::stream::unfold(state, |mut s| async move {
        s.next_event()
            .await
            .map(|e| (Ok::<Event, Infallible>(e), s))
    });
    let mut resp = if keep_alive.is_zero() {
        Sse::new(stream).into_response()
    } else {
        let ka = KeepAlive::new().interval(keep_alive).text("keep-alive");
        Sse::new(stream).keep_alive(ka).into_response()
    };
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    deferred(resp)
}
