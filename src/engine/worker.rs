//! The engine thread's loop: takes in commands, and each turn runs one step of every
//! LLM that has work, then a slice of encoder work, so no model starves another on
//! the one device. Each LLM batches its own sequences (one forward per LLM per turn);
//! while LLM sequences run, the encoders' slice is sized from the measured LLM time of
//! the turn so that they get `encoder_share` of the device (inter-token latency grows
//! by at most about `1 / (1 - share)`), and the encoders with work take turns at it;
//! when no LLM is busy the encoders run flat out, one layer per loop turn so new
//! commands are still taken in between.
//!
//! While admission is paused and the only LLM work is new sequences held back by the
//! pause (and no encoder has work), the thread waits on the command channel with a
//! timeout of `HELD_POLL`, so it does not spin yet still notices clients that leave.
//!
//! Invariants: the thread blocks on the command channel whenever every model is idle
//! (it never spins); work for a slot that holds no model of that kind is answered with
//! `EngineError::NotLoaded` at once; unloading a model fails its queued and running
//! work and frees its memory before `done` is told; after `Shutdown` (or when every
//! handle is gone) the loop finishes what is queued, then exits; sequences still held
//! back by a pause at that point are failed rather than waited for. If the loop
//! panics, the thread marks itself dead (`ThreadHealth`) before the models (and with
//! them every event sender) are dropped, so clients get an error, never a hang.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::time::{Duration, Instant};

use super::encode::EncoderWorker;
use super::engine_loop::Engine;
use super::error::EngineError;
use super::handle::{Command, Installed, ModelSlot, ThreadHealth};
use super::types::TokenEvent;

/// Everything the engine thread owns: every model on the device.
pub struct EngineThread {
    llms: Vec<(ModelSlot, Engine)>,
    encoders: Vec<(ModelSlot, EncoderWorker)>,
    health: Arc<ThreadHealth>,
    shutting_down: bool,
    /// Encoder time per unit of LLM time while both have work: `share / (1 - share)`.
    encoder_ratio: f64,
    /// Moving average of the LLM time of one turn (seconds), for sizing encoder slices.
    llm_turn: f64,
    /// Which encoder with work goes first in the next slice.
    next_encoder: usize,
    /// Whether admission is paused (applied to LLMs installed later too).
    paused: bool,
}

/// Shortest encoder slice while an LLM is busy (so tiny LLM steps do not reduce the
/// encoder to one layer of one input per step).
const MIN_ENCODER_SLICE: Duration = Duration::from_millis(2);

/// How often a thread with only held-back sequences wakes to drop those whose client
/// went away.
const HELD_POLL: Duration = Duration::from_millis(100);

impl EngineThread {
    /// An engine thread with no model yet. `encoder_share` (in `(0, 1)`) is the part
    /// of the device the encoders get while LLM sequences run.
    pub fn new(health: Arc<ThreadHealth>, encoder_share: f64) -> Self {
        let share = encoder_share.clamp(0.01, 0.99);
        Self {
            llms: Vec::new(),
            encoders: Vec::new(),
            health,
            shutting_down: false,
            encoder_ratio: share / (1.0 - share),
            llm_turn: 0.03,
            next_encoder: 0,
            paused: false,
        }
    }

    fn idle(&self) -> bool {
        self.llms.iter().all(|(_, l)| l.is_idle()) && self.encoders_idle()
    }

    fn encoders_idle(&self) -> bool {
        self.encoders.iter().all(|(_, e)| !e.has_work())
    }

    /// Whether the only work is LLM sequences held back by an admission pause.
    fn held(&self) -> bool {
        self.llms.iter().any(|(_, l)| l.is_held())
            && self.llms.iter().all(|(_, l)| l.is_idle() || l.is_held())
            && self.encoders_idle()
    }

    /// Runs until shutdown (or every handle is dropped) and nothing is left. A panic
    /// inside marks the thread dead before its models are dropped.
    pub fn run(self, rx: Receiver<Command>) {
        let health = self.health.clone();
        let mut this = self;
        match std::panic::catch_unwind(AssertUnwindSafe(|| this.run_loop(&rx))) {
            Ok(()) => {
                health.mark_gone(None);
                tracing::info!("engine loop stopped");
            }
            Err(panic) => {
                let msg = panic_message(panic.as_ref());
                tracing::error!(
                    panic = %msg,
                    "the engine thread panicked: every request in flight fails and new ones are refused; restart the server"
                );
                health.mark_gone(Some(msg));
                // The models (and their event senders) drop after the mark, so a
                // client woken by its closed stream already sees the engine dead.
                drop(this);
                drop(rx);
            }
        }
    }

