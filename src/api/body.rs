//! Reading a request body ourselves, so that a body over the limit is a 413 and bad JSON
//! is a 400, both in OpenAI's error shape (axum's extractors would answer in plain text).
//! Handlers read with `read_bytes`, then parse with `parse_json` (pure, so the fuzz
//! target and tests can call it without a request).

use axum::extract::Request;
use axum::http::header;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Reads at most `limit` bytes of body.
///
/// A `Content-Length` over the limit is refused before reading; a body that grows past
/// it while streaming is refused as soon as it does.
pub async fn read_bytes(req: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
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
    Ok(buf)
}

/// Parses a whole body as JSON into `T`: an empty body, bad JSON or a wrong field is a
/// 400. Serde's message names the problem (wrong type, missing field, syntax) and where
/// in the body it is; the field at fault becomes `param` when one alone is.
pub fn parse_json<T: DeserializeOwned>(buf: &[u8]) -> Result<T, ApiError> {
    if buf.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::invalid(
            "The request body is empty; expected a JSON object.",
            None,
        ));
    }
    serde_json::from_slice(buf).map_err(|e| match culprit::<T>(buf) {
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
///
/// The search re-parses the body once or twice per key, so it is skipped for bodies
/// where that would be expensive (many keys, or a large body times its keys): a crafted
/// body must not turn one 400 into seconds of CPU. Those errors just name no `param`.
fn culprit<T: DeserializeOwned>(body: &[u8]) -> Option<String> {
    const MAX_KEYS: usize = 64;
    const MAX_WORK_BYTES: usize = 32 << 20;
    let serde_json::Value::Object(obj) = serde_json::from_slice(body).ok()? else {
        return None;
    };
    if obj.len() > MAX_KEYS || body.len().saturating_mul(2 * obj.len()) > MAX_WORK_BYTES {
        return None;
    }
    // Parsed into a map, duplicate keys collapse: if that alone makes the body parse, the
    // fault (a duplicate field) belongs to no single key, and eliminating keys would
    // blame whichever comes first.
    if serde_json::from_value::<T>(serde_json::Value::Object(obj.clone())).is_ok() {
        return None;
    }
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

/// The `model` a JSON body names, read before the full parse so the request can be
/// routed to its model (`None` when absent, not a string, or the body is not JSON:
/// the full parse then reports what is wrong).
pub fn peek_model(buf: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct ModelField {
        #[serde(default)]
        model: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<ModelField>(buf).ok()?.model? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s),
        _ => None,
    }
}
