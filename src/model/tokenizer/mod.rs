//! The tokenizer of a GGUF model, built from its metadata alone (`tokenizer.ggml.*`):
//! GPT-2 style byte-level BPE (`gpt2`, with the pre-tokenizer `tokenizer.ggml.pre`
//! names), SentencePiece BPE (`llama`: Llama 2, Mistral, Gemma, Phi-3) with byte
//! fallback, and Gemma 4's raw UTF-8 BPE (`gemma4`). Ids match llama.cpp's
//! (`tests/tokenizer_vectors.rs` checks llama.cpp's own vectors for every family).
//!
//! Encoding: special tokens written in the text are found first ([`special`]), then
//! each plain run goes to the model: BPE through the `tokenizers` crate, SentencePiece
//! through our own merge loop ([`spm`]). Decoding uses our own table of each token's
//! raw bytes, so the engine can stream text byte-exactly and incrementally.
//! Invariants: control tokens (type 3, and every end-of-generation token) decode to
//! no text; `token_bytes.len() == vocab_size`; `add_bos` implies `bos_id.is_some()`.

mod bpe;
mod eog;
mod meta;
mod pretokenize;
mod special;
mod spm;

use std::collections::HashMap;

use anyhow::{Result, anyhow, bail};
use candle_core::quantized::gguf_file;
use tokenizers::Tokenizer;

pub(crate) use meta::Meta;
pub use pretokenize::{PreTokenizer, default_pre_tokenizer, pre_tokenizer};
use special::{Fragment, SpecialToken, SpecialTokens};
use spm::Spm;

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_UNKNOWN: i32 = 2;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

/// How [`ModelTokenizer::encode_with`] treats special tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOptions {
    /// Add BOS / EOS as the file asks (`add_bos` / `add_eos`).
    pub add_special: bool,
    /// Match control-token text (`<|im_start|>`, `<s>`, …) as those tokens; when false
    /// it is tokenized as plain text. User-defined tokens are always matched.
    pub parse_special: bool,
}

/// The model that turns a plain-text run into ids.
enum TextModel {
    /// Byte-level BPE (`gpt2`).
    ByteBpe(Box<Tokenizer>),
    /// SentencePiece BPE (`llama`).
    Spm(Box<Spm>),
    /// Raw UTF-8 BPE over `▁`-escaped text, split at newline runs (`gemma4`).
    RawBpe(Box<Tokenizer>),
}

/// Tokenizer plus the byte table and special ids the engine needs.
pub struct ModelTokenizer {
    model: TextModel,
    specials: SpecialTokens,
    tokens: Vec<String>,
    token_bytes: Vec<Vec<u8>>,
    is_control: Vec<bool>,
    add_space_prefix: bool,
    /// `tokenizer.ggml.model` (`gpt2`, `llama`, `gemma4`).
    pub kind: String,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_id: Option<u32>,
    /// End-of-sequence token, if the model has one.
    pub eos_id: Option<u32>,
    /// Every token that ends generation (eos, eot, eom and the end-of-turn tokens of
    /// the known chat formats; see [`eog`]).
    pub eog_ids: Vec<u32>,
    /// Whether a BOS token is prepended to every prompt.
    pub add_bos: bool,
    /// Whether an EOS token is appended to every prompt.
    pub add_eos: bool,
}

/// The special tokens of a vocabulary: control, unknown and user-defined ones, and
/// every end-of-generation token (llama.cpp treats those as control whatever their
/// type). Phi-3's specials swallow the whitespace after them, as in llama.cpp.
fn special_tokens(
    tokens: &[String],
    types: &[i32],
    control: &[bool],
    meta: &Meta,
) -> Vec<SpecialToken> {
    let name = meta.str_opt("general.name").unwrap_or("").to_lowercase();
    let phi3 = name.contains("phi-3") || name.contains("phi3");
    tokens
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            control[*i] || matches!(types[*i], TOKEN_TYPE_UNKNOWN | TOKEN_TYPE_USER_DEFINED)
        })
        .map(|(i, t)| SpecialToken {
            id: i as u32,
            text: t.clone(),
            control: control[i] || types[i] == TOKEN_TYPE_UNKNOWN,
            rstrip: phi3 && !matches!(t.as_str(), "<unk>" | "<s>" | "<|endoftext|>"),
        })
        .collect()
}

