//! The one event drain every streaming surface shares: `Drain` reads a `Generation`
//! raced against the request's `Cutoff` and hands the surface plain `Step`s (a token, a
//! choice done, a failure, the end). OpenAI's SSE (`sse`) and Ollama's NDJSON
//! (`ollama::ndjson`) only differ in how they render a step and frame it.
//!
//! Invariants: after `Failed` or `End` the drain is over: the receivers are dropped (so
//! the engine frees any unfinished sequence's KV blocks) and the final status is
//! recorded exactly once (500 for an engine error, the cutoff's 504 / 503, 200 at the
//! end). A drain dropped before that (client gone) records 499.

use super::deadline::{Cutoff, Fired};
use super::error::ApiError;
use super::generate::Generation;
use super::middleware::StatusRecorder;
use crate::engine::types::{FinishReason, TokenEvent, TokenLogprob, Usage};

/// What happened next in a generation.
#[derive(Debug)]
pub enum Step {
    /// Choice `index` released `text` (possibly empty while bytes are held back).
    Token {
        /// Choice index.
        index: usize,
        /// Newly visible text.
        text: String,
        /// Its logprob, when asked for.
        logprob: Option<TokenLogprob>,
    },
    /// Choice `index` finished; `text` is held-back text released at the end.
    Done {
        /// Choice index.
        index: usize,
        /// Final text (usually empty).
        text: String,
        /// Why it finished.
        finish_reason: FinishReason,
        /// Its token counts.
        usage: Usage,
    },
    /// The generation failed (engine error) or was cut off (deadline, shutdown). Last step.
    Failed(ApiError),
    /// Every choice finished. Last step.
    End,
}

/// A generation raced against its cutoff, one `Step` at a time.
pub struct Drain {
    generation: Option<Generation>,
    cutoff: Option<Fired>,
    recorder: Option<StatusRecorder>,
}

impl Drain {
    /// Drains `generation`, ending early when `cutoff` fires.
    pub fn new(generation: Generation, cutoff: Option<&Cutoff>) -> Self {
        Self {
            generation: Some(generation),
            cutoff: cutoff.map(Cutoff::fired),
            recorder: Some(StatusRecorder::new()),
        }
    }

    /// Drains `generation` for a one-body answer: no cutoff race (the guard races the
    /// handler) and no status recording (the request middleware records it).
    pub fn collecting(generation: Generation) -> Self {
        Self {
            generation: Some(generation),
            cutoff: None,
            recorder: None,
        }
    }

    /// Number of choices (0 once the drain is over).
    pub fn len(&self) -> usize {
        self.generation.as_ref().map_or(0, Generation::len)
    }

    /// Whether the drain has no choices left to read.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The next step; `None` once `Failed` or `End` was returned.
    pub async fn next(&mut self) -> Option<Step> {
        let g = self.generation.as_mut()?;
        let next = match self.cutoff.as_mut() {
            Some(fired) => tokio::select! {
                biased;
                e = g.next() => e,
                e = fired => {
                    tracing::info!(status = e.status.as_u16(), "stream cut off: {}", e.message);
                    return Some(self.over(Step::Failed(e)));
                }
            },
            None => g.next().await,
        };
        Some(match next {
            Some((index, TokenEvent::Token { text, logprob, .. })) => Step::Token {
                index,
                text,
                logprob,
            },
            Some((
                index,
                TokenEvent::Done {
                    text,
                    finish_reason,
                    usage,
                },
            )) => Step::Done {
                index,
                text,
                finish_reason,
                usage,
            },
            Some((_, TokenEvent::Error(e))) => {
                self.over(Step::Failed(super::generate::generation_failed(e)))
            }
            None => self.over(Step::End),
        })
    }

    /// Ends the drain with `last`: releases the receivers and records the status.
    fn over(&mut self, last: Step) -> Step {
        let status = match &last {
            Step::Failed(e) => e.status.as_u16(),
            _ => 200,
        };
        self.generation = None;
        self.cutoff = None;
        if let Some(r) = self.recorder.take() {
            r.finish(status);
        }
        last
    }
}
