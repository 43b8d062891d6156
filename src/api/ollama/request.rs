//! Request bodies of Ollama's API, with Ollama's field names. Parsed loosely (unknown
//! fields, and unknown `options`, are ignored as Ollama ignores them); what ferrite does
//! not implement is kept as `Value` so `validate` can refuse it by name.

use serde::Deserialize;
use serde_json::Value;

/// `options`: the runtime parameters ferrite maps onto its sampling. Others (`num_gpu`,
/// `num_thread`, `mirostat`, ...) are ignored.
#[derive(Debug, Default, Deserialize)]
pub struct Options {
    /// Tokens to generate; -1 (default) or -2: until the context is full.
    pub num_predict: Option<i64>,
    /// Sampling temperature (default 0.8).
    pub temperature: Option<f64>,
    /// Top-k (default 40; 0 disables).
    pub top_k: Option<i64>,
    /// Nucleus mass (default 0.9).
    pub top_p: Option<f64>,
    /// Min-p (default 0).
    pub min_p: Option<f64>,
    /// RNG seed.
    pub seed: Option<serde_json::Number>,
    /// Stop sequences (an array of strings; a string is accepted too).
    pub stop: Option<Value>,
    /// Multiplicative repetition penalty (default 1.1).
    pub repeat_penalty: Option<f64>,
    /// Presence penalty.
    pub presence_penalty: Option<f64>,
    /// Frequency penalty.
    pub frequency_penalty: Option<f64>,
    /// Context window: a cap on prompt + generated tokens below the model's own.
    pub num_ctx: Option<i64>,
    /// ferrite's extension (as on the OpenAI routes): keep generating past
    /// end-of-generation tokens, so `num_predict` tokens come out (benchmarks).
    pub ignore_eos: Option<bool>,
    /// ferrite's extension: `false` keeps this request off speculative decoding.
    pub speculative: Option<bool>,
}

/// Body of `POST /api/chat`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    /// Model name (`name`, `name:tag`).
    #[serde(default)]
    pub model: String,
    /// The conversation: `{role, content, images?}`; empty loads the model only.
    #[serde(default)]
    pub messages: Vec<Value>,
    /// Stream NDJSON (default true).
    pub stream: Option<bool>,
    /// `"json"` or a JSON schema: structured output.
    pub format: Option<Value>,
    /// Runtime options.
    pub options: Option<Options>,
    /// How long the model stays loaded after this request (`0` unloads it once
    /// idle, a negative value keeps it for ever, `"5m"`, `300`, ...).
    pub keep_alive: Option<Value>,
    /// Unsupported unless empty.
    pub tools: Option<Value>,
    /// Accepted when false or absent.
    pub think: Option<Value>,
}

/// Body of `POST /api/generate`.
#[derive(Debug, Deserialize)]
pub struct GenerateRequest {
    /// Model name.
    #[serde(default)]
    pub model: String,
    /// The prompt; absent or empty loads the model only.
    pub prompt: Option<String>,
    /// Unsupported (fill-in-the-middle).
    pub suffix: Option<String>,
    /// System message, placed before the prompt by the chat template.
    pub system: Option<String>,
    /// Unsupported unless empty (ferrite uses the model's own template).
    pub template: Option<String>,
    /// Unsupported unless empty (send the conversation to /api/chat instead).
    pub context: Option<Value>,
    /// Stream NDJSON (default true).
    pub stream: Option<bool>,
    /// Skip the chat template: the prompt is the model's whole input.
    pub raw: Option<bool>,
    /// `"json"` or a JSON schema: structured output.
    pub format: Option<Value>,
    /// Unsupported unless empty.
    pub images: Option<Value>,
    /// Runtime options.
    pub options: Option<Options>,
    /// How long the model stays loaded after this request (`0` unloads it once
    /// idle, a negative value keeps it for ever, `"5m"`, `300`, ...).
    pub keep_alive: Option<Value>,
    /// Accepted when false or absent.
    pub think: Option<Value>,
}

/// Body of `POST /api/embed`.
#[derive(Debug, Deserialize)]
pub struct EmbedRequest {
    /// Encoder name.
    #[serde(default)]
    pub model: String,
    /// A string or an array of strings.
    pub input: Option<Value>,
    /// Truncate over-long inputs (default true, as Ollama).
    pub truncate: Option<bool>,
    /// Only the encoder's own width.
    pub dimensions: Option<i64>,
    /// Accepted and ignored.
    pub options: Option<Value>,
    /// How long the model stays loaded after this request (`0` unloads it once
    /// idle, a negative value keeps it for ever, `"5m"`, `300`, ...).
    pub keep_alive: Option<Value>,
}

/// Body of the older `POST /api/embeddings`.
#[derive(Debug, Deserialize)]
pub struct EmbeddingsRequest {
    /// Encoder name.
    #[serde(default)]
    pub model: String,
    /// One text.
    pub prompt: Option<String>,
    /// Accepted and ignored.
    pub options: Option<Value>,
    /// How long the model stays loaded after this request (`0` unloads it once
    /// idle, a negative value keeps it for ever, `"5m"`, `300`, ...).
    pub keep_alive: Option<Value>,
}

/// Body of `POST /api/show`.
#[derive(Debug, Deserialize)]
pub struct ShowRequest {
    /// Model name.
    pub model: Option<String>,
    /// Older spelling of `model`.
    pub name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_and_options_are_ignored() {
        let r: GenerateRequest = serde_json::from_value(json!({
            "model": "m", "prompt": "hi", "options": {"num_gpu": 1, "mirostat": 2, "top_k": 5},
            "whatever": true
        }))
        .unwrap();
        assert_eq!(r.options.unwrap().top_k, Some(5));
        assert_eq!(r.stream, None);
    }
}