impl ModelTokenizer {
    /// Builds the tokenizer from GGUF metadata.
    pub fn from_gguf(metadata: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let meta = Meta(metadata);
        let kind = meta.get("tokenizer.ggml.model")?.to_string()?.clone();
        let tokens = meta.strings("tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let types = match meta.i32s("tokenizer.ggml.token_type") {
            Ok(t) if t.len() == n => t,
            _ => vec![TOKEN_TYPE_NORMAL; n],
        };
        let is_control: Vec<bool> = (0..n)
            .map(|i| types[i] == TOKEN_TYPE_CONTROL || eog::is_eog_text(&tokens[i]))
            .collect();
        let valid = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let mut bos_id = valid(meta.u32_opt("tokenizer.ggml.bos_token_id"));
        let mut eos_id = valid(meta.u32_opt("tokenizer.ggml.eos_token_id"));
        let pre_name = meta.str_opt("tokenizer.ggml.pre");
        let (model, token_bytes, default_bos) = match kind.as_str() {
            "gpt2"
                if matches!(
                    pre_name,
                    Some("gemma4" | "granite-embed-multi-311m" | "sarvam-moe")
                ) =>
            {
                let tk = bpe::raw(&meta, &tokens)?;
                let bytes = bpe::piece_bytes(&tokens, &types, &is_control);
                (TextModel::RawBpe(Box::new(tk)), bytes, true)
            }
            "gpt2" => {
                let pre = resolve_pre(pre_name);
                let tk = bpe::byte_level(&meta, &tokens, &pre)?;
                let bytes = bpe::byte_level_bytes(&tokens, &types, &is_control);
                (TextModel::ByteBpe(Box::new(tk)), bytes, pre.add_bos)
            }
            "gemma4" => {
                let tk = bpe::raw(&meta, &tokens)?;
                let bytes = bpe::piece_bytes(&tokens, &types, &is_control);
                (TextModel::RawBpe(Box::new(tk)), bytes, true)
            }
            "llama" => {
                let scores = meta
                    .f32s("tokenizer.ggml.scores")
                    .unwrap_or_else(|_| vec![0.0; n]);
                let unk = valid(meta.u32_opt("tokenizer.ggml.unknown_token_id"))
                    .or_else(|| valid(Some(0)));
                // SentencePiece files that omit them use llama's ids.
                bos_id = bos_id.or(valid(Some(1)));
                eos_id = eos_id.or(valid(Some(2)));
                let spm = Spm::new(&tokens, scores, unk);
                let bytes = bpe::piece_bytes(&tokens, &types, &is_control);
                (TextModel::Spm(Box::new(spm)), bytes, true)
            }
            other => bail!(
                "unsupported tokenizer model `{other}` (supported: gpt2 byte-level BPE, \
                 llama SentencePiece, gemma4)"
            ),
        };
        let forced_bos = matches!(model, TextModel::RawBpe(_));
        let add_bos = (forced_bos
            || meta
                .bool_opt("tokenizer.ggml.add_bos_token")
                .unwrap_or(default_bos))
            && bos_id.is_some();
        let add_eos = meta
            .bool_opt("tokenizer.ggml.add_eos_token")
            .unwrap_or(false)
            && eos_id.is_some();
        let add_space_prefix = matches!(model, TextModel::Spm(_))
            && meta
                .bool_opt("tokenizer.ggml.add_space_prefix")
                .unwrap_or(true);
        let specials = SpecialTokens::new(special_tokens(&tokens, &types, &is_control, &meta))?;
        Ok(Self {
            model,
            specials,
            token_bytes,
            eog_ids: eog::eog_ids(&tokens, &meta, eos_id),
            tokens,
            is_control,
            add_space_prefix,
            kind,
            bos_id,
            eos_id,
            add_bos,
            add_eos,
        })
    }

