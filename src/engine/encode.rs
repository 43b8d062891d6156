//! Encoder work on the engine thread: a FIFO of jobs (one per HTTP request, each a
//! list of tokenized inputs) cut into batches bounded by a token budget. A batch may
//! hold the tail of one job and the head of the next, so concurrent requests share
//! forwards (dynamic batching). A batch runs one layer at a time ([`Pass`]): the
//! engine loop gives the encoder a time slice between two LLM steps
//! ([`EncoderWorker::run_slice`]), so a long batch is spread over several steps and
//! LLM streams keep their pace while encoder traffic flows.
//!
//! Invariants: every job gets exactly one reply (all outputs in input order, or an
//! error) unless its requester went away, in which case its remaining inputs are
//! dropped unrun; `stats.encoder_waiting` counts inputs queued and not yet started
//! (each job's [`Permit`] holds its unstarted inputs' units, released as they start
//! and given back whole when the job leaves the queue any other way);
//! at most one batch is in flight, and jobs are only removed from the queue when none
//! is (so the in-flight batch's job indices stay valid).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::error::EngineError;
use super::handle::EngineStats;
use super::permit::Permit;
use crate::metrics as m;
use crate::model::encoder::Encoder;
use crate::model::encoder::bert::{PackedBatch, Pass};
use crate::model::encoder::tokenize::Encoded;

/// What a job's requester receives: one output per input, in order.
pub type EncodeResult = Result<Vec<Vec<f32>>, EngineError>;

/// One request's encoder inputs.
#[derive(Debug)]
pub struct EncodeJob {
    /// Tokenized inputs (each within the encoder's length limit).
    pub inputs: Vec<Encoded>,
    /// Where the outputs go.
    pub reply: oneshot::Sender<EncodeResult>,
}

struct Pending {
    inputs: Vec<Encoded>,
    outputs: Vec<Vec<f32>>,
    reply: oneshot::Sender<EncodeResult>,
    arrived: Instant,
    /// Units of the encoder queue for the inputs not started yet.
    permit: Permit,
}

impl Pending {
    fn next(&self) -> usize {
        self.outputs.len()
    }
}

/// A batch part-way through the encoder, and whose inputs it holds.
struct InFlight {
    pass: Pass,
    /// `(job index in the queue, inputs of that job in the batch)`, in batch order.
    taken: Vec<(usize, usize)>,
}

/// Measured cost of encoder work: seconds per token per layer (moving average).
#[derive(Debug, Clone, Copy)]
struct Cost {
    per_token_layer: f64,
}

impl Cost {
    fn observe(&mut self, took: Duration, tokens: usize) {
        let sample = took.as_secs_f64() / tokens.max(1) as f64;
        self.per_token_layer = 0.8 * self.per_token_layer + 0.2 * sample;
    }

    fn layer(&self, tokens: usize) -> Duration {
        Duration::from_secs_f64(self.per_token_layer * tokens as f64)
    }
}

/// The encoder and its queue, owned by the engine thread.
pub struct EncoderWorker {
    encoder: Encoder,
    queue: VecDeque<Pending>,
    batch_tokens: usize,
    stats: Arc<EngineStats>,
    in_flight: Option<InFlight>,
    cost: Cost,
    /// The `model` label of this encoder's metrics.
    label: String,
}

impl EncoderWorker {
    /// A worker that runs batches of at most `batch_tokens` tokens (a single input
    /// longer than that runs alone).
    pub fn new(
        encoder: Encoder,
        batch_tokens: usize,
        stats: Arc<EngineStats>,
        label: &str,
    ) -> Self {
        Self {
            label: label.to_string(),
            encoder,
            queue: VecDeque::new(),
            batch_tokens: batch_tokens.max(1),
            stats,
            in_flight: None,
            // A first guess (a small BERT on one core); replaced by measurements.
            cost: Cost {
                per_token_layer: 50e-6,
            },
        }
    }

    /// Queues a job; `permit` holds its inputs' units of `stats.encoder_waiting`.
    pub fn add(&mut self, job: EncodeJob, permit: Permit) {
        if job.inputs.is_empty() {
            let _ = job.reply.send(Ok(Vec::new()));
            return;
        }
        self.queue.push_back(Pending {
            outputs: Vec::with_capacity(job.inputs.len()),
            inputs: job.inputs,
            reply: job.reply,
            arrived: Instant::now(),
            permit,
        });
        self.publish();
    }

