//! Request validation that needs no model: parameter ranges, unsupported features, the
//! shape of `messages` and `prompt` (in `input`), and the max_tokens / context-length
//! arithmetic.
//! Every check returns an `ApiError` naming the parameter at fault.

mod input;

pub use input::{PromptInput, messages, prompt};

use super::ApiLimits;
use super::error::ApiError;
use super::openai::{ChatRequest, CommonFields, CompletionRequest};
use super::output_format::{self, OutputGrammar};
use crate::engine::types::SamplingParams;
use serde_json::Value;

/// Which endpoint a request came through; decides defaults and response shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/chat/completions`.
    Chat,
    /// `/v1/completions`.
    Completion,
}

impl Endpoint {
    /// The parameter that holds the prompt.
    pub fn prompt_param(self) -> &'static str {
        match self {
            Endpoint::Chat => "messages",
            Endpoint::Completion => "prompt",
        }
    }
}

/// Parameters checked before tokenization.
#[derive(Debug, Clone, PartialEq)]
pub struct Checked {
    /// Sampling parameters; `max_tokens` is resolved later per prompt.
    pub params: SamplingParams,
    /// Explicit completion limit, if the client gave one.
    pub max_tokens: Option<usize>,
    /// Choices per prompt.
    pub n: usize,
    /// Stream SSE.
    pub stream: bool,
    /// `stream_options.include_usage`.
    pub include_usage: bool,
    /// The output constraint, if the request asked for one.
    pub grammar: Option<OutputGrammar>,
}

/// 404 unless `requested` is absent or the served id.
pub fn model(requested: Option<&str>, served: &str) -> Result<(), ApiError> {
    match requested {
        Some(m) if m != served => Err(ApiError::model_not_found(m)),
        _ => Ok(()),
    }
}

fn range(v: Option<f64>, param: &str, lo: f64, hi: f64, default: f32) -> Result<f32, ApiError> {
    match v {
        None => Ok(default),
        Some(x) if (lo..=hi).contains(&x) => Ok(x as f32),
        Some(x) => Err(ApiError::invalid(
            format!("`{param}` must be between {lo} and {hi}, got {x}."),
            Some(param),
        )),
    }
}

fn positive(v: i64, param: &str) -> Result<usize, ApiError> {
    usize::try_from(v).ok().filter(|&x| x >= 1).ok_or_else(|| {
        ApiError::invalid(
            format!("`{param}` must be at least 1, got {v}."),
            Some(param),
        )
    })
}

/// Checks the fields shared by both endpoints. `max_tokens` is the already-chosen
/// spelling (`max_completion_tokens` or `max_tokens`) with its name.
pub fn common(
    c: &CommonFields,
    max_tokens: Option<(i64, &str)>,
    logprobs: Option<usize>,
    limits: &ApiLimits,
) -> Result<Checked, ApiError> {
    let top_p = range(c.top_p, "top_p", 0.0, 1.0, 1.0)?;
    if top_p <= 0.0 {
        return Err(ApiError::invalid(
            "`top_p` must be in (0, 1], got 0.",
            Some("top_p"),
        ));
    }
    let top_k = match c.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) => usize::try_from(k).map_err(|_| {
            ApiError::invalid(
                format!("`top_k` must be -1 (disabled) or at least 0, got {k}."),
                Some("top_k"),
            )
        })?,
    };
    let n = positive(c.n.unwrap_or(1), "n")?;
    if n > limits.max_n {
        let msg = format!("`n` must be at most {}, got {n}.", limits.max_n);
        return Err(ApiError::invalid(msg, Some("n")));
    }
    let params = SamplingParams {
        temperature: range(c.temperature, "temperature", 0.0, 2.0, 1.0)?,
        top_p,
        top_k,
        min_p: range(c.min_p, "min_p", 0.0, 1.0, 0.0)?,
        seed: c.seed.as_ref().map(seed).transpose()?,
        presence_penalty: range(c.presence_penalty, "presence_penalty", -2.0, 2.0, 0.0)?,
        frequency_penalty: range(c.frequency_penalty, "frequency_penalty", -2.0, 2.0, 0.0)?,
        repetition_penalty: repetition_penalty(c.repetition_penalty)?,
        logprobs,
        max_tokens: 0,
        stop: stop(c.stop.as_ref())?,
        ignore_eos: c.ignore_eos.unwrap_or(false),
        logit_bias: output_format::logit_bias(c.logit_bias.as_ref())?,
        visible_control: Vec::new(),
        speculative: c.speculative.unwrap_or(true),
    };
    let grammar = output_format::requested(c.response_format.as_ref(), c.guided())?;
    Ok(Checked {
        params,
        max_tokens: max_tokens.map(|(v, name)| positive(v, name)).transpose()?,
        n,
        stream: c.stream.unwrap_or(false),
        include_usage: c
            .stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        grammar,
    })
}