    /// Token ids of `text`; special tokens written in the text are recognised, and BOS
    /// (and EOS) are added when the model asks for them.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(
            text,
            EncodeOptions {
                add_special: true,
                parse_special: true,
            },
        )
    }

    /// Token ids of `text` with explicit handling of special tokens.
    pub fn encode_with(&self, text: &str, opts: EncodeOptions) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if opts.add_special && self.add_bos {
            ids.extend(self.bos_id);
        }
        let mut prev_special = true;
        for frag in self.specials.split(text, opts.parse_special) {
            match frag {
                Fragment::Token(id) => {
                    ids.push(id);
                    prev_special = true;
                }
                Fragment::Text(t) => {
                    self.encode_text(t, prev_special, &mut ids)?;
                    prev_special = false;
                }
            }
        }
        if opts.add_special && self.add_eos {
            ids.extend(self.eos_id);
        }
        Ok(ids)
    }

    /// Ids of one run of plain text; `after_special` says it starts the text or follows
    /// a special token (SentencePiece then adds its space prefix).
    fn encode_text(&self, text: &str, after_special: bool, ids: &mut Vec<u32>) -> Result<()> {
        let hf = |tk: &Tokenizer, t: &str, ids: &mut Vec<u32>| -> Result<()> {
            let enc = tk
                .encode_fast(t, false)
                .map_err(|e| anyhow!("tokenizing: {e}"))?;
            ids.extend_from_slice(enc.get_ids());
            Ok(())
        };
        match &self.model {
            TextModel::ByteBpe(tk) => hf(tk, text, ids)?,
            TextModel::Spm(spm) => {
                let prefix = if self.add_space_prefix && after_special {
                    " "
                } else {
                    ""
                };
                let escaped = format!("{prefix}{text}").replace(' ', "▁");
                spm.encode(&escaped, ids);
            }
            TextModel::RawBpe(tk) => {
                let escaped = text.replace(' ', "▁");
                for run in newline_runs(&escaped) {
                    match tk.token_to_id(run) {
                        Some(id) if run.starts_with('\n') => ids.push(id),
                        _ => hf(tk, run, ids)?,
                    }
                }
            }
        }
        Ok(())
    }

    /// Raw bytes of one token; empty for control tokens and ids out of range.
    pub fn token_bytes(&self, id: u32) -> &[u8] {
        self.token_bytes
            .get(id as usize)
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// Whether `id` is a control (special) token.
    pub fn is_control(&self, id: u32) -> bool {
        self.is_control.get(id as usize).copied().unwrap_or(false)
    }

    /// Decodes ids to text (lossy for invalid UTF-8), skipping control tokens.
    pub fn decode(&self, ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids
            .iter()
            .flat_map(|&i| self.token_bytes(i).iter().copied())
            .collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.token_bytes.len()
    }

    /// The text of a token as the vocabulary spells it (for special tokens in templates).
    pub fn token_text(&self, id: u32) -> Option<String> {
        self.tokens.get(id as usize).cloned()
    }

    /// The id of the token spelled exactly `text`, if there is one.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.tokens.iter().position(|t| t == text).map(|i| i as u32)
    }
}

/// The pre-tokenizer `tokenizer.ggml.pre` names, or the default one with a warning.
fn resolve_pre(name: Option<&str>) -> PreTokenizer {
    match name.map(|n| (n, pre_tokenizer(n))) {
        Some((_, Some(p))) => p,
        Some((n, None)) => {
            tracing::warn!(
                pre = n,
                "unknown pre-tokenizer `{n}`: using the default split; tokens may differ \
                 from the model's own tokenizer"
            );
            default_pre_tokenizer()
        }
        None => {
            tracing::warn!(
                "the GGUF names no pre-tokenizer (`tokenizer.ggml.pre`): using the default \
                 split; tokens may differ from the model's own tokenizer"
            );
            default_pre_tokenizer()
        }
    }
}

/// Splits `text` into maximal runs of newlines and of everything else.
fn newline_runs(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        let first = rest.chars().next()?;
        let nl = first == '\n';
        let end = rest.find(|c: char| (c == '\n') != nl).unwrap_or(rest.len());
        let (run, tail) = rest.split_at(end);
        rest = tail;
        Some(run)
    })
}

#[cfg(test)]
mod tests;
