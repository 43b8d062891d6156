//! The LLM side of the engine thread: the scheduler, the KV cache and the model. Each
//! `tick` drops sequences whose client went away, plans a step, runs ONE batched
//! forward over every scheduled token, samples, and streams events out. The thread
//! loop itself (commands, encoder interleaving, shutdown) is in `worker.rs`.
//!
//! Invariants: a sequence leaves `seqs` and the scheduler together (so its blocks are
//! freed) when it finishes, fails or loses its client. While admission is paused, a
//! sequence that has never run is neither started nor failed for not fitting; it waits
//! (or is failed by `fail_held_back` when the engine shuts down during the pause).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::error::EngineError;
use super::handle::EngineStats;
use super::kv_manager::{SeqId, block_hashes};
use super::permit::Permit;
use super::sampler::{Sampled, SamplerState};
use super::scheduler::{Scheduler, StepPlan};
use super::sequence::{Progress, Sequence};
use super::text_stream::TextStream;
use super::types::GenerateRequest;
use crate::metrics as m;
use crate::model::decoder::{Runner, StepOutput};
use crate::model::paged_attention::SeqSpan;
use crate::model::tokenizer::ModelTokenizer;
use crate::model::transformer::BatchInput;
use crate::structured::Constraint;
use rayon::prelude::*;

mod drafts;
use super::speculate::{SpecConfig, SpecState};
use drafts::{Row, Rows};

/// Everything the engine thread owns.
pub struct Engine {
    /// The model and its KV cache.
    runner: Runner,
    scheduler: Scheduler,
    tokenizer: Arc<ModelTokenizer>,
    seqs: HashMap<SeqId, Sequence>,
    stats: Arc<EngineStats>,
    /// Longest sequence (prompt + generated) the engine accepts.
    max_seq_len: usize,
    next_id: SeqId,
    /// The `model` label of this LLM's metrics.
    label: String,
    /// Prompt-lookup speculative decoding (see `speculate`).
    spec: SpecConfig,
}

impl Engine {
    /// Assembles an engine; `max_seq_len` must fit both the model and the cache.
    pub fn new(
        runner: Runner,
        scheduler: Scheduler,
        tokenizer: Arc<ModelTokenizer>,
        stats: Arc<EngineStats>,
        max_seq_len: usize,
        label: &str,
    ) -> Self {
        m::init_model_counters(label);
        Self {
            runner,
            scheduler,
            tokenizer,
            seqs: HashMap::new(),
            stats,
            max_seq_len,
            next_id: 0,
            label: label.to_string(),
            spec: SpecConfig::OFF,
        }
    }

    /// Sets speculative decoding for the sequences added from now on.
    pub fn set_speculation(&mut self, spec: SpecConfig) {
        self.spec = spec;
    }

    /// This LLM's counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Fails every sequence, queued or running, with `error` (the model is being
    /// unloaded), freeing their blocks.
    pub fn fail_all(&mut self, error: EngineError) {
        let ids: Vec<SeqId> = self.seqs.keys().copied().collect();
        for id in ids {
            if let Some(seq) = self.seqs.get(&id) {
                seq.fail(error.clone());
            }
            self.remove(id);
        }
    }

    /// Zeroes this model's gauges (it is gone).
    pub fn publish_unloaded(&self) {
        for g in [
            m::REQUESTS_RUNNING,
            m::REQUESTS_WAITING,
            m::KV_BLOCKS_USED,
            m::KV_BLOCKS_TOTAL,
        ] {
            metrics::gauge!(g, "model" => self.label.clone()).set(0.0);
        }
    }

    /// Whether no sequence is queued or running.
    pub fn is_idle(&self) -> bool {
        self.seqs.is_empty()
    }

    /// Whether sequences exist but none can make progress until admission resumes.
    pub fn is_held(&self) -> bool {
        !self.seqs.is_empty() && !self.scheduler.has_runnable()
    }

    /// Pauses or resumes the admission of new sequences (see `Scheduler`).
    pub fn set_admission_paused(&mut self, paused: bool) {
        if paused == self.scheduler.admission_paused() {
            return;
        }
        self.scheduler.set_admission_paused(paused);
        if paused {
            tracing::warn!(
                running = self.scheduler.num_running(),
                waiting = self.scheduler.num_waiting(),
                "admission of new sequences paused; running streams continue"
            );
        } else {
            tracing::info!(
                waiting = self.scheduler.num_waiting(),
                "admission of new sequences resumed"
            );
        }
        self.publish();
    }

