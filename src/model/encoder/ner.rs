//! Token classification output as entities, with the semantics of transformers'
//! token-classification pipeline: per-token softmax over the labels, special tokens
//! dropped, sub-word detection, then one of five aggregation strategies:
//! - `none`: one entity per token (its best label, with the token's `index`);
//! - `simple`: per-token best labels, then adjacent tokens grouped by IOB tag;
//! - `first` / `average` / `max`: tokens first merged into words (the word's label is
//!   its first token's, the best of its averaged scores, or its most confident
//!   token's), then words grouped by IOB tag.
//!
//! Grouping: a token (or word) joins the group before it when its tag (label without
//! `B-`/`I-`) is the same and it does not start with `B-`; a label outside the IOB
//! scheme counts as `I-`. A group's score is the mean of its members' scores, its
//! label the tag, its span from the first member's start to the last member's end.
//!
//! Invariants: pure functions (no model, no tokenizer: the caller passes the token
//! strings and a function that joins token strings back into text); entities come in
//! text order; offsets are in characters (Unicode scalar values) of the input.

/// How tokens become entities.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggregation {
    /// One entity per token.
    None,
    /// Group adjacent tokens by IOB tag.
    Simple,
    /// Words take their first token's label.
    First,
    /// Words take the best label of their tokens' averaged scores.
    Average,
    /// Words take the label of their most confident token.
    Max,
}

impl Aggregation {
    /// Parses the pipeline's names (`none`, `simple`, `first`, `average`, `max`).
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "simple" => Self::Simple,
            "first" => Self::First,
            "average" => Self::Average,
            "max" => Self::Max,
            _ => return None,
        })
    }
}

/// One token of the model input, as the tokenizer gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSpan {
    /// The token's string in the vocabulary (`##ing`, `▁Paris`).
    pub token: String,
    /// First character of the token in the text.
    pub start: usize,
    /// One past its last character.
    pub end: usize,
    /// A special token (`[CLS]`, `</s>`): never an entity.
    pub special: bool,
    /// The unknown token: it stands for its text span and starts a word.
    pub unknown: bool,
}

/// A token with its label probabilities, ready for aggregation.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// What is shown as the token's text.
    pub word: String,
    /// Probabilities over the labels.
    pub scores: Vec<f32>,
    /// Character span.
    pub start: usize,
    /// Character span end.
    pub end: usize,
    /// Position in the model input (special tokens counted).
    pub index: usize,
    /// Continues the word of the token before it.
    pub is_subword: bool,
}

/// One entity of the output.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// The label (`none`) or the tag of the group (the others).
    pub label: String,
    /// Probability of the label (mean over a group).
    pub score: f32,
    /// The text of the entity, rebuilt from its tokens.
    pub word: String,
    /// First character.
    pub start: usize,
    /// One past the last character.
    pub end: usize,
    /// Token position, for `none` only.
    pub index: Option<usize>,
}

/// Softmax of each token's logits (`logits` is `[tokens, labels]` row-major).
pub fn softmax_rows(logits: &[f32], labels: usize) -> Vec<Vec<f32>> {
    logits
        .chunks_exact(labels)
        .map(|row| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let exp: Vec<f32> = row.iter().map(|x| (x - max).exp()).collect();
            let sum: f32 = exp.iter().sum();
            exp.into_iter().map(|e| e / sum).collect()
        })
        .collect()
}

/// The non-special tokens with their probabilities and sub-word flags.
///
/// `word_aware`: the tokenizer marks continuations (WordPiece's `##`): a token
/// continues a word when its string and its text span differ in length. Otherwise
/// (SentencePiece) the pipeline's heuristic applies: a token continues a word when
/// it does not start the text and neither it nor the character before it is a space.
pub fn gather(
    text: &str,
    spans: &[TokenSpan],
    probs: Vec<Vec<f32>>,
    word_aware: bool,
) -> Vec<Scored> {
    let chars: Vec<char> = text.chars().collect();
    let slice = |a: usize, b: usize| -> String {
        chars[a.min(chars.len())..b.min(chars.len())]
            .iter()
            .collect()
    };
    spans
        .iter()
        .zip(probs)
        .enumerate()
        .filter(|(_, (s, _))| !s.special)
        .map(|(index, (s, scores))| {
            let word_ref = slice(s.start, s.end);
            let (word, is_subword) = if s.unknown {
                (word_ref, false)
            } else if word_aware {
                let sub = s.token.chars().count() != word_ref.chars().count();
                (s.token.clone(), sub)
            } else {
                let sub = s.start > 0 && !slice(s.start - 1, s.start + 1).contains(' ');
                (s.token.clone(), sub)
            };
            Scored {
                word,
                scores,
                start: s.start,
                end: s.end,
                index,
                is_subword,
            }
        })
        .collect()
}

