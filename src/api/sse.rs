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
use super::shaper::Shaper;
use crate::engine::types::{FinishReason, Usage};

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
    /// Per choice: holds back what may be a tool call (taken when the choice ends).
    shapers: Vec<Option<Shaper>>,
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
                let text = self.shape(i, &text);
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
                let mut text = self.shape(i, &text);
                let shaped = self
                    .shapers
                    .get_mut(i)
                    .and_then(Option::take)
                    .map(Shaper::finish)
                    .unwrap_or_default();
                text.push_str(&shaped.content);
                if !text.is_empty() {
                    let data = self.chunks.content(i, text, None, 0);
                    self.push(data);
                }
                let mut finish_reason = finish_reason;
                if !shaped.calls.is_empty() {
                    let data = self.chunks.tool_calls(i, &shaped.calls);
                    self.push(data);
                    finish_reason = FinishReason::ToolCalls;
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

    /// Choice `i`'s text as far as it can be released (all of it without tools).
    fn shape(&mut self, i: usize, text: &str) -> String {
        match self.shapers.get_mut(i).and_then(Option::as_mut) {
            Some(s) => s.push(text),
            None => text.to_string(),
        }
    }

    /// Queues `[DONE]`; the drain has already released the receivers.
    fn end(&mut self) {
        self.push("[DONE]".to_string());
        self.finished = true;
    }
}

/// How a stream is shaped: logprobs kept, choices per prompt, per-choice shapers.
pub struct Shape {
    /// Keep empty-text token chunks (they carry a logprob).
    pub logprobs: bool,
    /// Choices per prompt (for usage totals).
    pub n: usize,
    /// One per choice (tool-call parsing), or empty for plain text.
    pub shapers: Vec<Shaper>,
}

/// The SSE response of a submitted generation; `cutoff` ends the stream early with an
/// error event.
pub fn response(
    generation: Generation,
    chunks: ChunkBuilder,
    shape: Shape,
    keep_alive: Duration,
    cutoff: Option<&Cutoff>,
) -> Response {
    let Shape {
        logprobs,
        n,
        shapers,
    } = shape;
    let total = generation.len();
    let mut shapers: Vec<Option<Shaper>> = shapers.into_iter().map(Some).collect();
    shapers.resize_with(total, || None);
    let mut state = StreamState {
        drain: Drain::new(generation, cutoff),
        chunks,
        queue: VecDeque::new(),
        usages: vec![Usage::default(); total],
        offsets: vec![0; total],
        logprobs,
        n,
        finished: false,
        shapers,
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
    sse_response(stream, keep_alive)
}

/// An SSE response of `events` with keep-alive comments every `keep_alive` (none when
/// zero), unbuffered by proxies, its status recorded when the body ends.
pub fn sse_response(
    events: impl futures::Stream<Item = Result<Event, Infallible>> + Send + 'static,
    keep_alive: Duration,
) -> Response {
    let mut resp = if keep_alive.is_zero() {
        Sse::new(events).into_response()
    } else {
        let ka = KeepAlive::new().interval(keep_alive).text("keep-alive");
        Sse::new(events).keep_alive(ka).into_response()
    };
    resp.headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    deferred(resp)
}
