//! The step time budget of the [`Scheduler`] (see its module docs): the cost model it
//! is fed with, and how many prefill tokens a step with decodes may take.

use std::time::Duration;

use super::{Scheduler, StepPlan};
use crate::engine::step_cost::{StepCost, StepWork};

/// Prefill tokens a step may still take under the step time budget.
pub(super) struct PrefillRoom {
    /// The work of this step's decodes; `None`: the budget does not apply.
    decodes: Option<StepWork>,
    /// Prefill tokens left, fixed at the first prefill of the step.
    left: Option<usize>,
}

impl PrefillRoom {
    pub(super) fn new(decodes: Option<StepWork>) -> Self {
        Self {
            decodes,
            left: None,
        }
    }

    /// Records `len` tokens scheduled for a sequence that had `left` to compute.
    pub(super) fn take(&mut self, left: usize, len: usize) {
        if left > 1
            && let Some(room) = &mut self.left
        {
            *room = room.saturating_sub(len);
        }
    }
}

impl Scheduler {
    /// Sets the step time target while decodes run (see the module docs); 0 (or any
    /// value not above 0) turns it off.
    pub fn set_max_step_ms(&mut self, ms: f64) {
        self.max_step_ms = (ms > 0.0 && ms.is_finite()).then_some(ms);
    }

    /// Records how long the step that ran `plan` took (feeds the cost model).
    pub fn observe_step(&mut self, plan: &StepPlan, took: Duration) {
        let work = plan.scheduled.iter().fold(StepWork::default(), |w, s| {
            w.plus(StepWork::chunk(s.start, s.len))
        });
        let ms = took.as_secs_f64() * 1e3;
        tracing::debug!(
            target: "ferrite::step_cost",
            tokens = work.tokens,
            pairs = work.pairs,
            ms,
            predicted_ms = self.cost.predict(work).unwrap_or(f64::NAN),
            "step"
        );
        self.cost.observe(work, ms);
    }

    /// Whether speculative drafts should shrink this step: the step time budget is on
    /// and a prompt is waiting for prefill (a running sequence still has prompt left,
    /// or the queue's head may be admitted). Drafts are decode work inside the budget,
    /// so long ones would leave the prefill less of each step; the engine keeps them
    /// short until no prompt waits.
    pub fn drafts_yield_to_prefill(&self) -> bool {
        if self.max_step_ms.is_none() {
            return false;
        }
        let prefilling = self.running.iter().any(|id| {
            let c = self.seqs[id];
            c.num_tokens - c.num_computed - c.num_draft > 1
        });
        prefilling || self.head_admissible().is_some()
    }

    /// The fitted step cost model.
    pub fn step_cost(&self) -> &StepCost {
        &self.cost
    }

    /// The work of the running sequences that decode this step (one token left, with
    /// its speculative drafts), when
    /// the step time budget applies: a target is set, the cost model is fitted, and
    /// at least one sequence decodes.
    pub(super) fn decode_work(&self) -> Option<StepWork> {
        self.max_step_ms?;
        self.cost.coefficients()?;
        let mut work = None;
        for id in &self.running {
            let c = self.seqs[id];
            let left = c.num_tokens - c.num_computed;
            if left - c.num_draft == 1 {
                let w = StepWork::chunk(c.num_computed, left);
                work = Some(work.map_or(w, |a: StepWork| a.plus(w)));
            }
        }
        work
    }

    /// Tokens a sequence with `left` tokens to compute, from position `start`, may
    /// take under the step time budget (unbounded for decodes and when it is off).
    pub(super) fn room(&self, prefill: &mut PrefillRoom, left: usize, start: usize) -> usize {
        let (Some(base), Some(target)) = (prefill.decodes, self.max_step_ms) else {
            return usize::MAX;
        };
        if left <= 1 {
            return usize::MAX;
        }
        *prefill.left.get_or_insert_with(|| {
            let fit = self
                .cost
                .max_tokens(base, start, target, self.cfg.max_batched_tokens)
                .unwrap_or(self.cfg.max_batched_tokens);
            fit.max(self.kv.block_size())
        })
    }
}

#[cfg(test)]
mod tests;
