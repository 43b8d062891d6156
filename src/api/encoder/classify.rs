//! Sequence classification in two shapes over one implementation:
//! - `POST /predict` (text-embeddings-inference): `{inputs, raw_scores, truncate}`,
//!   `inputs` a text, a `[text, text_pair]` pair, or a batch of `[text]` / `[text,
//!   text_pair]` lists -> `[{score, label}]` best first (a list of such lists for a
//!   batch);
//! - `POST /v1/classify` (vLLM): `{model, input: text | [text]}` -> `{id, object,
//!   created, model, data: [{index, label, probs, num_classes}], usage}`.
//!
//! Scores: the softmax over the labels, or each label's sigmoid for a
//! `multi_label_classification` model and for a one-label cross-encoder (which these
//! routes serve too); `raw_scores` gives the logits. Choices: TEI's `truncate`
//! defaults to false (over-long inputs are a 400) and so does `/v1/classify`'s (a
//! ferrite extension there); ties in score keep label order; TEI applies softmax
//! even to multi-label models, ferrite honours `problem_type`.

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{blocking, count, run, texts, tokenize_error};
use crate::api::error::ApiError;
use crate::api::{AppState, EncoderReady};
use crate::model::encoder::config::Task;
use crate::model::encoder::tokenize::Encoded;
use crate::registry::Route;

#[derive(Debug, Deserialize)]
struct PredictRequest {
    // Routing reads it (`peek_model`); parsed here so a non-string `model` is a 400.
    #[allow(dead_code)]
    model: Option<String>,
    inputs: Option<Value>,
    #[serde(default)]
    raw_scores: bool,
    #[serde(default)]
    truncate: bool,
}

#[derive(Debug, Deserialize)]
struct ClassifyRequest {
    // Routing reads it (`peek_model`); parsed here so a non-string `model` is a 400.
    #[allow(dead_code)]
    model: Option<String>,
    input: Option<Value>,
    #[serde(default)]
    truncate: bool,
    #[serde(rename = "user")]
    _user: Option<String>,
}

/// One model input: a text or a (text, text pair).
#[derive(Debug, Clone, PartialEq)]
enum Input {
    One(String),
    Pair(String, String),
}