    /// This encoder's counters.
    pub fn stats(&self) -> &Arc<EngineStats> {
        &self.stats
    }

    /// Publishes the queue gauge.
    pub fn publish(&self) {
        let waiting = self.stats.encoder_waiting.get();
        metrics::gauge!(m::ENCODER_WAITING, "model" => self.label.clone()).set(waiting as f64);
    }

    /// Fails every queued job (and the batch in flight) with `error`.
    pub fn fail_all(&mut self, error: EngineError) {
        self.in_flight = None;
        for p in self.queue.drain(..) {
            finish(p, Some(error.clone()), &self.label);
        }
        self.publish();
    }

    /// Whether any job waits.
    pub fn has_work(&self) -> bool {
        !self.queue.is_empty()
    }

    /// Runs one whole batch (every layer): finishes the one in flight, or starts one
    /// of up to `batch_tokens` and runs it to the end. (The engine loop uses
    /// `run_slice`; tests use this to step batch by batch.)
    #[cfg(test)]
    fn run_batch(&mut self) {
        if self.in_flight.is_none() && !self.start_batch(None) {
            return;
        }
        while self.in_flight.is_some() {
            self.run_slice(None);
        }
    }

    /// Gives the encoder a slice of the device. With `Some(budget)`, starts a batch
    /// small enough that one layer fits the budget (if none is in flight) and runs
    /// layers while the next one is expected to end within the budget (always at
    /// least one); with `None`, starts a batch of up to `batch_tokens` and runs one
    /// layer. Replies to every job the batch completes.
    pub fn run_slice(&mut self, budget: Option<Duration>) {
        let t0 = Instant::now();
        if self.in_flight.is_none() && !self.start_batch(budget) {
            return;
        }
        loop {
            let Some(fl) = self.in_flight.as_mut() else {
                return;
            };
            let tokens = fl.pass.tokens();
            let started = Instant::now();
            let done = self.encoder.advance(&mut fl.pass);
            self.cost.observe(started.elapsed(), tokens);
            if done {
                self.complete();
                return;
            }
            match budget {
                Some(b) if t0.elapsed() + self.cost.layer(tokens) <= b => {}
                _ => return,
            }
        }
    }

    /// Packs the next batch and computes its embeddings. True if a batch is now in
    /// flight.
    fn start_batch(&mut self, budget: Option<Duration>) -> bool {
        self.drop_abandoned();
        let cap = match budget {
            None => self.batch_tokens,
            Some(b) => {
                let per_token = self.cost.per_token_layer.max(1e-9);
                ((b.as_secs_f64() / per_token) as usize).clamp(1, self.batch_tokens)
            }
        };
        let (batch, taken) = self.pack(cap);
        if taken.is_empty() {
            return false;
        }
        for &(job, n) in &taken {
            self.queue[job].permit.release(n);
        }
        metrics::histogram!(m::ENCODER_BATCH_TOKENS, "model" => self.label.clone())
            .record(batch.ids.len() as f64);
        match self.encoder.begin(&batch) {
            Ok(pass) => {
                self.in_flight = Some(InFlight { pass, taken });
                true
            }
            Err(e) => {
                self.fail(&taken, &format!("{e:#}"));
                false
            }
        }
    }

    /// Hands a finished batch's outputs to its jobs; replies to completed ones.
    fn complete(&mut self) {
        let mut fl = self.in_flight.take().expect("a batch is in flight");
        match self.encoder.finish(&mut fl.pass) {
            Ok(outputs) => {
                let mut outputs = outputs.into_iter();
                for &(job, n) in &fl.taken {
                    self.queue[job].outputs.extend(outputs.by_ref().take(n));
                }
                while self
                    .queue
                    .front()
                    .is_some_and(|p| p.outputs.len() == p.inputs.len())
                {
                    let done = self.queue.pop_front().expect("front exists");
                    finish(done, None, &self.label);
                }
            }
            Err(e) => self.fail(&fl.taken, &format!("{e:#}")),
        }
    }

    /// Fails every job with inputs in a batch (their other inputs are dropped).
    fn fail(&mut self, taken: &[(usize, usize)], error: &str) {
        tracing::error!("encoder forward failed: {error}");
        let err = EngineError::ModelFailed(format!("the encoder failed to run: {error}"));
        for &(job, _) in taken.iter().rev() {
            // Dropping it gives back its inputs not started yet.
            let failed = self.queue.remove(job).expect("job index is valid");
            finish(failed, Some(err.clone()), &self.label);
        }
    }

