//! Engine-level tests on the real default model, driving the engine thread directly
//! (no HTTP): batch invariance, chunked prefill, preemption with recompute, and
//! aborts on disconnect, each checked against the output of the request run alone.

mod common;

use common::engine::{collect, config, engine, greedy, submit, wait_idle};
use ferrite::engine::start::{EngineConfig, StartedEngine};
use ferrite::engine::types::{FinishReason, SamplingParams, TokenEvent};

fn prompts(e: &StartedEngine) -> Vec<Vec<u32>> {
    let tok = &e.served.as_ref().expect("an LLM is served").tokenizer;
    [
        "The capital of France is",
        "def fibonacci(n):\n    ",
        "Once upon a time, in a small village,",
        "The three primary colors are",
        "List of prime numbers: 2, 3, 5,",
        "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
        "Water boils at",
        "The quick brown fox",
    ]
    .iter()
    .map(|p| tok.encode(p).unwrap())
    .collect()
}

#[test]
fn outputs_are_identical_alone_and_among_31_others() {
    let e = engine(config());
    let ps = prompts(&e);
    let alone: Vec<_> = ps
        .iter()
        .map(|p| collect(submit(&e.handle, p, greedy(24))))
        .collect();
    let rxs: Vec<_> = (0..32)
        .map(|i| submit(&e.handle, &ps[i % ps.len()], greedy(24)))
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        let got = collect(rx);
        assert_eq!(
            got,
            alone[i % ps.len()],
            "sequence {i} differs when batched"
        );
    }
    wait_idle(&e.handle);
}

#[test]
fn chunked_prefill_gives_the_same_tokens() {
    let whole = engine(config());
    let chunked = engine(EngineConfig {
        max_batched_tokens: 7,
        ..config()
    });
    let long = whole
        .served
        .as_ref()
        .expect("an LLM is served")
        .tokenizer
        .encode(&"A long prompt about rivers and mountains. ".repeat(12))
        .unwrap();
    assert!(long.len() > 50);
    let a = collect(submit(&whole.handle, &long, greedy(16)));
    // A decode stream runs beside the chunked prompt, so chunks share steps with it.
    let side = submit(&chunked.handle, &prompts(&chunked)[0], greedy(40));
    let b = collect(submit(&chunked.handle, &long, greedy(16)));
    assert_eq!(a, b);
    collect(side);
    wait_idle(&chunked.handle);
}

#[test]
fn preempted_sequences_recompute_and_finish_identically() {
    let reference = engine(config());
    let ps = prompts(&reference);
    let want: Vec<_> = ps
        .iter()
        .map(|p| collect(submit(&reference.handle, p, greedy(40))))
        .collect();
    // 11520 f16 values per token = 23040 bytes; 14 blocks of 16 tokens = 224 tokens
    // for 8 sequences that each grow to ~50-60 tokens: preemption is unavoidable.
    let tight = engine(EngineConfig {
        kv_cache_bytes: 14 * 16 * 23040,
        ..config()
    });
    let rxs: Vec<_> = ps
        .iter()
        .map(|p| submit(&tight.handle, p, greedy(40)))
        .collect();
    for (i, rx) in rxs.into_iter().enumerate() {
        assert_eq!(collect(rx), want[i], "prompt {i} changed under preemption");
    }
    assert!(
        tight.handle.stats().preemptions > 0,
        "the test must exercise preemption"
    );
    wait_idle(&tight.handle);
}

#[test]
fn dropped_receivers_free_their_blocks() {
    let e = engine(config());
    let ps = prompts(&e);
    let mut rxs: Vec<_> = ps
        .iter()
        .map(|p| submit(&e.handle, p, greedy(4000)))
        .collect();
    // The engine publishes its stats after each step, i.e. after it sent that step's
    // tokens: a second token proves the step that sent the first one was published,
    // with every sequence still running (each wants 4000 tokens).
    for rx in &mut rxs {
        for _ in 0..2 {
            assert!(matches!(rx.blocking_recv(), Some(TokenEvent::Token { .. })));
        }
    }
    assert!(e.handle.stats().blocks_used > 0);
    drop(rxs);
    wait_idle(&e.handle);
    // The engine still serves afterwards.
    let (_, _, reason) = collect(submit(&e.handle, &ps[0], greedy(3)));
    assert_eq!(reason, FinishReason::Length);
    wait_idle(&e.handle);
}

#[test]
fn same_seed_same_sample_and_stop_strings_end_sequences() {
    let e = engine(config());
    let p = &prompts(&e)[2];
    let sampled = |seed| {
        let params = SamplingParams {
            temperature: 0.9,
            top_p: 0.95,
            seed: Some(seed),
            max_tokens: 16,
            ..SamplingParams::default()
        };
        collect(submit(&e.handle, p, params))
    };
    assert_eq!(sampled(11), sampled(11));
    let (_, text, _) = collect(submit(&e.handle, p, greedy(24)));
    let stop = text
        .trim()
        .split(' ')
        .nth(2)
        .expect("a few words")
        .to_string();
    let params = SamplingParams {
        stop: vec![stop.clone()],
        ..greedy(24)
    };
    let (_, cut, reason) = collect(submit(&e.handle, p, params));
    assert_eq!(reason, FinishReason::Stop);
    assert!(
        !cut.contains(&stop),
        "stop text {stop:?} returned in {cut:?}"
    );
    assert!(text.starts_with(&cut));
    wait_idle(&e.handle);
}

#[test]
fn cached_prompt_prefixes_change_no_output_and_free_their_blocks() {
    let cold = engine(EngineConfig {
        prefix_caching: false,
        ..config()
    });
    let warm = engine(config());
    let tok = &warm.served.as_ref().expect("an LLM is served").tokenizer;
    let system = "You are a careful assistant. Answer in one short sentence. ".repeat(4);
    let prompts: Vec<Vec<u32>> = ["Name a river.", "Name a mountain.", "Name a city."]
        .iter()
        .map(|q| tok.encode(&format!("{system}{q}")).unwrap())
        .collect();
    assert!(
        prompts[0].len() > 48,
        "the shared part spans several blocks"
    );
    // The prompts end in a full stop, after which the model would stop at once.
    let twelve = || SamplingParams {
        ignore_eos: true,
        ..greedy(12)
    };
    let want: Vec<_> = prompts
        .iter()
        .map(|p| collect(submit(&cold.handle, p, twelve())))
        .collect();
    // The first prompt fills the cache; the rest, at once, start from its blocks; the
    // first again is nearly all cached.
    assert_eq!(
        collect(submit(&warm.handle, &prompts[0], twelve())),
        want[0]
    );
    let rxs: Vec<_> = prompts[1..]
        .iter()
        .map(|p| submit(&warm.handle, p, twelve()))
        .collect();
    for (rx, w) in rxs.into_iter().zip(&want[1..]) {
        assert_eq!(collect(rx), *w);
    }
    assert_eq!(
        collect(submit(&warm.handle, &prompts[0], twelve())),
        want[0]
    );
    wait_idle(&warm.handle);
    let stats = warm.handle.stats();
    assert!(
        stats.prefix_cached_tokens >= 3 * 48,
        "{} prompt tokens came from the cache",
        stats.prefix_cached_tokens
    );
    assert_eq!(stats.blocks_used, 0);
    assert_eq!(cold.handle.stats().prefix_cached_tokens, 0);
}
