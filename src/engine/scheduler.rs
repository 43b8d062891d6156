//! The scheduler: each step it decides how many tokens every sequence computes, within
//! a token budget and a sequence limit, and grants the KV blocks they need.
//!
//! Shape (vLLM v1): running sequences first, oldest first, each taking what it has left
//! (1 token when decoding, a chunk when prefilling); then waiting sequences, in arrival
//! order, as budget and blocks allow. Chunked prefill is "fewer tokens than the
//! sequence has left". When blocks run out, the newest running sequence is preempted:
//! its blocks are freed and it goes back to the front of the queue to be recomputed.
//!
//! Prefix caching: a sequence added with its prompt's block hashes starts, when it is
//! admitted, from the longest run of its prompt's full blocks that the KV cache
//! already holds (never the whole prompt: at least one token is computed, to get its
//! logits); its own full prompt blocks are registered once computed (at the next
//! `schedule`, when the step that computed them has run).
//!
//! Admission pause (device memory pressure, see `device::memory_gate`): while paused,
//! no sequence that has never run is admitted; running sequences keep stepping (their
//! blocks come from the KV pool, which is allocated once at start, so they take no new
//! device memory), and a preempted sequence may be readmitted for the same reason: a
//! stream that has started is never held back. Preempted sequences sit at the front of
//! the queue, so the queue's order is kept: admission stops at the first new one.
//!
//! Step time budget (`--max-step-ms`): while some running sequence decodes, the
//! prefill tokens of a step are cut so that the step's expected time (a cost model fed
//! with the measured steps, `step_cost`) stays under the target: a long prompt then
//! arrives in smaller chunks between the decodes instead of stalling every stream for
//! a full chunk. Prefill still advances by at least one KV block per step, and with no
//! decode running it takes the whole token budget.
//!
//! It works on plain counts, never on tensors. Invariants: every scheduled sequence
//! holds blocks for all tokens it will have computed after the step; a sequence is in
//! exactly one of `waiting` / `running` until it is removed; removal frees its blocks.

use std::collections::{HashMap, VecDeque};

use super::kv_manager::{BlockHash, KvCacheManager, SeqId};
use super::step_cost::StepCost;

mod drafts;
mod step_budget;
use step_budget::PrefillRoom;

/// Limits of one step.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Most tokens computed in one step (the prefill chunk bound).
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Whether prompts may start from cached prefix blocks (see the module docs).
    pub prefix_caching: bool,
}

/// One sequence's share of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduledSeq {
    /// Which sequence.
    pub id: SeqId,
    /// Position of the first token computed this step.
    pub start: usize,
    /// Tokens computed this step.
    pub len: usize,
    /// True when this step reaches the sequence's last known token, so its logits
    /// yield the next token.
    pub samples: bool,
    /// Speculative draft tokens among the last of `len` (0 without speculation): their
    /// rows' logits verify them, and the step then settles the sequence with
    /// [`Scheduler::settle_draft`].
    pub draft: usize,
}

/// What one step computes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StepPlan {
    /// Sequences computed this step, in batch order.
    pub scheduled: Vec<ScheduledSeq>,
    /// Sequences preempted this step (blocks freed, back in the queue).
    pub preempted: Vec<SeqId>,
}

impl StepPlan {
    /// Total tokens computed this step.
    pub fn num_tokens(&self) -> usize {
        self.scheduled.iter().map(|s| s.len).sum()
    }
}

#[derive(Debug, Clone, Copy)]
struct Counts {
    /// Known tokens: prompt plus generated.
    num_tokens: usize,
    /// Tokens whose K/V are in the cache.
    num_computed: usize,
    /// Prompt length (the prefix cache only covers prompt blocks).
    num_prompt: usize,
    /// Whether it has been admitted at least once (it is running, or was preempted).
    started: bool,
    /// Of `num_tokens`, how many at the end are unverified speculative drafts.
    num_draft: usize,
}