/// `POST /predict` (TEI shape).
pub async fn predict(State(state): State<AppState>, req: Request) -> Response {
    count("predict");
    tei(&state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// `POST /v1/classify` (vLLM shape).
pub async fn classify(State(state): State<AppState>, req: Request) -> Response {
    count("v1_classify");
    vllm(&state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn tei(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (lease, body): (_, PredictRequest) =
        super::leased_request(state, req, Route::Classify).await?;
    let ready = super::leased_encoder(&lease)?;
    let info = &ready.encoder.info;
    let (inputs, batched) = parse_inputs(body.inputs.as_ref(), ready.limits.max_embedding_inputs)?;
    let (logits, _) = scores(ready, inputs, body.truncate).await?;
    let lists: Vec<Value> = logits
        .into_iter()
        .map(|row| {
            let probs = if body.raw_scores {
                row
            } else {
                activate(info.task, row)
            };
            let mut items: Vec<(usize, f32)> = probs.into_iter().enumerate().collect();
            items.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
            json!(
                items
                    .iter()
                    .map(|&(i, score)| json!({"score": score, "label": info.labels[i]}))
                    .collect::<Vec<_>>()
            )
        })
        .collect();
    if batched {
        return Ok(Json(lists).into_response());
    }
    let one = lists
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the classifier produced no output"))?;
    Ok(Json(one).into_response())
}

async fn vllm(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (lease, body): (_, ClassifyRequest) =
        super::leased_request(state, req, Route::Classify).await?;
    let ready = super::leased_encoder(&lease)?;
    let info = &ready.encoder.info;
    let inputs = texts(
        body.input.as_ref(),
        "input",
        ready.limits.max_embedding_inputs,
    )?
    .into_iter()
    .map(Input::One)
    .collect();
    let (logits, tokens) = scores(ready, inputs, body.truncate).await?;
    let data: Vec<Value> = logits
        .into_iter()
        .enumerate()
        .map(|(index, row)| {
            let probs = activate(info.task, row);
            let best = probs
                .iter()
                .enumerate()
                .fold(0, |b, (i, p)| if *p > probs[b] { i } else { b });
            json!({
                "index": index,
                "label": info.labels[best],
                "probs": probs,
                "num_classes": probs.len(),
            })
        })
        .collect();
    let created = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    Ok(Json(json!({
        "id": format!("classify-{}", uuid::Uuid::new_v4().simple()),
        "object": "list",
        "created": created,
        "model": info.id,
        "data": data,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

/// Probabilities from logits: sigmoid per label (one label, or multi-label), else
/// the softmax.
fn activate(task: Task, logits: Vec<f32>) -> Vec<f32> {
    let sigmoid = |x: f32| 1.0 / (1.0 + (-x).exp());
    match task {
        Task::Classifier { multi_label: false } => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        }
        _ => logits.into_iter().map(sigmoid).collect(),
    }
}

/// Logits per input, and the tokens the model read.
async fn scores(
    ready: &EncoderReady,
    inputs: Vec<Input>,
    truncate: bool,
) -> Result<(Vec<Vec<f32>>, usize), ApiError> {
    let served = ready.encoder.clone();
    let encoded: Vec<Encoded> = blocking(move || {
        let tok = &served.tokenizer;
        inputs
            .iter()
            .enumerate()
            .map(|(i, input)| {
                match input {
                    Input::One(t) => tok.text(t, truncate),
                    Input::Pair(a, b) => tok.pair(a, b, truncate),
                }
                .map_err(|e| tokenize_error(e, "inputs", Some(i)))
            })
            .collect()
    })
    .await?;
    let tokens = encoded.iter().map(|e| e.ids.len()).sum();
    let labels = ready.encoder.info.labels.len();
    let outputs = run(ready, encoded).await?;
    if outputs.iter().any(|o| o.len() != labels) {
        return Err(ApiError::internal(
            "The classifier produced the wrong number of scores.",
        ));
    }
    Ok((outputs, tokens))
}

/// TEI's `inputs`: a text, a `[text, pair]` list (one input), or a batch of lists of
/// one or two texts. True when it was a batch.
fn parse_inputs(value: Option<&Value>, max: usize) -> Result<(Vec<Input>, bool), ApiError> {
    let invalid = |msg: String| ApiError::invalid(msg, Some("inputs"));
    let shape = "`inputs` must be a string, a pair of strings [text, text_pair], or a batch \
                 of such lists [[text], [text, text_pair], ...].";
    let one = |items: &[Value], at: &str| -> Result<Input, ApiError> {
        let strs: Vec<String> = items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<_>>()
            .ok_or_else(|| invalid(format!("`inputs{at}` must hold strings only.")))?;
        if let Some(i) = strs.iter().position(String::is_empty) {
            return Err(invalid(format!("`inputs{at}[{i}]` is an empty string.")));
        }
        match <[String; 2]>::try_from(strs) {
            Ok([a, b]) => Ok(Input::Pair(a, b)),
            Err(strs) if strs.len() == 1 => Ok(Input::One(strs[0].clone())),
            Err(strs) => Err(invalid(format!(
                "`inputs{at}` has {} strings: an input is one text or a pair of two; send \
                 several inputs as a batch of lists.",
                strs.len()
            ))),
        }
    };
    let (inputs, batched) = match value {
        None => return Err(invalid("`inputs` is required.".into())),
        Some(Value::String(s)) if s.is_empty() => {
            return Err(invalid("`inputs` is an empty string.".into()));
        }
        Some(Value::String(s)) => (vec![Input::One(s.clone())], false),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("`inputs` must not be empty.".into()));
        }
        Some(Value::Array(items)) if items[0].is_string() => (vec![one(items, "")?], false),
        Some(Value::Array(items)) => {
            let batch = items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::Array(list) => one(list, &format!("[{i}]")),
                    _ => Err(invalid(format!("`inputs[{i}]`: {shape}"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            (batch, true)
        }
        Some(_) => return Err(invalid(shape.into())),
    };
    if inputs.len() > max {
        return Err(invalid(format!(
            "`inputs` has {} items; this server accepts at most {max} per request.",
            inputs.len()
        )));
    }
    Ok((inputs, batched))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tei_inputs_are_a_text_a_pair_or_a_batch() {
        let one = |s: &str| Input::One(s.into());
        let pair = |a: &str, b: &str| Input::Pair(a.into(), b.into());
        assert_eq!(
            parse_inputs(Some(&json!("a")), 8).unwrap(),
            (vec![one("a")], false)
        );
        assert_eq!(
            parse_inputs(Some(&json!(["a", "b"])), 8).unwrap(),
            (vec![pair("a", "b")], false)
        );
        assert_eq!(
            parse_inputs(Some(&json!(["a"])), 8).unwrap(),
            (vec![one("a")], false)
        );
        assert_eq!(
            parse_inputs(Some(&json!([["a"], ["b", "c"]])), 8).unwrap(),
            (vec![one("a"), pair("b", "c")], true)
        );
    }

    #[test]
    fn bad_tei_inputs_are_400s() {
        for (v, needle) in [
            (json!(["a", "b", "c"]), "has 3 strings"),
            (json!([]), "must not be empty"),
            (json!(""), "empty string"),
            (json!([["a"], "b"]), "`inputs[1]`"),
            (json!([["a", 1]]), "strings only"),
            (json!([["a", ""]]), "`inputs[0][1]` is an empty string"),
            (json!([[]]), "has 0 strings"),
            (json!(3), "must be a string"),
            (json!([["a"], ["b"], ["c"]]), "at most 2"),
        ] {
            let e = parse_inputs(Some(&v), 2).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{v}");
            assert!(e.message.contains(needle), "{v}: {}", e.message);
        }
        assert!(parse_inputs(None, 2).is_err());
    }

    #[test]
    fn softmax_for_single_label_sigmoid_otherwise() {
        let soft = activate(Task::Classifier { multi_label: false }, vec![0.0, 1.0, 2.0]);
        assert!((soft.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert!((soft[2] - 0.665_241).abs() < 1e-5);
        let multi = activate(Task::Classifier { multi_label: true }, vec![0.0, 2.0]);
        assert_eq!(multi[0], 0.5);
        assert!((multi[1] - 0.880_797).abs() < 1e-5);
        assert_eq!(activate(Task::CrossEncoder, vec![0.0]), vec![0.5]);
    }
}
