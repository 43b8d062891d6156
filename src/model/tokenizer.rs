//! The tokenizer of a GGUF model, built from its metadata alone (`tokenizer.ggml.*`):
//! GPT-2 style byte-level BPE (`gpt2`) and SentencePiece-style BPE (`llama`).
//!
//! Encoding goes through the `tokenizers` crate; decoding uses our own table of each
//! token's raw bytes, so the engine can stream text byte-exactly and incrementally.
//! Invariants: control tokens (type 3) are special tokens: they are matched whole in
//! input text and decode to no text; `token_bytes.len() == vocab_size`.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use candle_core::quantized::gguf_file;
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{NormalizerWrapper, Prepend, Replace, Sequence as NormSeq};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

const TOKEN_TYPE_NORMAL: i32 = 1;
const TOKEN_TYPE_CONTROL: i32 = 3;
const TOKEN_TYPE_USER_DEFINED: i32 = 4;
const TOKEN_TYPE_BYTE: i32 = 6;

const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Tokenizer plus the byte table and special ids the engine needs.
pub struct ModelTokenizer {
    inner: Tokenizer,
    token_bytes: Vec<Vec<u8>>,
    is_control: Vec<bool>,
    /// Beginning-of-sequence token, if the model has one.
    pub bos_id: Option<u32>,
    /// End-of-sequence token, if the model has one.
    pub eos_id: Option<u32>,
    /// Every token that ends generation (eos, eot and their known aliases).
    pub eog_ids: Vec<u32>,
    /// Whether a BOS token is prepended to every prompt.
    pub add_bos: bool,
}

/// Metadata lookups with clear errors.
pub(crate) struct Meta<'a>(pub &'a HashMap<String, gguf_file::Value>);

impl Meta<'_> {
    pub(crate) fn get(&self, key: &str) -> Result<&gguf_file::Value> {
        self.0
            .get(key)
            .with_context(|| format!("GGUF metadata is missing `{key}`"))
    }
    pub(crate) fn u32_opt(&self, key: &str) -> Option<u32> {
        self.0.get(key).and_then(|v| v.to_u32().ok())
    }
    pub(crate) fn bool_opt(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(|v| v.to_bool().ok())
    }
    pub(crate) fn str_opt(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }
    fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.get(key)?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_string()?.clone()))
            .collect()
    }
    fn i32s(&self, key: &str) -> Result<Vec<i32>> {
        self.get(key)?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_i32()?))
            .collect()
    }
    fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        self.get(key)?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_f32()?))
            .collect()
    }
}

