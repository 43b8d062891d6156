//! Handles: the only way the HTTP side talks to an engine thread. One engine thread
//! runs every model on its device; each served model has a slot on it and an
//! [`EngineHandle`] that sends that slot's work down the thread's one command channel,
//! with the model's own counters and admission bounds.
//!
//! Invariants: submission never blocks (the waiting queues are bounded by
//! [`Gauge`]s, and a full queue is `SubmitError::QueueFull`); the units a submission
//! takes are held by [`Permit`]s that travel with the work, so the counters return to
//! zero however the work ends (even if the engine thread dies); all mutable engine
//! state lives on the engine thread, and commands take effect in the order they were
//! sent (a sequence submitted after `set_admission_paused(true)` returned is held back).
//! Once the thread has died (a panic) or stopped, every submission is refused at once.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use super::encode::{EncodeJob, EncoderWorker};
use super::engine_loop::Engine;
use super::permit::{Gauge, Permit};
use super::types::GenerateRequest;

/// A model's place on its engine thread.
pub type ModelSlot = usize;

/// A model built off the engine thread (weights, KV cache, scheduler), handed to it.
pub enum Installed {
    /// An LLM.
    Llm(Box<Engine>),
    /// An encoder.
    Encoder(Box<EncoderWorker>),
}

/// Commands sent to the engine thread.
pub enum Command {
    /// A new sequence for the LLM in `model`, holding its waiting-queue unit.
    Add {
        /// The LLM's slot.
        model: ModelSlot,
        /// The sequence.
        req: GenerateRequest,
        /// Its unit of the model's waiting queue (released when it first runs).
        permit: Permit,
    },
    /// Encoder inputs of one request (embeddings, rerank, classification).
    Encode {
        /// The encoder's slot.
        model: ModelSlot,
        /// The inputs and where the outputs go.
        job: EncodeJob,
        /// One unit per input of the model's encoder queue.
        permit: Permit,
    },
    /// Puts a model built off-thread into `slot`.
    Install {
        /// Its slot (fresh, from [`DeviceEngine::reserve_slot`]).
        slot: ModelSlot,
        /// The model.
        model: Installed,
    },
    /// Removes the model in `slot` (its queued and running work is failed with
    /// `NotLoaded`), freeing its memory; `done` is told once it is gone.
    Unload {
        /// The slot.
        model: ModelSlot,
        /// Told once the model's memory is freed.
        done: Option<tokio::sync::oneshot::Sender<()>>,
    },
    /// Pauses (`true`) or resumes the admission of new LLM sequences on every LLM;
    /// sequences that have started keep running (see `scheduler`). Sent by the GPU
    /// monitor when device memory runs low.
    SetAdmissionPaused(bool),
    /// Finish running sequences, then exit the loop.
    Shutdown,
    /// Fault injection for tests (`--inject-engine-panic`): the thread panics.
    Panic,
}

/// Why a submission was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// The model's waiting queue is full.
    #[error("the server is overloaded: the waiting queue is full")]
    QueueFull,
    /// The engine thread has stopped (or died).
    #[error("the engine has stopped")]
    Stopped,
}

/// Counters one model's engine side publishes after each step (read by `/metrics` and
/// `/health`).
#[derive(Debug, Default)]
pub struct EngineStats {
    /// Sequences submitted but not yet scheduled for the first time.
    pub waiting: Gauge,
    /// Sequences holding KV blocks.
    pub running: AtomicUsize,
    /// KV blocks in use.
    pub blocks_used: AtomicUsize,
    /// KV blocks in the pool.
    pub blocks_total: AtomicUsize,
    /// Sequences preempted since start.
    pub preemptions: AtomicUsize,
    /// Encoder inputs queued and not yet run.
    pub encoder_waiting: Gauge,
    /// Prompt tokens taken from the prefix cache instead of computed, since start.
    pub prefix_cached_tokens: AtomicUsize,
    /// Whether the admission of new sequences is paused.
    pub admission_paused: AtomicBool,
    /// Speculative draft tokens verified since start.
    pub draft_tokens: AtomicUsize,
    /// Speculative draft tokens accepted since start.
    pub accepted_tokens: AtomicUsize,
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
    /// See `EngineStats::draft_tokens`.
    pub draft_tokens: usize,
    /// See `EngineStats::accepted_tokens`.
    pub accepted_tokens: usize,
}

impl EngineStats {
    /// A plain copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            waiting: self.waiting.get(),
            running: self.running.load(Ordering::Acquire),
            blocks_used: self.blocks_used.load(Ordering::Acquire),
            blocks_total: self.blocks_total.load(Ordering::Acquire),
            preemptions: self.preemptions.load(Ordering::Acquire),
            prefix_cached_tokens: self.prefix_cached_tokens.load(Ordering::Acquire),
            encoder_waiting: self.encoder_waiting.get(),
            admission_paused: self.admission_paused.load(Ordering::Acquire),
            draft_tokens: self.draft_tokens.load(Ordering::Acquire),
            accepted_tokens: self.accepted_tokens.load(Ordering::Acquire),
        }
    }
}

/// Whether an engine thread still runs, and why it died if it did.
#[derive(Debug)]
pub struct ThreadHealth {
    alive: AtomicBool,
    death: Mutex<Option<String>>,
}

impl Default for ThreadHealth {
    fn default() -> Self {
        Self {
            alive: AtomicBool::new(true),
            death: Mutex::new(None),
        }
    }
}

