//! Body of the `request_parsing` fuzz target, shared by path with the corpus test
//! `tests/request_parsing_corpus.rs`: arbitrary bytes go through the model-free half of
//! both completion handlers (`ferrite::api::check::{chat, completion}`: JSON parsing,
//! parameter validation, `messages` / `prompt` shapes), then through the max_tokens
//! arithmetic and the ChatML template, and every outcome is checked:
//!
//! - nothing panics (the fuzzer's main oracle);
//! - an error is a 400, 404 or 413 whose JSON body has OpenAI's shape, never a 5xx;
//! - an accepted request holds only in-range values (n, temperature, top_p, min_p,
//!   penalties, at most 4 non-empty stops, non-empty messages / prompts);
//! - the same bytes give the same answer twice;
//! - an accepted conversation renders, and the rendering holds every message's text;
//! - `max_tokens` resolution never exceeds the operator cap or the context.

use std::time::Duration;

use ferrite::api::ApiLimits;
use ferrite::api::check::{self, CheckedChat, CheckedCompletion};
use ferrite::api::error::ApiError;
use ferrite::api::validate::{self, Checked, Endpoint, PromptInput};
use ferrite::model::chat_template::ChatTemplate;

/// The model id requests must name (or omit).
pub const SERVED: &str = "SmolLM2-135M-Instruct.Q4_1";

/// Context length used for the max_tokens arithmetic.
const CONTEXT: usize = 2048;

/// Runs every check on `data` under two operator configurations (the defaults, and a
/// strict one with `n` <= 1 and `max_tokens` capped at 16).
pub fn run(data: &[u8]) {
    let strict = ApiLimits {
        max_n: 1,
        max_tokens_cap: Some(16),
        sse_keep_alive: Duration::from_secs(1),
        ..ApiLimits::default()
    };
    for limits in [ApiLimits::default(), strict] {
        chat(data, &limits);
        completion(data, &limits);
    }
}

fn chat(data: &[u8], limits: &ApiLimits) {
    let first = check::chat(data, SERVED, limits);
    assert_eq!(
        first,
        check::chat(data, SERVED, limits),
        "not deterministic"
    );
    let CheckedChat {
        checked, messages, ..
    } = match first {
        Ok(c) => c,
        Err(e) => return client_error(&e),
    };
    checked_in_range(&checked, limits, 20);
    assert!(!messages.is_empty(), "accepted an empty conversation");
    for m in &messages {
        assert!(
            matches!(m.role.as_str(), "system" | "user" | "assistant"),
            "role {:?} passed validation",
            m.role
        );
    }
    let template = ChatTemplate::chatml("<s>", "</s>");
    let text = template
        .render(&messages, true)
        .unwrap_or_else(|e| panic!("valid messages failed to render: {e}"));
    for m in &messages {
        assert!(text.contains(&m.content), "rendering lost {:?}", m.content);
    }
    max_tokens(&checked, Endpoint::Chat, limits, text.len());
}

fn completion(data: &[u8], limits: &ApiLimits) {
    let first = check::completion(data, SERVED, limits);
    assert_eq!(
        first,
        check::completion(data, SERVED, limits),
        "not deterministic"
    );
    let CheckedCompletion { checked, prompt } = match first {
        Ok(c) => c,
        Err(e) => return client_error(&e),
    };
    checked_in_range(&checked, limits, 5);
    let longest = match &prompt {
        PromptInput::Texts(t) => {
            assert!(!t.is_empty() && t.iter().all(|s| !s.is_empty()), "{t:?}");
            t.iter().map(String::len).max().unwrap_or(0)
        }
        PromptInput::Ids(ids) => {
            assert!(
                !ids.is_empty() && ids.iter().all(|p| !p.is_empty()),
                "{ids:?}"
            );
            ids.iter().map(Vec::len).max().unwrap_or(0)
        }
    };
    max_tokens(&checked, Endpoint::Completion, limits, longest);
}

/// A rejected request: a client status and a well-formed OpenAI error body.
fn client_error(e: &ApiError) {
    let status = e.status.as_u16();
    assert!(
        matches!(status, 400 | 404 | 413),
        "parsing/validation gave status {status}: {e}"
    );
    assert!(!e.message.is_empty(), "error without a message");
    let body: serde_json::Value = serde_json::from_str(&e.to_json()).expect("error body is JSON");
    let err = &body["error"];
    assert_eq!(err["message"].as_str(), Some(e.message.as_str()));
    assert_eq!(err["type"], "invalid_request_error", "{body}");
    assert!(
        err.get("param").is_some() && err.get("code").is_some(),
        "{body}"
    );
    if let Some(p) = &e.param {
        assert!(!p.is_empty(), "empty param name");
    }
}

/// Every resolved value of an accepted request is within its documented range.
fn checked_in_range(c: &Checked, limits: &ApiLimits, max_logprobs: usize) {
    let p = &c.params;
    assert!((1..=limits.max_n).contains(&c.n), "n = {}", c.n);
    assert!((0.0..=2.0).contains(&p.temperature), "{p:?}");
    assert!(p.top_p > 0.0 && p.top_p <= 1.0, "{p:?}");
    assert!((0.0..=1.0).contains(&p.min_p), "{p:?}");
    assert!((-2.0..=2.0).contains(&p.presence_penalty), "{p:?}");
    assert!((-2.0..=2.0).contains(&p.frequency_penalty), "{p:?}");
    assert!(
        p.stop.len() <= 4 && p.stop.iter().all(|s| !s.is_empty()),
        "{p:?}"
    );
    assert!(p.logprobs.is_none_or(|k| k <= max_logprobs), "{p:?}");
    assert!(c.max_tokens.is_none_or(|m| m >= 1), "{c:?}");
}

/// The completion limit for several prompt lengths: within the cap and the context
/// when granted, a 400 `context_length_exceeded` when not.
fn max_tokens(c: &Checked, endpoint: Endpoint, limits: &ApiLimits, len: usize) {
    let cap = limits.max_tokens_cap;
    for prompt_len in [1, len, CONTEXT - 1, CONTEXT, CONTEXT + len] {
        match validate::max_tokens(prompt_len, c.max_tokens, endpoint, CONTEXT, cap) {
            Ok(m) => {
                assert!(m >= 1, "granted 0 tokens");
                assert!(prompt_len + m <= CONTEXT, "{prompt_len} + {m} > {CONTEXT}");
                assert!(cap.is_none_or(|cap| m <= cap), "{m} over cap {cap:?}");
                if let Some(asked) = c.max_tokens {
                    assert_eq!(m, asked.min(cap.unwrap_or(usize::MAX)), "{c:?}");
                }
            }
            Err(e) => {
                assert_eq!(e.status.as_u16(), 400, "{e}");
                assert_eq!(e.code, Some("context_length_exceeded"), "{e}");
            }
        }
    }
}
