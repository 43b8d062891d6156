//! The engine's admission pause (issue 5: device memory pressure), driven through the
//! engine handle on a tiny synthetic model: a stream that started before the pause runs
//! to the end, identical to its output alone; a request submitted during the pause gets
//! nothing until admission resumes, then its full output; nothing leaks. A held request
//! whose client leaves is freed without any further command, and a shutdown during a
//! pause fails the held request instead of hanging.

mod common;

use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use common::TempFile;
use common::engine::{collect, greedy, submit};
use ferrite::engine::handle::{EngineHandle, StatsSnapshot};
use ferrite::engine::start::{EngineConfig, StartedEngine, start};
use ferrite::engine::types::{FinishReason, SamplingParams, TokenEvent};
use ferrite::model::ModelInfo;
use ferrite::model::gguf_writer::SyntheticModel;
use ferrite::model::loader::load_gguf;
use tokio::sync::mpsc::error::TryRecvError;

fn engine(tag: &str) -> (StartedEngine, TempFile) {
    let file = TempFile::new(&format!("admission-{tag}.gguf"));
    // A long context, so the stream that runs through the pause lasts long enough
    // (thousands of steps) for the counters' poll to see it running on a fast machine.
    SyntheticModel {
        context_length: 8192,
        ..SyntheticModel::tiny(GgmlDType::Q8_0)
    }
    .write(&file.0)
    .expect("writing the synthetic model");
    let loaded = load_gguf(&file.0).expect("the synthetic model loads");
    let info = ModelInfo {
        id: "tiny".into(),
        context_length: loaded.llama.config().context_length,
        device: "cpu".into(),
        created: 0,
    };
    let cfg = EngineConfig {
        kv_cache_bytes: 8 << 20,
        block_size: 16,
        max_batched_tokens: 256,
        max_num_seqs: 16,
        max_waiting: 64,
        max_model_len: None,
        prefix_caching: true,
        max_step_ms: 0.0,
        speculative_tokens: 0,
    };
    (start(loaded, info, &cfg).expect("engine starts"), file)
}

/// Greedy, exactly `n` tokens (the random weights may emit an end token early).
fn exactly(n: usize) -> SamplingParams {
    SamplingParams {
        ignore_eos: true,
        ..greedy(n)
    }
}

/// Polls the engine's counters every millisecond until `ok` holds (10 s at most).
fn wait_for(h: &EngineHandle, what: &str, ok: impl Fn(&StatsSnapshot) -> bool) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(10) {
        if ok(&h.stats()) {
            return;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    panic!("{what}: not reached in 10 s: {:?}", h.stats());
}

fn idle(s: &StatsSnapshot) -> bool {
    s.running == 0 && s.waiting == 0 && s.blocks_used == 0
}

/// Tokens the stream that runs through the pause generates: thousands of decode steps
/// (CI once saw a 440-token stream end between two polls of a 10 ms loop).
const A_LEN: usize = 6000;

#[test]
fn a_started_stream_finishes_during_a_pause_and_a_new_one_starts_after_it() {
    let (e, _file) = engine("flow");
    let h = &e.handle;
    let a_prompt: Vec<u32> = (10..40).collect();
    let b_prompt: Vec<u32> = (100..117).collect();
    let a_alone = collect(submit(h, &a_prompt, exactly(A_LEN)));
    let b_alone = collect(submit(h, &b_prompt, exactly(24)));
    assert_eq!(a_alone.2, FinishReason::Length);
    assert_eq!(a_alone.0.len(), A_LEN);
    wait_for(h, "idle after the reference runs", idle);

    let mut a = submit(h, &a_prompt, exactly(A_LEN));
    let first = a.blocking_recv().expect("a's first event");
    assert!(matches!(first, TokenEvent::Token { .. }), "{first:?}");
    h.set_admission_paused(true).unwrap();
    // Commands are taken in order: b arrives after the pause.
    let mut b = submit(h, &b_prompt, exactly(24));
    // Seen at one moment: paused, a still running, b waiting (a is thousands of steps
    // long, the poll 1 ms).
    wait_for(h, "paused while a runs and b waits", |s| {
        s.admission_paused && s.running == 1 && s.waiting == 1
    });

    let (mut ids, _, reason) = collect(a);
    if let TokenEvent::Token { id, .. } = first {
        ids.insert(0, id);
    }
    assert_eq!(
        (ids, reason),
        (a_alone.0.clone(), a_alone.2),
        "the running stream was not interrupted or changed by the pause"
    );
    assert_eq!(
        b.try_recv(),
        Err(TryRecvError::Empty),
        "b must not start while paused"
    );
    wait_for(h, "a freed, b held", |s| {
        s.running == 0 && s.waiting == 1 && s.blocks_used == 0
    });
    // Several of the engine's poll periods later, b is still held.
    std::thread::sleep(Duration::from_millis(350));
    assert_eq!(b.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(h.stats().blocks_used, 0);

    h.set_admission_paused(false).unwrap();
    assert_eq!(collect(b), b_alone, "b runs in full once admission resumes");
    wait_for(h, "idle and unpaused", |s| idle(s) && !s.admission_paused);
}

#[test]
fn a_held_request_whose_client_leaves_is_dropped_without_further_commands() {
    let (e, _file) = engine("leave");
    let h = &e.handle;
    h.set_admission_paused(true).unwrap();
    let b = submit(h, &[5, 6, 7], exactly(8));
    wait_for(h, "b waits", |s| s.waiting == 1 && s.admission_paused);
    drop(b);
    wait_for(h, "b's slot freed", idle);
    // Admission still works afterwards.
    h.set_admission_paused(false).unwrap();
    let (ids, _, _) = collect(submit(h, &[5, 6, 7], exactly(8)));
    assert_eq!(ids.len(), 8);
}

#[test]
fn shutdown_during_a_pause_fails_held_requests_and_the_thread_exits() {
    let (e, _file) = engine("shutdown");
    let h = e.handle.clone();
    h.set_admission_paused(true).unwrap();
    let mut held = submit(&h, &[5, 6, 7], exactly(8));
    wait_for(&h, "held", |s| s.waiting == 1);
    h.shutdown();
    match held.blocking_recv() {
        Some(TokenEvent::Error(msg)) => assert!(msg.to_string().contains("paused"), "{msg}"),
        other => panic!("expected an error event, got {other:?}"),
    }
    let t0 = Instant::now();
    while !e.thread.is_finished() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "engine thread still running"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(h.stats().waiting, 0);
}
