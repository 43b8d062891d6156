//! Rerank in two shapes over one implementation:
//! - `POST /rerank` (text-embeddings-inference): `{query, texts, raw_scores,
//!   return_text, truncate}` -> `[{index, score, text?}]` sorted by score;
//! - `POST /v1/rerank` (Cohere/Jina): `{query, documents, top_n, return_documents}` ->
//!   `{id, model, results: [{index, relevance_score, document?}], usage}`.
//!
//! Both accept `documents` as strings, `{text}` or `{content, metadata}` objects (TEI's
//! route also takes `documents` in place of `texts`); metadata is echoed on each
//! result. A cross-encoder scores each (query, document) pair: sigmoid of its logit,
//! or the logit itself with `raw_scores`. With an embedding model, the score is the
//! cosine similarity of the query's and the document's embeddings (`/health` and
//! `/v1/models` say which mode is active).
//!
//! Choices: TEI's `truncate` defaults to false (over-long pairs are a 400, as TEI
//! does); the Cohere route truncates by default, as Cohere and Jina do. Ties in
//! score keep document order.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::documents::{self, Document};
use super::{blocking, count, run, tokenize_error};
use crate::api::error::ApiError;
use crate::api::{AppState, EncoderReady};
use crate::model::encoder::config::Task;
use crate::model::encoder::tokenize::Encoded;
use crate::registry::Route;

#[derive(Debug, Deserialize)]
struct TeiRequest {
    // Routing reads it (`peek_model`); parsed here so a non-string `model` is a 400.
    #[allow(dead_code)]
    model: Option<String>,
    query: Option<Value>,
    texts: Option<Value>,
    documents: Option<Value>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    return_text: bool,
    #[serde(default)]
    truncate: bool,
    truncation_direction: Option<String>,
}

#[derive(Debug, Deserialize)]
struct CohereRequest {
    // Routing reads it (`peek_model`); parsed here so a non-string `model` is a 400.
    #[allow(dead_code)]
    model: Option<String>,
    query: Option<Value>,
    documents: Option<Value>,
    top_n: Option<i64>,
    #[serde(default)]
    return_documents: bool,
    truncate: Option<bool>,
}

/// How scores were made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A cross-encoder's logit per pair.
    CrossEncoder,
    /// Cosine similarity of embeddings.
    Cosine,
}

impl Mode {
    /// The mode an encoder's task implies (`None`: the task cannot rerank).
    pub fn of(task: Task) -> Option<Self> {
        match task {
            Task::CrossEncoder => Some(Mode::CrossEncoder),
            Task::Embedding(_) => Some(Mode::Cosine),
            Task::Classifier { .. } | Task::TokenClassifier => None,
        }
    }

    /// The leased encoder's mode (the registry only leases rerankers to these routes).
    fn served(info: &crate::model::encoder::EncoderInfo) -> Result<Self, ApiError> {
        Mode::of(info.task)
            .ok_or_else(|| ApiError::internal("the registry leased a non-reranker to rerank"))
    }

    /// Name shown by `/health` and `/v1/models`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::CrossEncoder => "cross-encoder",
            Mode::Cosine => "embedding-cosine",
        }
    }
}

/// One scored document.
struct Scored {
    index: usize,
    score: f32,
}

