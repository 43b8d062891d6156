//! `EngineHandle`: the only way the HTTP side talks to the engine thread. It owns the
//! sending end of the command channel and read-only views of engine counters.
//!
//! Invariants: submission never blocks (the waiting queue is bounded by a counter, and
//! a full queue is reported as `SubmitError::QueueFull`); all mutable engine state
//! lives on the engine thread, and commands take effect in the order they were sent
//! (a sequence submitted after `set_admission_paused(true)` returned is held back).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc;

use super::encode::EncodeJob;
use super::types::GenerateRequest;

/// Commands sent to the engine thread.
#[derive(Debug)]
pub enum Command {
    /// A new sequence to schedule.
    Add(GenerateRequest),
    /// Encoder inputs of one request (embeddings or rerank).
    Encode(EncodeJob),
    /// Pauses (`true`) or resumes the admission of new LLM sequences; sequences that
    /// have started keep running (see `scheduler`). Sent by the GPU monitor when
    /// device memory runs low.
    SetAdmissionPaused(bool),
    /// Finish running sequences, then exit the loop.
    Shutdown,
}

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The waiting queue holds `--max-waiting` sequences already.
    #[error("the server is overloaded: the waiting queue is full")]
    QueueFull,
    /// The engine thread has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// Counters the engine publishes after each step (read by `/metrics` and `/health`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences submitted but not yet scheduled for the first time, plus preempted ones.
    pub waiting: AtomicUsize,
    /// Sequences holding KV blocks.
    pub running: AtomicUsize,
    /// KV blocks in use.
    pub blocks_used: AtomicUsize,
    /// KV blocks in the pool.
    pub blocks_total: AtomicUsize,
    /// Sequences preempted since start.
    pub preemptions: AtomicUsize,
    /// Encoder inputs queued and not yet run.
    pub encoder_waiting: AtomicUsize,
    /// Prompt tokens taken from the prefix cache instead of computed, since start.
    pub prefix_cached_tokens: AtomicUsize,
    /// Whether the admission of new sequences is paused.
    pub admission_paused: AtomicBool,
}

/// A plain copy of `EngineStats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StatsSnapshot {
    /// See `EngineStats::waiting`.
    pub waiting: usize,
    /// See `EngineStats::running`.
    pub running: usize,
    /// See `EngineStats::blocks_used`.
    pub blocks_used: usize,
    /// See `EngineStats::blocks_total`.
    pub blocks_total: usize,
    /// See `EngineStats::preemptions`.
    pub preemptions: usize,
    /// See `EngineStats::encoder_waiting`.
    pub encoder_waiting: usize,
    /// See `EngineStats::prefix_cached_tokens`.
    pub prefix_cached_tokens: usize,
    /// See `EngineStats::admission_paused`.
    pub admission_paused: bool,
}

/// Cloneable handle to a running engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: mpsc::Sender<Command>,
    stats: Arc<EngineStats>,
    max_waiting: usize,
    max_encoder_waiting: usize,
}

impl EngineHandle {
    /// Wraps the sending side of an engine's command channel. At most `max_waiting`
    /// sequences and `max_encoder_waiting` encoder inputs may wait.
    pub fn new(
        tx: mpsc::Sender<Command>,
        stats: Arc<EngineStats>,
        max_waiting: usize,
        max_encoder_waiting: usize,
    ) -> Self {
        Self {
            tx,
            stats,
            max_waiting,
            max_encoder_waiting,
        }
    }

    /// Queues sequences for generation, all or none: `n > 1` choices of one request
    /// are admitted together so a request never half-runs.
    pub fn submit(&self, requests: Vec<GenerateRequest>) -> Result<(), SubmitError> {
        let n = requests.len();
        let admitted = self
            .stats
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w + n <= self.max_waiting).then_some(w + n)
            });
        if admitted.is_err() {
            return Err(SubmitError::QueueFull);
        }
        for (i, req) in requests.into_iter().enumerate() {
            if self.tx.send(Command::Add(req)).is_err() {
                self.stats.waiting.fetch_sub(n - i, Ordering::AcqRel);
                return Err(SubmitError::Stopped);
            }
        }
        Ok(())
    }

    /// Queues one request's encoder inputs; refused when the encoder queue would
    /// exceed its bound.
    pub fn encode(&self, job: EncodeJob) -> Result<(), SubmitError> {
        let n = job.inputs.len();
        let admitted = self.stats.encoder_waiting.fetch_update(
            Ordering::AcqRel,
            Ordering::Acquire,
            // An empty queue admits any job, so no job is refused for ever.
            |w| (w == 0 || w + n <= self.max_encoder_waiting).then_some(w + n),
        );
        if admitted.is_err() {
            return Err(SubmitError::QueueFull);
        }
        if self.tx.send(Command::Encode(job)).is_err() {
            self.stats.encoder_waiting.fetch_sub(n, Ordering::AcqRel);
            return Err(SubmitError::Stopped);
        }
        Ok(())
    }

    /// Pauses (`true`) or resumes (`false`) the admission of new sequences. Requests
    /// are still accepted into the waiting queue (up to `--max-waiting`) while paused;
    /// they start when admission resumes. Refused only when the engine has stopped.
    pub fn set_admission_paused(&self, paused: bool) -> Result<(), SubmitError> {
        self.tx
            .send(Command::SetAdmissionPaused(paused))
            .map_err(|_| SubmitError::Stopped)
    }

    /// Asks the engine to finish what it runs and stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// Current engine counters.
    pub fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            waiting: self.stats.waiting.load(Ordering::Acquire),
            running: self.stats.running.load(Ordering::Acquire),
            blocks_used: self.stats.blocks_used.load(Ordering::Acquire),
            blocks_total: self.stats.blocks_total.load(Ordering::Acquire),
            preemptions: self.stats.preemptions.load(Ordering::Acquire),
            prefix_cached_tokens: self.stats.prefix_cached_tokens.load(Ordering::Acquire),
            encoder_waiting: self.stats.encoder_waiting.load(Ordering::Acquire),
            admission_paused: self.stats.admission_paused.load(Ordering::Acquire),
        }
    }
}
