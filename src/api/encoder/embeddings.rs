//! `POST /v1/embeddings` in OpenAI's shape: `input` as a string, an array of strings,
//! an array of token ids, or an array of token-id arrays; `encoding_format` `float` or
//! `base64` (little-endian f32, what the OpenAI SDKs decode); `dimensions` only when
//! it equals the model's width; `usage` counts input tokens.
//!
//! Choices: token-id inputs are taken as the complete model input (no special tokens
//! added), checked against the vocabulary; over-long inputs are a 400 unless the
//! request sets `truncate: true` (a TEI-style extension).

use axum::Json;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{blocking, count, run, tokenize_error};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::model::encoder::tokenize::Encoded;
use crate::registry::Route;

#[derive(Debug, Deserialize)]
struct EmbeddingsRequest {
    // Routing reads it (`peek_model`); parsed here so a non-string `model` is a 400.
    #[allow(dead_code)]
    model: Option<String>,
    input: Option<Value>,
    encoding_format: Option<String>,
    dimensions: Option<i64>,
    #[serde(default)]
    truncate: bool,
    #[serde(rename = "user")]
    _user: Option<String>,
}

/// What `input` holds.
#[derive(Debug, PartialEq)]
enum Inputs {
    Texts(Vec<String>),
    Tokens(Vec<Vec<u32>>),
}

