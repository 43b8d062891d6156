//! Streaming responses: `ChunkBuilder` writes OpenAI's chunk JSON (role, content,
//! finish and usage chunks, for chat and text completions), and `response` turns a
//! `Generation` into an SSE body: role chunks first (chat), then content as tokens
//! arrive, a finish chunk per choice, an optional usage chunk, then `data: [DONE]`.
//! A mid-stream engine error becomes one `data: {"error":{...}}` event, then `[DONE]`.
//! Keep-alive comments go out while the engine is silent.
//!
//! When the client disconnects, hyper drops the body, which drops the `Generation`
//! and with it every event receiver: the engine aborts those sequences.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::http::HeaderValue;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::error::ApiError;
use super::generate::Generation;
use super::middleware::{StatusRecorder, deferred};
use super::openai::{
    ChatChunk, ChatChunkChoice, ChatLogprobs, ChatTokenLogprob, Completion, CompletionChoice,
    CompletionLogprobs, Delta, UsageBody,
};
use super::validate::Endpoint;
use crate::engine::types::{FinishReason, TokenEvent, TokenLogprob, Usage};

/// Builds the JSON of each chunk of one streamed response.
#[derive(Debug, Clone)]
pub struct ChunkBuilder {
    /// `chatcmpl-...` / `cmpl-...`, the same on every chunk.
    pub id: String,
    /// Unix seconds.
    pub created: u64,
    /// Served model id.
    pub model: String,
    /// Chat or text completion shapes.
    pub endpoint: Endpoint,
    /// Whether `usage` appears (as `null` until the final usage chunk).
    pub include_usage: bool,
}

fn json(v: &impl Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| ApiError::internal(e.to_string()).to_json())
}

impl ChunkBuilder {
    fn usage_field(&self) -> Option<Option<UsageBody>> {
        self.include_usage.then_some(None)
    }