    /// Inputs of the front jobs, in order, up to the budget: `(job index, count)`.
    fn pack(&self, cap: usize) -> (PackedBatch, Vec<(usize, usize)>) {
        let mut batch = PackedBatch::default();
        let mut taken = Vec::new();
        'jobs: for (j, p) in self.queue.iter().enumerate() {
            let mut n = 0;
            for input in &p.inputs[p.next()..] {
                let fits = batch.ids.len() + input.ids.len() <= cap;
                if !fits && !batch.lens.is_empty() {
                    if n > 0 {
                        taken.push((j, n));
                    }
                    break 'jobs;
                }
                batch.push(&input.ids, &input.type_ids);
                n += 1;
            }
            if n > 0 {
                taken.push((j, n));
            }
        }
        (batch, taken)
    }

    fn drop_abandoned(&mut self) {
        let mut kept = VecDeque::with_capacity(self.queue.len());
        for p in self.queue.drain(..) {
            if p.reply.is_closed() {
                metrics::counter!(m::CANCELLED_TOTAL, "model" => self.label.clone()).increment(1);
            } else {
                kept.push_back(p);
            }
        }
        self.queue = kept;
    }
}

fn finish(p: Pending, error: Option<EngineError>, label: &str) {
    metrics::histogram!(m::ENCODER_LATENCY_SECONDS, "model" => label.to_string())
        .record(p.arrived.elapsed().as_secs_f64());
    let result = match error {
        Some(e) => Err(e),
        None => Ok(p.outputs),
    };
    let _ = p.reply.send(result);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::encoder::tokenize::EncoderTokenizer;

    fn worker(batch_tokens: usize) -> (EncoderWorker, EncoderTokenizer, Arc<EngineStats>) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/encoders/bert_cross_encoder");
        let loaded = Encoder::load(&dir).expect("fixture loads");
        let stats = Arc::new(EngineStats::default());
        (
            EncoderWorker::new(loaded.encoder, batch_tokens, stats.clone(), "test"),
            loaded.tokenizer,
            stats,
        )
    }

    fn job(
        w: &mut EncoderWorker,
        stats: &EngineStats,
        tok: &EncoderTokenizer,
        docs: &[&str],
    ) -> oneshot::Receiver<EncodeResult> {
        let inputs: Vec<Encoded> = docs
            .iter()
            .map(|d| tok.pair("a query", d, true).unwrap())
            .collect();
        let permit = stats.encoder_waiting.acquire(inputs.len());
        let (reply, rx) = oneshot::channel();
        w.add(EncodeJob { inputs, reply }, permit);
        rx
    }

    #[test]
    fn a_device_encoder_serves_jobs_through_the_worker_slice_by_slice() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let emu = crate::device::emulator::EmuDevice::shared_in(&root.join("target/emu-kernels"))
            .expect("the kernel emulator builds");
        let dev: Arc<dyn crate::device::kernels::Device> = emu;
        let dir = root.join("tests/fixtures/encoders/bert_cross_encoder");
        let loaded = Encoder::load_on_device(&dir, None, dev).expect("loads on the emulator");
        let layers = loaded.encoder.layers();
        let stats = Arc::new(EngineStats::default());
        let mut w = EncoderWorker::new(loaded.encoder, 10_000, stats.clone(), "dev");
        let (mut cpu, tok, cpu_stats) = worker(10_000);
        let docs = ["one", "two three", "four five six"];
        let mut rx = job(&mut w, &stats, &tok, &docs);
        let mut want = job(&mut cpu, &cpu_stats, &tok, &docs);
        // A zero budget: every slice runs one layer of a one-input batch.
        let mut slices = 0;
        while w.has_work() {
            w.run_slice(Some(Duration::ZERO));
            slices += 1;
            assert!(slices <= 100, "the worker made no progress");
        }
        assert_eq!(slices, docs.len() * layers, "one layer per slice");
        cpu.run_batch();
        let (got, want) = (
            rx.try_recv().unwrap().unwrap(),
            want.try_recv().unwrap().unwrap(),
        );
        assert_eq!(got.len(), docs.len());
        for (g, w) in got.iter().zip(&want) {
            assert!(
                (g[0] - w[0]).abs() <= 2e-2 + 2e-2 * w[0].abs(),
                "{g:?} vs {w:?}"
            );
        }
        assert_eq!(stats.encoder_waiting.get(), 0);
    }

    #[test]
    fn one_batch_serves_several_requests_and_outputs_do_not_depend_on_batching() {
        let (mut w, tok, stats) = worker(10_000);
        let docs: [&[&str]; 3] = [&["one", "two"], &["three"], &["four", "five", "six"]];
        let mut rxs: Vec<_> = docs.iter().map(|d| job(&mut w, &stats, &tok, d)).collect();
        w.run_batch();
        assert!(!w.has_work(), "one batch took all three requests");
        assert_eq!(stats.encoder_waiting.get(), 0);
        let together: Vec<Vec<Vec<f32>>> = rxs
            .iter_mut()
            .map(|rx| rx.try_recv().unwrap().unwrap())
            .collect();
        // Each request alone, and a tiny budget that splits requests across batches.
        let (mut tiny, _, tiny_stats) = worker(1);
        for (d, want) in docs.iter().zip(&together) {
            let mut rx = job(&mut tiny, &tiny_stats, &tok, d);
            for _ in 0..d.len() {
                assert!(tiny.has_work());
                tiny.run_batch();
            }
            let alone = rx.try_recv().unwrap().unwrap();
            assert_eq!(alone.len(), want.len());
            for (a, b) in alone.iter().zip(want) {
                assert!((a[0] - b[0]).abs() < 1e-5, "{a:?} vs {b:?}");
            }
        }
        assert_eq!(tiny_stats.encoder_waiting.get(), 0);
    }

    #[test]
    fn a_budget_cuts_batches_fifo_and_abandoned_requests_are_dropped() {
        let (mut w, tok, stats) = worker(16);
        let mut first = job(&mut w, &stats, &tok, &["one", "two", "three"]);
        let dropped = job(&mut w, &stats, &tok, &["four", "five"]);
        let mut last = job(&mut w, &stats, &tok, &["six"]);
        drop(dropped);
        let mut batches = 0;
        while w.has_work() {
            w.run_batch();
            batches += 1;
            assert!(batches < 10, "the queue drains");
        }
        assert!(
            batches >= 2,
            "a 16-token budget cannot hold 4 pairs at once"
        );
        assert_eq!(first.try_recv().unwrap().unwrap().len(), 3);
        assert_eq!(last.try_recv().unwrap().unwrap().len(), 1);
        assert_eq!(stats.encoder_waiting.get(), 0);
    }

    #[test]
    fn time_slices_spread_batches_over_calls_with_the_same_results() {
        let docs = ["one", "two", "three"];
        let (mut w, tok, stats) = worker(10_000);
        let mut rx = job(&mut w, &stats, &tok, &docs);
        w.run_batch();
        let whole = rx.try_recv().unwrap().unwrap();

        let (mut s, _, s_stats) = worker(10_000);
        let layers = s.encoder.layers();
        let mut rx = job(&mut s, &s_stats, &tok, &docs);
        let mut slices = 0;
        while s.has_work() {
            // A zero budget: one-input batches, one layer per call.
            s.run_slice(Some(Duration::ZERO));
            slices += 1;
            assert!(slices <= docs.len() * layers, "the queue drains");
            if s.has_work() {
                assert!(rx.try_recv().is_err(), "no reply before the last input ran");
            }
        }
        assert_eq!(
            slices,
            docs.len() * layers,
            "one layer of one input per slice"
        );
        assert_eq!(s_stats.encoder_waiting.get(), 0);
        let sliced = rx.try_recv().unwrap().unwrap();
        for (a, b) in sliced.iter().zip(&whole) {
            assert!((a[0] - b[0]).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn a_job_abandoned_mid_batch_is_dropped_after_it_and_others_still_answered() {
        let (mut w, tok, stats) = worker(10_000);
        let gone = job(&mut w, &stats, &tok, &["one", "two"]);
        w.run_slice(Some(Duration::ZERO));
        drop(gone);
        let mut kept = job(&mut w, &stats, &tok, &["three"]);
        let mut calls = 0;
        while w.has_work() {
            w.run_slice(None);
            calls += 1;
            assert!(calls < 100, "the queue drains");
        }
        assert_eq!(kept.try_recv().unwrap().unwrap().len(), 1);
        assert_eq!(stats.encoder_waiting.get(), 0);
    }
}
