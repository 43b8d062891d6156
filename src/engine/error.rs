//! What can go wrong with work handed to the engine, typed so the HTTP layer maps each
//! kind to one status in one place (`api::error`), instead of every engine string
//! becoming a 500.
//!
//! Invariant: the engine never reports a failure as text alone; every error a sequence
//! or an encoder job receives is one of these kinds.

/// Why the engine could not (or could no longer) serve a piece of work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request can never run as given (empty prompt, a token outside the
    /// vocabulary, longer than a sequence may be): the client must change it.
    #[error("{0}")]
    Invalid(String),
    /// The request is valid but does not fit what the engine holds (the KV cache, the
    /// memory budget).
    #[error("{0}")]
    DoesNotFit(String),
    /// The model failed while running the request (a forward or a grammar error).
    #[error("{0}")]
    ModelFailed(String),
    /// The model this work was sent to is not loaded on the engine (it was unloaded,
    /// or never was).
    #[error("{0}")]
    NotLoaded(String),
    /// The engine is shutting down or has stopped (or died).
    #[error("{0}")]
    Stopped(String),
}

impl EngineError {
    /// The engine stopped (or its thread died) before the work finished.
    pub fn stopped() -> Self {
        Self::Stopped("the engine stopped before the request finished".into())
    }

    /// A short machine-readable name of the kind (`invalid`, `does_not_fit`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Invalid(_) => "invalid",
            Self::DoesNotFit(_) => "does_not_fit",
            Self::ModelFailed(_) => "model_failed",
            Self::NotLoaded(_) => "not_loaded",
            Self::Stopped(_) => "stopped",
        }
    }
}
