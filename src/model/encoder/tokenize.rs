//! The encoder's tokenizer: `tokenizer.json` through the `tokenizers` crate, with
//! the file's own padding and truncation settings dropped: no padding (the batch is
//! packed), and truncation to the model's limit only when the caller allows it.
//!
//! Truncation is ours, done before the special tokens are added: longest-first for
//! pairs with the split the Python `tokenizers` 0.23.3 uses behind transformers'
//! `truncation=True` (when both texts must shrink, the shorter keeps half the budget
//! rounded down, the longer the rest). The crate's own longest-first splits an odd
//! budget the other way in some cases, which changes cross-encoder scores.
//!
//! For token classification, `text_spans` also gives each token's string and its
//! character span in the text (special tokens marked), and `join_tokens` turns token
//! strings back into text with the file's decoder, as transformers'
//! `convert_tokens_to_string` does.

use std::path::Path;

use anyhow::{Result, anyhow};
use tokenizers::models::ModelWrapper;
use tokenizers::{Decoder, Encoding, PostProcessor, Tokenizer, TruncationDirection};

use super::ner::TokenSpan;

/// Token ids and segment ids of one model input, special tokens included.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Encoded {
    /// Token ids.
    pub ids: Vec<u32>,
    /// Segment (token type) ids, parallel to `ids`.
    pub type_ids: Vec<u32>,
}

/// Why text could not become a model input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenizeError {
    /// Over the limit and truncation was not allowed.
    #[error("the input has {len} tokens but the encoder accepts at most {max}")]
    TooLong {
        /// Tokens of the input, special tokens included.
        len: usize,
        /// The encoder's limit.
        max: usize,
    },
    /// The tokenizer itself failed.
    #[error("tokenizing failed: {0}")]
    Failed(String),
}

/// The encoder's tokenizer with its length limit.
pub struct EncoderTokenizer {
    plain: Tokenizer,
    max_len: usize,
    unk_id: Option<u32>,
    word_aware: bool,
}

impl EncoderTokenizer {
    /// Loads `tokenizer.json`; inputs are limited to `max_len` tokens.
    pub fn from_file(path: &Path, max_len: usize) -> Result<Self> {
        let mut plain =
            Tokenizer::from_file(path).map_err(|e| anyhow!("loading {}: {e}", path.display()))?;
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| anyhow!("configuring the tokenizer: {e}"))?;
        let (unk_id, word_aware) = model_traits(&plain);
        Ok(Self {
            plain,
            max_len,
            unk_id,
            word_aware,
        })
    }

    /// Whether the vocabulary marks word continuations (WordPiece's `##`, a BPE
    /// `continuing_subword_prefix`), so sub-words can be told apart exactly.
    pub fn word_aware(&self) -> bool {
        self.word_aware
    }

    /// One text like [`Self::text`], with every token's string and character span.
    pub fn text_spans(
        &self,
        text: &str,
        truncate: bool,
    ) -> Result<(Encoded, Vec<TokenSpan>), TokenizeError> {
        let a = self
            .plain
            .encode_char_offsets(text, false)
            .map_err(|e| TokenizeError::Failed(e.to_string()))?;
        let budget = self.budget(false);
        let a = match a.get_ids().len() > budget {
            false => a,
            true if truncate => cut(a, budget),
            true => return Err(self.too_long(a.get_ids().len(), 0, false)),
        };
        let enc = self.post(a, None)?;
        let spans = enc
            .get_ids()
            .iter()
            .zip(enc.get_offsets())
            .zip(enc.get_special_tokens_mask())
            .map(|((&id, &(start, end)), &special)| TokenSpan {
                token: self.plain.id_to_token(id).unwrap_or_default(),
                start,
                end,
                special: special != 0,
                unknown: Some(id) == self.unk_id,
            })
            .collect();
        Ok((encoded(&enc), spans))
    }

    /// Token strings joined back into text by the tokenizer's decoder (joined with
    /// spaces when the file has none).
    pub fn join_tokens(&self, tokens: &[String]) -> String {
        match self.plain.get_decoder() {
            Some(d) => d
                .decode(tokens.to_vec())
                .unwrap_or_else(|_| tokens.join(" ")),
            None => tokens.join(" "),
        }
    }

    /// Size of the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.plain.get_vocab_size(true)
    }

    /// Longest input in tokens, special tokens included.
    pub fn max_len(&self) -> usize {
        self.max_len
    }

    /// One text, with the model's special tokens.
    pub fn text(&self, text: &str, truncate: bool) -> Result<Encoded, TokenizeError> {
        let a = self.raw(text)?;
        let budget = self.budget(false);
        let a = match a.get_ids().len() > budget {
            false => a,
            true if truncate => cut(a, budget),
            true => return Err(self.too_long(a.get_ids().len(), 0, false)),
        };
        self.finish(a, None)
    }

    /// A (query, document) pair, with the model's pair template.
    pub fn pair(&self, a: &str, b: &str, truncate: bool) -> Result<Encoded, TokenizeError> {
        let (a, b) = (self.raw(a)?, self.raw(b)?);
        let (n1, n2) = (a.get_ids().len(), b.get_ids().len());
        let budget = self.budget(true);
        if n1 + n2 <= budget {
            return self.finish(a, Some(b));
        }
        if !truncate {
            return Err(self.too_long(n1, n2, true));
        }
        let (k1, k2) = longest_first(n1, n2, budget);
        self.finish(cut(a, k1), Some(cut(b, k2)))
    }

    fn raw(&self, text: &str) -> Result<Encoding, TokenizeError> {
        self.plain
            .encode(text, false)
            .map_err(|e| TokenizeError::Failed(e.to_string()))
    }

    /// Content tokens that fit once the special tokens are added.
    fn budget(&self, pair: bool) -> usize {
        self.max_len.saturating_sub(self.added(pair))
    }

    fn added(&self, pair: bool) -> usize {
        self.plain
            .get_post_processor()
            .map_or(0, |p| p.added_tokens(pair))
    }

    fn too_long(&self, n1: usize, n2: usize, pair: bool) -> TokenizeError {
        TokenizeError::TooLong {
            len: n1 + n2 + self.added(pair),
            max: self.max_len,
        }
    }

    fn finish(&self, a: Encoding, b: Option<Encoding>) -> Result<Encoded, TokenizeError> {
        Ok(encoded(&self.post(a, b)?))
    }

    fn post(&self, a: Encoding, b: Option<Encoding>) -> Result<Encoding, TokenizeError> {
        self.plain
            .post_process(a, b, true)
            .map_err(|e| TokenizeError::Failed(e.to_string()))
    }
}

