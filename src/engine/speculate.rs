//! Prompt-lookup speculative decoding: drafts taken from the sequence itself.
//!
//! Before a step, a decoding sequence looks for the most recent earlier occurrence of
//! its last few tokens (an n-gram of 3, else 2) in its prompt and output, and proposes
//! the tokens that followed it there as a draft. The step computes the sequence's last
//! token and the draft together; row `i`'s logits are sampled exactly as without
//! speculation (same sampler, same RNG draw), and the draft token at `i` is accepted
//! while it equals what was sampled. So outputs are the ones the sequence would have
//! produced without speculation, greedy or seeded, and a step yields 1 + accepted
//! tokens instead of 1. It pays where answers quote their context (RAG, summaries,
//! code edits) and costs little elsewhere: a draft is only proposed when an n-gram
//! matches, its length adapts to the sequence's recent acceptance, and drafts are only
//! added while the step is small (see [`SpecConfig::row_cap`]), where verifying extra
//! rows is nearly free next to streaming the weights.
//!
//! Invariants: a draft never exceeds what the sequence may still generate less one
//! (the token sampled after the accepted drafts), so no step overshoots `max_tokens`.

/// Longest n-gram matched; shorter ones are tried after it, down to [`MIN_NGRAM`].
const MAX_NGRAM: usize = 3;
/// Shortest n-gram matched (a single token matches too often to be worth a draft).
const MIN_NGRAM: usize = 2;
/// Consecutive drafts with nothing accepted before a sequence pauses drafting.
const MISSES_BEFORE_PAUSE: u32 = 3;
/// Steps a sequence sits out after [`MISSES_BEFORE_PAUSE`] misses.
const PAUSE_STEPS: u32 = 8;

/// Engine-wide speculation settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpecConfig {
    /// Most draft tokens per sequence and step; 0 turns speculation off.
    pub max_draft: usize,
    /// Drafts are added only while the step's decoding sequences plus their drafts stay
    /// within this many rows (past it a row is no longer nearly free).
    pub row_cap: usize,
}

impl SpecConfig {
    /// Speculation off.
    pub const OFF: Self = Self {
        max_draft: 0,
        row_cap: 0,
    };

    /// Up to `max_draft` tokens per draft (0: off), while steps have at most 32 rows.
    pub fn new(max_draft: usize) -> Self {
        Self {
            max_draft,
            row_cap: 32,
        }
    }

    /// Whether speculation is on at all.
    pub fn enabled(&self) -> bool {
        self.max_draft > 0
    }
}

/// One sequence's drafting state: how long its next draft may be.
#[derive(Debug, Clone)]
pub struct SpecState {
    /// Length of the next draft, in `1..=max`.
    next: usize,
    /// Drafts in a row with nothing accepted.
    misses: u32,
    /// Steps left before drafting again.
    paused: u32,
}

impl SpecState {
    /// A sequence starting with drafts of `max` tokens.
    pub fn new(max: usize) -> Self {
        Self {
            next: max.max(1),
            misses: 0,
            paused: 0,
        }
    }

    /// The longest draft to propose this step (0 while paused); counts down a pause.
    pub fn want(&mut self, max: usize) -> usize {
        if self.paused > 0 {
            self.paused -= 1;
            return 0;
        }
        self.next.min(max)
    }

    /// Records that `accepted` of a `proposed`-token draft were accepted: a fully
    /// accepted draft lengthens the next one, a partly accepted one sizes it to what
    /// was accepted plus one, and repeated misses pause drafting for a while.
    pub fn record(&mut self, proposed: usize, accepted: usize, max: usize) {
        if accepted == 0 {
            self.misses += 1;
            self.next = 1;
            if self.misses >= MISSES_BEFORE_PAUSE {
                self.misses = 0;
                self.paused = PAUSE_STEPS;
            }
        } else {
            self.misses = 0;
            self.next = if accepted >= proposed {
                proposed + 2
            } else {
                accepted + 1
            };
        }
        self.next = self.next.clamp(1, max.max(1));
    }
}

/// The draft for `tokens`: up to `k` tokens that followed the most recent earlier
/// occurrence of its last n-gram (longest n first). Empty when nothing matches.
pub fn find_draft(tokens: &[u32], k: usize) -> &[u32] {
    if k == 0 {
        return &[];
    }
    let len = tokens.len();
    for n in (MIN_NGRAM..=MAX_NGRAM).rev() {
        if len <= n {
            continue;
        }
        let suffix = &tokens[len - n..];
        // Candidates start before the suffix itself, latest first.
        for start in (0..len - n).rev() {
            if &tokens[start..start + n] == suffix {
                let from = start + n;
                return &tokens[from..(from + k).min(len)];
            }
        }
    }
    &[]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_latest_longest_match_gives_what_followed_it() {
        // "a b c X ... a b c Y ... a b c" -> the latest "a b c" was followed by Y.
        let t = [1, 2, 3, 10, 11, 1, 2, 3, 20, 21, 22, 9, 1, 2, 3];
        assert_eq!(find_draft(&t, 2), &[20, 21]);
        assert_eq!(find_draft(&t, 10), &[20, 21, 22, 9, 1, 2, 3]);
        // Only a bigram matches: "7 3" occurs once before.
        let t = [7, 3, 5, 6, 1, 7, 3];
        assert_eq!(find_draft(&t, 3), &[5, 6, 1]);
    }

    #[test]
    fn no_match_or_no_room_gives_no_draft() {
        assert!(find_draft(&[1, 2, 3, 4, 5], 4).is_empty());
        assert!(find_draft(&[1, 2, 1, 2], 0).is_empty());
        assert!(find_draft(&[5], 3).is_empty());
        assert!(find_draft(&[], 3).is_empty());
        // A single repeated token is not a bigram match... but "1 1" is.
        assert_eq!(find_draft(&[1, 1, 1], 2), &[1]);
    }

    #[test]
    fn drafts_grow_when_accepted_and_pause_after_misses() {
        let max = 6;
        let mut s = SpecState::new(4);
        assert_eq!(s.want(max), 4);
        s.record(4, 4, max);
        assert_eq!(s.want(max), 6, "fully accepted: longer, up to max");
        s.record(6, 2, max);
        assert_eq!(s.want(max), 3, "partly accepted: accepted + 1");
        assert_eq!(s.want(2), 2, "capped by what the caller allows");
        for _ in 0..MISSES_BEFORE_PAUSE {
            s.record(1, 0, max);
        }
        for _ in 0..PAUSE_STEPS {
            assert_eq!(s.want(max), 0, "paused");
        }
        assert_eq!(s.want(max), 1, "resumes short");
    }
}
