//! The Responses API's event stream, as the OpenAI SDK reads it: `response.created`,
//! `response.in_progress`; for text, `response.output_item.added` (a `message`),
//! `response.content_part.added`, `response.output_text.delta`…, `.output_text.done`,
//! `.content_part.done`, `.output_item.done`; for each function call,
//! `response.output_item.added`, `response.function_call_arguments.delta` / `.done`,
//! `response.output_item.done`; then `response.completed` (or `response.incomplete` at
//! the token limit, `response.failed` on an engine error or cutoff). Every event is
//! `event: <type>` + `data: {"type": <type>, "sequence_number": n, …}`.
//!
//! Text reaches the client through [`crate::api::shaper::Shaper`], which holds back what may be
//! a tool call and turns it into function-call items at the end.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::time::Duration;

use axum::response::Response;
use axum::response::sse::Event;
use serde_json::{Value, json};

use super::object::{self, ResponseMeta};
use crate::api::deadline::Cutoff;
use crate::api::events::{Drain, Step};
use crate::api::generate::Generation;
use crate::api::shaper::Shaper;

struct State {
    drain: Drain,
    meta: ResponseMeta,
    shaper: Shaper,
    queue: VecDeque<Event>,
    seq: u64,
    /// Output index of the open message item, once text was streamed.
    message: Option<usize>,
    text: String,
    output: Vec<Value>,
    finished: bool,
}

impl State {
    fn emit(&mut self, kind: &str, mut data: Value) {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("type".into(), kind.into());
            obj.insert("sequence_number".into(), self.seq.into());
        }
        self.seq += 1;
        let event = Event::default().event(kind).data(data.to_string());
        self.queue.push_back(event);
    }

    fn message_id(&self, index: usize) -> String {
        object::item_id("msg", &self.meta.id, index)
    }

    fn text_delta(&mut self, delta: String) {
        if delta.is_empty() {
            return;
        }
        let index = match self.message {
            Some(i) => i,
            None => {
                let i = self.output.len();
                self.output.push(Value::Null);
                self.message = Some(i);
                let id = self.message_id(i);
                let item = object::message_item(&id, None, "in_progress");
                self.emit(
                    "response.output_item.added",
                    json!({"output_index": i, "item": item}),
                );
                let part = json!({"type": "output_text", "text": "", "annotations": []});
                self.emit(
                    "response.content_part.added",
                    json!({"item_id": id, "output_index": i, "content_index": 0, "part": part}),
                );
                i
            }
        };
        self.text.push_str(&delta);
        let id = self.message_id(index);
        self.emit(
            "response.output_text.delta",
            json!({"item_id": id, "output_index": index, "content_index": 0, "delta": delta, "logprobs": []}),
        );
    }

    fn close_message(&mut self) {
        let Some(i) = self.message else {
            return;
        };
        let id = self.message_id(i);
        let text = std::mem::take(&mut self.text);
        self.emit(
            "response.output_text.done",
            json!({"item_id": id, "output_index": i, "content_index": 0, "text": text, "logprobs": []}),
        );
        self.emit(
            "response.content_part.done",
            json!({"item_id": id, "output_index": i, "content_index": 0, "part": object::text_part(&text)}),
        );
        let item = object::message_item(&id, Some(&text), "completed");
        self.output[i] = item.clone();
        self.emit(
            "response.output_item.done",
            json!({"output_index": i, "item": item}),
        );
    }

    fn calls(&mut self, calls: Vec<object::FunctionCall>) {
        for call in calls {
            let i = self.output.len();
            let id = object::item_id("fc", &self.meta.id, i);
            let start = object::FunctionCall {
                arguments: String::new(),
                ..call.clone()
            };
            let added = object::function_item(&id, &start, "in_progress");
            self.emit(
                "response.output_item.added",
                json!({"output_index": i, "item": added}),
            );
            self.emit(
                "response.function_call_arguments.delta",
                json!({"item_id": id, "output_index": i, "delta": call.arguments}),
            );
            self.emit(
                "response.function_call_arguments.done",
                json!({"item_id": id, "output_index": i, "name": call.name, "arguments": call.arguments}),
            );
            let item = object::function_item(&id, &call, "completed");
            self.output.push(item.clone());
            self.emit(
                "response.output_item.done",
                json!({"output_index": i, "item": item}),
            );
        }
    }

    async fn advance(&mut self) {
        match self.drain.next().await {
            Some(Step::Token { text, .. }) => {
                let out = self.shaper.push(&text);
                self.text_delta(out);
            }
            Some(Step::Done {
                text,
                finish_reason,
                usage,
                ..
            }) => {
                let out = self.shaper.push(&text);
                self.text_delta(out);
                let shaped = std::mem::take(&mut self.shaper).finish();
                self.text_delta(shaped.content);
                self.close_message();
                self.calls(shaped.calls);
                let status = super::status(finish_reason);
                let output = self.output.clone();
                let resp = object::response(
                    &self.meta,
                    status,
                    output,
                    Some(finish_reason),
                    Some(usage),
                    None,
                );
                let kind = if status == "incomplete" {
                    "response.incomplete"
                } else {
                    "response.completed"
                };
                self.emit(kind, json!({"response": resp}));
            }
            Some(Step::Failed(e)) => {
                let error = json!({"code": "server_error", "message": e.message});
                let output = self.output.clone();
                let resp = object::response(&self.meta, "failed", output, None, None, Some(error));
                self.emit("response.failed", json!({"response": resp}));
                self.finished = true;
            }
            Some(Step::End) | None => self.finished = true,
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.queue.pop_front() {
                return Some(e);
            }
            if self.finished {
                return None;
            }
            self.advance().await;
        }
    }
}

/// The event stream of one submitted generation (one choice).
pub fn response(
    generation: Generation,
    meta: ResponseMeta,
    shaper: Shaper,
    keep_alive: Duration,
    cutoff: Option<&Cutoff>,
) -> Response {
    let mut state = State {
        drain: Drain::new(generation, cutoff),
        meta,
        shaper,
        queue: VecDeque::new(),
        seq: 0,
        message: None,
        text: String::new(),
        output: Vec::new(),
        finished: false,
    };
    let start = object::response(&state.meta, "in_progress", Vec::new(), None, None, None);
    state.emit("response.created", json!({"response": start.clone()}));
    state.emit("response.in_progress", json!({"response": start}));
    let stream = futures::stream::unfold(state, |mut s| async move {
        s.next_event()
            .await
            .map(|e| (Ok::<Event, Infallible>(e), s))
    });
    crate::api::sse::sse_response(stream, keep_alive)
}
