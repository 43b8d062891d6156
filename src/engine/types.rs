//! The vocabulary shared by the HTTP edge and the engine thread: what a generation
//! request carries in, and the events that stream back out.
//!
//! Invariants: a request's event stream ends with exactly one `Done` or one `Error`
//! (unless the receiver was dropped first, which the engine treats as an abort).

use tokio::sync::mpsc;

use crate::structured::Constraint;

/// Resolved, validated sampling parameters of one sequence.
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// 0 means greedy (argmax).
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 disables.
    pub top_p: f32,
    /// 0 disables.
    pub top_k: usize,
    /// Minimum probability relative to the most likely token, in [0, 1]; 0 disables.
    pub min_p: f32,
    /// Seed of this sequence's private RNG; `None` draws one at random.
    pub seed: Option<u64>,
    /// OpenAI presence penalty in [-2, 2].
    pub presence_penalty: f32,
    /// OpenAI frequency penalty in [-2, 2].
    pub frequency_penalty: f32,
    /// Multiplicative repetition penalty (llama.cpp / Ollama `repeat_penalty`, vLLM
    /// `repetition_penalty`) on tokens generated so far: positive logits are divided by
    /// it, negative ones multiplied. 1 disables.
    pub repetition_penalty: f32,
    /// `Some(k)`: report the chosen token's logprob and the `k` most likely alternatives.
    pub logprobs: Option<usize>,
    /// Upper bound on generated tokens (already capped by the context length).
    pub max_tokens: usize,
    /// Stop strings; the matched text is not returned.
    pub stop: Vec<String>,
    /// Ignore end-of-generation tokens (benchmarks).
    pub ignore_eos: bool,
    /// Added to these tokens' logits before anything else (OpenAI `logit_bias`,
    /// already checked: ids in the vocabulary, biases in [-100, 100]).
    pub logit_bias: Vec<(u32, f32)>,
    /// Control tokens whose text is kept in the output (tool-call markers such as
    /// Mistral's `[TOOL_CALLS]`, which the API's parser must see); other control
    /// tokens produce no text.
    pub visible_control: Vec<u32>,
    /// Whether this sequence may use speculative decoding when the engine has it on
    /// (ferrite's `speculative` extension; it never changes the output).
    pub speculative: bool,
}

impl SamplingParams {
    /// Argmax with nothing else to compute (no penalties, no logprobs): the token can be
    /// picked where the logits are, without handing them to the host sampler.
    pub fn is_plain_greedy(&self) -> bool {
        self.temperature <= 0.0
            && self.logprobs.is_none()
            && self.presence_penalty == 0.0
            && self.frequency_penalty == 0.0
            && self.repetition_penalty == 1.0
            && self.logit_bias.is_empty()
    }
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            seed: None,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            repetition_penalty: 1.0,
            logprobs: None,
            max_tokens: 16,
            stop: Vec::new(),
            ignore_eos: false,
            logit_bias: Vec::new(),
            visible_control: Vec::new(),
            speculative: true,
        }
    }
}

/// One sequence to generate, as submitted to the engine.
#[derive(Debug)]
pub struct GenerateRequest {
    /// Request id for logs (`x-request-id`, plus `-i` for choice i of n>1).
    pub id: String,
    /// Prompt token ids, non-empty, already checked against the context length.
    pub prompt_ids: Vec<u32>,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Where the engine sends this sequence's events. Dropping the receiver aborts it.
    pub events: mpsc::UnboundedSender<TokenEvent>,
    /// The grammar its output must follow (structured outputs, forced tool calls).
    pub constraint: Option<Box<Constraint>>,
}

/// Log-probability of one token, with the most likely alternatives at that position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token's text (lossy UTF-8 of its bytes).
    pub token: String,
    /// The token's raw bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability under the (temperature-scaled) distribution.
    pub logprob: f32,
    /// Most likely alternatives, best first.
    pub top: Vec<TopLogprob>,
}

/// One alternative in `TokenLogprob::top`.
#[derive(Debug, Clone, PartialEq)]
pub struct TopLogprob {
    /// Token id.
    pub token_id: u32,
    /// Token text.
    pub token: String,
    /// Raw bytes.
    pub bytes: Vec<u8>,
    /// Natural-log probability.
    pub logprob: f32,
}

/// Why a sequence finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` or the context length reached.
    Length,
    /// The output was tool calls (decided by the API layer, which parses them; the
    /// engine itself never reports it).
    ToolCalls,
}

impl FinishReason {
    /// The OpenAI spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
        }
    }
}

/// Token counts of one sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens (including a final end-of-generation token).
    pub completion_tokens: usize,
}

/// An event on a sequence's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum TokenEvent {
    /// One sampled token. `text` is the new visible text, which may be empty while
    /// bytes of an incomplete character or a possible stop string are held back.
    Token {
        /// Token id.
        id: u32,
        /// Newly released text.
        text: String,
        /// Present when logprobs were asked for.
        logprob: Option<TokenLogprob>,
    },
    /// The sequence finished; `text` is any held-back text released at the end.
    Done {
        /// Final held-back text (empty in most cases).
        text: String,
        /// Why it finished.
        finish_reason: FinishReason,
        /// Token counts.
        usage: Usage,
    },
    /// The sequence failed; no further events follow.
    Error(crate::engine::error::EngineError),
}
