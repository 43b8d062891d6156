//! Response bodies, streamed chunks and logprobs objects, with OpenAI's exact field
//! names (plus vLLM's `max_model_len` on model cards).

use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use crate::engine::types::{TokenLogprob, Usage};

/// `usage` of every completion response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct UsageBody {
    /// Prompt tokens (once per prompt, whatever `n`).
    pub prompt_tokens: usize,
    /// Generated tokens, summed over choices.
    pub completion_tokens: usize,
    /// The sum of both.
    pub total_tokens: usize,
}

impl UsageBody {
    /// From prompt and completion totals.
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }

    /// Totals over choices laid out prompt-major (`index = prompt_idx * n + i`): the
    /// prompt is counted once per prompt, completions are summed.
    pub fn from_choices(usages: &[Usage], n: usize) -> Self {
        let n = n.max(1);
        let prompt = usages.iter().step_by(n).map(|u| u.prompt_tokens).sum();
        let completion = usages.iter().map(|u| u.completion_tokens).sum();
        Self::new(prompt, completion)
    }
}

/// One alternative in a chat logprob entry.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTopLogprob {
    /// Token text.
    pub token: String,
    /// Natural-log probability.
    pub logprob: f32,
    /// UTF-8 bytes of the token.
    pub bytes: Vec<u8>,
}

/// One sampled token in chat `logprobs.content`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatTokenLogprob {
    /// Token text.
    pub token: String,
    /// Natural-log probability.
    pub logprob: f32,
    /// UTF-8 bytes of the token.
    pub bytes: Vec<u8>,
    /// Most likely alternatives.
    pub top_logprobs: Vec<ChatTopLogprob>,
}

impl From<&TokenLogprob> for ChatTokenLogprob {
    fn from(lp: &TokenLogprob) -> Self {
        Self {
            token: lp.token.clone(),
            logprob: lp.logprob,
            bytes: lp.bytes.clone(),
            top_logprobs: lp
                .top
                .iter()
                .map(|t| ChatTopLogprob {
                    token: t.token.clone(),
                    logprob: t.logprob,
                    bytes: t.bytes.clone(),
                })
                .collect(),
        }
    }
}

/// Chat `logprobs` object.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ChatLogprobs {
    /// One entry per sampled token.
    pub content: Vec<ChatTokenLogprob>,
}

/// A token -> logprob map that keeps the engine's order (best first).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TopMap(pub Vec<(String, f32)>);

impl Serialize for TopMap {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seen = std::collections::HashSet::new();
        let mut map = s.serialize_map(None)?;
        for (k, v) in &self.0 {
            if seen.insert(k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

/// Text completions `logprobs` object (parallel arrays).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CompletionLogprobs {
    /// Token texts.
    pub tokens: Vec<String>,
    /// Their logprobs.
    pub token_logprobs: Vec<f32>,
    /// Alternatives per position.
    pub top_logprobs: Vec<TopMap>,
    /// Character offset of each token in the completion text.
    pub text_offset: Vec<usize>,
}

impl CompletionLogprobs {
    /// Appends one token whose text starts at character `offset`; returns the offset
    /// just past it.
    pub fn push(&mut self, lp: &TokenLogprob, offset: usize) -> usize {
        self.tokens.push(lp.token.clone());
        self.token_logprobs.push(lp.logprob);
        let top = lp
            .top
            .iter()
            .map(|t| (t.token.clone(), t.logprob))
            .collect();
        self.top_logprobs.push(TopMap(top));
        self.text_offset.push(offset);
        offset + lp.token.chars().count()
    }
}

/// The assistant message of a non-streaming chat choice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AssistantMessage {
    /// Always `assistant`.
    pub role: &'static str,
    /// Generated text (`null` when the message is only tool calls).
    pub content: Option<String>,
    /// The tool calls the model made, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallBody>>,
}

/// One choice of `chat.completion`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChoice {
    /// `prompt_idx * n + i`.
    pub index: usize,
    /// The generated message.
    pub message: AssistantMessage,
    /// Present when requested.
    pub logprobs: Option<ChatLogprobs>,
    /// `stop` or `length`.
    pub finish_reason: Option<&'static str>,
}

/// Response body of a non-streaming chat completion.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatCompletion {
    /// `chatcmpl-...`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model id.
    pub model: String,
    /// One per sequence.
    pub choices: Vec<ChatChoice>,
    /// Token counts.
    pub usage: UsageBody,
}

/// One choice of `text_completion`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CompletionChoice {
    /// `prompt_idx * n + i`.
    pub index: usize,
    /// Generated text.
    pub text: String,
    /// Present when requested.
    pub logprobs: Option<CompletionLogprobs>,
    /// `stop` or `length` (`null` in non-final chunks).
    pub finish_reason: Option<&'static str>,
}

