//! Optional timing of the phases of a forward step ([`StepProfile`]), for the step
//! breakdown benchmark. Without a profile the stopwatch reads no clock.

use std::time::{Duration, Instant};

/// The phases of one forward step that [`StepProfile`] times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Token embedding lookup.
    Embed,
    /// RMSNorms (two per layer and the final one).
    Norm,
    /// The Q, K and V projections.
    Qkv,
    /// Rotary embedding of Q and K.
    Rotary,
    /// Writing K and V into the paged cache.
    KvWrite,
    /// Attention over the paged cache.
    Attention,
    /// The attention output projection.
    OutProj,
    /// The FFN gate and up projections.
    FfnGateUp,
    /// SiLU gating.
    Silu,
    /// The FFN down projection.
    FfnDown,
    /// Residual additions.
    Residual,
    /// Output projection to the vocabulary (lm_head), including the copy into rows.
    LmHead,
}

impl Phase {
    /// Every phase, in step order.
    pub const ALL: [Phase; 12] = [
        Phase::Embed,
        Phase::Norm,
        Phase::Qkv,
        Phase::Rotary,
        Phase::KvWrite,
        Phase::Attention,
        Phase::OutProj,
        Phase::FfnGateUp,
        Phase::Silu,
        Phase::FfnDown,
        Phase::Residual,
        Phase::LmHead,
    ];

    /// A short name for tables.
    pub fn name(self) -> &'static str {
        match self {
            Phase::Embed => "embedding",
            Phase::Norm => "rms norms",
            Phase::Qkv => "QKV matmuls",
            Phase::Rotary => "rotary",
            Phase::KvWrite => "KV write",
            Phase::Attention => "attention",
            Phase::OutProj => "output proj",
            Phase::FfnGateUp => "FFN gate+up",
            Phase::Silu => "SiLU gating",
            Phase::FfnDown => "FFN down",
            Phase::Residual => "residual adds",
            Phase::LmHead => "lm_head",
        }
    }
}

/// Wall-clock time spent in each [`Phase`], summed over the steps it was passed to.
#[derive(Debug, Clone, Default)]
pub struct StepProfile {
    times: [Duration; Phase::ALL.len()],
}

impl StepProfile {
    /// Time spent in `phase`.
    pub fn get(&self, phase: Phase) -> Duration {
        self.times[phase as usize]
    }

    /// Sum over all phases.
    pub fn total(&self) -> Duration {
        self.times.iter().sum()
    }
}

/// Stopwatch that charges the time since the previous lap to a phase; inert (reads no
/// clock) without a profile.
pub(super) struct Laps<'a> {
    profile: Option<(&'a mut StepProfile, Instant)>,
}

impl<'a> Laps<'a> {
    pub(super) fn new(profile: Option<&'a mut StepProfile>) -> Self {
        Self {
            profile: profile.map(|p| (p, Instant::now())),
        }
    }

    #[inline]
    pub(super) fn lap(&mut self, phase: Phase) {
        if let Some((p, last)) = &mut self.profile {
            let now = Instant::now();
            p.times[phase as usize] += now - *last;
            *last = now;
        }
    }
}
