//! Reading a request body ourselves, so that a body over the limit is a 413 and bad JSON
//! is a 400, both in OpenAI's error shape (axum's extractors would answer in plain text).

use axum::extract::Request;
use axum::http::header;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads at most `limit` bytes of body and parses them as JSON into `T`.
///
/// A `Content-Length` over the limit is refused before reading; a body that grows past
/// it while streaming is refused as soon as it does. Serde's message names the problem
/// (wrong type, missing field, syntax) and where in the body it is.
pub async fn read_json<T: DeserializeOwned>(req: Request, limit: usize) -> Result<T, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(ApiError::too_large(limit));
    }
    let mut stream = req.into_body().into_data_stream();
    let mut buf = Vec::with_capacity(declared.map_or(0, |l| l as usize));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::invalid(format!("Could not read the request body: {e}"), None)
        })?;
        if buf.len() + chunk.len() > limit {
            return Err(ApiError::too_large(limit));
        }
        buf.extend_from_slice(&chunk);
    }
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "The request body is empty; expected a JSON object.",
            None,
        ));
    }
    serde_json::from_slice(&buf).map_err(|e| match culprit::<T>(&buf) {
        Some(field) => ApiError::invalid(
            format!("Invalid value for `{field}`: {e}"),
            Some(field.as_str()),
        ),
        None => ApiError::invalid(format!("Invalid request body: {e}"), None),
    })
}

/// The top-level field that makes `body` fail to parse as `T`, when one alone does.
/// (Serde loses field names inside flattened structs, so we find it by elimination:
/// first a field whose removal makes the body parse; failing that, a required field
/// whose removal makes serde complain only that it is missing.) Error path only.
fn culprit<T: DeserializeOwned>(body: &[u8]) -> Option<String> {
    let serde_json::Value::Object(obj) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    let without = |key: &str| {
        let mut rest = obj.clone();
        rest.remove(key);
        serde_json::from_value::<T>(serde_json::Value::Object(rest))
    };
    let missing_only = |key: &str| {
        without(key).is_err_and(|e| e.to_string().starts_with(&format!("missing field `{key}`")))
    };
    obj.keys()
        .find(|k| without(k).is_ok())
        .or_else(|| obj.keys().find(|k| missing_only(k)))
        .cloned()
}
