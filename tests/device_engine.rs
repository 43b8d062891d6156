//! The whole engine (scheduler, KV cache, sampling) on the device decoder, run on the
//! kernel emulator, against the same engine on the CPU decoder, on a tiny synthetic
//! model: concurrent greedy streams (sampled on the device: only ids come back) and a
//! stream asking for logprobs (sampled on the host from the device's logits) give the
//! same tokens on both, and every KV block is free afterwards.

mod common;

#[path = "gpu_kernels/emu.rs"]
mod emu;

use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use common::TempFile;
use common::engine::{collect, greedy, submit};
use ferrite::device::kernels::Device;
use ferrite::engine::start::{EngineConfig, LlmParts, StartedEngine, start_engine};
use ferrite::engine::types::SamplingParams;
use ferrite::model::ModelInfo;
use ferrite::model::decoder::Decoder;
use ferrite::model::device_decoder::DeviceDecoder;
use ferrite::model::gguf_writer::SyntheticModel;
use ferrite::model::loader::{LoadedModel, load_gguf, load_gguf_with};

fn config() -> EngineConfig {
    EngineConfig {
        kv_cache_bytes: 8 << 20,
        block_size: 16,
        max_batched_tokens: 64,
        max_num_seqs: 8,
        max_waiting: 64,
        max_model_len: None,
        prefix_caching: true,
        max_step_ms: 0.0,
        speculative_tokens: 0,
    }
}

fn engine(model: LoadedModel<Decoder>, device: &str) -> StartedEngine {
    let info = ModelInfo {
        id: "tiny".into(),
        context_length: model.llama.config().context_length,
        device: device.into(),
        created: 0,
    };
    start_engine(Some(LlmParts { model, info }), None, &config()).expect("engine starts")
}

/// Runs the same requests on `e`: three greedy streams at once (prompts long enough to
/// be prefilled in chunks beside each other), then one with logprobs.
fn run(e: &StartedEngine) -> Vec<Vec<u32>> {
    let exactly = |n| SamplingParams {
        ignore_eos: true,
        ..greedy(n)
    };
    let prompts: [Vec<u32>; 3] = [
        (0..40).map(|i| (i * 7 + 3) % 300).collect(),
        vec![1, 64, 65, 66, 300, 17],
        (0..23).map(|i| (i * 13 + 5) % 300).collect(),
    ];
    let rxs: Vec<_> = prompts
        .iter()
        .map(|p| submit(&e.handle, p, exactly(6)))
        .collect();
    let mut out: Vec<Vec<u32>> = rxs.into_iter().map(|rx| collect(rx).0).collect();
    let with_logprobs = SamplingParams {
        logprobs: Some(2),
        ..exactly(4)
    };
    out.push(collect(submit(&e.handle, &prompts[1], with_logprobs)).0);
    out
}

fn wait_blocks_free(e: &StartedEngine) {
    let t0 = Instant::now();
    while e.handle.stats().blocks_used != 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "KV blocks still held"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn engine_on_the_device_decoder_matches_the_cpu_engine() {
    let file = TempFile::new("device-engine.gguf");
    SyntheticModel::tiny(GgmlDType::Q8_0)
        .write(&file.0)
        .unwrap();

    let cpu = engine(load_gguf(&file.0).unwrap().into(), "cpu");
    let want = run(&cpu);
    wait_blocks_free(&cpu);

    let dev: Arc<dyn Device> = emu::emulator();
    let loaded = load_gguf_with(&file.0, |src| DeviceDecoder::load(dev.clone(), src)).unwrap();
    let on_device = loaded.map(|m| Decoder::Device {
        model: Box::new(m),
        kv_budget: 4 << 20,
    });
    let gpu = engine(on_device, "emulator");
    let got = run(&gpu);
    wait_blocks_free(&gpu);

    assert_eq!(got, want, "tokens on the device decoder vs the CPU decoder");
    assert!(got.iter().take(3).all(|t| t.len() == 6) && got[3].len() == 4);
}
