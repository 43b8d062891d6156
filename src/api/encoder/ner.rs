//! `POST /v1/ner`: token classification (named entities) with transformers'
//! token-classification pipeline semantics (`model::encoder::ner`):
//! `{model, input: text | [text], aggregation_strategy, ignore_labels, truncate}` ->
//! `{object: "list", model, data: [{index, entities}], usage}`; each entity is
//! `{entity_group, score, word, start, end}`, or `{entity, score, index, word, start,
//! end}` with `aggregation_strategy: "none"`; `start`/`end` are character offsets
//! into the input text.
//!
//! Choices: `aggregation_strategy` defaults to `simple` and `ignore_labels` to
//! `["O"]`; over-long inputs are truncated (as the pipeline does) unless `truncate`
//! is false, then they are a 400; entities come in text order.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{blocking, count, run, texts, tokenize_error};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::model::encoder::ner::{self, Aggregation, Entity, TokenSpan};
use crate::registry::Route;

#[derive(Debug, Deserialize)]
struct NerRequest {
    // Routing reads it (`peek_model`); parsed here so a non-string `model` is a 400.
    #[allow(dead_code)]
    model: Option<String>,
    input: Option<Value>,
    aggregation_strategy: Option<String>,
    ignore_labels: Option<Vec<String>>,
    truncate: Option<bool>,
}

/// `POST /v1/ner`.
pub async fn ner(State(state): State<AppState>, req: Request) -> Response {
    count("v1_ner");
    inner(&state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (lease, body): (_, NerRequest) = super::leased_request(state, req, Route::Ner).await?;
    let ready = super::leased_encoder(&lease)?;
    let info = &ready.encoder.info;
    let strategy = match body.aggregation_strategy.as_deref() {
        None => Aggregation::Simple,
        Some(name) => Aggregation::parse(name).ok_or_else(|| {
            ApiError::invalid(
                format!(
                    "`aggregation_strategy` must be one of none, simple, first, average, max; \
                     got `{name}`."
                ),
                Some("aggregation_strategy"),
            )
        })?,
    };
    let ignore = body.ignore_labels.unwrap_or_else(|| vec!["O".into()]);
    let inputs = texts(
        body.input.as_ref(),
        "input",
        ready.limits.max_embedding_inputs,
    )?;
    let truncate = body.truncate.unwrap_or(true);
    let served = ready.encoder.clone();
    let texts_copy = inputs.clone();
    let tokenized: Vec<(_, Vec<TokenSpan>)> = blocking(move || {
        texts_copy
            .iter()
            .enumerate()
            .map(|(i, t)| {
                served
                    .tokenizer
                    .text_spans(t, truncate)
                    .map_err(|e| tokenize_error(e, "input", Some(i)))
            })
            .collect()
    })
    .await?;
    let tokens: usize = tokenized.iter().map(|(e, _)| e.ids.len()).sum();
    let (encoded, spans): (Vec<_>, Vec<_>) = tokenized.into_iter().unzip();
    let outputs = run(ready, encoded).await?;
    let n = info.labels.len();
    if outputs
        .iter()
        .zip(&spans)
        .any(|(o, s)| o.len() != s.len() * n)
    {
        return Err(ApiError::internal(
            "The token classifier produced the wrong number of scores.",
        ));
    }
    let served = ready.encoder.clone();
    let data = blocking(move || {
        let tok = &served.tokenizer;
        let join = |pieces: &[String]| tok.join_tokens(pieces);
        Ok(inputs
            .iter()
            .zip(spans)
            .zip(outputs)
            .enumerate()
            .map(|(index, ((text, spans), logits))| {
                let probs = ner::softmax_rows(&logits, n);
                let scored = ner::gather(text, &spans, probs, tok.word_aware());
                let found = ner::entities(&scored, &served.info.labels, strategy, &ignore, &join);
                let entities: Vec<Value> = found.iter().map(entity_json).collect();
                json!({"index": index, "entities": entities})
            })
            .collect::<Vec<_>>())
    })
    .await?;
    Ok(Json(json!({
        "object": "list",
        "model": info.id,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

fn entity_json(e: &Entity) -> Value {
    match e.index {
        Some(index) => json!({
            "entity": e.label, "score": e.score, "index": index,
            "word": e.word, "start": e.start, "end": e.end,
        }),
        None => json!({
            "entity_group": e.label, "score": e.score,
            "word": e.word, "start": e.start, "end": e.end,
        }),
    }
}