/// A sequence's prompt blocks for the prefix cache.
#[derive(Debug, Default)]
struct Prefix {
    hashes: Vec<BlockHash>,
    /// Blocks already registered.
    registered: usize,
}

/// Continuous-batching scheduler over a paged KV cache.
#[derive(Debug)]
pub struct Scheduler {
    cfg: SchedulerConfig,
    kv: KvCacheManager,
    seqs: HashMap<SeqId, Counts>,
    prefixes: HashMap<SeqId, Prefix>,
    waiting: VecDeque<SeqId>,
    running: Vec<SeqId>,
    /// No new sequence is admitted while set (see the module docs).
    admission_paused: bool,
    /// Prompt tokens looked up in, and found in, the prefix cache.
    prefix_queried: u64,
    prefix_hits: u64,
    /// Target step time in ms while decodes run; `None`: prefill is cut by tokens only.
    max_step_ms: Option<f64>,
    /// Expected step times, fitted from the steps that ran.
    cost: StepCost,
}

impl Scheduler {
    /// A scheduler owning `kv`.
    pub fn new(cfg: SchedulerConfig, kv: KvCacheManager) -> Self {
        assert!(cfg.max_batched_tokens > 0 && cfg.max_num_seqs > 0);
        Self {
            cfg,
            kv,
            seqs: HashMap::new(),
            prefixes: HashMap::new(),
            waiting: VecDeque::new(),
            running: Vec::new(),
            admission_paused: false,
            prefix_queried: 0,
            prefix_hits: 0,
            max_step_ms: None,
            cost: StepCost::new(),
        }
    }

    /// Queues a new sequence with `num_prompt_tokens` tokens to compute.
    pub fn add(&mut self, id: SeqId, num_prompt_tokens: usize) {
        self.add_with_prefix(id, num_prompt_tokens, Vec::new());
    }

    /// Queues a new sequence whose prompt's full blocks have the hashes
    /// `prompt_block_hashes` (see `kv_manager::block_hashes`), so it can start from
    /// cached blocks and leave its own for later sequences.
    pub fn add_with_prefix(
        &mut self,
        id: SeqId,
        num_prompt_tokens: usize,
        prompt_block_hashes: Vec<BlockHash>,
    ) {
        self.seqs.insert(
            id,
            Counts {
                num_tokens: num_prompt_tokens,
                num_computed: 0,
                num_prompt: num_prompt_tokens,
                started: false,
                num_draft: 0,
            },
        );
        if self.cfg.prefix_caching && !prompt_block_hashes.is_empty() {
            self.prefixes.insert(
                id,
                Prefix {
                    hashes: prompt_block_hashes,
                    registered: 0,
                },
            );
        }
        self.waiting.push_back(id);
    }

    /// Pauses (`true`) or resumes the admission of sequences that have never run.
    pub fn set_admission_paused(&mut self, paused: bool) {
        self.admission_paused = paused;
    }

    /// Whether admission of new sequences is paused.
    pub fn admission_paused(&self) -> bool {
        self.admission_paused
    }

    /// Whether the head of the queue may be admitted now as far as the pause goes:
    /// always when not paused, and only if it ran before when paused.
    fn head_admissible(&self) -> Option<SeqId> {
        let id = *self.waiting.front()?;
        (!self.admission_paused || self.seqs.get(&id).is_some_and(|c| c.started)).then_some(id)
    }

    /// Whether a step could compute anything: some sequence runs, or the head of the
    /// queue may be admitted. False while paused with only new sequences waiting,
    /// when the engine has nothing to do until the pause ends.
    pub fn has_runnable(&self) -> bool {
        !self.running.is_empty() || self.head_admissible().is_some()
    }

    /// Whether prefix caching is on.
    pub fn prefix_caching(&self) -> bool {
        self.cfg.prefix_caching
    }

    /// `(prompt tokens looked up, prompt tokens found)` in the prefix cache so far.
    pub fn prefix_cache_stats(&self) -> (u64, u64) {
        (self.prefix_queried, self.prefix_hits)
    }