fn encoded(enc: &Encoding) -> Encoded {
    Encoded {
        ids: enc.get_ids().to_vec(),
        type_ids: enc.get_type_ids().to_vec(),
    }
}

/// The unknown token's id and whether the model marks word continuations.
fn model_traits(tok: &Tokenizer) -> (Option<u32>, bool) {
    match tok.get_model() {
        ModelWrapper::WordPiece(wp) => (
            tok.token_to_id(&wp.unk_token),
            !wp.continuing_subword_prefix.is_empty(),
        ),
        ModelWrapper::BPE(bpe) => (
            bpe.unk_token.as_deref().and_then(|t| tok.token_to_id(t)),
            bpe.continuing_subword_prefix
                .as_deref()
                .is_some_and(|p| !p.is_empty()),
        ),
        // Unigram keeps its `unk_id` private: read it from the model's serialization.
        model => (
            serde_json::to_value(model)
                .ok()
                .and_then(|v| v.get("unk_id")?.as_u64())
                .and_then(|id| u32::try_from(id).ok()),
            false,
        ),
    }
}

fn cut(mut e: Encoding, len: usize) -> Encoding {
    e.truncate(len, 0, TruncationDirection::Right);
    e.get_overflowing_mut().clear();
    e
}

/// How many tokens of each text a pair keeps under `budget` (both texts together
/// exceed it): the longer text shrinks first; when both must shrink, the shorter
/// keeps `budget / 2` and the longer the rest (on a tie, the second is "longer").
pub fn longest_first(n1: usize, n2: usize, budget: usize) -> (usize, usize) {
    let swap = n1 > n2;
    let (mut short, mut long) = if swap { (n2, n1) } else { (n1, n2) };
    long = if short > budget {
        short
    } else {
        long.min(short.max(budget - short))
    };
    if short + long > budget {
        short = budget / 2;
        long = budget - short;
    }
    if swap { (long, short) } else { (short, long) }
}

#[cfg(test)]
mod tests {
    use super::longest_first;

    /// Splits read off Python `tokenizers` 0.23.3 (`enable_truncation(20,
    /// strategy="longest_first")` on a BERT pair template: a budget of 17).
    #[test]
    fn longest_first_matches_the_reference_library() {
        for ((n1, n2), want) in [
            ((5, 30), (5, 12)),
            ((30, 5), (12, 5)),
            ((10, 10), (8, 9)),
            ((9, 12), (8, 9)),
            ((12, 9), (9, 8)),
            ((30, 30), (8, 9)),
            ((30, 31), (8, 9)),
            ((31, 30), (9, 8)),
            ((20, 3), (14, 3)),
            ((3, 20), (3, 14)),
            ((17, 1), (16, 1)),
        ] {
            assert_eq!(longest_first(n1, n2, 17), want, "({n1}, {n2})");
        }
    }
}
