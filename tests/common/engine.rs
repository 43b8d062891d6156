//! Driving the engine thread directly (no HTTP) on the default model: start an
//! engine, submit sequences, collect their events.

use ferrite::engine::handle::EngineHandle;
use ferrite::engine::start::{EngineConfig, StartedEngine, start};
use ferrite::engine::types::{FinishReason, GenerateRequest, SamplingParams, TokenEvent};
use ferrite::model::ModelInfo;
use ferrite::model::loader::load_gguf;
use tokio::sync::mpsc;

/// Loads the default model and starts an engine with `cfg`.
pub fn engine(cfg: EngineConfig) -> StartedEngine {
    let loaded = load_gguf(&super::default_model()).expect("default model loads");
    let info = ModelInfo {
        id: "test".into(),
        context_length: loaded.llama.config().context_length,
        device: "cpu".into(),
        created: 0,
    };
    start(loaded, info, &cfg).expect("engine starts")
}

/// A roomy configuration (256 MiB of KV cache).
pub fn config() -> EngineConfig {
    EngineConfig {
        kv_cache_bytes: 256 << 20,
        block_size: 16,
        max_batched_tokens: 512,
        max_num_seqs: 64,
        max_waiting: 1024,
        max_model_len: None,
        prefix_caching: true,
        max_step_ms: 0.0,
        speculative_tokens: 0,
    }
}

/// Greedy sampling of up to `max_tokens` tokens.
pub fn greedy(max_tokens: usize) -> SamplingParams {
    SamplingParams {
        temperature: 0.0,
        max_tokens,
        ..SamplingParams::default()
    }
}

/// Submits one sequence and returns its event receiver.
pub fn submit(
    h: &EngineHandle,
    prompt: &[u32],
    params: SamplingParams,
) -> mpsc::UnboundedReceiver<TokenEvent> {
    let (tx, rx) = mpsc::unbounded_channel();
    let req = GenerateRequest {
        id: "t".into(),
        prompt_ids: prompt.to_vec(),
        params,
        events: tx,
        constraint: None,
    };
    h.submit(vec![req]).expect("submit");
    rx
}

/// Drains a sequence: (token ids, text, finish reason).
pub fn collect(mut rx: mpsc::UnboundedReceiver<TokenEvent>) -> (Vec<u32>, String, FinishReason) {
    let (mut ids, mut text) = (Vec::new(), String::new());
    while let Some(ev) = rx.blocking_recv() {
        match ev {
            TokenEvent::Token { id, text: t, .. } => {
                ids.push(id);
                text.push_str(&t);
            }
            TokenEvent::Done {
                text: t,
                finish_reason,
                ..
            } => {
                text.push_str(&t);
                return (ids, text, finish_reason);
            }
            TokenEvent::Error(e) => panic!("sequence failed: {e}"),
        }
    }
    panic!("stream ended without Done");
}

/// Waits (up to 10 s) until the engine has nothing running or waiting and every KV
/// block is back; panics with its stats otherwise.
pub fn wait_idle(h: &EngineHandle) {
    let t0 = std::time::Instant::now();
    while t0.elapsed() < std::time::Duration::from_secs(10) {
        let s = h.stats();
        if s.running == 0 && s.blocks_used == 0 && s.waiting == 0 {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    panic!("engine not idle: {:?}", h.stats());
}