    /// Fails every waiting sequence that has never run (those a pause holds back), so
    /// that a shutdown during a pause does not wait for ever. Returns how many.
    pub fn fail_held_back(&mut self, why: &str) -> usize {
        let held = self.scheduler.never_started();
        for &id in &held {
            if let Some(seq) = self.seqs.get(&id) {
                seq.fail(EngineError::Stopped(why.into()));
            }
            self.remove(id);
        }
        self.publish();
        held.len()
    }

    /// One iteration: drops sequences whose client left, runs a step if any
    /// sequence is left, and publishes the counters.
    pub fn tick(&mut self) {
        self.drop_disconnected();
        if !self.seqs.is_empty() {
            self.step();
        }
        self.publish();
    }

    /// Takes in a new sequence (or fails it at once when it can never run).
    /// `permit` is its unit of the waiting queue, held until it is first scheduled.
    pub fn add(&mut self, req: GenerateRequest, permit: Permit) {
        let need = req.prompt_ids.len() + req.params.max_tokens;
        let bad = if req.prompt_ids.is_empty() {
            Some("the prompt is empty".to_string())
        } else if need > self.max_seq_len {
            Some(format!(
                "the request needs {need} tokens ({} prompt + {} to generate) but a sequence may hold {}",
                req.prompt_ids.len(),
                req.params.max_tokens,
                self.max_seq_len
            ))
        } else {
            req.prompt_ids
                .iter()
                .find(|&&t| t as usize >= self.tokenizer.vocab_size())
                .map(|t| format!("token id {t} is outside the vocabulary"))
        };
        if let Some(msg) = bad {
            let _ = req
                .events
                .send(super::types::TokenEvent::Error(EngineError::Invalid(msg)));
            return;
        }
        let id = self.next_id;
        self.next_id += 1;
        metrics::counter!(m::PROMPT_TOKENS_TOTAL, "model" => self.label.clone())
            .increment(req.prompt_ids.len() as u64);
        // The sequence keeps its unit of the admission bound (`stats.waiting`) until it
        // is first scheduled.
        let hashes = if self.scheduler.prefix_caching() {
            block_hashes(&req.prompt_ids, self.scheduler.kv().block_size())
        } else {
            Vec::new()
        };
        self.scheduler
            .add_with_prefix(id, req.prompt_ids.len(), hashes);
        // A grammar's masks follow the output token by token: no drafts there.
        let spec = (self.spec.enabled() && req.params.speculative && req.constraint.is_none())
            .then(|| SpecState::new(self.spec.max_draft));
        self.seqs.insert(
            id,
            Sequence {
                id,
                request_id: req.id,
                prompt_len: req.prompt_ids.len(),
                tokens: req.prompt_ids,
                sampler: SamplerState::new(req.params.seed),
                text: TextStream::new(&req.params.stop),
                params: req.params,
                events: req.events,
                waiting: Some(permit),
                arrived: Instant::now(),
                constraint: req.constraint,
                spec,
                draft: Vec::new(),
            },
        );
    }

    /// Removes a sequence everywhere, freeing its blocks.
    fn remove(&mut self, id: SeqId) {
        self.scheduler.remove(id);
        // Dropping the sequence gives back its waiting unit if it never ran.
        self.seqs.remove(&id);
    }

    fn drop_disconnected(&mut self) {
        let gone: Vec<SeqId> = self
            .seqs
            .values()
            .filter(|s| s.events.is_closed())
            .map(|s| s.id)
            .collect();
        for id in gone {
            tracing::debug!(seq = id, "client disconnected; aborting");
            metrics::counter!(m::CANCELLED_TOTAL, "model" => self.label.clone()).increment(1);
            self.remove(id);
        }
    }

