//! Model names as Ollama clients send them, and the model-listing routes
//! (`GET /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`).
//!
//! A name resolves to the LLM when it equals the served id or a `--model-alias`, to the
//! encoder when it equals the encoder's id; comparisons ignore ASCII case and a
//! `:latest` tag on either side (`smollm2`, `smollm2:latest` and `SmolLM2:latest` are one
//! model). Anything else is Ollama's 404 `model 'x' not found`.
//!
//! `digest` is the SHA-256 of the served name (ferrite has no Ollama manifests), `size`
//! is not known to the HTTP layer and is 0, and `expires_at` is when the model's
//! keep-alive unloads it (far in the future for models kept for ever). A request's
//! `keep_alive` sets how long its model stays loaded once idle (`0` unloads
//! it as soon as no request holds it, as `ollama stop` does).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::request::ShowRequest;
use super::response::rfc3339;
use crate::api::AppState;
use crate::api::body::{parse_json, read_bytes};
use crate::api::error::ApiError;
use crate::model::encoder::config::Task;
use crate::registry::spec::KeepAlive;
use crate::registry::{Lease, Loaded};

/// The Ollama API version ferrite answers `/api/version` with: the release whose API
/// (routes, fields) ferrite follows.
pub const OLLAMA_API_VERSION: &str = "0.12.0";

pub use crate::registry::same_name;

/// Ollama's 404 for an unknown model.
pub fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found"))
        .with_code("model_not_found")
}

/// Resolves `name` to a lease on its model (loading it on demand): 400 when empty, 503
/// while it loads at start-up, Ollama's 404 when unknown.
pub async fn resolve(state: &AppState, name: &str) -> Result<Lease, ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("model is required", Some("model")));
    }
    state.registry.acquire_any(name).await.map_err(|e| {
        if e.code == Some("model_not_found") {
            not_found(name)
        } else {
            e
        }
    })
}

/// A request's `keep_alive` (seconds as a number, or `"5m"`, `"-1"`, ...), checked
/// before the model is leased (a malformed one is a 400 and loads nothing).
pub fn keep_alive(value: Option<&Value>) -> Result<Option<KeepAlive>, ApiError> {
    let text = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(ApiError::invalid(
                "keep_alive must be a duration",
                Some("keep_alive"),
            ));
        }
    };
    KeepAlive::parse(&text)
        .map(Some)
        .map_err(|e| ApiError::invalid(e, Some("keep_alive")))
}

/// A lease on the LLM named `name`, or an error (an encoder name is a 400: it cannot
/// generate).
pub async fn llm(state: &AppState, name: &str) -> Result<Lease, ApiError> {
    let lease = resolve(state, name).await?;
    if let Loaded::Encoder(_) = lease.loaded() {
        return Err(ApiError::invalid(
            format!(
                "\"{name}\" does not support generate: it is {}",
                lease.loaded().kind().describe()
            ),
            Some("model"),
        ));
    }
    Ok(lease)
}

