//! Prompt-lookup speculative decoding on the real default model: outputs are exactly
//! those without it (greedy, seeded sampling, stop strings, `max_tokens`, batched),
//! drafts are accepted where the answer quotes its prompt, a request can opt out, no
//! KV block leaks, and the HTTP server reports the acceptance in `/metrics`.

mod common;

use common::engine::{collect, config, engine, greedy, submit, wait_idle};
use common::sse::{metric_sum, post_json, scrape};
use common::{Server, chat_body, merged};
use ferrite::engine::start::{EngineConfig, StartedEngine};
use ferrite::engine::types::SamplingParams;
use serde_json::json;

const PASSAGE: &str = "The mitochondrion is the powerhouse of the cell. It turns glucose \
and oxygen into ATP through cellular respiration, and it carries its own small circular \
genome, inherited from the mother.";

fn with_speculation(tokens: usize) -> EngineConfig {
    EngineConfig {
        speculative_tokens: tokens,
        ..config()
    }
}

fn prompts(e: &StartedEngine) -> Vec<Vec<u32>> {
    let tok = &e.served.as_ref().expect("an LLM is served").tokenizer;
    let copy = format!(
        "<|im_start|>user\nRepeat this text word for word: {PASSAGE}<|im_end|>\n\
         <|im_start|>assistant\nThe mitochondrion is"
    );
    let summary = format!(
        "<|im_start|>user\n{PASSAGE}\n\nWhat does the mitochondrion turn into ATP? Quote \
         the text.<|im_end|>\n<|im_start|>assistant\n"
    );
    [
        copy.as_str(),
        summary.as_str(),
        "List of prime numbers: 2, 3, 5,",
        "1, 2, 3, 1, 2, 3, 1, 2,",
        "The capital of France is",
    ]
    .iter()
    .map(|p| tok.encode(p).unwrap())
    .collect()
}

/// The parameter sets compared: greedy, greedy with a stop string and penalties, and
/// seeded sampling.
fn param_sets() -> Vec<SamplingParams> {
    vec![
        greedy(48),
        SamplingParams {
            stop: vec!["ATP".into()],
            repetition_penalty: 1.1,
            ..greedy(48)
        },
        SamplingParams {
            temperature: 0.8,
            top_p: 0.95,
            seed: Some(7),
            max_tokens: 40,
            ..SamplingParams::default()
        },
    ]
}

#[test]
fn outputs_are_the_same_with_and_without_speculation() {
    let plain = engine(config());
    let spec = engine(with_speculation(4));
    let ps = prompts(&plain);
    for params in param_sets() {
        let want: Vec<_> = ps
            .iter()
            .map(|p| collect(submit(&plain.handle, p, params.clone())))
            .collect();
        // One at a time, then all together (drafts within a batch).
        for (p, w) in ps.iter().zip(&want) {
            assert_eq!(
                &collect(submit(&spec.handle, p, params.clone())),
                w,
                "{params:?}"
            );
        }
        let rxs: Vec<_> = ps
            .iter()
            .map(|p| submit(&spec.handle, p, params.clone()))
            .collect();
        for (rx, w) in rxs.into_iter().zip(&want) {
            assert_eq!(&collect(rx), w, "batched, {params:?}");
        }
    }
    wait_idle(&spec.handle);
    let s = spec.handle.stats();
    assert!(s.draft_tokens > 0, "no draft was proposed: {s:?}");
    assert!(
        s.accepted_tokens * 4 >= s.draft_tokens,
        "copying text should accept at least a quarter of the drafts: {s:?}"
    );
    assert_eq!(plain.handle.stats().draft_tokens, 0);
}

#[test]
fn max_tokens_is_exact_and_a_request_can_opt_out() {
    let spec = engine(with_speculation(6));
    let ps = prompts(&spec);
    for n in [1, 2, 5, 13] {
        let (ids, _, reason) = collect(submit(&spec.handle, &ps[0], greedy(n)));
        assert_eq!(ids.len(), n);
        assert_eq!(reason.as_str(), "length");
    }
    let before = spec.handle.stats().draft_tokens;
    assert!(before > 0, "the copy prompt drafts");
    let off = SamplingParams {
        speculative: false,
        ..greedy(32)
    };
    let with = collect(submit(&spec.handle, &ps[0], greedy(32)));
    // The counters of a step are published after its tokens are sent.
    wait_idle(&spec.handle);
    let drafted = spec.handle.stats().draft_tokens;
    let without = collect(submit(&spec.handle, &ps[0], off));
    assert_eq!(with, without);
    wait_idle(&spec.handle);
    assert_eq!(
        spec.handle.stats().draft_tokens,
        drafted,
        "opted out, yet drafted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_server_reports_acceptance_and_keeps_answers() {
    let server = Server::start(&[]);
    let client = reqwest::Client::new();
    let url = format!("{}/v1/chat/completions", server.url);
    let body = chat_body(
        &format!("Repeat this text word for word: {PASSAGE}"),
        json!({"temperature": 0, "max_tokens": 40}),
    );
    let (status, _, on) = post_json(&client, &url, &body).await;
    assert_eq!(status, 200, "{on}");
    let off_body = merged(body.clone(), json!({"speculative": false}));
    let (status, _, off) = post_json(&client, &url, &off_body).await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(
        on["choices"][0]["message"]["content"],
        off["choices"][0]["message"]["content"]
    );
    let metrics = scrape(&client, &server.url).await;
    let drafted = metric_sum(&metrics, "ferrite_speculative_draft_tokens_total");
    let accepted = metric_sum(&metrics, "ferrite_speculative_accepted_tokens_total");
    assert!(
        drafted > 0.0 && accepted > 0.0,
        "{drafted} drafted, {accepted} accepted"
    );
    let bad_body = merged(body, json!({"speculative": "yes"}));
    let (status, _, bad) = post_json(&client, &url, &bad_body).await;
    assert_eq!(status, 400, "{bad}");
}