    fn step(&mut self) {
        let started = Instant::now();
        self.propose_drafts();
        let plan = self.scheduler.schedule();
        self.trim_drafts();
        if !plan.preempted.is_empty() {
            metrics::counter!(m::PREEMPTIONS_TOTAL, "model" => self.label.clone())
                .increment(plan.preempted.len() as u64);
            self.stats
                .preemptions
                .fetch_add(plan.preempted.len(), Ordering::AcqRel);
            tracing::debug!(preempted = ?plan.preempted, "out of KV blocks");
        }
        if plan.scheduled.is_empty() {
            self.unblock_stalled_queue();
            return;
        }
        for s in &plan.scheduled {
            if let Some(seq) = self.seqs.get_mut(&s.id) {
                seq.waiting = None;
            }
        }
        // Publish what this step runs before it sends any token: a client that has seen
        // a token of this step then never reads counters older than the step.
        self.publish();
        let input = self.build_batch(&plan);
        metrics::histogram!(m::BATCH_TOKENS, "model" => self.label.clone())
            .record(input.tokens.len() as f64);
        metrics::histogram!(m::BATCH_SEQUENCES, "model" => self.label.clone())
            .record(plan.scheduled.len() as f64);
        // When every row that samples is plain greedy, a device picks the tokens itself.
        let greedy = plan.scheduled.iter().filter(|s| s.samples).all(|s| {
            self.seqs
                .get(&s.id)
                .is_some_and(|q| q.params.is_plain_greedy() && q.constraint.is_none())
        });
        let out = if greedy {
            self.runner.forward_greedy(&input)
        } else {
            self.forward_with_masks(&plan, &input)
        };
        match out {
            Ok(out) => {
                self.sample_all(&plan, out);
                self.scheduler.observe_step(&plan, started.elapsed());
            }
            Err(e) => {
                tracing::error!("forward failed: {e:#}");
                for s in &plan.scheduled {
                    if let Some(seq) = self.seqs.get(&s.id) {
                        seq.fail(EngineError::ModelFailed(format!(
                            "the model failed to run: {e}"
                        )));
                    }
                    self.remove(s.id);
                }
            }
        }
        metrics::histogram!(m::STEP_SECONDS, "model" => self.label.clone())
            .record(started.elapsed().as_secs_f64());
    }

    /// Nothing could be scheduled although sequences exist: only possible when the
    /// head of the queue can never fit. Fail it rather than loop forever.
    fn unblock_stalled_queue(&mut self) {
        if self.scheduler.num_running() > 0 || !self.scheduler.has_runnable() {
            // Running sequences will free blocks, or the head is held by a pause.
            return;
        }
        if let Some(id) = self.scheduler.next_waiting() {
            if let Some(seq) = self.seqs.get(&id) {
                seq.fail(EngineError::DoesNotFit(
                    "the request does not fit in the KV cache".into(),
                ));
            }
            self.remove(id);
        }
    }

    fn build_batch(&self, plan: &StepPlan) -> BatchInput {
        let mut input = BatchInput::default();
        for s in &plan.scheduled {
            let seq = &self.seqs[&s.id];
            let kv = self.scheduler.kv();
            input.spans.push(SeqSpan {
                offset: input.tokens.len(),
                len: s.len,
                start_pos: s.start,
                block_table: kv.block_table(s.id).to_vec(),
            });
            for pos in s.start..s.start + s.len {
                input.tokens.push(seq.token_at(pos));
                input.positions.push(pos);
                input
                    .slots
                    .push(kv.slot(s.id, pos).expect("scheduler granted blocks"));
            }
            if s.samples {
                // The last known token's row, and one per draft token before it.
                let end = input.tokens.len();
                input.logits_rows.extend(end - 1 - s.draft..end);
            }
        }
        input
    }

    /// The forward, with the grammar masks of this step's constrained sampling rows
    /// computed on another thread meanwhile (the forward stays on the engine thread,
    /// which owns the device context). Mask time hides behind the forward up to its
    /// length; only the excess shows in the step time.
    fn forward_with_masks(
        &mut self,
        plan: &StepPlan,
        input: &BatchInput,
    ) -> anyhow::Result<StepOutput> {
        let sampling: HashSet<SeqId> = plan
            .scheduled
            .iter()
            .filter(|s| s.samples)
            .map(|s| s.id)
            .collect();
        let mut constraints: Vec<&mut Constraint> = self
            .seqs
            .iter_mut()
            .filter(|(id, _)| sampling.contains(id))
            .filter_map(|(_, s)| s.constraint.as_deref_mut())
            .collect();
        let runner = &mut self.runner;
        if constraints.is_empty() {
            return runner.forward(input).map(StepOutput::Logits);
        }
        let started = Instant::now();
        std::thread::scope(|scope| {
            let masks = scope.spawn(move || {
                constraints.par_iter_mut().for_each(|c| c.prepare_mask());
                started.elapsed()
            });
            let out = runner.forward(input).map(StepOutput::Logits);
            let forward = started.elapsed();
            if let Ok(mask_time) = masks.join() {
                metrics::histogram!(m::GRAMMAR_MASK_SECONDS, "model" => self.label.clone())
                    .record(mask_time.as_secs_f64());
                let stall = mask_time.saturating_sub(forward);
                metrics::histogram!(m::GRAMMAR_STALL_SECONDS, "model" => self.label.clone())
                    .record(stall.as_secs_f64());
            }
            out
        })
    }

