//! SentencePiece BPE (`tokenizer.ggml.model` = `llama`: Llama 2, Mistral, Gemma,
//! Phi-3): the text (spaces already escaped to `▁`) is split into UTF-8 characters, and
//! the adjacent pair whose concatenation is the highest-scoring vocabulary piece is
//! merged, again and again, the leftmost pair winning ties; a final piece that is not in
//! the vocabulary becomes byte tokens (`<0xXX>`, byte fallback).
//!
//! Written from the algorithm SentencePiece and llama.cpp's SPM session describe, so
//! that ids match llama.cpp exactly (the test vectors of `tests/tokenizer_vectors.rs`).

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// Scores and lookup tables of a SentencePiece vocabulary.
pub struct Spm {
    piece_to_id: HashMap<String, u32>,
    scores: Vec<f32>,
    /// Token of each byte value (`<0xXX>`, else the one-byte piece, else unknown).
    byte_ids: [Option<u32>; 256],
}

/// A candidate merge of symbols `left` and `right`.
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    len: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    /// Higher score first; among equal scores the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// One piece of the text being merged: a byte range plus its neighbours.
#[derive(Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Builds the tables; `unknown` is used for bytes the vocabulary cannot spell.
    pub fn new(tokens: &[String], scores: Vec<f32>, unknown: Option<u32>) -> Self {
        let piece_to_id: HashMap<String, u32> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let mut byte_ids = [None; 256];
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            let hex = format!("<0x{b:02X}>");
            let raw = String::from_utf8(vec![b as u8]).ok();
            *slot = piece_to_id
                .get(&hex)
                .or_else(|| raw.and_then(|r| piece_to_id.get(&r)))
                .copied()
                .or(unknown);
        }
        Self {
            piece_to_id,
            scores,
            byte_ids,
        }
    }

    fn bigram(&self, text: &str, syms: &[Symbol], left: usize, right: usize) -> Option<Bigram> {
        let (l, r) = (syms[left], syms[right]);
        let piece = &text[l.start..r.start + r.len];
        let id = *self.piece_to_id.get(piece)?;
        Some(Bigram {
            score: self.scores.get(id as usize).copied().unwrap_or(0.0),
            left,
            right,
            len: piece.len(),
        })
    }

    /// Appends the ids of `text` (whitespace already escaped) to `out`.
    pub fn encode(&self, text: &str, out: &mut Vec<u32>) {
        let mut syms: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: None,
            });
            if i > 0 {
                syms[i - 1].next = Some(i);
            }
        }
        let mut queue = BinaryHeap::new();
        for i in 1..syms.len() {
            queue.extend(self.bigram(text, &syms, i - 1, i));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (syms[b.left], syms[b.right]);
            // Stale: one side was merged into something else since this was queued.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len || l.next != Some(b.right) {
                continue;
            }
            syms[b.left].len += r.len;
            syms[b.right].len = 0;
            syms[b.left].next = r.next;
            if let Some(n) = r.next {
                syms[n].prev = Some(b.left);
            }
            if let Some(p) = syms[b.left].prev {
                queue.extend(self.bigram(text, &syms, p, b.left));
            }
            if let Some(n) = syms[b.left].next {
                queue.extend(self.bigram(text, &syms, b.left, n));
            }
        }
        let mut cur = if syms.is_empty() { None } else { Some(0) };
        while let Some(i) = cur {
            let s = syms[i];
            let piece = &text[s.start..s.start + s.len];
            match self.piece_to_id.get(piece) {
                Some(&id) => out.push(id),
                None => out.extend(piece.bytes().filter_map(|b| self.byte_ids[b as usize])),
            }
            cur = s.next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spm(pieces: &[(&str, f32)]) -> Spm {
        let mut tokens: Vec<String> = vec!["<unk>".into()];
        let mut scores = vec![0.0];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            scores.push(0.0);
        }
        for (p, s) in pieces {
            tokens.push((*p).into());
            scores.push(*s);
        }
        Spm::new(&tokens, scores, Some(0))
    }

    #[test]
    fn highest_scoring_merge_wins_and_unknown_chars_become_bytes() {
        // "abc": "ab" (score -1) and "bc" (score -2) compete; "ab" wins, then "abc"
        // is not a piece, so the result is "ab" + "c".
        let s = spm(&[
            ("a", -5.0),
            ("b", -5.0),
            ("c", -5.0),
            ("ab", -1.0),
            ("bc", -2.0),
        ]);
        let id = |p: &str| s.piece_to_id[p];
        let mut out = Vec::new();
        s.encode("abc", &mut out);
        assert_eq!(out, vec![id("ab"), id("c")]);
        out.clear();
        s.encode("aé", &mut out);
        assert_eq!(out, vec![id("a"), id("<0xC3>"), id("<0xA9>")]);
    }

    #[test]
    fn equal_scores_merge_leftmost_first() {
        let s = spm(&[("a", -5.0), ("aa", -1.0)]);
        let id = |p: &str| s.piece_to_id[p];
        let mut out = Vec::new();
        s.encode("aaa", &mut out);
        assert_eq!(out, vec![id("aa"), id("a")]);
    }
}
