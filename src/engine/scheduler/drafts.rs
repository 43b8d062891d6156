//! Speculative drafts in the [`Scheduler`]'s counts.
//!
//! A decoding sequence (one token left to compute) may be given `k` draft tokens
//! before a step ([`Scheduler::propose_draft`]): they count as known tokens, so the
//! step computes the last token and the drafts together, and their rows' logits verify
//! them. Afterwards [`Scheduler::settle_draft`] keeps the accepted ones as computed and
//! forgets the rest (their K/V slots are simply overwritten later; blocks that held
//! only rejected positions go back to the pool).
//!
//! Invariants: drafts never preempt another sequence (they are cut to the blocks that
//! are free, and to the step's token budget), and a draft that is not scheduled in the
//! step it was proposed for is dropped at the end of `schedule`, so outside a step's
//! plan-to-settle window no sequence holds drafts.

use super::{Scheduler, StepPlan};
use crate::engine::kv_manager::SeqId;

impl Scheduler {
    /// Adds `k` draft tokens after `id`'s last token for the next step. False (and
    /// nothing changed) unless `id` is running and decoding: exactly one token left,
    /// no draft yet.
    pub fn propose_draft(&mut self, id: SeqId, k: usize) -> bool {
        if k == 0 || !self.running.contains(&id) {
            return false;
        }
        let Some(c) = self.seqs.get_mut(&id) else {
            return false;
        };
        if c.num_draft != 0 || c.num_tokens - c.num_computed != 1 {
            return false;
        }
        c.num_tokens += k;
        c.num_draft = k;
        true
    }

    /// After the step that verified `id`'s scheduled drafts: the first `accepted` of
    /// them stay computed (they equal the tokens sampled for their positions), the rest
    /// are forgotten, and blocks past the sequence's next position are released. The
    /// caller then appends the sampled tokens with `append_token` as usual.
    pub fn settle_draft(&mut self, id: SeqId, accepted: usize) {
        let Some(c) = self.seqs.get_mut(&id) else {
            return;
        };
        let accepted = accepted.min(c.num_draft);
        let rejected = c.num_draft - accepted;
        c.num_tokens -= c.num_draft;
        c.num_computed -= rejected;
        c.num_draft = 0;
        let next = c.num_computed + 1;
        self.kv.truncate(id, next);
    }

    /// Drafts `id` currently holds (proposed, or scheduled and not yet settled).
    pub fn draft_len(&self, id: SeqId) -> usize {
        self.seqs.get(&id).map_or(0, |c| c.num_draft)
    }

    /// Keeps only the first `keep` of `id`'s drafts.
    pub(super) fn cut_draft(&mut self, id: SeqId, keep: usize) {
        if let Some(c) = self.seqs.get_mut(&id)
            && c.num_draft > keep
        {
            c.num_tokens -= c.num_draft - keep;
            c.num_draft = keep;
        }
    }

    /// Cuts `id`'s drafts so that, with its own token, they fit in `budget` tokens and
    /// in the blocks that are free now (a draft never forces a preemption).
    pub(super) fn fit_draft(&mut self, id: SeqId, budget: usize) {
        let Some(c) = self.seqs.get(&id).copied() else {
            return;
        };
        if c.num_draft == 0 {
            return;
        }
        let mut keep = c.num_draft.min(budget.saturating_sub(1));
        while keep > 0
            && !self
                .kv
                .can_allocate(self.kv.missing_blocks(id, c.num_computed + 1 + keep))
        {
            keep -= 1;
        }
        self.cut_draft(id, keep);
    }

    /// Drops the drafts of every sequence this plan does not verify.
    pub(super) fn drop_unscheduled_drafts(&mut self, plan: &StepPlan) {
        let stale: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(id, c)| c.num_draft > 0 && !plan.scheduled.iter().any(|s| s.id == **id))
            .map(|(id, _)| *id)
            .collect();
        for id in stale {
            self.cut_draft(id, 0);
        }
    }
}

#[cfg(test)]
mod tests;
