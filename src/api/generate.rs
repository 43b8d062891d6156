//! Submitting a validated request's sequences to the engine and reading their merged
//! event streams: `Generation` owns one event receiver per choice (index
//! `prompt_idx * n + i`), yields `(index, event)` in arrival order, and records the
//! latency histograms. Dropping a `Generation` drops every receiver, which aborts the
//! unfinished sequences in the engine: that is how a vanished client frees resources.
//!
//! Non-streaming responses drain it with `collect`; streaming ones wrap it in `sse`.

use std::future::poll_fn;
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::mpsc;

use super::error::ApiError;
use crate::engine::error::EngineError;
use crate::engine::handle::EngineHandle;
use crate::engine::types::{
    FinishReason, GenerateRequest, SamplingParams, TokenEvent, TokenLogprob, Usage,
};
use crate::metrics::{ITL_SECONDS, REQUEST_SECONDS, TTFT_SECONDS};
use crate::structured::CompiledGrammar;

/// One prompt, ready for the engine: its token ids and its sampling parameters
/// (`max_tokens` resolved for this prompt).
#[derive(Debug, Clone)]
pub struct PromptJob {
    /// Prompt token ids (non-empty, within the context length).
    pub ids: Vec<u32>,
    /// Sampling parameters shared by the prompt's `n` choices (seed offset per choice).
    pub params: SamplingParams,
    /// The compiled output grammar, forked for each choice.
    pub grammar: Option<CompiledGrammar>,
}

/// The live event streams of one request's sequences.
pub struct Generation {
    receivers: Vec<Option<mpsc::UnboundedReceiver<TokenEvent>>>,
    open: usize,
    cursor: usize,
    arrival: Instant,
    first_token_seen: bool,
    last_token: Vec<Option<Instant>>,
}

impl Generation {
    /// Submits `n` sequences per prompt, all or none. Choice `i` of a prompt gets
    /// `seed + i` when a seed is set. Engine ids are `request_id` (one sequence) or
    /// `request_id-index`.
    pub fn start(
        engine: &EngineHandle,
        jobs: &[PromptJob],
        n: usize,
        request_id: &str,
        arrival: Instant,
    ) -> Result<Self, ApiError> {
        let total = jobs.len() * n;
        let mut requests = Vec::with_capacity(total);
        let mut receivers = Vec::with_capacity(total);
        for (p, job) in jobs.iter().enumerate() {
            for i in 0..n {
                let index = p * n + i;
                let (tx, rx) = mpsc::unbounded_channel();
                let mut params = job.params.clone();
                params.seed = params.seed.map(|s| s.wrapping_add(i as u64));
                let id = if total == 1 {
                    request_id.to_string()
                } else {
                    format!("{request_id}-{index}")
                };
                requests.push(GenerateRequest {
                    id,
                    prompt_ids: job.ids.clone(),
                    params,
                    events: tx,
                    constraint: job.grammar.as_ref().map(|g| Box::new(g.fork())),
                });
                receivers.push(Some(rx));
            }
        }
        engine.submit(requests)?;
        Ok(Self {
            open: receivers.len(),
            receivers,
            cursor: 0,
            arrival,
            first_token_seen: false,
            last_token: vec![None; total],
        })
    }

    /// Number of choices.
    pub fn len(&self) -> usize {
        self.receivers.len()
    }

    /// Whether there are no choices at all.
    pub fn is_empty(&self) -> bool {
        self.receivers.is_empty()
    }

    /// The next event of any unfinished choice; `None` once every choice has sent its
    /// `Done` or `Error`. A channel that closes without either yields an `Error`.
    pub async fn next(&mut self) -> Option<(usize, TokenEvent)> {
        if self.open == 0 {
            return None;
        }
        let (index, event) = poll_fn(|cx| self.poll_any(cx)).await;
        self.observe(index, &event);
        Some((index, event))
    }

    /// Polls the receivers round-robin, starting after the last one that yielded.
    fn poll_any(&mut self, cx: &mut Context<'_>) -> Poll<(usize, TokenEvent)> {
        let len = self.receivers.len();
        for k in 0..len {
            let index = (self.cursor + k) % len;
            let Some(rx) = self.receivers[index].as_mut() else {
                continue;
            };
            if let Poll::Ready(event) = rx.poll_recv(cx) {
                self.cursor = (index + 1) % len;
                let event = event.unwrap_or(TokenEvent::Error(EngineError::stopped()));
                return Poll::Ready((index, event));
            }
        }
        Poll::Pending
    }

    fn observe(&mut self, index: usize, event: &TokenEvent) {
        let now = Instant::now();
        match event {
            TokenEvent::Token { .. } => {
                if !self.first_token_seen {
                    self.first_token_seen = true;
                    metrics::histogram!(TTFT_SECONDS).record(now - self.arrival);
                }
                if let Some(slot) = self.last_token.get_mut(index) {
                    if let Some(prev) = *slot {
                        metrics::histogram!(ITL_SECONDS).record(now - prev);
                    }
                    *slot = Some(now);
                }
            }
            TokenEvent::Done { .. } | TokenEvent::Error(_) => {
                if let Some(rx) = self.receivers.get_mut(index)
                    && rx.take().is_some()
                {
                    self.open -= 1;
                    if self.open == 0 {
                        metrics::histogram!(REQUEST_SECONDS).record(now - self.arrival);
                    }
                }
            }
        }
    }
}

/// Everything one choice produced, for a non-streaming response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ChoiceOutput {
    /// Full generated text.
    pub text: String,
    /// Why it finished.
    pub finish_reason: Option<FinishReason>,
    /// Logprob of every token (empty unless requested).
    pub logprobs: Vec<TokenLogprob>,
    /// Token counts.
    pub usage: Usage,
}

/// Drains every choice to its end. The first engine error fails the whole request
/// (500) and drops the other choices, which aborts them.
pub async fn collect(mut generation: Generation) -> Result<Vec<ChoiceOutput>, ApiError> {
    let mut out = vec![ChoiceOutput::default(); generation.len()];
    while let Some((index, event)) = generation.next().await {
        let Some(choice) = out.get_mut(index) else {
            continue;
        };
        match event {
            TokenEvent::Token { text, logprob, .. } => {
                choice.text.push_str(&text);
                choice.logprobs.extend(logprob);
            }
            TokenEvent::Done {
                text,
                finish_reason,
                usage,
            } => {
                choice.text.push_str(&text);
                choice.finish_reason = Some(finish_reason);
                choice.usage = usage;
            }
            TokenEvent::Error(e) => return Err(generation_failed(e)),
        }
    }
    Ok(out)
}

/// The API error of a sequence that failed in the engine (its status from the error's
/// kind, its message prefixed so clients see where it failed).
pub fn generation_failed(e: EngineError) -> ApiError {
    let mut err = ApiError::from(e);
    err.message = format!("Generation failed: {}", err.message);
    err
}
