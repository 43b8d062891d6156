//! One sequence's engine-side state: its tokens, sampler, detokenizer and event sender,
//! and the rules that decide when it is finished.

use std::time::Instant;

use tokio::sync::mpsc;

use super::error::EngineError;
use super::kv_manager::SeqId;
use super::permit::Permit;
use super::sampler::{Sampled, SamplerState};
use super::speculate::SpecState;
use super::text_stream::TextStream;
use super::types::{FinishReason, SamplingParams, TokenEvent, TokenLogprob, TopLogprob, Usage};
use crate::model::tokenizer::ModelTokenizer;
use crate::structured::Constraint;

/// A sequence owned by the engine thread.
pub struct Sequence {
    /// Engine-internal id.
    pub id: SeqId,
    /// Request id, for logs.
    pub request_id: String,
    /// Prompt followed by generated tokens.
    pub tokens: Vec<u32>,
    /// Length of the prompt within `tokens`.
    pub prompt_len: usize,
    /// Sampling parameters.
    pub params: SamplingParams,
    /// Sampler state (RNG, penalty counts).
    pub sampler: SamplerState,
    /// Detokenizer with stop strings.
    pub text: TextStream,
    /// Where events go.
    pub events: mpsc::UnboundedSender<TokenEvent>,
    /// Its unit of the admission queue while it has never been scheduled (dropped, so
    /// given back, at its first step or when it leaves).
    pub waiting: Option<Permit>,
    /// When the engine received it.
    pub arrived: Instant,
    /// The grammar the output follows, if any.
    pub constraint: Option<Box<Constraint>>,
    /// Its speculative drafting state; `None` when it does not speculate.
    pub spec: Option<SpecState>,
    /// Draft tokens after `tokens` that the current step verifies (see `speculate`).
    pub draft: Vec<u32>,
}

/// What happened to a sequence after a token was appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Keep generating.
    Continue,
    /// Finished for this reason (its `Done` was sent).
    Finished(FinishReason),
    /// The client went away.
    Disconnected,
    /// The sequence failed (its `Error` was sent).
    Failed,
}

impl Sequence {
    /// The token at `pos`: a known one, or past them one of the current draft.
    pub fn token_at(&self, pos: usize) -> u32 {
        match self.tokens.get(pos) {
            Some(&t) => t,
            None => self.draft[pos - self.tokens.len()],
        }
    }

    /// Tokens generated so far.
    pub fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens it may still generate (the smaller of `max_tokens` and the context).
    pub fn remaining(&self, max_len: usize) -> usize {
        let by_limit = self.params.max_tokens.saturating_sub(self.generated());
        by_limit.min(max_len.saturating_sub(self.tokens.len()))
    }

    /// Whether a constrained JSON output should now be steered shut: within the last
    /// quarter of its budget (at least 8 and at most 64 tokens before the end).
    pub fn closing_time(&self, max_len: usize) -> bool {
        let reserve = (self.params.max_tokens / 4).clamp(8, 64);
        self.remaining(max_len) <= reserve
    }

    fn usage(&self) -> Usage {
        Usage {
            prompt_tokens: self.prompt_len,
            completion_tokens: self.generated(),
        }
    }

    /// Appends a sampled token, streams its text, and decides whether to stop.
    /// `max_len` bounds prompt + generated tokens (the context length).
    pub fn accept(&mut self, s: Sampled, tok: &ModelTokenizer, max_len: usize) -> Progress {
        self.tokens.push(s.id);
        self.sampler.observe(s.id);
        let eog = !self.params.ignore_eos && tok.eog_ids.contains(&s.id);
        if eog {
            return self.finish(FinishReason::Stop);
        }
        if let Some(c) = &mut self.constraint
            && let Err(e) = c.commit(s.id)
        {
            self.fail(EngineError::ModelFailed(e));
            return Progress::Failed;
        }
        let text = if self.params.visible_control.contains(&s.id) {
            tok.token_text(s.id).unwrap_or_default().into_bytes()
        } else {
            tok.token_bytes(s.id).to_vec()
        };
        let pushed = self.text.push(&text);
        let logprob = s
            .logprobs
            .map(|(lp, top)| logprob_event(tok, s.id, lp, top));
        let event = TokenEvent::Token {
            id: s.id,
            text: pushed.text,
            logprob,
        };
        if self.events.send(event).is_err() {
            return Progress::Disconnected;
        }
        // A complete grammar allows nothing more: the output is done.
        if pushed.stopped || self.constraint.as_ref().is_some_and(|c| c.is_finished()) {
            return self.finish(FinishReason::Stop);
        }
        if self.generated() >= self.params.max_tokens || self.tokens.len() >= max_len {
            return self.finish(FinishReason::Length);
        }
        Progress::Continue
    }

