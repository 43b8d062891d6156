//! Structured outputs: grammars that constrain what a sequence may generate (JSON
//! schemas, regexes, choices, Lark grammars), compiled with `llguidance` against the
//! served model's vocabulary.
//!
//! - [`GrammarSpec`] (`grammar`) is what a request asks for, independent of the API it
//!   came through (OpenAI `response_format`, vLLM's `guided_*`, Ollama's `format`,
//!   forced tool calls, the Responses API's `text.format`).
//! - [`GrammarCompiler`] (here) owns the model's token trie and llguidance's parser
//!   factory, built once on first use (a vocabulary of 150k tokens takes a few hundred
//!   milliseconds, which a server that never sees a schema should not pay at start).
//!   Compiling happens on the HTTP side, before the engine, so a schema llguidance
//!   cannot compile is a 400 and never reaches the engine thread.
//! - [`Constraint`] (`constraint`) is one sequence's matcher: the engine computes its
//!   token mask while the forward runs, applies it to the logits, and commits each
//!   sampled token.
//!
//! Invariants: a `Constraint` only ever allows tokens of the vocabulary it was compiled
//! for; an end-of-generation token is allowed exactly when the grammar accepts.

pub mod constraint;
pub mod grammar;
mod vocab;

use std::sync::{Arc, Mutex, OnceLock};

use llguidance::ParserFactory;

pub use constraint::Constraint;
pub use grammar::GrammarSpec;

use crate::model::tokenizer::ModelTokenizer;

/// Compiles grammars for one model's vocabulary (cheap to share: `Arc` inside).
pub struct GrammarCompiler {
    tokenizer: Arc<ModelTokenizer>,
    factory: OnceLock<Result<Arc<ParserFactory>, String>>,
    /// Tokens made only of JSON closing bytes (see `Constraint::steer_to_close`).
    closers: OnceLock<Arc<constraint::Closers>>,
}

/// Why a grammar could not be compiled (the request's fault unless `Setup`).
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    /// The grammar or schema is not one llguidance can compile.
    #[error("{0}")]
    Invalid(String),
    /// The vocabulary could not be prepared for constrained decoding.
    #[error("constrained decoding is unavailable for this model: {0}")]
    Setup(String),
}

impl GrammarCompiler {
    /// A compiler for `tokenizer`'s vocabulary; nothing is built until first use.
    pub fn new(tokenizer: Arc<ModelTokenizer>) -> Self {
        Self {
            tokenizer,
            factory: OnceLock::new(),
            closers: OnceLock::new(),
        }
    }

    fn factory(&self) -> Result<&Arc<ParserFactory>, CompileError> {
        self.factory
            .get_or_init(|| {
                let env = vocab::tok_env(&self.tokenizer);
                let mut factory = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
                factory.quiet();
                Ok(Arc::new(factory))
            })
            .as_ref()
            .map_err(|e| CompileError::Setup(e.clone()))
    }

    /// Compiles `spec` into a fresh matcher for one sequence.
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Constraint, CompileError> {
        let factory = self.factory()?;
        let grammar = spec.to_grammar();
        let parser = factory
            .create_parser(grammar)
            .map_err(|e| CompileError::Invalid(e.to_string()))?;
        let eos = factory.tok_env().tok_trie().eos_token();
        let closers = spec.is_json().then(|| {
            self.closers
                .get_or_init(|| Arc::new(vocab::json_closers(&self.tokenizer)))
                .clone()
        });
        Constraint::new(parser, eos, closers).map_err(CompileError::Invalid)
    }
}

/// A compiled grammar, ready to be forked into one [`Constraint`] per sequence (a
/// request's `n` choices share one compilation).
#[derive(Clone)]
pub struct CompiledGrammar(Arc<Mutex<Constraint>>);

impl CompiledGrammar {
    /// Wraps a freshly compiled constraint (one that has consumed no token).
    pub fn new(c: Constraint) -> Self {
        Self(Arc::new(Mutex::new(c)))
    }

    /// An independent matcher at the grammar's start.
    pub fn fork(&self) -> Constraint {
        match self.0.lock() {
            Ok(c) => c.fork(),
            Err(poisoned) => poisoned.into_inner().fork(),
        }
    }
}

impl std::fmt::Debug for CompiledGrammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CompiledGrammar")
    }
}

#[cfg(test)]
mod tests;
