//! `ApiError`: every error the HTTP edge returns, and the one place where an error
//! becomes a status code plus OpenAI's body `{"error":{"message","type","param","code"}}`.
//!
//! Status mapping: 400 invalid request, 404 unknown model or route, 405 wrong method,
//! 413 body too large, 429 queue full (with `Retry-After: 1`), 500 engine failure,
//! 503 model still loading or engine stopped. Engine errors (`EngineError`) map here
//! too, in one `From`.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// An error in OpenAI's shape, with the HTTP status it is sent with.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Human-readable message.
    pub message: String,
    /// The request parameter at fault, if one is.
    pub param: Option<String>,
    /// Machine-readable code (`model_not_found`, `context_length_exceeded`, ...).
    pub code: Option<&'static str>,
}

/// The JSON body: `{"error": {...}}`.
#[derive(Debug, Serialize)]
pub struct ErrorBody<'a> {
    /// The error object.
    pub error: ErrorObject<'a>,
}

/// OpenAI's error object.
#[derive(Debug, Serialize)]
pub struct ErrorObject<'a> {
    /// Human-readable message.
    pub message: &'a str,
    /// Error class, e.g. `invalid_request_error`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// The parameter at fault, or `null`.
    pub param: Option<&'a str>,
    /// Machine-readable code, or `null`.
    pub code: Option<&'static str>,
}