    fn chat(&self, choices: Vec<ChatChunkChoice>, usage: Option<Option<UsageBody>>) -> String {
        json(&ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    fn completion(&self, choices: Vec<CompletionChoice>, usage: Option<Option<UsageBody>>) -> String {
        json(&Completion {
            id: self.id.clone(),
            object: "text_completion",
            created: self.created,
            model: self.model.clone(),
            choices,
            usage,
        })
    }

    /// First chunk of a chat choice: `delta: {role: "assistant", content: ""}`.
    /// Text completions have no role chunk (`None`).
    pub fn role(&self, index: usize) -> Option<String> {
        (self.endpoint == Endpoint::Chat).then(|| {
            let delta = Delta {
                role: Some("assistant"),
                content: Some(String::new()),
            };
            let choice = ChatChunkChoice {
                index,
                delta,
                logprobs: None,
                finish_reason: None,
            };
            self.chat(vec![choice], self.usage_field())
        })
    }

    /// A content chunk. `offset` is the character offset of the token in the choice's
    /// text (completions' `text_offset`).
    pub fn content(&self, index: usize, text: String, lp: Option<&TokenLogprob>, offset: usize) -> String {
        match self.endpoint {
            Endpoint::Chat => {
                let logprobs = lp.map(|lp| ChatLogprobs {
                    content: vec![ChatTokenLogprob::from(lp)],
                });
                let delta = Delta {
                    role: None,
                    content: Some(text),
                };
                let choice = ChatChunkChoice {
                    index,
                    delta,
                    logprobs,
                    finish_reason: None,
                };
                self.chat(vec![choice], self.usage_field())
            }
            Endpoint::Completion => {
                let logprobs = lp.map(|lp| {
                    let mut c = CompletionLogprobs::default();
                    c.push(lp, offset);
                    c
                });
                let choice = CompletionChoice {
                    index,
                    text,
                    logprobs,
                    finish_reason: None,
                };
                self.completion(vec![choice], self.usage_field())
            }
        }
    }

    /// Last chunk of a choice: empty delta (or text) and the finish reason.
    pub fn finish(&self, index: usize, reason: FinishReason) -> String {
        let finish_reason = Some(reason.as_str());
        match self.endpoint {
            Endpoint::Chat => {
                let choice = ChatChunkChoice {
                    index,
                    delta: Delta::default(),
                    logprobs: None,
                    finish_reason,
                };
                self.chat(vec![choice], self.usage_field())
            }
            Endpoint::Completion => {
                let choice = CompletionChoice {
                    index,
                    text: String::new(),
                    logprobs: None,
                    finish_reason,
                };
                self.completion(vec![choice], self.usage_field())
            }
        }
    }

    /// The final usage chunk: empty `choices`, totals in `usage`.
    pub fn usage(&self, usage: UsageBody) -> String {
        match self.endpoint {
            Endpoint::Chat => self.chat(Vec::new(), Some(Some(usage))),
            Endpoint::Completion => self.completion(Vec::new(), Some(Some(usage))),
        }
    }
}

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
        let next = match self.generation.as_mut() {
            Some(g) => g.next().await,
            None => None,
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
            Some((i, TokenEvent::Done { text, finish_reason, usage })) => {
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
                    let data = self.chunks.usage(UsageBody::from_choices(&self.usages, self.n));
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
        self.finished = true;
        if let Some(r) = self.recorder.take() {
            r.finish(status);
        }
    }
}

/// The SSE response of a submitted generation. `logprobs` keeps empty-text token
/// chunks (they carry a logprob); `n` is choices per prompt (for usage totals).
pub fn response(
    generation: Generation,
    chunks: ChunkBuilder,
    logprobs: bool,
    n: usize,
    keep_alive: Duration,
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
    };
    for i in 0..total {
        if let Some(data) = state.chunks.role(i) {
            state.push(data);
        }
    }
    let stream = futures::stream::unfold(state, |mut s| async move {
        s.next_event().await.map(|e| (Ok::<Event, Infallible>(e), s))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::TopLogprob;
    use serde_json::{Value, json};

    fn builder(endpoint: Endpoint, include_usage: bool) -> ChunkBuilder {
        ChunkBuilder {
            id: "id1".into(),
            created: 7,
            model: "m".into(),
            endpoint,
            include_usage,
        }
    }

    fn parse(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn chat_chunk(choices: Value, usage: Option<Value>) -> Value {
        let mut v = json!({"id": "id1", "object": "chat.completion.chunk", "created": 7, "model": "m",
                           "choices": choices});
        if let Some(u) = usage {
            v["usage"] = u;
        }
        v
    }

    #[test]
    fn chat_chunk_shapes() {
        let b = builder(Endpoint::Chat, false);
        let role = json!([{"index": 0, "delta": {"role": "assistant", "content": ""},
                           "logprobs": null, "finish_reason": null}]);
        assert_eq!(parse(&b.role(0).unwrap()), chat_chunk(role, None));
        let content = json!([{"index": 1, "delta": {"content": "Hi"}, "logprobs": null, "finish_reason": null}]);
        assert_eq!(parse(&b.content(1, "Hi".into(), None, 0)), chat_chunk(content, None));
        let finish = json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}]);
        assert_eq!(parse(&b.finish(0, FinishReason::Length)), chat_chunk(finish, None));
    }

    #[test]
    fn include_usage_adds_null_then_usage_chunk() {
        let b = builder(Endpoint::Chat, true);
        let v = parse(&b.finish(0, FinishReason::Stop));
        assert_eq!(v["usage"], Value::Null);
        assert!(v.as_object().unwrap().contains_key("usage"));
        let u = parse(&b.usage(UsageBody::new(3, 4)));
        assert_eq!(
            u,
            chat_chunk(json!([]), Some(json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7})))
        );
        let no_usage = parse(&builder(Endpoint::Chat, false).finish(0, FinishReason::Stop));
        assert!(!no_usage.as_object().unwrap().contains_key("usage"));
    }

    #[test]
    fn completion_chunk_shapes() {
        let b = builder(Endpoint::Completion, true);
        assert!(b.role(0).is_none());
        let v = parse(&b.content(0, "x".into(), None, 0));
        assert_eq!(
            v,
            json!({"id": "id1", "object": "text_completion", "created": 7, "model": "m",
                   "choices": [{"index": 0, "text": "x", "logprobs": null, "finish_reason": null}],
                   "usage": null})
        );
        let f = parse(&b.finish(2, FinishReason::Stop));
        assert_eq!(f["choices"][0], json!({"index": 2, "text": "", "logprobs": null, "finish_reason": "stop"}));
        let u = parse(&b.usage(UsageBody::new(1, 2)));
        assert_eq!(u["choices"], json!([]));
        assert_eq!(u["usage"]["total_tokens"], 3);
    }

    #[test]
    fn logprobs_in_chunks() {
        let lp = TokenLogprob {
            token: "a".into(),
            bytes: vec![97],
            logprob: -0.25,
            top: vec![TopLogprob {
                token: "a".into(),
                bytes: vec![97],
                logprob: -0.25,
            }],
        };
        let chat = parse(&builder(Endpoint::Chat, false).content(0, "a".into(), Some(&lp), 0));
        assert_eq!(
            chat["choices"][0]["logprobs"],
            json!({"content": [{"token": "a", "logprob": -0.25, "bytes": [97],
                                "top_logprobs": [{"token": "a", "logprob": -0.25, "bytes": [97]}]}]})
        );
        let cmpl = parse(&builder(Endpoint::Completion, false).content(0, "a".into(), Some(&lp), 5));
        assert_eq!(
            cmpl["choices"][0]["logprobs"],
            json!({"tokens": ["a"], "token_logprobs": [-0.25], "top_logprobs": [{"a": -0.25}], "text_offset": [5]})
        );
    }
}
