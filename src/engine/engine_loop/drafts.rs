//! The engine's side of speculative decoding (see `engine::speculate`): proposing
//! drafts before a step, and verifying them from the step's rows after it.
//!
//! Invariants: a sequence's `draft` holds exactly the drafts the scheduler counts for
//! it (set when proposed, cut to what was scheduled right after `schedule`, emptied
//! when verified); a row is sampled exactly as it would be without speculation, and
//! only tokens equal to the draft at their position extend the accepted run.

use std::sync::atomic::Ordering;

use super::Engine;
use crate::engine::kv_manager::SeqId;
use crate::engine::sampler::Sampled;
use crate::engine::scheduler::ScheduledSeq;
use crate::engine::speculate::find_draft;
use crate::metrics as m;
use crate::model::decoder::StepOutput;

/// One sampling row of a step's output.
pub(super) enum Row {
    /// Logits to sample from.
    Logits(Vec<f32>),
    /// The token the device already picked (plain greedy).
    Token(u32),
}

/// A step's sampling rows, handed out in batch order.
pub(super) enum Rows {
    Logits(std::vec::IntoIter<Vec<f32>>),
    Tokens(std::vec::IntoIter<u32>),
}

impl From<StepOutput> for Rows {
    fn from(out: StepOutput) -> Self {
        match out {
            StepOutput::Logits(rows) => Rows::Logits(rows.into_iter()),
            StepOutput::Tokens(tokens) => Rows::Tokens(tokens.into_iter()),
        }
    }
}

impl Rows {
    /// The next `n` rows (fewer if the output ran short).
    pub(super) fn take(&mut self, n: usize) -> Vec<Row> {
        match self {
            Rows::Logits(it) => it.by_ref().take(n).map(Row::Logits).collect(),
            Rows::Tokens(it) => it.by_ref().take(n).map(Row::Token).collect(),
        }
    }
}

/// Draft tokens per sequence while a prompt waits for prefill under the step time
/// budget: drafts are decode work inside the budget, so long ones would take the
/// prefill's share of each step (time to first token), while one still lets an
/// accepted guess double a stream's tokens per step.
const YIELDING_DRAFT: usize = 1;

impl Engine {
    /// Proposes prompt-lookup drafts for the decoding sequences that speculate, while
    /// the step stays within the row cap; at most [`YIELDING_DRAFT`] tokens each while
    /// a prompt waits for prefill under the step time budget
    /// (`Scheduler::drafts_yield_to_prefill`).
    pub(super) fn propose_drafts(&mut self) {
        if !self.spec.enabled() {
            return;
        }
        let max_draft = if self.scheduler.drafts_yield_to_prefill() {
            YIELDING_DRAFT.min(self.spec.max_draft)
        } else {
            self.spec.max_draft
        };
        let mut rows = self
            .spec
            .row_cap
            .saturating_sub(self.scheduler.num_running());
        let mut ids: Vec<SeqId> = self
            .seqs
            .iter()
            .filter(|(_, s)| s.spec.is_some() && s.generated() > 0)
            .map(|(&id, _)| id)
            .collect();
        // Oldest first, as the scheduler runs them.
        ids.sort_unstable();
        for id in ids {
            if rows == 0 {
                break;
            }
            let Some(seq) = self.seqs.get_mut(&id) else {
                continue;
            };
            let room = seq
                .remaining(self.max_seq_len)
                .saturating_sub(1)
                .min(rows)
                .min(max_draft);
            let want = seq.spec.as_mut().map_or(0, |s| s.want(room));
            let draft = find_draft(&seq.tokens, want);
            if !draft.is_empty() && self.scheduler.propose_draft(id, draft.len()) {
                seq.draft = draft.to_vec();
                rows -= draft.len();
            }
        }
    }

    /// Cuts every sequence's draft to what the scheduler kept for this step.
    pub(super) fn trim_drafts(&mut self) {
        for (&id, seq) in self.seqs.iter_mut() {
            if !seq.draft.is_empty() {
                seq.draft.truncate(self.scheduler.draft_len(id));
            }
        }
    }

    /// Samples `rows` of sequence `s` in order, appending each token; a token that
    /// differs from the draft at its position ends the run (it is the model's own
    /// next token, kept), as does the sequence finishing. Then settles the draft.
    pub(super) fn verify(&mut self, s: &ScheduledSeq, rows: Vec<Row>) {
        let id = s.id;
        let draft = self
            .seqs
            .get_mut(&id)
            .map(|q| std::mem::take(&mut q.draft))
            .unwrap_or_default();
        let mut accepted = 0;
        for (i, row) in rows.into_iter().enumerate() {
            let Some(sampled): Option<Sampled> = self.pick(id, row) else {
                return;
            };
            let matches = draft.get(i) == Some(&sampled.id);
            accepted += usize::from(matches);
            if !self.take(id, sampled) || !matches {
                break;
            }
        }
        if s.draft == 0 {
            return;
        }
        let st = &self.stats;
        st.draft_tokens.fetch_add(s.draft, Ordering::AcqRel);
        st.accepted_tokens.fetch_add(accepted, Ordering::AcqRel);
        metrics::counter!(m::SPEC_DRAFT_TOKENS_TOTAL, "model" => self.label.clone())
            .increment(s.draft as u64);
        metrics::counter!(m::SPEC_ACCEPTED_TOKENS_TOTAL, "model" => self.label.clone())
            .increment(accepted as u64);
        let max = self.spec.max_draft;
        if let Some(state) = self.seqs.get_mut(&id).and_then(|q| q.spec.as_mut()) {
            state.record(s.draft, accepted, max);
        }
        self.scheduler.settle_draft(id, accepted);
    }
}
