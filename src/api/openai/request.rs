//! Request bodies of `/v1/chat/completions` and `/v1/completions`, parsed loosely where
//! a clear error message needs our own checks: fields held as `serde_json::Value`
//! (`messages`, `prompt`, `stop`, the unsupported features) are checked in `validate`,
//! which names the parameter in its error. Unknown fields are ignored.

use serde::Deserialize;
use serde_json::Value;

/// Fields shared by chat and text completions requests.
#[derive(Debug, Default, Deserialize)]
pub struct CommonFields {
    /// Model id; must equal the served id. Absent means the served model.
    pub model: Option<String>,
    /// Completion token limit.
    pub max_tokens: Option<i64>,
    /// Sampling temperature in [0, 2].
    pub temperature: Option<f64>,
    /// Nucleus mass in (0, 1].
    pub top_p: Option<f64>,
    /// Top-k (extension); 0 or -1 disables.
    pub top_k: Option<i64>,
    /// Min-p (extension) in [0, 1].
    pub min_p: Option<f64>,
    /// RNG seed (any integer).
    pub seed: Option<serde_json::Number>,
    /// A string or an array of up to 4 strings.
    pub stop: Option<Value>,
    /// Presence penalty in [-2, 2].
    pub presence_penalty: Option<f64>,
    /// Frequency penalty in [-2, 2].
    pub frequency_penalty: Option<f64>,
    /// Multiplicative repetition penalty in (0, 2] (vLLM's extension; 1 disables).
    pub repetition_penalty: Option<f64>,
    /// Choices per prompt.
    pub n: Option<i64>,
    /// Stream SSE chunks.
    pub stream: Option<bool>,
    /// Streaming options.
    pub stream_options: Option<StreamOptions>,
    /// Keep generating past end-of-generation tokens (extension).
    pub ignore_eos: Option<bool>,
    /// `false` keeps this request off speculative decoding (extension; the output is
    /// the same either way, only its speed differs).
    pub speculative: Option<bool>,
    /// End-user id; accepted and ignored.
    pub user: Option<Value>,
    /// Token id (as a string) -> bias in [-100, 100].
    pub logit_bias: Option<Value>,
    /// `{"type": "text" | "json_object" | "json_schema", ...}` (both endpoints, as vLLM).
    pub response_format: Option<Value>,
    /// vLLM: output matches this JSON schema.
    pub guided_json: Option<Value>,
    /// vLLM: output matches this regular expression.
    pub guided_regex: Option<Value>,
    /// vLLM: output is one of these strings.
    pub guided_choice: Option<Value>,
    /// vLLM: output follows this Lark grammar.
    pub guided_grammar: Option<Value>,
    /// vLLM's newer spelling: `{"json" | "regex" | "choice" | "grammar": ...}`.
    pub structured_outputs: Option<Value>,
}

impl CommonFields {
    /// The vLLM-style constraint fields.
    pub fn guided(&self) -> crate::api::output_format::Guided<'_> {
        crate::api::output_format::Guided {
            json: self.guided_json.as_ref(),
            regex: self.guided_regex.as_ref(),
            choice: self.guided_choice.as_ref(),
            grammar: self.guided_grammar.as_ref(),
            structured_outputs: self.structured_outputs.as_ref(),
        }
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    /// Send a final chunk with the usage (and `"usage": null` on every other chunk).
    pub include_usage: Option<bool>,
}

/// Body of `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Shared fields.
    #[serde(flatten)]
    pub common: CommonFields,
    /// The conversation.
    pub messages: Vec<Value>,
    /// Newer spelling of `max_tokens`; wins when both are given.
    pub max_completion_tokens: Option<i64>,
    /// Return logprobs of the sampled tokens.
    pub logprobs: Option<bool>,
    /// Alternatives per position, 0..=20 (needs `logprobs: true`).
    pub top_logprobs: Option<i64>,
    /// Function tools (see `api::tools`).
    pub tools: Option<Value>,
    /// `none` / `auto` / `required` / a named function.
    pub tool_choice: Option<Value>,
    /// Whether several calls may be made in one turn (default true).
    pub parallel_tool_calls: Option<Value>,
    /// The deprecated spelling of `tools`.
    pub functions: Option<Value>,
    /// The deprecated spelling of `tool_choice`.
    pub function_call: Option<Value>,
    /// Unsupported.
    pub audio: Option<Value>,
    /// Only `["text"]`.
    pub modalities: Option<Value>,
    /// Unsupported.
    pub prediction: Option<Value>,
}

/// Body of `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    /// Shared fields.
    #[serde(flatten)]
    pub common: CommonFields,
    /// A string, array of strings, array of token ids, or array of token-id arrays.
    pub prompt: Value,
    /// Number of alternatives per position, 0..=5.
    pub logprobs: Option<i64>,
    /// Unsupported when true.
    pub echo: Option<bool>,
    /// Unsupported unless empty.
    pub suffix: Option<Value>,
    /// Unsupported above 1.
    pub best_of: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn request_accepts_integer_floats_and_ignores_unknown_fields() {
        let r: ChatRequest = serde_json::from_value(json!({
            "model": "m", "messages": [], "temperature": 1, "whatever": {"x": 1}, "seed": 18446744073709551615u64
        }))
        .unwrap();
        assert_eq!(r.common.temperature, Some(1.0));
        assert_eq!(r.common.seed.and_then(|s| s.as_u64()), Some(u64::MAX));
    }
}