impl ApiError {
    /// Any status with a message; no param, no code.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
        }
    }

    /// 400 about `param` (or about the request as a whole when `None`).
    pub fn invalid(message: impl Into<String>, param: Option<&str>) -> Self {
        Self {
            param: param.map(str::to_string),
            ..Self::new(StatusCode::BAD_REQUEST, message)
        }
    }

    /// 400: a parameter ferrite does not implement.
    pub fn unsupported(param: &str, detail: &str) -> Self {
        let message = format!("The parameter `{param}` is not supported by this server{detail}.");
        Self::invalid(message, Some(param)).with_code("unsupported_parameter")
    }

    /// 400: prompt plus completion exceed the context window.
    pub fn context_length(context: usize, prompt: usize, completion: usize, param: &str) -> Self {
        let message = format!(
            "This model's maximum context length is {context} tokens. However, you requested \
             {} tokens ({prompt} in the prompt, {completion} for the completion). Please reduce \
             the length of the prompt or the completion.",
            prompt.saturating_add(completion)
        );
        Self::invalid(message, Some(param)).with_code("context_length_exceeded")
    }

    /// 404: `model` names a model this server does not serve.
    pub fn model_not_found(model: &str) -> Self {
        let message = format!("The model `{model}` does not exist.");
        Self {
            param: Some("model".into()),
            ..Self::new(StatusCode::NOT_FOUND, message)
        }
        .with_code("model_not_found")
    }

    /// 404: the route needs a model this server was started without.
    pub fn not_served(what: &str, flag: &str) -> Self {
        let message = format!(
            "This server does not serve {what}; start it with {flag} to enable this route."
        );
        Self::new(StatusCode::NOT_FOUND, message).with_code("model_not_found")
    }

    /// 404: no such route.
    pub fn route_not_found(method: &str, path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            format!("No route for {method} {path}."),
        )
        .with_code("not_found")
    }

    /// 405: the route exists, the method does not.
    pub fn method_not_allowed(method: &str, path: &str) -> Self {
        let message = format!("Method {method} is not allowed on {path}.");
        Self::new(StatusCode::METHOD_NOT_ALLOWED, message).with_code("method_not_allowed")
    }

    /// 413: the body is larger than `limit` bytes.
    pub fn too_large(limit: usize) -> Self {
        let message = format!("The request body is larger than the limit of {limit} bytes.");
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, message).with_code("request_too_large")
    }

    /// 429: the engine's waiting queue is full.
    pub fn queue_full() -> Self {
        let message = "The server is overloaded: too many requests are waiting. Retry shortly.";
        Self::new(StatusCode::TOO_MANY_REQUESTS, message).with_code("rate_limit_exceeded")
    }

    /// 503: the model is still loading.
    pub fn loading() -> Self {
        let message = "The model is still loading. Retry shortly.";
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message).with_code("model_loading")
    }

    /// 503: the engine thread has stopped.
    pub fn stopped() -> Self {
        let message = "The engine has stopped; the server is shutting down.";
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message).with_code("engine_stopped")
    }

    /// 500: something failed inside the server (engine error, internal bug).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Replaces the message.
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = message.into();
        self
    }

    /// Sets the machine-readable code.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }

    /// OpenAI's `type` for this status.
    pub fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            429 => "rate_limit_error",
            500..=599 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The `{"error": {...}}` body.
    pub fn body(&self) -> ErrorBody<'_> {
        ErrorBody {
            error: ErrorObject {
                message: &self.message,
                kind: self.kind(),
                param: self.param.as_deref(),
                code: self.code,
            },
        }
    }

    /// The body as a JSON string (also used for mid-stream SSE error events).
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.body()).unwrap_or_else(|_| {
            r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#
                .to_string()
        })
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status.as_u16(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<crate::engine::handle::SubmitError> for ApiError {
    fn from(e: crate::engine::handle::SubmitError) -> Self {
        use crate::engine::handle::SubmitError;
        match e {
            SubmitError::QueueFull => Self::queue_full(),
            SubmitError::Stopped => Self::stopped(),
        }
    }
}

impl From<crate::engine::error::EngineError> for ApiError {
    /// The one mapping of engine errors: invalid 400, does-not-fit 400, model failure
    /// 500, unloaded model or stopped engine 503.
    fn from(e: crate::engine::error::EngineError) -> Self {
        use crate::engine::error::EngineError as E;
        match e {
            E::Invalid(m) => Self::invalid(m, None).with_code("invalid_request"),
            E::DoesNotFit(m) => Self::invalid(m, None).with_code("does_not_fit"),
            E::ModelFailed(m) => Self::internal(m).with_code("model_failed"),
            E::NotLoaded(m) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("{m}; retry to load it again."),
            )
            .with_code("model_not_loaded"),
            E::Stopped(m) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, m).with_code("engine_stopped")
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            self.to_json(),
        )
            .into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid("temperature must be in [0, 2]", Some("temperature"));
        let v: Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"error": {
                "message": "temperature must be in [0, 2]",
                "type": "invalid_request_error",
                "param": "temperature",
                "code": null
            }})
        );
    }

    #[test]
    fn statuses_and_types() {
        let cases = [
            (ApiError::model_not_found("x"), 404, "invalid_request_error"),
            (ApiError::too_large(10), 413, "invalid_request_error"),
            (ApiError::queue_full(), 429, "rate_limit_error"),
            (ApiError::loading(), 503, "server_error"),
            (ApiError::stopped(), 503, "server_error"),
            (ApiError::internal("boom"), 500, "server_error"),
            (
                ApiError::method_not_allowed("GET", "/v1/completions"),
                405,
                "invalid_request_error",
            ),
        ];
        for (e, status, kind) in cases {
            assert_eq!(e.status.as_u16(), status, "{e}");
            assert_eq!(e.kind(), kind, "{e}");
        }
        assert_eq!(ApiError::model_not_found("x").code, Some("model_not_found"));
    }

    #[test]
    fn queue_full_sets_retry_after() {
        let resp = ApiError::queue_full().into_response();
        assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }

    #[test]
    fn context_length_message_names_both_numbers() {
        let e = ApiError::context_length(8192, 1000, 8000, "messages");
        assert!(e.message.contains("maximum context length is 8192 tokens"));
        assert!(
            e.message.contains(
                "you requested 9000 tokens (1000 in the prompt, 8000 for the completion)"
            )
        );
        assert_eq!(e.code, Some("context_length_exceeded"));
    }
}
