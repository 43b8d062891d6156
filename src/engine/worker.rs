//! The engine thread's loop: takes in commands, and alternates one LLM step with at
//! most one encoder batch, so neither workload starves the other on the one device.
//!
//! Invariants: the thread blocks on the command channel whenever both sides are idle
//! (it never spins); a command for a side that is not loaded is answered with an
//! error at once; after `Shutdown` (or when every handle is gone) the loop finishes
//! what is queued on both sides, then exits.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, TryRecvError};

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
}

impl EngineThread {
    /// Assembles the thread's state; at least one side should be present.
    pub fn new(
        llm: Option<Engine>,
        encoder: Option<EncoderWorker>,
        stats: std::sync::Arc<EngineStats>,
    ) -> Self {
        Self {
            llm,
            encoder,
            stats,
            shutting_down: false,
        }
    }

    fn idle(&self) -> bool {
        self.llm.as_ref().is_none_or(Engine::is_idle)
            && self.encoder.as_ref().is_none_or(|e| !e.has_work())
    }

    /// Runs until shutdown (or every handle is dropped) and nothing is left.
    pub fn run(mut self, rx: Receiver<Command>) {
        if let Some(llm) = &self.llm {
            llm.publish();
        }
        while self.intake(&rx) {
            if let Some(llm) = &mut self.llm {
                llm.tick();
            }
            if let Some(enc) = &mut self.encoder
                && enc.has_work()
            {
                enc.run_batch();
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
            Command::Shutdown => self.shutting_down = true,
        }
    }
}
