//! Model names as Ollama clients send them, and the model-listing routes
//! (`GET /api/tags`, `POST /api/show`, `GET /api/ps`, `GET /api/version`).
//!
//! A name resolves to the LLM when it equals the served id or a `--model-alias`, to the
//! encoder when it equals the encoder's id; comparisons ignore ASCII case and a
//! `:latest` tag on either side (`smollm2`, `smollm2:latest` and `SmolLM2:latest` are one
//! model). Anything else is Ollama's 404 `model 'x' not found`.
//!
//! `digest` is the SHA-256 of the served name (ferrite has no Ollama manifests), `size`
//! is not known to the HTTP layer and is 0, and `expires_at` is far in the future:
//! ferrite never unloads a model (`keep_alive` is accepted and ignored).

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::request::ShowRequest;
use super::response::rfc3339;
use crate::api::body::{parse_json, read_bytes};
use crate::api::error::ApiError;
use crate::api::{AppState, EncoderReady, Ready};
use crate::model::encoder::config::Task;

/// The Ollama API version ferrite answers `/api/version` with: the release whose API
/// (routes, fields) ferrite follows.
pub const OLLAMA_API_VERSION: &str = "0.12.0";

/// What a name resolved to.
pub enum Target<'a> {
    /// The LLM.
    Llm(&'a Ready),
    /// The encoder.
    Encoder(&'a EncoderReady),
}

fn base(name: &str) -> &str {
    name.strip_suffix(":latest").unwrap_or(name)
}

/// Whether Ollama name `asked` names `served`.
pub fn same_name(asked: &str, served: &str) -> bool {
    base(asked.trim()).eq_ignore_ascii_case(base(served))
}

/// Ollama's 404 for an unknown model.
pub fn not_found(name: &str) -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, format!("model '{name}' not found"))
        .with_code("model_not_found")
}

/// Resolves `name`: 400 when empty, 503 while the named model loads, 404 when unknown.
pub fn resolve<'a>(state: &'a AppState, name: &str) -> Result<Target<'a>, ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::invalid("model is required", Some("model")));
    }
    if state.serving.llm {
        let aliases = &state.web.aliases;
        match state.ready.get() {
            Some(r) if llm_names(r, aliases).any(|n| same_name(name, n)) => {
                return Ok(Target::Llm(r));
            }
            None if aliases.iter().any(|a| same_name(name, a)) => {
                return Err(ApiError::loading());
            }
            _ => {}
        }
    }
    if state.serving.encoder.is_some() {
        match state.serving.encoder_ready.get() {
            Some(e) if same_name(name, &e.encoder.info.id) => return Ok(Target::Encoder(e)),
            Some(_) => {}
            None => return Err(ApiError::loading()),
        }
    }
    if state.serving.llm && state.ready.get().is_none() {
        return Err(ApiError::loading());
    }
    Err(not_found(name))
}

/// The LLM named `name`, or an error (an encoder name is a 400: it cannot generate).
pub fn llm<'a>(state: &'a AppState, name: &str) -> Result<&'a Ready, ApiError> {
    match resolve(state, name)? {
        Target::Llm(r) => Ok(r),
        Target::Encoder(_) => Err(ApiError::invalid(
            format!("\"{name}\" does not support generate: it is an embedding or rerank model"),
            Some("model"),
        )),
    }
}

fn llm_names<'a>(r: &'a Ready, aliases: &'a [String]) -> impl Iterator<Item = &'a String> {
    std::iter::once(&r.model.info.id).chain(aliases)
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

/// One `/api/tags` entry per name (the LLM, its aliases, the encoder).
fn entries(state: &AppState) -> Result<Vec<Value>, ApiError> {
    let mut out = Vec::new();
    let mut push = |name: &str, created: u64, details: Value| {
        out.push(json!({
            "name": tagged(name), "model": tagged(name), "modified_at": rfc3339(created, 0),
            "size": 0, "digest": digest(name), "details": details,
        }));
    };
    if state.serving.llm {
        let r = state.ready()?;
        let info = &r.model.info;
        for name in llm_names(r, &state.web.aliases) {
            push(name, info.created, details("llama", quantization(&info.id)));
        }
    }
    if state.serving.encoder.is_some() {
        let e = state.encoder()?;
        push(
            &e.encoder.info.id,
            e.encoder.info.created,
            details("bert", "F32"),
        );
    }
    Ok(out)
}

/// `GET /api/tags`: the served models (503 while loading).
pub async fn tags(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"models": entries(&state)?})))
}

/// `GET /api/ps`: the loaded models (all of them: ferrite loads at start-up).
pub async fn ps(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let mut models = entries(&state)?;
    let context = state.ready.get().map(|r| r.model.info.context_length);
    for m in &mut models {
        let Some(obj) = m.as_object_mut() else {
            continue;
        };
        obj.remove("modified_at");
        obj.insert("expires_at".into(), json!("2318-01-01T00:00:00Z"));
        obj.insert("size_vram".into(), json!(0));
        if let Some(c) = context.filter(|_| obj["details"]["family"] == "llama") {
            obj.insert("context_length".into(), json!(c));
        }
    }
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
    let body = match resolve(&state, &name)? {
        Target::Llm(r) => {
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
        Target::Encoder(e) => {
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
