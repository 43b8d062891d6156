//! `ChunkBuilder`: the JSON of each streamed chunk, for chat (`chat.completion.chunk`:
//! role chunk, content chunks, finish chunk with an empty delta) and text completions
//! (`text_completion`), plus the final usage chunk with empty `choices`.

use serde::Serialize;

use super::error::ApiError;
use super::openai::{
    ChatChunk, ChatChunkChoice, ChatLogprobs, ChatTokenLogprob, Completion, CompletionChoice,
    CompletionLogprobs, Delta, FunctionBody, ToolCallChunk, UsageBody,
};
use super::responses::object::FunctionCall;
use super::validate::Endpoint;
use crate::engine::types::{FinishReason, TokenLogprob};

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

    fn completion(
        &self,
        choices: Vec<CompletionChoice>,
        usage: Option<Option<UsageBody>>,
    ) -> String {
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
                tool_calls: None,
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
    pub fn content(
        &self,
        index: usize,
        text: String,
        lp: Option<&TokenLogprob>,
        offset: usize,
    ) -> String {
        match self.endpoint {
            Endpoint::Chat => {
                let logprobs = lp.map(|lp| ChatLogprobs {
                    content: vec![ChatTokenLogprob::from(lp)],
                });
                let delta = Delta {
                    role: None,
                    content: Some(text),
                    tool_calls: None,
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

    /// The tool calls of a chat choice, in one chunk.
    pub fn tool_calls(&self, index: usize, calls: &[FunctionCall]) -> String {
        let tool_calls = calls
            .iter()
            .enumerate()
            .map(|(i, c)| ToolCallChunk {
                index: i,
                id: c.call_id.clone(),
                kind: "function",
                function: FunctionBody {
                    name: c.name.clone(),
                    arguments: c.arguments.clone(),
                },
            })
            .collect();
        let delta = Delta {
            tool_calls: Some(tool_calls),
            ..Delta::default()
        };
        let choice = ChatChunkChoice {
            index,
            delta,
            logprobs: None,
            finish_reason: None,
        };
        self.chat(vec![choice], self.usage_field())
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
        assert_eq!(
            parse(&b.content(1, "Hi".into(), None, 0)),
            chat_chunk(content, None)
        );
        let finish =
            json!([{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "length"}]);
        assert_eq!(
            parse(&b.finish(0, FinishReason::Length)),
            chat_chunk(finish, None)
        );
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
            chat_chunk(
                json!([]),
                Some(json!({"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}))
            )
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
        assert_eq!(
            f["choices"][0],
            json!({"index": 2, "text": "", "logprobs": null, "finish_reason": "stop"})
        );
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
                token_id: 97,
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
        let cmpl =
            parse(&builder(Endpoint::Completion, false).content(0, "a".into(), Some(&lp), 5));
        assert_eq!(
            cmpl["choices"][0]["logprobs"],
            json!({"tokens": ["a"], "token_logprobs": [-0.25], "top_logprobs": [{"a": -0.25}], "text_offset": [5]})
        );
    }
}
