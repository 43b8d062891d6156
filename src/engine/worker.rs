//! The engine thread's loop: takes in commands, and alternates one LLM step with a
//! slice of encoder work, so neither workload starves the other on the one device.
//! While LLM sequences run, the encoder's slice is sized from the measured LLM step
//! time so that it gets `encoder_share` of the device (inter-token latency grows by
//! at most about `1 / (1 - share)`); when the LLM is idle the encoder runs flat out,
//! one layer per loop turn so new commands are still taken in between.
//!
//! While admission is paused and the LLM's only sequences are new ones held back by
//! the pause (and the encoder is idle), the thread waits on the command channel with a
//! timeout of `HELD_POLL`, so it does not spin yet still notices clients that leave.
//!
//! Invariants: the thread blocks on the command channel whenever both sides are idle
//! (it never spins); a command for a side that is not loaded is answered with an
//! error at once; after `Shutdown` (or when every handle is gone) the loop finishes
//! what is queued on both sides, then exits; sequences still held back by a pause at
//! that point are failed with an error rather than waited for.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::encode::EncoderWorker;
use super::engine_loop::Engine;
use super::handle::{Command, EngineStats};
use super::types::TokenEvent;

/// Everything the engine thread owns: an LLM, an encoder, or both.
pub struct EngineThread {
    llm: Option<Engine>,
    encoder: Option<EncoderWorker>,
    stats: std::sync::Arc<EngineStats>,
    shutting_down: bool,
    /// Encoder time per unit of LLM time while both have work: `share / (1 - share)`.
    encoder_ratio: f64,
    /// Moving average of the LLM step time (seconds), for sizing encoder slices.
    llm_step: f64,
}

/// Shortest encoder slice while the LLM is busy (so tiny LLM steps do not reduce the
/// encoder to one layer of one input per step).
const MIN_ENCODER_SLICE: Duration = Duration::from_millis(2);

/// How often a thread with only held-back sequences wakes to drop those whose client
/// went away.
const HELD_POLL: Duration = Duration::from_millis(100);

impl EngineThread {
    /// Assembles the thread's state; at least one side should be present.
    /// `encoder_share` (in `(0, 1)`) is the part of the device the encoder gets while
    /// LLM sequences run.
    pub fn new(
        llm: Option<Engine>,
        encoder: Option<EncoderWorker>,
        stats: std::sync::Arc<EngineStats>,
        encoder_share: f64,
    ) -> Self {
        let share = encoder_share.clamp(0.01, 0.99);
        Self {
            llm,
            encoder,
            stats,
            shutting_down: false,
            encoder_ratio: share / (1.0 - share),
            llm_step: 0.03,
        }
    }

    fn idle(&self) -> bool {
        self.llm.as_ref().is_none_or(Engine::is_idle)
            && self.encoder.as_ref().is_none_or(|e| !e.has_work())
    }

    /// Whether the only work is LLM sequences held back by an admission pause.
    fn held(&self) -> bool {
        self.llm.as_ref().is_some_and(Engine::is_held)
            && self.encoder.as_ref().is_none_or(|e| !e.has_work())
    }

    /// Runs until shutdown (or every handle is dropped) and nothing is left.
    pub fn run(mut self, rx: Receiver<Command>) {
        if let Some(llm) = &self.llm {
            llm.publish();
        }
        while self.intake(&rx) {
            let mut llm_busy = false;
            if let Some(llm) = &mut self.llm {
                let stepped = !llm.is_idle() && !llm.is_held();
                let t = Instant::now();
                llm.tick();
                if stepped {
                    self.llm_step = 0.8 * self.llm_step + 0.2 * t.elapsed().as_secs_f64();
                }
                // Held-back sequences compute nothing: the encoder may run flat out.
                llm_busy = !llm.is_idle() && !llm.is_held();
            }
            if let Some(enc) = &mut self.encoder
                && enc.has_work()
            {
                let budget = llm_busy.then(|| {
                    Duration::from_secs_f64(self.llm_step * self.encoder_ratio)
                        .max(MIN_ENCODER_SLICE)
                });
                enc.run_slice(budget);
                let waiting = self.stats.encoder_waiting.load(Ordering::Acquire);
                metrics::gauge!(crate::metrics::ENCODER_WAITING).set(waiting as f64);
            }
        }
        tracing::info!("engine loop stopped");
    }

    /// Takes in pending commands; blocks when there is nothing to do. False to exit.
    fn intake(&mut self, rx: &Receiver<Command>) -> bool {
        if self.idle() {
            if self.shutting_down {
                return false;
            }
            match rx.recv() {
                Ok(cmd) => self.handle(cmd),
                Err(_) => return false,
            }
        } else if self.held() {
            if self.shutting_down {
                self.release_held();
            } else {
                match rx.recv_timeout(HELD_POLL) {
                    Ok(cmd) => self.handle(cmd),
                    Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => self.shutting_down = true,
                }
            }
        }
        loop {
            match rx.try_recv() {
                Ok(cmd) => self.handle(cmd),
                Err(TryRecvError::Empty) => return true,
                Err(TryRecvError::Disconnected) => {
                    self.shutting_down = true;
                    return !self.idle();
                }
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add(req) => match &mut self.llm {
                Some(llm) => llm.add(req),
                None => {
                    self.stats.waiting.fetch_sub(1, Ordering::AcqRel);
                    let _ = req
                        .events
                        .send(TokenEvent::Error("this server runs no LLM".into()));
                }
            },
            Command::Encode(job) => match &mut self.encoder {
                Some(enc) => enc.add(job),
                None => {
                    let n = job.inputs.len();
                    self.stats.encoder_waiting.fetch_sub(n, Ordering::AcqRel);
                    let _ = job.reply.send(Err("this server runs no encoder".into()));
                }
            },
            Command::SetAdmissionPaused(paused) => {
                if let Some(llm) = &mut self.llm {
                    llm.set_admission_paused(paused);
                }
            }
            Command::Shutdown => self.shutting_down = true,
        }
    }

    /// Shutting down while a pause holds sequences back: fail them (nothing else
    /// would ever run them).
    fn release_held(&mut self) {
        if let Some(llm) = &mut self.llm {
            let n = llm.fail_held_back(
                "the server is shutting down while the admission of new requests is paused",
            );
            tracing::warn!(
                sequences = n,
                "shutting down during an admission pause: failed the sequences held back"
            );
        }
    }
}
