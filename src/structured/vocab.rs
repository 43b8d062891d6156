//! The model's vocabulary as llguidance sees it: one byte string per token id, with
//! control tokens spelled `\xFF` + their text (llguidance's marker for special tokens,
//! which a grammar's text never matches unless it names them, e.g. `<|im_end|>`).

use std::sync::Arc;

use llguidance::toktrie::{ApproximateTokEnv, TokEnv, TokRxInfo, TokTrie};

use super::constraint::Closers;
use crate::model::tokenizer::ModelTokenizer;

/// The token trie and tokenizer environment of `tok`.
pub fn tok_env(tok: &ModelTokenizer) -> TokEnv {
    let n = tok.vocab_size() as u32;
    let words: Vec<Vec<u8>> = (0..n).map(|id| word(tok, id)).collect();
    let eos = tok
        .eos_id
        .or_else(|| tok.eog_ids.first().copied())
        .unwrap_or(0);
    let mut info = TokRxInfo::new(n, eos);
    info.tok_bos = tok.bos_id;
    let mut trie = TokTrie::from(&info, &words);
    // Every end-of-generation token ends a grammar that accepts, not only `eos`.
    let mut ends = vec![eos];
    for &e in &tok.eog_ids {
        if !ends.contains(&e) {
            ends.push(e);
        }
    }
    if ends.iter().all(|&e| e < n) {
        trie = trie.with_eos_tokens(&ends);
    }
    Arc::new(ApproximateTokEnv::new(trie))
}

fn word(tok: &ModelTokenizer, id: u32) -> Vec<u8> {
    if tok.is_control(id) {
        let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
        w.extend(tok.token_text(id).unwrap_or_default().into_bytes());
        w
    } else {
        tok.token_bytes(id).to_vec()
    }
}

/// The tokens whose bytes are all JSON closers (`"`, `}`, `]`).
pub fn json_closers(tok: &ModelTokenizer) -> Closers {
    let mut c = Closers::default();
    for id in 0..tok.vocab_size() as u32 {
        let b = tok.token_bytes(id);
        if tok.is_control(id) || b.is_empty() || !b.iter().all(|c| matches!(c, b'"' | b'}' | b']'))
        {
            continue;
        }
        if b[0] == b'"' {
            c.quoted.push(id);
        } else {
            c.brackets.push(id);
        }
    }
    c
}