    /// Records a token appended to `id` (sampled after a step).
    pub fn append_token(&mut self, id: SeqId) {
        if let Some(c) = self.seqs.get_mut(&id) {
            c.num_tokens += 1;
        }
    }

    /// Removes a sequence (finished or aborted) wherever it is and frees its blocks.
    pub fn remove(&mut self, id: SeqId) {
        if self.seqs.remove(&id).is_some() {
            self.running.retain(|&s| s != id);
            self.waiting.retain(|&s| s != id);
        }
        self.prefixes.remove(&id);
        self.kv.free(id);
    }

    /// Plans one step and grants its blocks. Sequences in the plan count their
    /// tokens as computed from now on.
    pub fn schedule(&mut self) -> StepPlan {
        self.register_computed_prefixes();
        let mut plan = StepPlan::default();
        let mut budget = self.cfg.max_batched_tokens;
        let mut prefill = PrefillRoom::new(self.decode_work());
        let mut i = 0;
        while i < self.running.len() && budget > 0 {
            let id = self.running[i];
            self.fit_draft(id, budget);
            let c = self.seqs[&id];
            let left = c.num_tokens - c.num_computed;
            // Drafts ride with their sequence's decode: they are never cut as prefill.
            let own = left - c.num_draft;
            let len = left
                .min(budget)
                .min(self.room(&mut prefill, own, c.num_computed));
            if len == 0 {
                i += 1;
                continue;
            }
            if !self.grant_or_preempt(id, c.num_computed + len, &mut plan) {
                // `id` itself was preempted: it was the newest; nothing after it runs.
                break;
            }
            plan.scheduled.push(self.commit(id, len));
            budget -= len;
            prefill.take(own, len);
            i += 1;
        }
        if plan.preempted.is_empty() {
            self.admit_waiting(&mut budget, &mut prefill, &mut plan);
        }
        self.drop_unscheduled_drafts(&plan);
        plan
    }

    /// Makes room for `id` to hold `num_tokens`, preempting the newest running
    /// sequences as needed. False when `id` had to preempt itself.
    fn grant_or_preempt(&mut self, id: SeqId, num_tokens: usize, plan: &mut StepPlan) -> bool {
        while !self.kv.ensure(id, num_tokens) {
            let Some(victim) = self.running.pop() else {
                return false;
            };
            self.preempt(victim, plan);
            if victim == id {
                return false;
            }
        }
        true
    }

    /// Registers the running sequences' prompt blocks computed by earlier steps.
    fn register_computed_prefixes(&mut self) {
        for id in &self.running {
            let (Some(p), Some(c)) = (self.prefixes.get_mut(id), self.seqs.get(id)) else {
                continue;
            };
            let full = (c.num_computed / self.kv.block_size()).min(p.hashes.len());
            if full > p.registered {
                self.kv.register(*id, &p.hashes[..full]);
                p.registered = full;
            }
        }
    }

    /// Starts a sequence that holds no blocks from its longest cached prompt prefix;
    /// returns the tokens it no longer needs to compute.
    fn take_cached_prefix(&mut self, id: SeqId) -> usize {
        let c = self.seqs[&id];
        let Some(p) = self.prefixes.get_mut(&id) else {
            return 0;
        };
        if c.num_computed != 0 {
            return 0;
        }
        let bs = self.kv.block_size();
        // Leave at least the last prompt token to compute (its logits are sampled).
        let max_blocks = (c.num_prompt.saturating_sub(1) / bs).min(p.hashes.len());
        let hit = self.kv.take_prefix(id, &p.hashes, max_blocks);
        p.registered = hit;
        hit * bs
    }