/// Response body of a non-streaming text completion, and (with `object`
/// `text_completion` too) each streamed chunk.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Completion {
    /// `cmpl-...`.
    pub id: String,
    /// `text_completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model id.
    pub model: String,
    /// Choices.
    pub choices: Vec<CompletionChoice>,
    /// Token counts. Chunks: absent without `include_usage`, else `null` until the last.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageBody>>,
}

/// `delta` of a chat chunk: role on the first, content on the middle ones, empty last.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Delta {
    /// `assistant` on the first chunk of a choice.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// New text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// Tool calls (each whole in one chunk: id, name and arguments).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCallChunk>>,
}

/// One tool call in a chunk's `delta.tool_calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallChunk {
    /// Position of the call within the message.
    pub index: usize,
    /// `call_…`.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Name and arguments.
    pub function: FunctionBody,
}

/// A called function: its name and JSON arguments as text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionBody {
    /// Function name.
    pub name: String,
    /// Arguments, JSON text.
    pub arguments: String,
}

/// One entry of a message's `tool_calls`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ToolCallBody {
    /// `call_…`.
    pub id: String,
    /// Always `function`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Name and arguments.
    pub function: FunctionBody,
}

impl ToolCallBody {
    /// From a shaped call.
    pub fn from_call(c: &crate::api::responses::object::FunctionCall) -> Self {
        Self {
            id: c.call_id.clone(),
            kind: "function",
            function: FunctionBody {
                name: c.name.clone(),
                arguments: c.arguments.clone(),
            },
        }
    }
}

/// One choice of a `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunkChoice {
    /// Choice index.
    pub index: usize,
    /// What changed.
    pub delta: Delta,
    /// Logprobs of this chunk's tokens, when requested.
    pub logprobs: Option<ChatLogprobs>,
    /// Set on the last chunk of the choice.
    pub finish_reason: Option<&'static str>,
}

/// A streamed `chat.completion.chunk`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChatChunk {
    /// Same id on every chunk of a response.
    pub id: String,
    /// `chat.completion.chunk`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// Served model id.
    pub model: String,
    /// Zero (usage chunk) or one choice.
    pub choices: Vec<ChatChunkChoice>,
    /// Absent without `include_usage`, else `null` until the final usage chunk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Option<UsageBody>>,
}

/// One entry of the model list.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCard {
    /// Served model id.
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: u64,
    /// `ferrite`.
    pub owned_by: &'static str,
    /// Context length (vLLM's extension); an encoder's input limit.
    pub max_model_len: usize,
    /// For an encoder: `embedding` or `cross-encoder`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub task: Option<&'static str>,
    /// For an encoder: how rerank scores (`cross-encoder` or `embedding-cosine`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rerank_mode: Option<&'static str>,
    /// For an embedding model: the embedding width.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dimensions: Option<usize>,
}

/// `GET /v1/models` body.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The served model.
    pub data: Vec<ModelCard>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::types::TopLogprob;
    use serde_json::json;

    fn lp(token: &str, top: &[(&str, f32)]) -> TokenLogprob {
        TokenLogprob {
            token: token.into(),
            bytes: token.as_bytes().to_vec(),
            logprob: -0.5,
            top: top
                .iter()
                .map(|(t, l)| TopLogprob {
                    token_id: 0,
                    token: (*t).into(),
                    bytes: t.as_bytes().to_vec(),
                    logprob: *l,
                })
                .collect(),
        }
    }

    #[test]
    fn usage_counts_prompt_once_per_prompt() {
        let u = |p, c| Usage {
            prompt_tokens: p,
            completion_tokens: c,
        };
        // two prompts (5 and 7 tokens), n = 2
        let usages = [u(5, 3), u(5, 4), u(7, 1), u(7, 2)];
        assert_eq!(UsageBody::from_choices(&usages, 2), UsageBody::new(12, 10));
        assert_eq!(UsageBody::from_choices(&usages, 2).total_tokens, 22);
    }

    #[test]
    fn chat_logprob_shape() {
        let v = serde_json::to_value(ChatTokenLogprob::from(&lp(
            "hi",
            &[("hi", -0.5), ("ho", -1.0)],
        )))
        .unwrap();
        assert_eq!(
            v,
            json!({"token": "hi", "logprob": -0.5, "bytes": [104, 105], "top_logprobs": [
                {"token": "hi", "logprob": -0.5, "bytes": [104, 105]},
                {"token": "ho", "logprob": -1.0, "bytes": [104, 111]}
            ]})
        );
    }

    #[test]
    fn completion_logprobs_shape_and_offsets() {
        let mut c = CompletionLogprobs::default();
        let off = c.push(&lp("ab", &[("ab", -0.5)]), 0);
        assert_eq!(off, 2);
        let off = c.push(&lp("é", &[]), off);
        assert_eq!(off, 3);
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({"tokens": ["ab", "é"], "token_logprobs": [-0.5, -0.5],
                   "top_logprobs": [{"ab": -0.5}, {}], "text_offset": [0, 2]})
        );
    }
}