impl ThreadHealth {
    /// Whether the thread still takes work.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    /// Why the thread died (`None` while alive, or after a clean stop).
    pub fn death(&self) -> Option<String> {
        self.death.lock().ok().and_then(|d| d.clone())
    }

    /// Marks the thread gone, with the panic message if it died.
    pub(crate) fn mark_gone(&self, panic: Option<String>) {
        if let (Some(p), Ok(mut d)) = (panic, self.death.lock()) {
            *d = Some(p);
        }
        self.alive.store(false, Ordering::Release);
    }
}

/// The sending side of one engine thread, from which model handles are made.
#[derive(Clone)]
pub struct DeviceEngine {
    tx: mpsc::Sender<Command>,
    health: Arc<ThreadHealth>,
    next_slot: Arc<AtomicUsize>,
}

impl DeviceEngine {
    /// Wraps the sending side of an engine thread's command channel.
    pub fn new(tx: mpsc::Sender<Command>, health: Arc<ThreadHealth>) -> Self {
        Self {
            tx,
            health,
            next_slot: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A fresh slot for a model about to be installed.
    pub fn reserve_slot(&self) -> ModelSlot {
        self.next_slot.fetch_add(1, Ordering::AcqRel)
    }

    /// Hands a built model to the thread.
    pub fn install(&self, slot: ModelSlot, model: Installed) -> Result<(), SubmitError> {
        self.send(Command::Install { slot, model })
    }

    /// Asks the thread to drop the model in `slot`; resolves once its memory is freed
    /// (at once if the thread is gone).
    pub async fn unload(&self, slot: ModelSlot) {
        let (done, rx) = tokio::sync::oneshot::channel();
        let cmd = Command::Unload {
            model: slot,
            done: Some(done),
        };
        if self.send(cmd).is_ok() {
            let _ = rx.await;
        }
    }

    /// Whether the thread is alive, and why it died.
    pub fn health(&self) -> &Arc<ThreadHealth> {
        &self.health
    }

    /// Pauses (`true`) or resumes (`false`) the admission of new sequences on every
    /// LLM of the thread. Requests are still accepted into the waiting queues while
    /// paused; they start when admission resumes.
    pub fn set_admission_paused(&self, paused: bool) -> Result<(), SubmitError> {
        self.send(Command::SetAdmissionPaused(paused))
    }

    /// Asks the thread to finish what it runs and stop.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
    }

    /// Fault injection: makes the engine thread panic (tests of what a dead engine
    /// does to `/health` and to requests).
    pub fn inject_panic(&self) {
        let _ = self.tx.send(Command::Panic);
    }

    fn send(&self, cmd: Command) -> Result<(), SubmitError> {
        if !self.health.is_alive() {
            return Err(SubmitError::Stopped);
        }
        self.tx.send(cmd).map_err(|_| SubmitError::Stopped)
    }

    /// A handle for the model in `slot` with its counters and bounds.
    pub fn handle(
        &self,
        slot: ModelSlot,
        name: &str,
        stats: Arc<EngineStats>,
        max_waiting: usize,
        max_encoder_waiting: usize,
    ) -> EngineHandle {
        EngineHandle {
            device: self.clone(),
            slot,
            name: name.into(),
            stats,
            max_waiting,
            max_encoder_waiting,
        }
    }
}

/// Cloneable handle to one model on a running engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    device: DeviceEngine,
    slot: ModelSlot,
    name: Arc<str>,
    stats: Arc<EngineStats>,
    max_waiting: usize,
    max_encoder_waiting: usize,
}

impl EngineHandle {
    /// Queues sequences for generation, all or none: `n > 1` choices of one request
    /// are admitted together so a request never half-runs.
    pub fn submit(&self, requests: Vec<GenerateRequest>) -> Result<(), SubmitError> {
        let n = requests.len();
        let mut permit = self
            .stats
            .waiting
            .try_acquire(n, self.max_waiting)
            .ok_or(SubmitError::QueueFull)?;
        for req in requests {
            let cmd = Command::Add {
                model: self.slot,
                req,
                permit: permit.split(1),
            };
            self.device.send(cmd)?;
        }
        Ok(())
    }

    /// Queues one request's encoder inputs; refused when the encoder queue would
    /// exceed its bound (an empty queue admits any job, so no job is refused for ever).
    pub fn encode(&self, job: EncodeJob) -> Result<(), SubmitError> {
        let permit = self
            .stats
            .encoder_waiting
            .try_acquire_or_first(job.inputs.len(), self.max_encoder_waiting)
            .ok_or(SubmitError::QueueFull)?;
        self.device.send(Command::Encode {
            model: self.slot,
            job,
            permit,
        })
    }

    /// Pauses or resumes admission on the whole engine thread (see
    /// [`DeviceEngine::set_admission_paused`]).
    pub fn set_admission_paused(&self, paused: bool) -> Result<(), SubmitError> {
        self.device.set_admission_paused(paused)
    }

    /// Asks the engine thread to finish what it runs and stop.
    pub fn shutdown(&self) {
        self.device.shutdown();
    }

    /// The engine thread this model runs on.
    pub fn device(&self) -> &DeviceEngine {
        &self.device
    }

    /// The model's slot on its thread.
    pub fn slot(&self) -> ModelSlot {
        self.slot
    }

    /// The model's name (the `model` label of its metrics).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the engine thread still takes work.
    pub fn is_alive(&self) -> bool {
        self.device.health.is_alive()
    }

    /// Current counters of this model.
    pub fn stats(&self) -> StatsSnapshot {
        self.stats.snapshot()
    }
}
