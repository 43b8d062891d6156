//! What a served model is (an LLM, or an encoder with its task: embedding,
//! cross-encoder, sequence classifier, token classifier) and which routes each kind
//! serves, so that a model sent to the wrong route gets a 400 naming its kind and
//! the routes that do serve it.

use crate::model::encoder::config::Task;

/// What a served model computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// A GGUF LLM: chat, completions, responses, Ollama generate/chat.
    Llm,
    /// An encoder with its task.
    Encoder(Task),
}

/// A family of routes that needs one kind of model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Text generation (`/v1/chat/completions`, `/v1/completions`, `/v1/responses`,
    /// `/api/chat`, `/api/generate`).
    Generate,
    /// Sentence embeddings (`/v1/embeddings`, `/api/embed`).
    Embed,
    /// Rerank (`/rerank`, `/v1/rerank`): a cross-encoder, or an embedder by cosine.
    Rerank,
    /// Sequence classification (`/predict`, `/v1/classify`): a classifier, or a
    /// one-label cross-encoder.
    Classify,
    /// Token classification (`/v1/ner`).
    Ner,
}

impl Route {
    /// What the route needs, for messages ("an LLM", ...).
    pub fn needs(self) -> &'static str {
        match self {
            Route::Generate => "an LLM",
            Route::Embed => "an embedding model",
            Route::Rerank => "a reranker (a cross-encoder or an embedding model)",
            Route::Classify => "a sequence classifier (or a cross-encoder)",
            Route::Ner => "a token classifier (NER)",
        }
    }

    /// The flag that serves such a model.
    pub fn flag(self) -> &'static str {
        match self {
            Route::Generate => "--model",
            _ => "--encoder",
        }
    }
}

impl ModelKind {
    /// Whether a model of this kind serves `route`. Rerank prefers a cross-encoder
    /// (see [`ModelKind::preference`]) but an embedder serves it by cosine.
    pub fn serves(self, route: Route) -> bool {
        matches!(
            (self, route),
            (ModelKind::Llm, Route::Generate)
                | (
                    ModelKind::Encoder(Task::Embedding(_)),
                    Route::Embed | Route::Rerank
                )
                | (
                    ModelKind::Encoder(Task::CrossEncoder),
                    Route::Rerank | Route::Classify
                )
                | (ModelKind::Encoder(Task::Classifier { .. }), Route::Classify)
                | (ModelKind::Encoder(Task::TokenClassifier), Route::Ner)
        )
    }

    /// Among models that serve `route`, lower is picked first for requests without a
    /// `model` (a cross-encoder before an embedder for rerank, a classifier before a
    /// cross-encoder for classify).
    pub fn preference(self, route: Route) -> u8 {
        match (self, route) {
            (ModelKind::Encoder(Task::Embedding(_)), Route::Rerank) => 1,
            (ModelKind::Encoder(Task::CrossEncoder), Route::Classify) => 1,
            _ => 0,
        }
    }

    /// The kind in words (`an LLM`, `an embedding model`, `a cross-encoder`).
    pub fn describe(self) -> &'static str {
        match self {
            ModelKind::Llm => "an LLM",
            ModelKind::Encoder(Task::Embedding(_)) => "an embedding model",
            ModelKind::Encoder(Task::CrossEncoder) => "a cross-encoder (reranker)",
            ModelKind::Encoder(Task::Classifier { .. }) => "a sequence classifier",
            ModelKind::Encoder(Task::TokenClassifier) => "a token classifier (NER)",
        }
    }

    /// The routes this kind serves, for error messages.
    pub fn routes(self) -> &'static str {
        match self {
            ModelKind::Llm => {
                "/v1/chat/completions, /v1/completions, /v1/responses, /api/chat and /api/generate"
            }
            ModelKind::Encoder(Task::Embedding(_)) => {
                "/v1/embeddings, /api/embed, /rerank and /v1/rerank"
            }
            ModelKind::Encoder(Task::CrossEncoder) => {
                "/rerank, /v1/rerank, /predict and /v1/classify"
            }
            ModelKind::Encoder(Task::Classifier { .. }) => "/predict and /v1/classify",
            ModelKind::Encoder(Task::TokenClassifier) => "/v1/ner",
        }
    }

    /// The short name `/v1/models` and `/health` show (`llm`, `embedding`, ...).
    pub fn name(self) -> &'static str {
        match self {
            ModelKind::Llm => "llm",
            ModelKind::Encoder(task) => task.name(),
        }
    }
}