    fn finish(&mut self, reason: FinishReason) -> Progress {
        let done = TokenEvent::Done {
            text: self.text.finish(),
            finish_reason: reason,
            usage: self.usage(),
        };
        match self.events.send(done) {
            Ok(()) => Progress::Finished(reason),
            Err(_) => Progress::Disconnected,
        }
    }

    /// Ends the sequence with an error event (ignored if the client is gone).
    pub fn fail(&self, error: EngineError) {
        let _ = self.events.send(TokenEvent::Error(error));
    }
}

fn logprob_event(
    tok: &ModelTokenizer,
    id: u32,
    logprob: f32,
    top: Vec<(u32, f32)>,
) -> TokenLogprob {
    let piece = |i: u32| {
        let bytes = tok.token_bytes(i).to_vec();
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    };
    let (token, bytes) = piece(id);
    TokenLogprob {
        token,
        bytes,
        logprob,
        top: top
            .into_iter()
            .map(|(i, lp)| {
                let (token, bytes) = piece(i);
                TopLogprob {
                    token_id: i,
                    token,
                    bytes,
                    logprob: lp,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::quantized::gguf_file::Value;

    use super::*;

    /// A Qwen-shaped vocabulary: eos is `<|endoftext|>`, turns end with `<|im_end|>`.
    fn tokenizer() -> ModelTokenizer {
        let mut tokens: Vec<String> = ('!'..='~').map(String::from).collect();
        tokens.extend(["Ġ", "<|endoftext|>", "<|im_start|>", "<|im_end|>"].map(String::from));
        let types = tokens
            .iter()
            .map(|t| Value::I32(if t.starts_with("<|") { 3 } else { 1 }))
            .collect();
        let eos = tokens.iter().position(|t| t == "<|endoftext|>").unwrap() as u32;
        let meta = HashMap::from([
            (
                "tokenizer.ggml.model".to_string(),
                Value::String("gpt2".into()),
            ),
            (
                "tokenizer.ggml.pre".to_string(),
                Value::String("qwen2".into()),
            ),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            ("tokenizer.ggml.token_type".into(), Value::Array(types)),
            ("tokenizer.ggml.merges".into(), Value::Array(Vec::new())),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)),
        ]);
        ModelTokenizer::from_gguf(&meta).unwrap()
    }

    fn sequence(ignore_eos: bool) -> (Sequence, mpsc::UnboundedReceiver<TokenEvent>) {
        let (events, rx) = mpsc::unbounded_channel();
        let params = SamplingParams {
            max_tokens: 16,
            ignore_eos,
            ..SamplingParams::default()
        };
        let seq = Sequence {
            id: 0,
            request_id: "t".into(),
            tokens: vec![0],
            prompt_len: 1,
            sampler: SamplerState::new(Some(1)),
            text: TextStream::new(&params.stop),
            params,
            events,
            waiting: None,
            arrived: Instant::now(),
            constraint: None,
            spec: None,
            draft: Vec::new(),
        };
        (seq, rx)
    }

    fn sampled(id: u32) -> Sampled {
        Sampled { id, logprobs: None }
    }

    #[test]
    fn every_end_of_generation_token_stops_not_only_eos() {
        let tok = tokenizer();
        let a = tok.token_id("a").unwrap();
        for end in ["<|im_end|>", "<|endoftext|>"] {
            let end = tok.token_id(end).unwrap();
            let (mut seq, mut rx) = sequence(false);
            assert_eq!(seq.accept(sampled(a), &tok, 100), Progress::Continue);
            assert_eq!(
                seq.accept(sampled(end), &tok, 100),
                Progress::Finished(FinishReason::Stop)
            );
            assert!(matches!(rx.try_recv(), Ok(TokenEvent::Token { .. })));
            let Ok(TokenEvent::Done { finish_reason, .. }) = rx.try_recv() else {
                panic!("expected Done");
            };
            assert_eq!(finish_reason, FinishReason::Stop);
        }
        // `ignore_eos` generates through them.
        let (mut seq, _rx) = sequence(true);
        let end = tok.token_id("<|im_end|>").unwrap();
        assert_eq!(seq.accept(sampled(end), &tok, 100), Progress::Continue);
    }
}