/// `POST /rerank` (TEI shape).
pub async fn rerank_tei(State(state): State<AppState>, req: Request) -> Response {
    count("rerank");
    tei(&state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/rerank` (Cohere/Jina shape).
pub async fn rerank_cohere(State(state): State<AppState>, req: Request) -> Response {
    count("v1_rerank");
    cohere(&state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn tei(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (lease, body): (_, TeiRequest) = super::leased_request(state, req, Route::Rerank).await?;
    let ready = super::leased_encoder(&lease)?;
    let mode = Mode::served(&ready.encoder.info)?;
    if let Some(dir) = body.truncation_direction.as_deref()
        && !dir.eq_ignore_ascii_case("right")
    {
        return Err(ApiError::unsupported(
            "truncation_direction",
            " with a value other than `Right`",
        ));
    }
    let (param, docs) = match (&body.texts, &body.documents) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "Send either `texts` or `documents`, not both.",
                Some("texts"),
            ));
        }
        (None, Some(d)) => ("documents", Some(d)),
        (t, None) => ("texts", t.as_ref()),
    };
    let docs = documents::parse(docs, param, ready.limits.max_rerank_documents)?;
    let query = query(body.query.as_ref())?;
    let (scores, _) = score(ready, mode, query, &docs, body.truncate, param).await?;
    let results: Vec<Value> = sorted(scores, mode, body.raw_scores)
        .into_iter()
        .map(|s| {
            let mut item = json!({"index": s.index, "score": s.score});
            if body.return_text {
                item["text"] = json!(docs[s.index].text);
            }
            if let Some(meta) = &docs[s.index].metadata {
                item["metadata"] = meta.clone();
            }
            item
        })
        .collect();
    Ok(Json(results).into_response())
}

async fn cohere(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (lease, body): (_, CohereRequest) =
        super::leased_request(state, req, Route::Rerank).await?;
    let ready = super::leased_encoder(&lease)?;
    let mode = Mode::served(&ready.encoder.info)?;
    let docs = documents::parse(
        body.documents.as_ref(),
        "documents",
        ready.limits.max_rerank_documents,
    )?;
    let top_n = match body.top_n {
        None => docs.len(),
        Some(n) if n >= 1 => (n as usize).min(docs.len()),
        Some(n) => {
            return Err(ApiError::invalid(
                format!("`top_n` must be at least 1, got {n}."),
                Some("top_n"),
            ));
        }
    };
    let query = query(body.query.as_ref())?;
    let truncate = body.truncate.unwrap_or(true);
    let (scores, tokens) = score(ready, mode, query, &docs, truncate, "documents").await?;
    let results: Vec<Value> = sorted(scores, mode, false)
        .into_iter()
        .take(top_n)
        .map(|s| {
            let doc = &docs[s.index];
            let mut item = json!({"index": s.index, "relevance_score": s.score});
            if body.return_documents {
                item["document"] = json!({"text": doc.text});
            }
            if let Some(meta) = &doc.metadata {
                item["metadata"] = meta.clone();
            }
            item
        })
        .collect();
    Ok(Json(json!({
        "id": uuid::Uuid::new_v4().to_string(),
        "model": ready.encoder.info.id,
        "results": results,
        "usage": {"total_tokens": tokens},
    }))
    .into_response())
}

fn query(v: Option<&Value>) -> Result<String, ApiError> {
    match v {
        Some(Value::String(q)) if !q.trim().is_empty() => Ok(q.clone()),
        Some(Value::String(_)) => Err(ApiError::invalid(
            "`query` must not be empty.",
            Some("query"),
        )),
        None => Err(ApiError::invalid("`query` is required.", Some("query"))),
        Some(_) => Err(ApiError::invalid(
            "`query` must be a string.",
            Some("query"),
        )),
    }
}

/// Raw scores (logits, or cosines) per document, and the tokens the model read.
async fn score(
    ready: &EncoderReady,
    mode: Mode,
    query: String,
    docs: &[Document],
    truncate: bool,
    param: &'static str,
) -> Result<(Vec<f32>, usize), ApiError> {
    let served = ready.encoder.clone();
    let texts: Vec<String> = docs.iter().map(|d| d.text.clone()).collect();
    let inputs: Vec<Encoded> = blocking(move || {
        let tok = &served.tokenizer;
        match mode {
            Mode::CrossEncoder => texts
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    tok.pair(&query, t, truncate)
                        .map_err(|e| tokenize_error(e, param, Some(i)))
                })
                .collect(),
            Mode::Cosine => std::iter::once(
                tok.text(&query, truncate)
                    .map_err(|e| tokenize_error(e, "query", None)),
            )
            .chain(texts.iter().enumerate().map(|(i, t)| {
                tok.text(t, truncate)
                    .map_err(|e| tokenize_error(e, param, Some(i)))
            }))
            .collect(),
        }
    })
    .await?;
    let tokens = inputs.iter().map(|e| e.ids.len()).sum();
    let outputs = run(ready, inputs).await?;
    let scores = match mode {
        Mode::CrossEncoder => outputs.iter().map(|o| o[0]).collect(),
        Mode::Cosine => {
            let (q, docs) = outputs
                .split_first()
                .expect("the query's output comes first");
            // Embeddings are L2-normalized: the dot product is the cosine.
            docs.iter()
                .map(|d| {
                    d.iter()
                        .zip(q)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        .clamp(-1.0, 1.0)
                })
                .collect()
        }
    };
    Ok((scores, tokens))
}

/// Final scores, best first (ties keep document order).
fn sorted(raw: Vec<f32>, mode: Mode, raw_scores: bool) -> Vec<Scored> {
    let mut scored: Vec<Scored> = raw
        .into_iter()
        .enumerate()
        .map(|(index, s)| Scored {
            index,
            score: match mode {
                Mode::CrossEncoder if !raw_scores => 1.0 / (1.0 + (-s).exp()),
                _ => s,
            },
        })
        .collect();
    scored.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sigmoid_unless_raw_and_sorted_best_first() {
        let s = sorted(vec![0.0, 2.0, -1.0, 2.0], Mode::CrossEncoder, false);
        assert_eq!(
            s.iter().map(|x| x.index).collect::<Vec<_>>(),
            vec![1, 3, 0, 2]
        );
        assert!((s[2].score - 0.5).abs() < 1e-6);
        assert!((s[0].score - 0.880_797).abs() < 1e-5);
        let raw = sorted(vec![0.0, 2.0], Mode::CrossEncoder, true);
        assert_eq!(raw[0].score, 2.0);
        let cos = sorted(vec![0.3, -0.2], Mode::Cosine, false);
        assert_eq!(cos[0].score, 0.3);
    }

    #[test]
    fn query_must_be_a_non_empty_string() {
        assert!(query(Some(&json!("q"))).is_ok());
        for v in [json!(""), json!("  "), json!(3), json!(["q"])] {
            assert_eq!(query(Some(&v)).unwrap_err().param.as_deref(), Some("query"));
        }
        assert!(query(None).unwrap_err().message.contains("required"));
    }
}
