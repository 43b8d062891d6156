//! Building BPE models from GGUF metadata with the `tokenizers` crate: GPT-2 style
//! byte-level BPE (`gpt2`: every byte mapped to a printable character, words split by
//! the family's pre-tokenizer), and raw UTF-8 BPE (`gemma4`: spaces escaped to `▁`,
//! `<0xXX>` byte fallback). Also each token's raw bytes, for decoding.

use std::collections::HashMap;

use anyhow::{Result, anyhow};
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSeq;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use super::meta::Meta;
use super::pretokenize::PreTokenizer;
use super::{TOKEN_TYPE_BYTE, TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED};

/// The merge list, keeping only merges whose parts and result are tokens (a merge
/// that can never produce a token cannot change the result).
fn merges(meta: &Meta, vocab: &Vocab) -> Result<Vec<(String, String)>> {
    Ok(meta
        .strings("tokenizer.ggml.merges")?
        .into_iter()
        .filter_map(|m| {
            // A part may itself start with a space in raw (non byte-level) vocabularies.
            let first = m.chars().next()?.len_utf8();
            let cut = m[first..].find(' ')? + first;
            let (a, b) = (&m[..cut], &m[cut + 1..]);
            let whole = format!("{a}{b}");
            (vocab.contains_key(a) && vocab.contains_key(b) && vocab.contains_key(&whole))
                .then(|| (a.to_string(), b.to_string()))
        })
        .collect())
}

fn vocab(tokens: &[String]) -> Vocab {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), i as u32))
        .collect()
}

/// Byte-level BPE with the family's pre-tokenizer.
pub fn byte_level(meta: &Meta, tokens: &[String], pre: &PreTokenizer) -> Result<Tokenizer> {
    let vocab = vocab(tokens);
    let merges = merges(meta, &vocab)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .ignore_merges(pre.ignore_merges)
        .build()
        .map_err(|e| anyhow!("building BPE: {e}"))?;
    let mut tk = Tokenizer::new(bpe);
    let mut seq: Vec<PreTokenizerWrapper> = Vec::new();
    for re in &pre.regexes {
        let split = Split::new(
            SplitPattern::Regex(re.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(|e| anyhow!("pre-tokenizer `{}` regex: {e}", pre.family))?;
        seq.push(split.into());
    }
    seq.push(ByteLevel::new(false, false, false).into());
    tk.with_pre_tokenizer(Some(PreSeq::new(seq)));
    Ok(tk)
}

/// Raw UTF-8 BPE with `<0xXX>` byte fallback and no pre-tokenizer (the caller splits).
pub fn raw(meta: &Meta, tokens: &[String]) -> Result<Tokenizer> {
    let vocab = vocab(tokens);
    let merges = merges(meta, &vocab)?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .build()
        .map_err(|e| anyhow!("building BPE: {e}"))?;
    Ok(Tokenizer::new(bpe))
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

/// Raw bytes of each token of a byte-level vocabulary: control tokens none,
/// user-defined tokens their text, others their byte-level characters mapped back.
pub fn byte_level_bytes(tokens: &[String], types: &[i32], control: &[bool]) -> Vec<Vec<u8>> {
    let table = byte_level_decoder();
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if control[i] {
                Vec::new()
            } else if types[i] == TOKEN_TYPE_USER_DEFINED {
                t.as_bytes().to_vec()
            } else {
                t.chars()
                    .flat_map(|c| match table.get(&c) {
                        Some(b) => vec![*b],
                        None => c.to_string().into_bytes(),
                    })
                    .collect()
            }
        })
        .collect()
}

/// Raw bytes of each token of a SentencePiece-style vocabulary (`▁` is a space,
/// `<0xXX>` byte tokens are that byte, control tokens none).
pub fn piece_bytes(tokens: &[String], types: &[i32], control: &[bool]) -> Vec<Vec<u8>> {
    tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if control[i] || types[i] == TOKEN_TYPE_CONTROL {
                Vec::new()
            } else if types[i] == TOKEN_TYPE_BYTE {
                t.strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .map(|b| vec![b])
                    .unwrap_or_default()
            } else {
                t.replace('▁', " ").into_bytes()
            }
        })
        .collect()
}
