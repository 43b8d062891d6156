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
    serde_json::from_slice(&buf)
        .map_err(|e| ApiError::invalid(format!("Invalid request body: {e}"), None))
}
