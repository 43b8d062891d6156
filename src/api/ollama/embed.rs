//! `POST /api/embed` (`input`: a string or strings → `embeddings`) and the older
//! `POST /api/embeddings` (`prompt` → `embedding`), answered by the encoder the name
//! resolves to, through the same tokenize-and-submit path as `/v1/embeddings`.
//! Over-long inputs are truncated by default (Ollama's `truncate: true`); with
//! `truncate: false` they are a 400. An LLM name is a 400: ferrite embeds with its
//! encoder only.

use axum::Json;
use axum::extract::{Request, State};
use serde_json::{Value, json};

use super::models;
use super::response::Timings;
use crate::api::body::{parse_json, read_bytes};
use crate::api::encoder::leased_encoder;
use crate::api::encoder::{blocking, count, run, tokenize_error};
use crate::api::error::ApiError;
use crate::api::{AppState, EncoderReady};
use crate::registry::{Lease, Route};

use super::request::{EmbedRequest, EmbeddingsRequest};

/// A lease on the embedding model `name` resolves to.
async fn encoder(state: &AppState, name: &str) -> Result<Lease, ApiError> {
    let lease = models::resolve(state, name).await?;
    let kind = lease.loaded().kind();
    if !kind.serves(Route::Embed) {
        return Err(ApiError::invalid(
            format!(
                "\"{name}\" does not support embeddings: it is {}",
                kind.describe()
            ),
            Some("model"),
        ));
    }
    Ok(lease)
}

/// Embeds `texts` (each non-empty); returns the vectors and the input token count.
async fn embed(
    ready: &EncoderReady,
    texts: Vec<String>,
    truncate: bool,
    param: &'static str,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    if let Some(i) = texts.iter().position(|t| t.is_empty()) {
        return Err(ApiError::invalid(
            format!("`{param}` item {i} is empty; embeddings need text."),
            Some(param),
        ));
    }
    let max = ready.limits.max_embedding_inputs;
    if texts.len() > max {
        return Err(ApiError::invalid(
            format!(
                "`{param}` has {} items; at most {max} per request.",
                texts.len()
            ),
            Some(param),
        ));
    }
    let served = ready.encoder.clone();
    let encoded = blocking(move || {
        texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                served
                    .tokenizer
                    .text(t, truncate)
                    .map_err(|e| tokenize_error(e, param, Some(i)))
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await?;
    let tokens = encoded.iter().map(|e| e.ids.len()).sum();
    Ok((run(ready, encoded).await?, tokens))
}

/// `input`: a string or an array of strings.
fn texts(input: Option<&Value>) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::invalid(
            "`input` must be a string or an array of strings.",
            Some("input"),
        )
    };
    match input {
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|v| v.as_str().map(str::to_string).ok_or_else(bad))
            .collect(),
        Some(Value::Array(_)) => Err(ApiError::invalid(
            "`input` must not be empty.",
            Some("input"),
        )),
        _ => Err(bad()),
    }
}

/// `POST /api/embed`.
pub async fn embed_route(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    count("ollama_embed");
    let timings = Timings::new(std::time::Instant::now());
    let body: EmbedRequest = parse_json(&read_bytes(req, state.limits.max_body_bytes).await?)?;
    let lease = encoder(&state, &body.model).await?;
    let ready = leased_encoder(&lease)?;
    let dims = ready.encoder.info.dims;
    if let Some(d) = body.dimensions
        && d != dims as i64
    {
        return Err(ApiError::invalid(
            format!("`dimensions` must be {dims} (this model's width), got {d}."),
            Some("dimensions"),
        ));
    }
    let inputs = texts(body.input.as_ref())?;
    let (vectors, tokens) = embed(ready, inputs, body.truncate.unwrap_or(true), "input").await?;
    let usage = crate::engine::types::Usage {
        prompt_tokens: tokens,
        completion_tokens: 0,
    };
    let last = timings.finish("stop", usage);
    Ok(Json(json!({
        "model": body.model,
        "embeddings": vectors,
        "total_duration": last.total_duration,
        "load_duration": 0,
        "prompt_eval_count": tokens,
    })))
}

/// `POST /api/embeddings` (the older route).
pub async fn embeddings_route(
    State(state): State<AppState>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    count("ollama_embeddings");
    let body: EmbeddingsRequest = parse_json(&read_bytes(req, state.limits.max_body_bytes).await?)?;
    let lease = encoder(&state, &body.model).await?;
    let ready = leased_encoder(&lease)?;
    let prompt = body.prompt.unwrap_or_default();
    let (mut vectors, _) = embed(ready, vec![prompt], true, "prompt").await?;
    Ok(Json(
        json!({ "embedding": vectors.pop().unwrap_or_default() }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_shapes() {
        assert_eq!(texts(Some(&json!("a"))).unwrap(), vec!["a".to_string()]);
        assert_eq!(texts(Some(&json!(["a", "b"]))).unwrap().len(), 2);
        for bad in [json!([]), json!([1]), json!({"a": 1}), json!(null)] {
            assert_eq!(texts(Some(&bad)).unwrap_err().status.as_u16(), 400, "{bad}");
        }
        assert!(texts(None).is_err());
    }
}
