//! Finding special tokens written in text, before the tokenizer model sees it.
//!
//! Control tokens (`<|im_start|>`, `<s>`, …) are matched only when the caller parses
//! special tokens (rendered chat templates do); user-defined tokens are always matched,
//! as llama.cpp and Hugging Face do. At each position the longest token wins. A token
//! with `rstrip` (Phi-3's specials) also swallows the whitespace after it.

use aho_corasick::{AhoCorasick, MatchKind};

/// A run of plain text or one special token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment<'a> {
    /// Text for the tokenizer model.
    Text(&'a str),
    /// A token matched whole.
    Token(u32),
}

/// One special token's text and behaviour.
pub struct SpecialToken {
    /// Its id.
    pub id: u32,
    /// Its text.
    pub text: String,
    /// Matched only when parsing special tokens (control and unknown tokens).
    pub control: bool,
    /// Whitespace right after it is dropped.
    pub rstrip: bool,
}

/// Matchers for the two modes.
pub struct SpecialTokens {
    all: Option<(AhoCorasick, Vec<SpecialToken>)>,
    user: Option<(AhoCorasick, Vec<SpecialToken>)>,
}

fn matcher(tokens: Vec<SpecialToken>) -> anyhow::Result<Option<(AhoCorasick, Vec<SpecialToken>)>> {
    if tokens.is_empty() {
        return Ok(None);
    }
    let ac = AhoCorasick::builder()
        .match_kind(MatchKind::LeftmostLongest)
        .build(tokens.iter().map(|t| t.text.as_str()))
        .map_err(|e| anyhow::anyhow!("building the special-token matcher: {e}"))?;
    Ok(Some((ac, tokens)))
}

impl SpecialTokens {
    /// Matchers over `tokens` (empty texts are ignored).
    pub fn new(tokens: Vec<SpecialToken>) -> anyhow::Result<Self> {
        let tokens: Vec<SpecialToken> = tokens.into_iter().filter(|t| !t.text.is_empty()).collect();
        let user = tokens
            .iter()
            .filter(|t| !t.control)
            .map(|t| SpecialToken {
                id: t.id,
                text: t.text.clone(),
                control: false,
                rstrip: t.rstrip,
            })
            .collect();
        Ok(Self {
            all: matcher(tokens)?,
            user: matcher(user)?,
        })
    }

    /// Splits `text` into plain runs and special tokens.
    pub fn split<'a>(&self, text: &'a str, parse_control: bool) -> Vec<Fragment<'a>> {
        if text.is_empty() {
            return Vec::new();
        }
        let m = if parse_control { &self.all } else { &self.user };
        let Some((ac, tokens)) = m else {
            return vec![Fragment::Text(text)];
        };
        let mut out = Vec::new();
        let mut pos = 0;
        let mut skip_ws = false;
        for hit in ac.find_iter(text) {
            let mut before = &text[pos..hit.start()];
            if skip_ws {
                before = before.trim_start_matches(|c: char| c.is_ascii_whitespace());
            }
            if !before.is_empty() {
                out.push(Fragment::Text(before));
            }
            let tok = &tokens[hit.pattern().as_usize()];
            out.push(Fragment::Token(tok.id));
            skip_ws = tok.rstrip;
            pos = hit.end();
        }
        let mut rest = &text[pos..];
        if skip_ws {
            rest = rest.trim_start_matches(|c: char| c.is_ascii_whitespace());
        }
        if !rest.is_empty() {
            out.push(Fragment::Text(rest));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: u32, text: &str, control: bool) -> SpecialToken {
        SpecialToken {
            id,
            text: text.into(),
            control,
            rstrip: false,
        }
    }

    #[test]
    fn control_tokens_only_when_asked_and_longest_wins() {
        let s = SpecialTokens::new(vec![
            tok(1, "<|im", false),
            tok(2, "<|im_end|>", true),
            tok(3, "<tool>", false),
        ])
        .unwrap();
        use Fragment::*;
        assert_eq!(
            s.split("a<|im_end|>b<tool>", true),
            vec![Text("a"), Token(2), Text("b"), Token(3)]
        );
        assert_eq!(
            s.split("a<|im_end|>b<tool>", false),
            vec![Text("a"), Token(1), Text("_end|>b"), Token(3)]
        );
    }
}