/// Entities of one input: aggregated by `strategy`, then those whose label (or
/// group tag) is in `ignore` dropped. `join` turns token strings into text (the
/// tokenizer's decoder).
pub fn entities(
    tokens: &[Scored],
    labels: &[String],
    strategy: Aggregation,
    ignore: &[String],
    join: &dyn Fn(&[String]) -> String,
) -> Vec<Entity> {
    let labelled: Vec<Entity> = match strategy {
        Aggregation::None | Aggregation::Simple => tokens
            .iter()
            .map(|t| {
                let (i, score) = argmax(&t.scores);
                Entity {
                    label: labels[i].clone(),
                    score,
                    word: t.word.clone(),
                    start: t.start,
                    end: t.end,
                    index: Some(t.index),
                }
            })
            .collect(),
        _ => words(tokens)
            .into_iter()
            .map(|w| word_entity(w, labels, strategy, join))
            .collect(),
    };
    let out = match strategy {
        Aggregation::None => labelled,
        _ => group(&labelled, join),
    };
    out.into_iter()
        .filter(|e| !ignore.contains(&e.label))
        .collect()
}

/// Splits tokens into words: a word is a token and the sub-word tokens after it.
fn words(tokens: &[Scored]) -> Vec<&[Scored]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=tokens.len() {
        if i == tokens.len() || !tokens[i].is_subword {
            if i > start {
                out.push(&tokens[start..i]);
            }
            start = i;
        }
    }
    out
}

fn word_entity(
    word: &[Scored],
    labels: &[String],
    strategy: Aggregation,
    join: &dyn Fn(&[String]) -> String,
) -> Entity {
    let (i, score) = match strategy {
        Aggregation::Max => {
            // The first of the tokens with the highest top probability.
            let best = word.iter().fold(&word[0], |best, t| {
                if max(&t.scores) > max(&best.scores) {
                    t
                } else {
                    best
                }
            });
            argmax(&best.scores)
        }
        Aggregation::Average => {
            let n = word.len() as f32;
            let mean: Vec<f32> = (0..labels.len())
                .map(|l| word.iter().map(|t| t.scores[l]).sum::<f32>() / n)
                .collect();
            argmax(&mean)
        }
        _ => argmax(&word[0].scores),
    };
    let pieces: Vec<String> = word.iter().map(|t| t.word.clone()).collect();
    Entity {
        label: labels[i].clone(),
        score,
        word: join(&pieces),
        start: word[0].start,
        end: word[word.len() - 1].end,
        index: None,
    }
}

/// `(B or I, tag)` of a label; labels outside the IOB scheme count as `I`.
fn tag(label: &str) -> (bool, &str) {
    match label.strip_prefix("B-") {
        Some(t) => (true, t),
        None => (false, label.strip_prefix("I-").unwrap_or(label)),
    }
}

/// Groups adjacent entities of the same tag (a `B-` starts a new group).
fn group(items: &[Entity], join: &dyn Fn(&[String]) -> String) -> Vec<Entity> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=items.len() {
        let ends = i == items.len() || {
            let (begins, t) = tag(&items[i].label);
            begins || t != tag(&items[i - 1].label).1
        };
        if ends && i > start {
            out.push(merge(&items[start..i], join));
            start = i;
        }
    }
    out
}