/// GPT-2's reversible byte <-> printable-char table (char to byte direction).
fn byte_level_decoder() -> HashMap<char, u8> {
    let mut bytes: Vec<u32> = (b'!'..=b'~')
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .map(u32::from)
        .collect();
    let mut chars = bytes.clone();
    let mut n = 0;
    for b in 0..=255u32 {
        if !bytes.contains(&b) {
            bytes.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    bytes
        .into_iter()
        .zip(chars)
        .map(|(b, c)| (char::from_u32(c).expect("valid char"), b as u8))
        .collect()
}

fn eog_candidates(tokens: &[String], types: &[i32], meta: &Meta, eos: Option<u32>) -> Vec<u32> {
    const ALIASES: [&str; 8] = [
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|end_of_text|>",
        "<|eom_id|>",
    ];
    let mut ids: Vec<u32> = eos.into_iter().collect();
    ids.extend(meta.u32_opt("tokenizer.ggml.eot_token_id"));
    ids.extend(meta.u32_opt("tokenizer.ggml.eom_token_id"));
    for (i, t) in tokens.iter().enumerate() {
        if types[i] == TOKEN_TYPE_CONTROL && ALIASES.contains(&t.as_str()) {
            ids.push(i as u32);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

impl ModelTokenizer {
    /// Builds the tokenizer from GGUF metadata.
    pub fn from_gguf(metadata: &HashMap<String, gguf_file::Value>) -> Result<Self> {
        let meta = Meta(metadata);
        let kind = meta.get("tokenizer.ggml.model")?.to_string()?.clone();
        let tokens = meta.strings("tokenizer.ggml.tokens")?;
        let types = match meta.i32s("tokenizer.ggml.token_type") {
            Ok(t) if t.len() == tokens.len() => t,
            _ => vec![TOKEN_TYPE_NORMAL; tokens.len()],
        };
        let vocab: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let (mut inner, token_bytes) = match kind.as_str() {
            "gpt2" => Self::build_gpt2(&meta, &tokens, &types, vocab)?,
            "llama" => Self::build_spm(&meta, &tokens, &types, vocab)?,
            other => bail!("unsupported tokenizer model `{other}` (supported: gpt2, llama)"),
        };
        let added: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL || **t == TOKEN_TYPE_USER_DEFINED)
            .map(|(s, t)| AddedToken::from(s.clone(), *t == TOKEN_TYPE_CONTROL).normalized(false))
            .collect();
        inner
            .add_special_tokens(added)
            .map_err(|e| anyhow::anyhow!("adding special tokens: {e}"))?;
        let bos_id = meta.u32_opt("tokenizer.ggml.bos_token_id");
        let eos_id = meta.u32_opt("tokenizer.ggml.eos_token_id");
        let default_bos = kind == "llama";
        let add_bos = meta
            .bool_opt("tokenizer.ggml.add_bos_token")
            .unwrap_or(default_bos)
            && bos_id.is_some();
        Ok(Self {
            inner,
            token_bytes,
            is_control: types.iter().map(|t| *t == TOKEN_TYPE_CONTROL).collect(),
            bos_id,
            eos_id,
            eog_ids: eog_candidates(&tokens, &types, &meta, eos_id),
            add_bos,
        })
    }

    fn build_gpt2(
        meta: &Meta,
        tokens: &[String],
        types: &[i32],
        vocab: HashMap<String, u32>,
    ) -> Result<(Tokenizer, Vec<Vec<u8>>)> {
        let merges: Vec<(String, String)> = meta
            .strings("tokenizer.ggml.merges")?
            .into_iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let bpe = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .build()
            .map_err(|e| anyhow::anyhow!("building BPE: {e}"))?;
        let mut tk = Tokenizer::new(bpe);
        let pre = meta.str_opt("tokenizer.ggml.pre").unwrap_or("default");
        let byte_level = ByteLevel::new(false, false, false);
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            let pattern = SplitPattern::Regex(re.to_string());
            Ok(Split::new(pattern, SplitDelimiterBehavior::Isolated, false)
                .map_err(|e| anyhow::anyhow!("split regex: {e}"))?
                .into())
        };
        let seq: Vec<PreTokenizerWrapper> = match pre {
            "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => {
                vec![split(LLAMA3_SPLIT)?, byte_level.into()]
            }
            "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone"
            | "minerva-7b" => {
                vec![
                    Digits::new(true).into(),
                    split(GPT2_SPLIT)?,
                    byte_level.into(),
                ]
            }
            _ => vec![split(GPT2_SPLIT)?, byte_level.into()],
        };
        tk.with_pre_tokenizer(Some(PreSeq::new(seq)));
        let table = byte_level_decoder();
        let bytes = tokens
            .iter()
            .zip(types)
            .map(|(t, ty)| match *ty {
                TOKEN_TYPE_CONTROL => Vec::new(),
                TOKEN_TYPE_USER_DEFINED => t.as_bytes().to_vec(),
                _ => t
                    .chars()
                    .flat_map(|c| match table.get(&c) {
                        Some(b) => vec![*b],
                        None => c.to_string().into_bytes(),
                    })
                    .collect(),
            })
            .collect();
        Ok((tk, bytes))
    }

    fn build_spm(
        meta: &Meta,
        tokens: &[String],
        types: &[i32],
        vocab: HashMap<String, u32>,
    ) -> Result<(Tokenizer, Vec<Vec<u8>>)> {
        let scores = meta
            .f32s("tokenizer.ggml.scores")
            .unwrap_or_else(|_| vec![0.0; tokens.len()]);
        // SentencePiece has no merge list: derive one from the vocabulary, ranking each
        // merge by the score of the piece it produces (higher first).
        let mut merges: Vec<(f32, u32, u32, String, String)> = Vec::new();
        for (piece, &id) in &vocab {
            if types[id as usize] != TOKEN_TYPE_NORMAL {
                continue;
            }
            for (i, _) in piece.char_indices().skip(1) {
                let (l, r) = piece.split_at(i);
                if let (Some(&li), Some(&ri)) = (vocab.get(l), vocab.get(r)) {
                    merges.push((scores[id as usize], li, ri, l.to_string(), r.to_string()));
                }
            }
        }
        merges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let merges = merges.into_iter().map(|m| (m.3, m.4)).collect();
        let mut builder = BPE::builder()
            .vocab_and_merges(
                vocab
                    .into_iter()
                    .collect::<tokenizers::models::bpe::Vocab>(),
                merges,
            )
            .byte_fallback(true);
        if let Some(unk) = meta.u32_opt("tokenizer.ggml.unknown_token_id") {
            builder = builder
                .unk_token(tokens[unk as usize].clone())
                .fuse_unk(true);
        }
        let bpe = builder
            .build()
            .map_err(|e| anyhow::anyhow!("building BPE: {e}"))?;
        let mut tk = Tokenizer::new(bpe);
        let mut norms: Vec<NormalizerWrapper> = Vec::new();
        if meta
            .bool_opt("tokenizer.ggml.add_space_prefix")
            .unwrap_or(true)
        {
            norms.push(Prepend::new("▁".into()).into());
        }
        norms.push(
            Replace::new(" ", "▁")
                .map_err(|e| anyhow::anyhow!("normalizer: {e}"))?
                .into(),
        );
        tk.with_normalizer(Some(NormSeq::new(norms)))
            .map_err(|e| anyhow::anyhow!("normalizer: {e}"))?;
        let bytes = tokens
            .iter()
            .zip(types)
            .map(|(t, ty)| match *ty {
                TOKEN_TYPE_CONTROL => Vec::new(),
                TOKEN_TYPE_BYTE => t
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|b| vec![b])
                    .unwrap_or_default(),
                _ => t.replace('▁', " ").into_bytes(),
            })
            .collect();
        Ok((tk, bytes))
    }

    /// Token ids of `text`; special tokens written in the text are recognised, and BOS
    /// is prepended when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| anyhow::anyhow!("tokenizing: {e}"))?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos {
            ids.extend(self.bos_id);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
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
        self.inner.id_to_token(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gguf_file::Value;

    /// A SentencePiece-style (`llama`) vocabulary: control tokens, 256 byte tokens,
    /// then pieces whose scores rank the merges.
    fn spm_metadata() -> HashMap<String, Value> {
        let mut tokens: Vec<String> = vec!["<unk>".into(), "<s>".into(), "</s>".into()];
        let mut types = vec![2, TOKEN_TYPE_CONTROL, TOKEN_TYPE_CONTROL];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(TOKEN_TYPE_BYTE);
        }
        for piece in [
            "▁", "h", "e", "l", "o", "w", "r", "d", "ll", "▁h", "▁he", "llo", "▁hello", "▁w", "or",
            "▁wor", "ld", "▁world",
        ] {
            tokens.push(piece.into());
            types.push(TOKEN_TYPE_NORMAL);
        }
        let n = tokens.len();
        let scores: Vec<Value> = (0..n)
            .map(|i| Value::F32(if i < 259 { 0.0 } else { i as f32 }))
            .collect();
        HashMap::from([
            ("tokenizer.ggml.model".into(), Value::String("llama".into())),
            (
                "tokenizer.ggml.tokens".into(),
                Value::Array(tokens.into_iter().map(Value::String).collect()),
            ),
            (
                "tokenizer.ggml.token_type".into(),
                Value::Array(types.into_iter().map(Value::I32).collect()),
            ),
            ("tokenizer.ggml.scores".into(), Value::Array(scores)),
            ("tokenizer.ggml.bos_token_id".into(), Value::U32(1)),
            ("tokenizer.ggml.eos_token_id".into(), Value::U32(2)),
            ("tokenizer.ggml.unknown_token_id".into(), Value::U32(0)),
        ])
    }

    #[test]
    fn sentencepiece_vocab_merges_falls_back_to_bytes_and_adds_bos() {
        let tok = ModelTokenizer::from_gguf(&spm_metadata()).unwrap();
        let id = |p: &str| tok.inner.token_to_id(p).unwrap();
        assert!(
            tok.add_bos,
            "llama tokenizers add BOS unless the GGUF says otherwise"
        );
        assert_eq!(
            tok.encode("hello world").unwrap(),
            vec![1, id("▁hello"), id("▁world")]
        );
        // "é" is not in the vocabulary: its two UTF-8 bytes become byte tokens.
        let ids = tok.encode("hé").unwrap();
        assert_eq!(ids, vec![1, id("▁h"), id("<0xC3>"), id("<0xA9>")]);
        assert_eq!(tok.decode(&ids), " hé");
        assert_eq!(tok.eog_ids, vec![2]);
        assert_eq!(
            tok.encode("</s>").unwrap(),
            vec![1, 2],
            "control tokens are special"
        );
    }
}
