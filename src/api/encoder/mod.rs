//! The encoder routes: `POST /v1/embeddings` (OpenAI shape), `POST /rerank` (TEI
//! shape) and `POST /v1/rerank` (Cohere/Jina shape), `POST /predict` (TEI) and
//! `POST /v1/classify` (vLLM shape) for sequence classifiers, `POST /v1/ner` for
//! token classifiers. They share one path: parse and validate the body, tokenize off
//! the async runtime, submit one job to the engine thread (which batches it with
//! other requests' inputs between LLM steps), await the outputs, and shape the answer.
//!
//! Invariants: the engine only sees inputs within the encoder's length limit and
//! vocabulary; a non-finite output never reaches a client (it is a 500); a route
//! used with a model of another kind is a 400 naming the kind and the routes that
//! serve it (the registry's lease checks it: `registry::kinds`).

pub mod classify;
pub mod documents;
pub mod embeddings;
pub mod ner;
pub mod rerank;

use tokio::sync::oneshot;

use super::EncoderReady;
use super::error::ApiError;
use crate::engine::encode::EncodeJob;
use crate::engine::error::EngineError;
use crate::metrics as m;
use crate::model::encoder::tokenize::{Encoded, TokenizeError};
use crate::registry::Lease;

/// Reads an encoder route's body, leases the model it names for `route` (the first
/// that serves it when it names none) and parses the body as `T`.
pub(crate) async fn leased_request<T: serde::de::DeserializeOwned>(
    state: &crate::api::AppState,
    req: axum::extract::Request,
    route: crate::registry::Route,
) -> Result<(Lease, T), ApiError> {
    use crate::api::body::{parse_json, peek_model, read_bytes};
    let bytes = read_bytes(req, state.limits.max_body_bytes).await?;
    let lease = state.encoder(peek_model(&bytes).as_deref(), route).await?;
    let body = parse_json(&bytes)?;
    Ok((lease, body))
}

/// The encoder a lease holds (the registry checked the route's kind already).
pub(crate) fn leased_encoder(lease: &Lease) -> Result<&EncoderReady, ApiError> {
    lease
        .encoder()
        .ok_or_else(|| ApiError::internal("the registry leased an LLM to an encoder route"))
}

/// Reads a text list field: a non-empty string or a non-empty array of them (at
/// most `max` items, none empty).
pub(crate) fn texts(
    value: Option<&serde_json::Value>,
    param: &str,
    max: usize,
) -> Result<Vec<String>, ApiError> {
    use serde_json::Value;
    let invalid = |msg: String| ApiError::invalid(msg, Some(param));
    let items: Vec<String> = match value {
        None => return Err(invalid(format!("`{param}` is required."))),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid(format!("`{param}` must not be empty.")));
        }
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| invalid(format!("`{param}[{i}]` must be a string.")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(invalid(format!(
                "`{param}` must be a string or an array of strings."
            )));
        }
    };
    if let Some(i) = items.iter().position(|t| t.is_empty()) {
        return Err(invalid(format!("`{param}[{i}]` is an empty string.")));
    }
    if items.len() > max {
        return Err(invalid(format!(
            "`{param}` has {} items; this server accepts at most {max} per request.",
            items.len()
        )));
    }
    Ok(items)
}

/// Runs CPU-bound work (tokenizing) on the blocking pool.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("tokenizing failed: {e}")))?
}

/// A tokenizer error about input `index` of field `param` as a 400.
pub(crate) fn tokenize_error(e: TokenizeError, param: &str, index: Option<usize>) -> ApiError {
    let at = index.map_or(String::new(), |i| format!("[{i}]"));
    match e {
        TokenizeError::TooLong { len, max } => ApiError::invalid(
            format!(
                "`{param}{at}` has {len} tokens but the encoder accepts at most {max}; \
                 shorten it or set `truncate` to true."
            ),
            Some(param),
        )
        .with_code("context_length_exceeded"),
        TokenizeError::Failed(msg) => {
            ApiError::invalid(format!("`{param}{at}`: {msg}"), Some(param))
        }
    }
}

/// Submits inputs as one job and waits for one output per input.
pub(crate) async fn run(
    ready: &EncoderReady,
    inputs: Vec<Encoded>,
) -> Result<Vec<Vec<f32>>, ApiError> {
    let n = inputs.len();
    let (reply, rx) = oneshot::channel();
    ready.engine.encode(EncodeJob { inputs, reply })?;
    let outputs = rx
        .await
        .map_err(|_| ApiError::from(EngineError::stopped()))??;
    if outputs.len() != n || outputs.iter().flatten().any(|x| !x.is_finite()) {
        return Err(ApiError::internal(
            "The encoder produced a non-finite or missing output.",
        ));
    }
    Ok(outputs)
}

/// Counts a request on `route`.
pub(crate) fn count(route: &'static str) {
    metrics::counter!(m::ENCODER_REQUESTS_TOTAL, "route" => route).increment(1);
}
