//! Streaming responses: `response` turns a `Generation` into an SSE body: role chunks
//! first (chat), then content as tokens arrive, a finish chunk per choice, an optional
//! usage chunk, then `data: [DONE]`.
//! A mid-stream engine error becomes one `data: {"error":{...}}` event, then `[DONE]`.
//! Keep-alive comments go out while the engine is silent.
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
use super::deadline::{Cutoff, Fired};
use super::error::ApiError;
use super::generate::Generation;
use super::middleware::{StatusRecorder, deferred};
use super::openai::UsageBody;
use crate::engine::types::{TokenEvent, Usage};

/// Per-response streaming state, advanced one engine event at a time.
struct StreamState {
    generation: Option<Generation>,
    chunks: ChunkBuilder,
    queue: VecDeque<Event>,
    usages: Vec<Usage>,
    offsets: Vec<usize>,
    logprobs: bool,
    n: usize,
    finished: bool,
    recorder: Option<StatusRecorder>,
    /// Resolves when the request must end (deadline or shutdown abort).
    cutoff: Option<Fired>,
}

/// What ended one wait of `advance`.
enum Next {
    Event(Option<(usize, TokenEvent)>),
    Cut(ApiError),
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

    async fn wait(&mut self) -> Next {
        let Some(g) = self.generation.as_mut() else {
            return Next::Event(None);
        };
        match self.cutoff.as_mut() {
            Some(fired) => tokio::select! {
                biased;
                e = g.next() => Next::Event(e),
                e = fired => Next::Cut(e),
            },
            None => Next::Event(g.next().await),
        }
    }

    async fn advance(&mut self) {
        let next = match self.wait().await {
            Next::Event(e) => e,
            Next::Cut(e) => {
                tracing::info!(status = e.status.as_u16(), "stream cut off: {}", e.message);
                self.push(e.to_json());
                self.end(e.status.as_u16());
                return;
            }
        };
        match next {
            Some((i, TokenEvent::Token { text, logprob, .. })) => {
                if !text.is_empty() || self.logprobs {
                    let offset = self.offsets.get(i).copied().unwrap_or(0);
                    let data = self.chunks.content(i, text, logprob.as_ref(), offset);
                    if let (Some(o), Some(lp)) = (self.offsets.get_mut(i), logprob.as_ref()) {
                        *o += lp.token.chars().count();
                    }
                    self.push(data);
                }
            }
            Some((
                i,
                TokenEvent::Done {
                    text,
                    finish_reason,
                    usage,
                },
            )) => {
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
            Some((_, TokenEvent::Error(msg))) => {
                self.push(ApiError::internal(format!("Generation failed: {msg}")).to_json());
                self.end(500);
            }
            None => {
                if self.chunks.include_usage {
                    let data = self
                        .chunks
                        .usage(UsageBody::from_choices(&self.usages, self.n));
                    self.push(data);
                }
                self.end(200);
            }
        }
    }

    /// Queues `[DONE]`, releases the receivers and records the final status.
    fn end(&mut self, status: u16) {
        self.push("[DONE]".to_string());
        self.generation = None;
        self.cutoff = None;
        self.finished = true;
        if let Some(r) = self.recorder.take() {
            r.finish(status);
        }
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
        generation: Some(generation),
        chunks,
        queue: VecDeque::new(),
        usages: vec![Usage::default(); total],
        offsets: vec![0; total],
        logprobs,
        n,
        finished: false,
        recorder: Some(StatusRecorder::new()),
        cutoff: cutoff.map(Cutoff::fired),
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