    fn run_loop(&mut self, rx: &Receiver<Command>) {
        while self.intake(rx) {
            let t = Instant::now();
            let mut stepped = false;
            for (_, llm) in &mut self.llms {
                stepped |= !llm.is_idle() && !llm.is_held();
                llm.tick();
            }
            if stepped {
                self.llm_turn = 0.8 * self.llm_turn + 0.2 * t.elapsed().as_secs_f64();
            }
            // Held-back sequences compute nothing: the encoders may run flat out.
            let llm_busy = self.llms.iter().any(|(_, l)| !l.is_idle() && !l.is_held());
            self.run_encoders(llm_busy);
        }
    }

    /// One slice of encoder work, shared by the encoders that have work.
    fn run_encoders(&mut self, llm_busy: bool) {
        let busy: Vec<usize> = (0..self.encoders.len())
            .filter(|&i| self.encoders[i].1.has_work())
            .collect();
        if busy.is_empty() {
            return;
        }
        let budget = llm_busy.then(|| {
            let each = self.llm_turn * self.encoder_ratio / busy.len() as f64;
            Duration::from_secs_f64(each).max(MIN_ENCODER_SLICE)
        });
        let start = self.next_encoder % busy.len();
        for k in 0..busy.len() {
            let i = busy[(start + k) % busy.len()];
            self.encoders[i].1.run_slice(budget);
        }
        self.next_encoder = self.next_encoder.wrapping_add(1);
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

    fn llm(&mut self, slot: ModelSlot) -> Option<&mut Engine> {
        self.llms
            .iter_mut()
            .find(|(s, _)| *s == slot)
            .map(|(_, l)| l)
    }

    fn encoder(&mut self, slot: ModelSlot) -> Option<&mut EncoderWorker> {
        self.encoders
            .iter_mut()
            .find(|(s, _)| *s == slot)
            .map(|(_, e)| e)
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Add { model, req, permit } => match self.llm(model) {
                Some(llm) => llm.add(req, permit),
                None => {
                    let why = "the LLM this request was sent to is not loaded (any more)";
                    let _ = req
                        .events
                        .send(TokenEvent::Error(EngineError::NotLoaded(why.into())));
                }
            },
            Command::Encode { model, job, permit } => match self.encoder(model) {
                Some(enc) => enc.add(job, permit),
                None => {
                    let why = "the encoder this request was sent to is not loaded (any more)";
                    let _ = job.reply.send(Err(EngineError::NotLoaded(why.into())));
                }
            },
            Command::Install { slot, model } => self.install(slot, model),
            Command::Unload { model, done } => {
                self.unload(model);
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::SetAdmissionPaused(paused) => {
                self.paused = paused;
                for (_, llm) in &mut self.llms {
                    llm.set_admission_paused(paused);
                }
            }
            Command::Shutdown => self.shutting_down = true,
            Command::Panic => panic!("engine panic injected for a test (--inject-engine-panic)"),
        }
    }

    fn install(&mut self, slot: ModelSlot, model: Installed) {
        match model {
            Installed::Llm(mut llm) => {
                llm.set_admission_paused(self.paused);
                llm.publish();
                self.llms.push((slot, *llm));
            }
            Installed::Encoder(enc) => self.encoders.push((slot, *enc)),
        }
    }

    fn unload(&mut self, slot: ModelSlot) {
        let why = || EngineError::NotLoaded("the model was unloaded".into());
        if let Some(i) = self.llms.iter().position(|(s, _)| *s == slot) {
            let (_, mut llm) = self.llms.remove(i);
            llm.fail_all(why());
            llm.publish_unloaded();
        }
        if let Some(i) = self.encoders.iter().position(|(s, _)| *s == slot) {
            let (_, mut enc) = self.encoders.remove(i);
            enc.fail_all(why());
        }
    }

    /// Shutting down while a pause holds sequences back: fail them (nothing else
    /// would ever run them).
    fn release_held(&mut self) {
        for (_, llm) in &mut self.llms {
            let n = llm.fail_held_back(
                "the server is shutting down while the admission of new requests is paused",
            );
            if n > 0 {
                tracing::warn!(
                    sequences = n,
                    "shutting down during an admission pause: failed the sequences held back"
                );
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