    fn preempt(&mut self, id: SeqId, plan: &mut StepPlan) {
        self.cut_draft(id, 0);
        self.kv.free(id);
        if let Some(p) = self.prefixes.get_mut(&id) {
            p.registered = 0;
        }
        if let Some(c) = self.seqs.get_mut(&id) {
            c.num_computed = 0;
        }
        self.waiting.push_front(id);
        plan.preempted.push(id);
    }

    fn admit_waiting(
        &mut self,
        budget: &mut usize,
        prefill: &mut PrefillRoom,
        plan: &mut StepPlan,
    ) {
        while *budget > 0 && self.running.len() < self.cfg.max_num_seqs {
            let Some(id) = self.head_admissible() else {
                break;
            };
            let cached = self.take_cached_prefix(id);
            let c = self.seqs.get_mut(&id).expect("waiting sequence is known");
            c.num_computed += cached;
            let c = *c;
            let left = c.num_tokens - c.num_computed;
            let len = left
                .min(*budget)
                .min(self.room(prefill, left, c.num_computed));
            if len == 0 {
                self.release_unadmitted(id, cached);
                break;
            }
            // Keep a watermark of free blocks (1% of the pool, as vLLM does) so that
            // admitting a prompt does not force a preemption at the very next decode.
            let watermark = self.kv.num_total() / 100;
            let need = self.kv.missing_blocks(id, c.num_computed + len);
            if !self.kv.can_allocate(need + watermark) || !self.kv.ensure(id, c.num_computed + len)
            {
                self.release_unadmitted(id, cached);
                break;
            }
            if self.prefixes.contains_key(&id) {
                self.prefix_queried += c.num_prompt as u64;
                self.prefix_hits += cached as u64;
            }
            self.waiting.pop_front();
            self.running.push(id);
            self.seqs.get_mut(&id).expect("known").started = true;
            plan.scheduled.push(self.commit(id, len));
            *budget -= len;
            prefill.take(left, len);
        }
    }

    /// A sequence that took `cached` prefix tokens but is not admitted after all holds
    /// nothing while it waits.
    fn release_unadmitted(&mut self, id: SeqId, cached: usize) {
        if cached > 0 {
            self.kv.free(id);
            self.seqs.get_mut(&id).expect("known").num_computed = 0;
            if let Some(p) = self.prefixes.get_mut(&id) {
                p.registered = 0;
            }
        }
    }

    fn commit(&mut self, id: SeqId, len: usize) -> ScheduledSeq {
        let c = self.seqs.get_mut(&id).expect("scheduled sequence is known");
        let start = c.num_computed;
        c.num_computed += len;
        let samples = c.num_computed == c.num_tokens;
        ScheduledSeq {
            id,
            start,
            len,
            samples,
            draft: if samples { c.num_draft } else { 0 },
        }
    }

    /// The KV cache manager (block tables and slots for building the batch).
    pub fn kv(&self) -> &KvCacheManager {
        &self.kv
    }

    /// The sequence at the head of the queue, the next to be admitted.
    pub fn next_waiting(&self) -> Option<SeqId> {
        self.waiting.front().copied()
    }

    /// The waiting sequences that have never run, in queue order (those a pause holds
    /// back).
    pub fn never_started(&self) -> Vec<SeqId> {
        self.waiting
            .iter()
            .copied()
            .filter(|id| self.seqs.get(id).is_some_and(|c| !c.started))
            .collect()
    }

    /// Sequences waiting (new and preempted).
    pub fn num_waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Sequences running.
    pub fn num_running(&self) -> usize {
        self.running.len()
    }