    /// Samples every sampling sequence's rows (one, plus one per draft token) in
    /// batch order and appends what it accepts (see `drafts`).
    fn sample_all(&mut self, plan: &StepPlan, out: StepOutput) {
        let mut rows = Rows::from(out);
        for s in plan.scheduled.iter().filter(|s| s.samples) {
            let mine = rows.take(1 + s.draft);
            self.verify(s, mine);
        }
    }

    /// Picks the token of one logits row of `id` (grammar mask, then the sampler).
    /// `None` when the sequence failed (it is removed).
    fn pick(&mut self, id: SeqId, row: Row) -> Option<Sampled> {
        let mut row = match row {
            Row::Token(token) => {
                return Some(Sampled {
                    id: token,
                    logprobs: None,
                });
            }
            Row::Logits(row) => row,
        };
        let seq = self.seqs.get_mut(&id)?;
        let closing = seq.closing_time(self.max_seq_len);
        if let Some(c) = &mut seq.constraint {
            let eog = &self.tokenizer.eog_ids;
            if let Err(e) = c.apply(&mut row, eog) {
                seq.fail(EngineError::ModelFailed(e));
                self.remove(id);
                return None;
            }
            if closing {
                c.steer_to_close(&mut row, eog);
            }
        }
        Some(seq.sampler.sample(&mut row, &seq.params))
    }

    /// Appends the sampled token to sequence `id`, finishing or dropping it as needed.
    /// True when the sequence goes on.
    fn take(&mut self, id: SeqId, sampled: Sampled) -> bool {
        let Some(seq) = self.seqs.get_mut(&id) else {
            return false;
        };
        metrics::counter!(m::GENERATION_TOKENS_TOTAL, "model" => self.label.clone()).increment(1);
        self.scheduler.append_token(id);
        match seq.accept(sampled, &self.tokenizer, self.max_seq_len) {
            Progress::Continue => return true,
            Progress::Finished(reason) => {
                tracing::debug!(
                    request = %seq.request_id,
                    reason = reason.as_str(),
                    tokens = seq.generated(),
                    secs = seq.arrived.elapsed().as_secs_f64(),
                    "sequence finished"
                );
                self.remove(id);
            }
            Progress::Disconnected => {
                metrics::counter!(m::CANCELLED_TOTAL, "model" => self.label.clone()).increment(1);
                self.remove(id);
            }
            Progress::Failed => self.remove(id),
        }
        false
    }

    /// Publishes the counters read by `/health` and `/metrics`.
    pub fn publish(&self) {
        let kv = self.scheduler.kv();
        let st = &self.stats;
        st.running
            .store(self.scheduler.num_running(), Ordering::Release);
        st.blocks_used.store(kv.num_used(), Ordering::Release);
        st.blocks_total.store(kv.num_total(), Ordering::Release);
        let paused = self.scheduler.admission_paused();
        st.admission_paused.store(paused, Ordering::Release);
        metrics::gauge!(m::ADMISSION_PAUSED, "model" => self.label.clone())
            .set(f64::from(u8::from(paused)));
        metrics::gauge!(m::REQUESTS_RUNNING, "model" => self.label.clone())
            .set(self.scheduler.num_running() as f64);
        metrics::gauge!(m::REQUESTS_WAITING, "model" => self.label.clone())
            .set(self.scheduler.num_waiting() as f64);
        metrics::gauge!(m::KV_BLOCKS_USED, "model" => self.label.clone()).set(kv.num_used() as f64);
        metrics::gauge!(m::KV_BLOCKS_TOTAL, "model" => self.label.clone())
            .set(kv.num_total() as f64);
        let (queried, hits) = self.scheduler.prefix_cache_stats();
        st.prefix_cached_tokens
            .store(hits as usize, Ordering::Release);
        metrics::counter!(m::PREFIX_CACHE_QUERIED_TOKENS_TOTAL, "model" => self.label.clone())
            .absolute(queried);
        metrics::counter!(m::PREFIX_CACHE_HIT_TOKENS_TOTAL, "model" => self.label.clone())
            .absolute(hits);
    }
}