/// `repetition_penalty` in (0, 2]; default 1 (off).
fn repetition_penalty(v: Option<f64>) -> Result<f32, ApiError> {
    let p = range(v, "repetition_penalty", 0.0, 2.0, 1.0)?;
    if p <= 0.0 {
        return Err(ApiError::invalid(
            "`repetition_penalty` must be in (0, 2], got 0.",
            Some("repetition_penalty"),
        ));
    }
    Ok(p)
}

/// Any JSON integer becomes a seed (negative ones wrap).
fn seed(n: &serde_json::Number) -> Result<u64, ApiError> {
    n.as_u64()
        .or_else(|| n.as_i64().map(|i| i as u64))
        .ok_or_else(|| {
            ApiError::invalid(format!("`seed` must be an integer, got {n}."), Some("seed"))
        })
}

/// `stop`: a string or an array of at most 4 strings; empty strings are dropped.
pub fn stop(v: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "`stop` must be a string or an array of strings.",
            Some("stop"),
        )
    };
    let stops: Vec<String> = match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_string).ok_or_else(bad))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad()),
    };
    if stops.len() > 4 {
        let msg = format!("`stop` may hold at most 4 sequences, got {}.", stops.len());
        return Err(ApiError::invalid(msg, Some("stop")));
    }
    Ok(stops.into_iter().filter(|s| !s.is_empty()).collect())
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Chat `logprobs` (bool) + `top_logprobs` (0..=20) -> `SamplingParams::logprobs`.
pub fn chat_logprobs(logprobs: Option<bool>, top: Option<i64>) -> Result<Option<usize>, ApiError> {
    let top = match top {
        None => None,
        Some(k) if (0..=20).contains(&k) => Some(k as usize),
        Some(k) => {
            let msg = format!("`top_logprobs` must be between 0 and 20, got {k}.");
            return Err(ApiError::invalid(msg, Some("top_logprobs")));
        }
    };
    match (logprobs.unwrap_or(false), top) {
        (true, top) => Ok(Some(top.unwrap_or(0))),
        (false, Some(k)) if k > 0 => Err(ApiError::invalid(
            "`top_logprobs` requires `logprobs` to be true.",
            Some("top_logprobs"),
        )),
        (false, _) => Ok(None),
    }
}

/// Completions `logprobs` (integer 0..=5) -> `SamplingParams::logprobs`.
pub fn completion_logprobs(logprobs: Option<i64>) -> Result<Option<usize>, ApiError> {
    match logprobs {
        None => Ok(None),
        Some(k) if (0..=5).contains(&k) => Ok(Some(k as usize)),
        Some(k) => Err(ApiError::invalid(
            format!("`logprobs` must be between 0 and 5, got {k}."),
            Some("logprobs"),
        )),
    }
}

/// Rejects chat features ferrite does not implement.
pub fn chat_unsupported(r: &ChatRequest) -> Result<(), ApiError> {
    let present = |v: &Option<Value>| v.as_ref().is_some_and(|v| !is_empty(v));
    for (name, given) in [
        ("audio", present(&r.audio)),
        ("prediction", present(&r.prediction)),
    ] {
        if given {
            return Err(ApiError::unsupported(name, ""));
        }
    }
    if let Some(m) = r.modalities.as_ref().filter(|v| !v.is_null()) {
        let text_only = m
            .as_array()
            .is_some_and(|a| a.iter().all(|x| x.as_str() == Some("text")));
        if !text_only {
            return Err(ApiError::unsupported("modalities", " (only [\"text\"])"));
        }
    }
    Ok(())
}

/// Rejects completion features ferrite does not implement.
pub fn completion_unsupported(r: &CompletionRequest) -> Result<(), ApiError> {
    if r.echo == Some(true) {
        return Err(ApiError::unsupported("echo", ""));
    }
    if r.suffix.as_ref().is_some_and(|s| !is_empty(s)) {
        return Err(ApiError::unsupported("suffix", ""));
    }
    if r.best_of.is_some_and(|b| b > 1) {
        return Err(ApiError::unsupported("best_of", " (only 1)"));
    }
    Ok(())
}

/// The completion limit of one prompt of `prompt_len` tokens.
///
/// An explicit limit is capped by the operator's `cap`, then must fit the context. Without
/// one, chat gets whatever fits (capped), completions get 16 (capped, and shrunk to fit).
pub fn max_tokens(
    prompt_len: usize,
    explicit: Option<usize>,
    endpoint: Endpoint,
    context: usize,
    cap: Option<usize>,
) -> Result<usize, ApiError> {
    let cap = cap.unwrap_or(usize::MAX).max(1);
    let param = endpoint.prompt_param();
    let room = context.saturating_sub(prompt_len);
    match explicit {
        Some(m) => {
            let m = m.min(cap);
            if prompt_len.saturating_add(m) > context {
                return Err(ApiError::context_length(context, prompt_len, m, param));
            }
            Ok(m)
        }
        None if room == 0 => Err(ApiError::context_length(context, prompt_len, 1, param)),
        None => Ok(match endpoint {
            Endpoint::Chat => room.min(cap),
            Endpoint::Completion => room.min(cap).min(16),
        }),
    }
}

#[cfg(test)]
mod tests;