/// `name` as Ollama lists it: with a tag (`:latest` when it has none).
fn tagged(name: &str) -> String {
    if name.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn digest(name: &str) -> String {
    Sha256::digest(name.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn details(family: &str, quantization: &str) -> Value {
    json!({"parent_model": "", "format": if family == "bert" { "safetensors" } else { "gguf" },
           "family": family, "families": [family], "parameter_size": "",
           "quantization_level": quantization})
}

/// The quantization named at the end of a GGUF file stem (`...Q4_1`), if any.
fn quantization(id: &str) -> &str {
    id.rsplit(['.', '-'])
        .next()
        .filter(|q| q.starts_with(['Q', 'F']))
        .unwrap_or("")
}

/// One `/api/tags` entry per name of every loaded model (aliases included), each with
/// how long until its keep-alive unloads it (`None`: never).
fn entries(state: &AppState) -> Result<Vec<(Value, Option<Duration>)>, ApiError> {
    if state.registry.starting() {
        return Err(ApiError::loading());
    }
    let mut out = Vec::new();
    for (entry, loaded) in state.registry.loaded() {
        let expires = entry.expires_in();
        let mut push = |name: &str, created: u64, details: Value| {
            let v = json!({
                "name": tagged(name), "model": tagged(name), "modified_at": rfc3339(created, 0),
                "size": 0, "digest": digest(name), "details": details,
            });
            out.push((v, expires));
        };
        match &loaded {
            Loaded::Llm(r) => {
                let info = &r.model.info;
                for name in
                    std::iter::once(entry.name()).chain(entry.aliases().iter().map(String::as_str))
                {
                    push(name, info.created, details("llama", quantization(&info.id)));
                }
            }
            Loaded::Encoder(e) => {
                push(entry.name(), e.encoder.info.created, details("bert", "F32"));
            }
        }
    }
    Ok(out)
}

/// `GET /api/tags`: the loaded models (503 while loading at start-up).
pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let models: Vec<Value> = entries(&state)?.into_iter().map(|(v, _)| v).collect();
    Ok(Json(json!({"models": models})))
}

/// `GET /api/ps`: the loaded models.
pub async fn ps(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut models = entries(&state)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let context = state
        .registry
        .loaded()
        .into_iter()
        .find_map(|(_, l)| match l {
            Loaded::Llm(r) => Some(r.model.info.context_length),
            Loaded::Encoder(_) => None,
        });
    for (m, expires) in &mut models {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        obj.remove("modified_at");
        let at = match expires {
            Some(d) => {
                let t = now + *d;
                rfc3339(t.as_secs(), t.subsec_nanos())
            }
            // Kept for ever: Ollama shows a date far away.
            None => "2318-01-01T00:00:00Z".to_string(),
        };
        obj.insert("expires_at".into(), json!(at));
        obj.insert("size_vram".into(), json!(0));
        if let Some(c) = context.filter(|_| obj["details"]["family"] == "llama") {
            obj.insert("context_length".into(), json!(c));
        }
    }
    let models: Vec<Value> = models.into_iter().map(|(v, _)| v).collect();
    Ok(Json(json!({"models": models})))
}

/// `GET /api/version`.
pub async fn version() -> Json<Value> {
    Json(json!({"version": OLLAMA_API_VERSION, "ferrite": env!("CARGO_PKG_VERSION")}))
}

/// `POST /api/show`: what Ollama shows of a model, as far as ferrite knows it.
pub async fn show(State(state): State<AppState>, req: Request) -> Result<Json<Value>, ApiError> {
    let body: ShowRequest = parse_json(&read_bytes(req, state.limits.max_body_bytes).await?)?;
    let name = body.model.or(body.name).unwrap_or_default();
    let lease = resolve(&state, &name).await?;
    let body = match lease.loaded() {
        Loaded::Llm(r) => {
            let info = &r.model.info;
            json!({
                "license": "",
                "modelfile": format!("# Served by ferrite\nFROM {}\n", info.id),
                "parameters": "",
                "template": "",
                "details": details("llama", quantization(&info.id)),
                "model_info": {"general.architecture": "llama",
                               "llama.context_length": info.context_length},
                "capabilities": ["completion"],
                "modified_at": rfc3339(info.created, 0),
            })
        }
        Loaded::Encoder(e) => {
            let info = &e.encoder.info;
            let capabilities = match info.task {
                Task::Embedding(_) => json!(["embedding"]),
                _ => json!([]),
            };
            json!({
                "license": "",
                "modelfile": format!("# Served by ferrite\nFROM {}\n", info.id),
                "parameters": "",
                "template": "",
                "details": details("bert", "F32"),
                "model_info": {"general.architecture": "bert",
                               "bert.context_length": info.max_len,
                               "bert.embedding_length": info.dims},
                "capabilities": capabilities,
                "modified_at": rfc3339(info.created, 0),
            })
        }
    };
    Ok(Json(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_like_ollamas() {
        assert!(same_name("smollm2", "smollm2"));
        assert!(same_name("smollm2:latest", "smollm2"));
        assert!(same_name("SmolLM2", "smollm2:latest"));
        assert!(same_name("mistral:7b", "mistral:7b"));
        assert!(!same_name("mistral", "mistral:7b"));
        assert!(!same_name("mistral:7b", "mistral:13b"));
        assert!(!same_name("smollm", "smollm2"));
        assert_eq!(tagged("a"), "a:latest");
        assert_eq!(tagged("a:7b"), "a:7b");
        assert_eq!(quantization("SmolLM2-135M-Instruct.Q4_1"), "Q4_1");
        assert_eq!(quantization("model"), "");
        assert_eq!(digest("x").len(), 64);
    }
}
