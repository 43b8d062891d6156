//! The encoder inside the engine thread, next to the LLM: encoder activations come out
//! of the same memory budget as the KV cache, and encoder jobs finish while long LLM
//! sequences keep running (neither side starves the other).

mod common;

use std::time::Instant;

use common::engine::{collect, config, greedy, submit};
use ferrite::engine::encode::EncodeJob;
use ferrite::engine::start::{
    EncoderEngineConfig, EncoderParts, LlmParts, StartedEngine, start_engine,
};
use ferrite::engine::types::{FinishReason, SamplingParams};
use ferrite::model::ModelInfo;
use ferrite::model::encoder::{Encoder, EncoderInfo};
use ferrite::model::loader::load_gguf;

fn llm() -> LlmParts {
    let model = load_gguf(&common::default_model()).expect("default model loads");
    let info = ModelInfo {
        id: "test".into(),
        context_length: model.llama.config().context_length,
        device: "cpu".into(),
        created: 0,
    };
    LlmParts {
        model: model.into(),
        info,
    }
}

fn encoder() -> EncoderParts {
    let dir = common::repo_root().join("tests/fixtures/encoders/bert_cross_encoder");
    let model = Encoder::load(&dir).expect("fixture loads");
    let cfg = model.encoder.config().clone();
    EncoderParts {
        info: EncoderInfo {
            id: "ce".into(),
            task: cfg.task,
            labels: cfg.labels.clone(),
            dims: cfg.hidden,
            max_len: cfg.max_len,
            vocab: cfg.vocab,
            created: 0,
        },
        model,
        config: EncoderEngineConfig {
            batch_tokens: 64,
            max_waiting: 1000,
            share: 0.3,
        },
    }
}

fn both() -> StartedEngine {
    start_engine(Some(llm()), Some(encoder()), &config()).expect("starts")
}

#[test]
fn encoder_activations_come_out_of_the_kv_budget() {
    let alone = start_engine(Some(llm()), None, &config()).unwrap();
    let shared = both();
    let budget = config().kv_cache_bytes;
    assert_eq!(alone.memory.encoder_activation_bytes, 0);
    let m = shared.memory;
    assert!(m.encoder_activation_bytes > 0);
    assert!(
        m.kv_cache_bytes + m.encoder_activation_bytes <= budget,
        "{m:?}"
    );
    assert!(m.kv_cache_bytes < alone.memory.kv_cache_bytes);
    assert!(shared.handle.stats().blocks_total < alone.handle.stats().blocks_total);
    // A budget that cannot hold the encoder's activations is refused with the numbers.
    let tiny = ferrite::engine::start::EngineConfig {
        kv_cache_bytes: 1000,
        ..config()
    };
    let err = start_engine(Some(llm()), Some(encoder()), &tiny)
        .err()
        .unwrap();
    assert!(err.to_string().contains("encoder's activations"), "{err}");
}

#[test]
fn encoder_jobs_finish_while_long_sequences_run() {
    let e = both();
    let served = e.served.as_ref().unwrap();
    let enc = e.encoder.as_ref().unwrap();
    let prompt = served
        .tokenizer
        .encode("Tell me a long story about the sea.")
        .unwrap();
    let long = SamplingParams {
        ignore_eos: true,
        ..greedy(300)
    };
    let streams: Vec<_> = (0..4)
        .map(|_| submit(&e.handle, &prompt, long.clone()))
        .collect();
    let inputs: Vec<_> = (0..20)
        .map(|i| {
            enc.tokenizer
                .pair("which one", &format!("document number {i}"), true)
                .unwrap()
        })
        .collect();
    let t0 = Instant::now();
    let (reply, rx) = tokio::sync::oneshot::channel();
    let encoder = e.encoder_handle.clone().expect("an encoder is served");
    encoder.encode(EncodeJob { inputs, reply }).unwrap();
    let scores = rx.blocking_recv().unwrap().unwrap();
    let encoded_in = t0.elapsed();
    assert_eq!(scores.len(), 20);
    let t1 = Instant::now();
    for rx in streams {
        let (ids, _, reason) = collect(rx);
        assert_eq!(reason, FinishReason::Length);
        assert_eq!(ids.len(), 300);
    }
    let llm_rest = t1.elapsed();
    assert!(
        encoded_in < llm_rest,
        "the encoder job ({encoded_in:?}) waited for the LLM sequences ({llm_rest:?} more)"
    );
    assert_eq!(encoder.stats().encoder_waiting, 0);
}