fn merge(members: &[Entity], join: &dyn Fn(&[String]) -> String) -> Entity {
    let first = &members[0];
    // The group's tag is the first member's label with its prefix (up to the first
    // `-`) removed, as the pipeline does.
    let label = match first.label.split_once('-') {
        Some((_, rest)) => rest.to_string(),
        None => first.label.clone(),
    };
    let words: Vec<String> = members.iter().map(|m| m.word.clone()).collect();
    Entity {
        label,
        score: members.iter().map(|m| m.score).sum::<f32>() / members.len() as f32,
        word: join(&words),
        start: first.start,
        end: members[members.len() - 1].end,
        index: None,
    }
}

fn max(v: &[f32]) -> f32 {
    v.iter().copied().fold(f32::NEG_INFINITY, f32::max)
}

/// Index and value of the largest element (the first of equals).
fn argmax(v: &[f32]) -> (usize, f32) {
    v.iter()
        .copied()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |best, (i, x)| {
            if x > best.1 { (i, x) } else { best }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels() -> Vec<String> {
        ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
            .map(String::from)
            .to_vec()
    }

    /// A token whose best label is `best` with probability `p` (the rest spread).
    fn tok(
        word: &str,
        start: usize,
        end: usize,
        index: usize,
        sub: bool,
        best: usize,
        p: f32,
    ) -> Scored {
        let mut scores = vec![(1.0 - p) / 4.0; 5];
        scores[best] = p;
        Scored {
            word: word.into(),
            scores,
            start,
            end,
            index,
            is_subword: sub,
        }
    }

    /// WordPiece-style join.
    fn join(pieces: &[String]) -> String {
        pieces.join(" ").replace(" ##", "")
    }

    // "Jean Dupont lives in Paris": Jean=B-PER, Du ##pont = I-PER / O, Paris = B-LOC.
    fn sentence() -> Vec<Scored> {
        vec![
            tok("jean", 0, 4, 1, false, 1, 0.9),
            tok("du", 5, 7, 2, false, 2, 0.8),
            tok("##pont", 7, 11, 3, true, 0, 0.6),
            tok("lives", 12, 17, 4, false, 0, 0.95),
            tok("in", 18, 20, 5, false, 0, 0.9),
            tok("paris", 21, 26, 6, false, 3, 0.7),
        ]
    }

    #[test]
    fn none_keeps_tokens_and_drops_ignored_labels() {
        let e = entities(
            &sentence(),
            &labels(),
            Aggregation::None,
            &["O".into()],
            &join,
        );
        let got: Vec<_> = e.iter().map(|e| (e.label.as_str(), e.index)).collect();
        assert_eq!(
            got,
            [("B-PER", Some(1)), ("I-PER", Some(2)), ("B-LOC", Some(6))]
        );
        let all = entities(&sentence(), &labels(), Aggregation::None, &[], &join);
        assert_eq!(all.len(), 6);
    }

    #[test]
    fn simple_groups_by_tag_and_a_b_starts_a_new_group() {
        let e = entities(
            &sentence(),
            &labels(),
            Aggregation::Simple,
            &["O".into()],
            &join,
        );
        assert_eq!(e.len(), 2, "{e:?}");
        assert_eq!(
            (e[0].label.as_str(), e[0].word.as_str()),
            ("PER", "jean du")
        );
        assert_eq!((e[0].start, e[0].end), (0, 7));
        assert!((e[0].score - 0.85).abs() < 1e-6);
        assert_eq!((e[1].label.as_str(), e[1].start, e[1].end), ("LOC", 21, 26));
        assert_eq!(e[1].index, None);
        // Two B-PER in a row are two entities.
        let two = vec![
            tok("a", 0, 1, 1, false, 1, 0.9),
            tok("b", 2, 3, 2, false, 1, 0.9),
        ];
        assert_eq!(
            entities(&two, &labels(), Aggregation::Simple, &[], &join).len(),
            2
        );
    }

    #[test]
    fn word_strategies_merge_sub_words_before_grouping() {
        let ignore = ["O".to_string()];
        // first: "dupont" takes "du"'s I-PER: one PER group over "jean dupont".
        let first = entities(&sentence(), &labels(), Aggregation::First, &ignore, &join);
        assert_eq!(first[0].word, "jean dupont");
        assert_eq!((first[0].start, first[0].end), (0, 11));
        assert!((first[0].score - (0.9 + 0.8) / 2.0).abs() < 1e-6);
        // max: "du" (0.8) beats "##pont" (0.6): the same label.
        let max = entities(&sentence(), &labels(), Aggregation::Max, &ignore, &join);
        assert_eq!(max[0].word, "jean dupont");
        // average: I-PER averages (0.8 + 0.1) / 2 = 0.45, O (0.05 + 0.6) / 2 = 0.325.
        let avg = entities(&sentence(), &labels(), Aggregation::Average, &ignore, &join);
        assert_eq!(avg[0].word, "jean dupont");
        assert!((avg[0].score - (0.9 + 0.45) / 2.0).abs() < 1e-6, "{avg:?}");
        // With ##pont sure of O, average flips the word to O and PER is "jean" alone.
        let mut s = sentence();
        s[2] = tok("##pont", 7, 11, 3, true, 0, 0.99);
        let avg = entities(&s, &labels(), Aggregation::Average, &ignore, &join);
        assert_eq!(avg[0].word, "jean", "{avg:?}");
        let max = entities(&s, &labels(), Aggregation::Max, &ignore, &join);
        assert_eq!(max[0].word, "jean", "the most confident token says O");
    }

    #[test]
    fn labels_outside_iob_group_as_continuations() {
        let l: Vec<String> = ["O", "PER", "LOC"].map(String::from).to_vec();
        let mk = |w: &str, s, best| {
            let mut scores = vec![0.1; 3];
            scores[best] = 0.8;
            Scored {
                word: w.into(),
                scores,
                start: s,
                end: s + 1,
                index: s,
                is_subword: false,
            }
        };
        let t = vec![mk("a", 0, 1), mk("b", 2, 1), mk("c", 4, 2)];
        let e = entities(&t, &l, Aggregation::Simple, &[], &join);
        let got: Vec<_> = e
            .iter()
            .map(|e| (e.label.as_str(), e.word.as_str()))
            .collect();
        assert_eq!(got, [("PER", "a b"), ("LOC", "c")]);
    }

    #[test]
    fn gather_marks_sub_words_both_ways_and_skips_specials() {
        let span = |t: &str, a, b, special| TokenSpan {
            token: t.into(),
            start: a,
            end: b,
            special,
            unknown: false,
        };
        let probs = |n| vec![vec![0.2; 5]; n];
        // WordPiece: "Dupont" -> du ##pont.
        let wp = [
            span("[CLS]", 0, 0, true),
            span("du", 0, 2, false),
            span("##pont", 2, 6, false),
            span("[SEP]", 0, 0, true),
        ];
        let g = gather("Dupont", &wp, probs(4), true);
        assert_eq!(g.len(), 2);
        assert_eq!((g[0].index, g[0].is_subword), (1, false));
        assert_eq!((g[1].index, g[1].is_subword), (2, true));
        // SentencePiece: "Le Dupont" -> ▁Le ▁Du pont (character offsets).
        let sp = [
            span("<s>", 0, 0, true),
            span("▁Le", 0, 2, false),
            span("▁Du", 3, 5, false),
            span("pont", 5, 9, false),
            span("</s>", 0, 0, true),
        ];
        let g = gather("Le Dupont", &sp, probs(5), false);
        let subs: Vec<bool> = g.iter().map(|t| t.is_subword).collect();
        assert_eq!(subs, [false, false, true]);
        // The unknown token shows its text and starts a word.
        let mut unk = span("[UNK]", 2, 3, false);
        unk.unknown = true;
        let g = gather("ab🍕", &[span("ab", 0, 2, false), unk], probs(2), true);
        assert_eq!((g[1].word.as_str(), g[1].is_subword), ("🍕", false));
    }

    #[test]
    fn softmax_rows_sum_to_one() {
        let p = softmax_rows(&[1.0, 2.0, 3.0, 0.0, 0.0, 0.0], 3);
        assert_eq!(p.len(), 2);
        for row in &p {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        }
        assert!(p[0][2] > p[0][1] && (p[1][0] - 1.0 / 3.0).abs() < 1e-6);
        assert_eq!(Aggregation::parse("average"), Some(Aggregation::Average));
        assert_eq!(Aggregation::parse("AVERAGE"), None);
    }
}