/// `POST /v1/embeddings`.
pub async fn embeddings(State(state): State<AppState>, req: Request) -> Response {
    count("embeddings");
    inner(&state, req)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

async fn inner(state: &AppState, req: Request) -> Result<Response, ApiError> {
    let (lease, body): (_, EmbeddingsRequest) =
        super::leased_request(state, req, Route::Embed).await?;
    let ready = super::leased_encoder(&lease)?;
    let info = &ready.encoder.info;
    let base64 = match body.encoding_format.as_deref() {
        None | Some("float") => false,
        Some("base64") => true,
        Some(other) => {
            return Err(ApiError::invalid(
                format!("`encoding_format` must be `float` or `base64`, got `{other}`."),
                Some("encoding_format"),
            ));
        }
    };
    if let Some(d) = body.dimensions
        && d != info.dims as i64
    {
        return Err(ApiError::unsupported(
            "dimensions",
            &format!(
                " with a value other than {} (this model's embeddings are {}-dimensional)",
                info.dims, info.dims
            ),
        ));
    }
    let inputs = parse_input(body.input.as_ref(), ready.limits.max_embedding_inputs)?;
    let served = ready.encoder.clone();
    let truncate = body.truncate;
    let encoded = blocking(move || match inputs {
        Inputs::Texts(texts) => texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                served
                    .tokenizer
                    .text(t, truncate)
                    .map_err(|e| tokenize_error(e, "input", Some(i)))
            })
            .collect::<Result<Vec<_>, _>>(),
        Inputs::Tokens(lists) => token_inputs(lists, served.info.max_len, truncate),
    })
    .await?;
    let vocab = info.vocab;
    if let Some(bad) = encoded
        .iter()
        .flat_map(|e| &e.ids)
        .find(|&&t| t as usize >= vocab)
    {
        return Err(ApiError::invalid(
            format!("`input` holds token id {bad}, outside the vocabulary of {vocab}."),
            Some("input"),
        ));
    }
    let tokens: usize = encoded.iter().map(|e| e.ids.len()).sum();
    let vectors = run(ready, encoded).await?;
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, v)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": index, "embedding": embedding})
        })
        .collect();
    Ok(Json(json!({
        "object": "list",
        "data": data,
        "model": info.id,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .into_response())
}

fn token_inputs(
    lists: Vec<Vec<u32>>,
    max_len: usize,
    truncate: bool,
) -> Result<Vec<Encoded>, ApiError> {
    lists
        .into_iter()
        .enumerate()
        .map(|(i, mut ids)| {
            if ids.len() > max_len {
                if !truncate {
                    return Err(tokenize_error(
                        crate::model::encoder::tokenize::TokenizeError::TooLong {
                            len: ids.len(),
                            max: max_len,
                        },
                        "input",
                        Some(i),
                    ));
                }
                ids.truncate(max_len);
            }
            Ok(Encoded {
                type_ids: vec![0; ids.len()],
                ids,
            })
        })
        .collect()
}

/// Reads `input` in any of its four shapes; empty strings and empty lists are 400s.
fn parse_input(value: Option<&Value>, max: usize) -> Result<Inputs, ApiError> {
    let invalid = |msg: String| ApiError::invalid(msg, Some("input"));
    let shape = "`input` must be a string, an array of strings, an array of token ids, or an array of token-id arrays.";
    let token = |v: &Value| v.as_u64().and_then(|t| u32::try_from(t).ok());
    let inputs = match value {
        None => return Err(invalid("`input` is required.".into())),
        Some(Value::String(s)) => Inputs::Texts(vec![s.clone()]),
        Some(Value::Array(items)) if items.is_empty() => {
            return Err(invalid("`input` must not be empty.".into()));
        }
        Some(Value::Array(items)) => match &items[0] {
            Value::String(_) => Inputs::Texts(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_str().map(str::to_string).ok_or_else(|| {
                            invalid(format!(
                                "`input[{i}]` must be a string like the other items."
                            ))
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ),
            Value::Number(_) => Inputs::Tokens(vec![
                items
                    .iter()
                    .map(|v| {
                        token(v).ok_or_else(|| {
                            invalid("`input` token ids must be non-negative integers.".into())
                        })
                    })
                    .collect::<Result<_, _>>()?,
            ]),
            Value::Array(_) => Inputs::Tokens(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, list)| {
                        let bad = || {
                            invalid(format!(
                                "`input[{i}]` must be a non-empty array of token ids."
                            ))
                        };
                        let list = list.as_array().filter(|l| !l.is_empty()).ok_or_else(bad)?;
                        list.iter().map(|v| token(v).ok_or_else(bad)).collect()
                    })
                    .collect::<Result<_, _>>()?,
            ),
            _ => return Err(invalid(shape.into())),
        },
        Some(_) => return Err(invalid(shape.into())),
    };
    let (n, empty) = match &inputs {
        Inputs::Texts(t) => (t.len(), t.iter().position(String::is_empty)),
        Inputs::Tokens(t) => (t.len(), None),
    };
    if let Some(i) = empty {
        return Err(invalid(format!(
            "`input[{i}]` is an empty string; embeddings need text."
        )));
    }
    if n > max {
        return Err(invalid(format!(
            "`input` has {n} items; this server accepts at most {max} per request."
        )));
    }
    Ok(inputs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_four_input_shapes_parse() {
        assert_eq!(
            parse_input(Some(&json!("hi")), 8).unwrap(),
            Inputs::Texts(vec!["hi".into()])
        );
        assert_eq!(
            parse_input(Some(&json!(["a", "b"])), 8).unwrap(),
            Inputs::Texts(vec!["a".into(), "b".into()])
        );
        assert_eq!(
            parse_input(Some(&json!([1, 2])), 8).unwrap(),
            Inputs::Tokens(vec![vec![1, 2]])
        );
        assert_eq!(
            parse_input(Some(&json!([[1], [2, 3]])), 8).unwrap(),
            Inputs::Tokens(vec![vec![1], vec![2, 3]])
        );
    }

    #[test]
    fn bad_inputs_are_400s() {
        for (v, needle) in [
            (json!([]), "must not be empty"),
            (json!(""), "empty string"),
            (json!(["a", ""]), "`input[1]` is an empty string"),
            (json!(["a", 1]), "`input[1]` must be a string"),
            (json!([1, -2]), "non-negative"),
            (json!([[1], []]), "`input[1]`"),
            (json!({"text": "a"}), "must be a string, an array"),
            (json!(["a", "b", "c"]), "at most 2"),
        ] {
            let e = parse_input(Some(&v), 2).unwrap_err();
            assert_eq!(e.status.as_u16(), 400, "{v}");
            assert!(e.message.contains(needle), "{v}: {}", e.message);
        }
        assert!(parse_input(None, 2).is_err());
    }

    #[test]
    fn token_inputs_truncate_only_when_asked() {
        assert!(token_inputs(vec![vec![1; 10]], 4, false).is_err());
        let ok = token_inputs(vec![vec![1; 10]], 4, true).unwrap();
        assert_eq!(ok[0].ids.len(), 4);
        assert_eq!(ok[0].type_ids, vec![0; 4]);
    }
}