    /// Whether any sequence is known.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Tokens a single sequence can always be granted in this cache (the pool less
    /// the admission watermark).
    pub fn max_tokens_per_seq(&self) -> usize {
        (self.kv.num_total() - self.kv.num_total() / 100) * self.kv.block_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(blocks: usize, block_size: usize, budget: usize, max_seqs: usize) -> Scheduler {
        Scheduler::new(
            SchedulerConfig {
                max_batched_tokens: budget,
                max_num_seqs: max_seqs,
                prefix_caching: true,
            },
            KvCacheManager::new(blocks, block_size),
        )
    }

    /// Runs a step and appends one token to every sequence that sampled.
    fn step(s: &mut Scheduler) -> StepPlan {
        let plan = s.schedule();
        for sc in &plan.scheduled {
            if sc.samples {
                s.append_token(sc.id);
            }
        }
        plan
    }

    #[test]
    fn long_prompt_is_chunked_under_the_budget_and_decodes_keep_running() {
        let mut s = sched(64, 4, 8, 8);
        s.add(1, 3);
        let p = step(&mut s);
        assert_eq!(
            p.scheduled,
            vec![ScheduledSeq {
                id: 1,
                start: 0,
                len: 3,
                samples: true,
                draft: 0
            }]
        );
        s.add(2, 20);
        let p = step(&mut s);
        assert_eq!(
            p.scheduled[0],
            ScheduledSeq {
                id: 1,
                start: 3,
                len: 1,
                samples: true,
                draft: 0
            }
        );
        assert_eq!(
            p.scheduled[1],
            ScheduledSeq {
                id: 2,
                start: 0,
                len: 7,
                samples: false,
                draft: 0
            }
        );
        let p = step(&mut s);
        assert_eq!(
            p.scheduled[1],
            ScheduledSeq {
                id: 2,
                start: 7,
                len: 7,
                samples: false,
                draft: 0
            }
        );
        let p = step(&mut s);
        assert_eq!(
            p.scheduled[1],
            ScheduledSeq {
                id: 2,
                start: 14,
                len: 6,
                samples: true,
                draft: 0
            }
        );
        assert!(p.num_tokens() <= 8);
        let p = step(&mut s);
        assert_eq!(p.num_tokens(), 2, "both decoding");
    }

    #[test]
    fn max_num_seqs_bounds_running() {
        let mut s = sched(64, 4, 100, 2);
        for id in 0..4 {
            s.add(id, 2);
        }
        let p = step(&mut s);
        assert_eq!(p.scheduled.len(), 2);
        assert_eq!(s.num_running(), 2);
        assert_eq!(s.num_waiting(), 2);
        s.remove(0);
        let p = step(&mut s);
        assert_eq!(
            p.scheduled.iter().map(|x| x.id).collect::<Vec<_>>(),
            vec![1, 2]
        );
    }

    #[test]
    fn exhaustion_preempts_the_newest_and_it_recomputes_later() {
        // 4 blocks of 2 tokens. Two sequences of 3 prompt tokens take 2 blocks each.
        let mut s = sched(4, 2, 64, 8);
        s.add(1, 3);
        s.add(2, 3);
        let p = step(&mut s);
        assert_eq!(
            p.scheduled.len(),
            2,
            "both admitted (the watermark of a 4-block pool is 0)"
        );
        assert_eq!(s.kv().num_free(), 0);
        // Both now know 4 tokens, which still fit in their 2 blocks.
        let p = step(&mut s);
        assert!(p.preempted.is_empty());
        assert_eq!(p.scheduled.len(), 2);
        // Both know 5 tokens; 1 needs a 3rd block for its 5th: preempt the newest, 2.
        let p = step(&mut s);
        assert_eq!(p.preempted, vec![2]);
        assert_eq!(
            p.scheduled,
            vec![ScheduledSeq {
                id: 1,
                start: 4,
                len: 1,
                samples: true,
                draft: 0
            }]
        );
        assert_eq!(s.num_waiting(), 1);
        assert_eq!(s.kv().block_table(2).len(), 0);
        // Sequence 1 finishes; 2 recomputes its 5 known tokens (prompt + 2 generated).
        s.remove(1);
        let p = step(&mut s);
        assert_eq!(
            p.scheduled,
            vec![ScheduledSeq {
                id: 2,
                start: 0,
                len: 5,
                samples: true,
                draft: 0
            }]
        );
    }

    #[test]
    fn a_sequence_that_cannot_grow_preempts_itself_when_it_is_newest() {
        let mut s = sched(2, 2, 64, 8);
        s.add(1, 2);
        s.add(2, 2);
        step(&mut s);
        // Both need a second block; only sequence 1 can have one after 2 is preempted.
        let p = step(&mut s);
        assert_eq!(p.preempted, vec![2]);
        assert_eq!(p.scheduled.len(), 1);
        assert_eq!(s.kv().num_used(), 2);
    }

    #[test]
    fn waiting_sequence_waits_for_blocks_without_failing() {
        let mut s = sched(2, 4, 64, 8);
        s.add(1, 8);
        s.add(2, 4);
        let p = step(&mut s);
        assert_eq!(p.scheduled.len(), 1);
        assert_eq!(s.num_waiting(), 1);
        s.remove(1);
        let p = step(&mut s);
        assert_eq!(p.scheduled[0].id, 2);
    }

    #[test]
    fn abort_anywhere_frees_everything() {
        let mut s = sched(16, 4, 6, 8);
        s.add(1, 10);
        s.add(2, 10);
        s.add(3, 3);
        step(&mut s);
        step(&mut s);
        assert!(s.kv().num_used() > 0);
        for id in [3, 1, 2, 42] {
            s.remove(id);
        }
        assert!(s.is_idle());
        assert_eq!(s.kv().num_used(), 0);
        assert_eq!(s.num_waiting() + s.num_running(), 0);
        assert_eq!(s.schedule(), StepPlan::default());
    }

    #[test]
    fn random_workload_never_leaks_and_never_overcommits() {
        let mut rng = 0x2545F4914F6CDD1Du64;
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut s = sched(24, 4, 16, 6);
        let mut remaining: HashMap<SeqId, usize> = HashMap::new();
        let mut id = 0;
        for _ in 0..2000 {
            if next() % 3 == 0 {
                id += 1;
                s.add(id, 1 + (next() % 30) as usize);
                remaining.insert(id, 1 + (next() % 20) as usize);
            }
            let plan = step(&mut s);
            assert!(plan.num_tokens() <= 16);
            for sc in &plan.scheduled {
                let table = s.kv().block_table(sc.id).len();
                assert!(
                    table * 4 >= sc.start + sc.len,
                    "blocks cover computed tokens"
                );
                if sc.samples {
                    let r = remaining.get_mut(&sc.id).unwrap();
                    *r -= 1;
                    if *r == 0 || next() % 50 == 0 {
                        s.remove(sc.id);
                        remaining.remove(&sc.id);
                    }
                }
            }
            assert!(s.kv().num_used() <= 24);
        }
        for id in remaining.keys().copied().collect::<Vec<_>>() {
            s.remove(id);
        }
        assert_eq!(s.kv().num_used(), 0);
    }

    #[test]
    fn a_cached_prompt_prefix_is_not_recomputed_and_never_the_whole_prompt() {
        use crate::engine::kv_manager::block_hashes;
        let mut s = sched(16, 4, 64, 8);
        let prompt: Vec<u32> = (0..10).collect();
        s.add_with_prefix(1, 10, block_hashes(&prompt, 4));
        let p = s.schedule();
        assert_eq!((p.scheduled[0].start, p.scheduled[0].len), (0, 10));
        s.append_token(1);
        // The next step registers the first two (full) blocks; 2 shares them.
        s.add_with_prefix(2, 10, block_hashes(&prompt, 4));
        let p = s.schedule();
        let second = p.scheduled.iter().find(|x| x.id == 2).unwrap();
        assert_eq!(
            (second.start, second.len),
            (8, 2),
            "8 tokens came from the cache"
        );
        assert_eq!(s.kv().block_table(2)[..2], s.kv().block_table(1)[..2]);
        assert_eq!(s.prefix_cache_stats(), (20, 8));
        // A prompt of exactly two blocks still computes its last token.
        s.add_with_prefix(3, 8, block_hashes(&prompt[..8], 4));
        let p = s.schedule();
        let third = p.scheduled.iter().find(|x| x.id == 3).unwrap();
        assert_eq!((third.start, third.len), (4, 4));
        assert!(third.samples);
        for id in 1..=3 {
            s.remove(id);
        }
        assert_eq!(
            s.kv().num_used(),
            0,
            "shared blocks are freed by their last holder"
        );
    }

    fn ids(p: &StepPlan) -> Vec<SeqId> {
        p.scheduled.iter().map(|x| x.id).collect()
    }

    #[test]
    fn paused_admission_holds_new_sequences_while_running_ones_continue() {
        let mut s = sched(64, 4, 100, 8);
        s.add(1, 5);
        assert_eq!(ids(&step(&mut s)), vec![1]);
        s.set_admission_paused(true);
        assert!(s.admission_paused());
        s.add(2, 3);
        for _ in 0..5 {
            let p = step(&mut s);
            assert_eq!(ids(&p), vec![1], "only the running sequence steps");
            assert!(p.scheduled[0].samples && p.scheduled[0].len == 1);
        }
        assert_eq!((s.num_running(), s.num_waiting()), (1, 1));
        assert!(s.has_runnable());
        assert_eq!(s.kv().block_table(2).len(), 0, "no blocks for the held one");
        // Nothing running and only new sequences waiting: nothing to do.
        s.remove(1);
        assert!(!s.has_runnable());
        assert_eq!(s.schedule(), StepPlan::default());
        assert_eq!(s.never_started(), vec![2]);
        s.set_admission_paused(false);
        assert!(s.has_runnable());
        let p = step(&mut s);
        assert_eq!(
            p.scheduled,
            vec![ScheduledSeq {
                id: 2,
                start: 0,
                len: 3,
                samples: true,
                draft: 0
            }]
        );
        assert!(s.never_started().is_empty());
    }

    #[test]
    fn a_preempted_sequence_resumes_while_paused_but_new_ones_wait() {
        // 4 blocks of 2 tokens: two 3-token prompts fill them (as in the preemption test).
        let mut s = sched(4, 2, 64, 8);
        s.add(1, 3);
        s.add(2, 3);
        step(&mut s);
        step(&mut s);
        s.set_admission_paused(true);
        s.add(3, 2);
        let p = step(&mut s);
        assert_eq!(p.preempted, vec![2]);
        assert_eq!(ids(&p), vec![1]);
        assert_eq!(s.never_started(), vec![3], "2 has run before");
        s.remove(1);
        let p = step(&mut s);
        assert_eq!(ids(&p), vec![2], "the preempted stream goes on, 3 waits");
        assert_eq!((p.scheduled[0].start, p.scheduled[0].len), (0, 5));
        assert_eq!(s.num_waiting(), 1);
        s.remove(2);
        assert!(!s.has_runnable());
        s.set_admission_paused(false);
        assert_eq!(ids(&step(&mut s)), vec![3]);
        s.remove(3);
        assert_eq!(s.kv().num_used(), 0);
    }

    #[test]
    fn without_prefix_caching_hashes_are_ignored() {
        use crate::engine::kv_manager::block_hashes;
        let mut s = Scheduler::new(
            SchedulerConfig {
                max_batched_tokens: 64,
                max_num_seqs: 8,
                prefix_caching: false,
            },
            KvCacheManager::new(16, 4),
        );
        let prompt: Vec<u32> = (0..10).collect();
        s.add_with_prefix(1, 10, block_hashes(&prompt, 4));
        s.schedule();
        s.append_token(1);
        s.add_with_prefix(2, 10, block_hashes(&prompt, 4));
        let p = s.schedule();
        let second = p.scheduled.iter().find(|x| x.id == 2).unwrap();
        assert_eq!((second.start, second.len), (0, 10));
        assert_eq!(s.prefix_cache_stats(), (0, 0));
    }
}
