//! One sequence's grammar state. The engine calls [`Constraint::prepare_mask`] while
//! the forward runs (so the mask costs no step time when it is cheaper than the
//! forward), then [`Constraint::apply`] on the sequence's logits row, then
//! [`Constraint::commit`] with the sampled token. Near the end of its token budget a
//! JSON output is steered shut ([`Constraint::steer_to_close`]), so that a model that
//! loops inside a string still ends with JSON that parses.
//!
//! Invariants: `apply` leaves only tokens the grammar allows at finite values (every
//! end-of-generation token when the grammar accepts; none otherwise); a constraint in
//! an error state reports it instead of allowing anything.

use std::sync::Arc;

use llguidance::toktrie::SimpleVob;
use llguidance::{Matcher, TokenParser};

/// The tokens made only of JSON closing bytes (`"`, `}`, `]`), split by whether they
/// start with a quote.
#[derive(Debug, Default)]
pub struct Closers {
    /// Starting with `"` (close a string, then maybe containers).
    pub quoted: Vec<u32>,
    /// Only `}` / `]`.
    pub brackets: Vec<u32>,
}

/// A compiled grammar following one sequence's tokens.
pub struct Constraint {
    matcher: Matcher,
    /// The mask for the next token, computed ahead by `prepare_mask`.
    mask: Option<Result<SimpleVob, String>>,
    eos: u32,
    /// For JSON grammars: the closing tokens [`Constraint::steer_to_close`] favours
    /// when the token budget runs out.
    closers: Option<Arc<Closers>>,
}

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Constraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish_non_exhaustive()
    }
}

impl Constraint {
    /// Wraps a parser; fails when the grammar is already in an error state.
    pub(super) fn new(
        parser: TokenParser,
        eos: u32,
        closers: Option<Arc<Closers>>,
    ) -> Result<Self, String> {
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(e);
        }
        Ok(Self {
            matcher,
            mask: None,
            eos,
            closers,
        })
    }

    /// An independent copy in the same state (its own mask cache).
    pub fn fork(&self) -> Self {
        Self {
            matcher: self.matcher.deep_clone(),
            mask: None,
            eos: self.eos,
            closers: self.closers.clone(),
        }
    }

    /// Computes the next token's mask (idempotent until the next `commit`).
    pub fn prepare_mask(&mut self) {
        if self.mask.is_none() {
            let m = self.matcher.compute_mask().map_err(|e| e.to_string());
            self.mask = Some(m);
        }
    }

    /// Sets every token the grammar forbids to −∞ in `logits` (a row over the model's
    /// vocabulary, which may be longer than the tokenizer's). `eog` are the ids that
    /// end generation: allowed exactly when the grammar may end here.
    pub fn apply(&mut self, logits: &mut [f32], eog: &[u32]) -> Result<(), String> {
        self.prepare_mask();
        let mask = match self.mask.as_ref().expect("prepared") {
            Ok(m) => m,
            Err(e) => return Err(format!("the output grammar failed: {e}")),
        };
        let may_end = mask.is_allowed(self.eos) || eog.iter().any(|&e| mask.is_allowed(e));
        let saved: Vec<(usize, f32)> = eog
            .iter()
            .filter_map(|&e| logits.get(e as usize).map(|&l| (e as usize, l)))
            .collect();
        let n = mask.len().min(logits.len());
        let mut any = false;
        for (i, l) in logits.iter_mut().enumerate() {
            if i < n && mask.is_allowed(i as u32) {
                any = true;
            } else {
                *l = f32::NEG_INFINITY;
            }
        }
        for (i, l) in saved {
            logits[i] = if may_end { l } else { f32::NEG_INFINITY };
        }
        if !any && !may_end {
            return Err("the output grammar allows no token here".into());
        }
        Ok(())
    }

    /// Near the end of the token budget, steers a JSON output shut: among the tokens
    /// the grammar allows (call after [`Self::apply`]), those that close something win
    /// over everything else (the model still picks among them), and so does the end of
    /// generation where the grammar may end. Inside a string, or where a value starts,
    /// only a token starting with a quote changes the state (a `]` there would be
    /// text), so those go first. Other grammars are left alone.
    pub fn steer_to_close(&self, logits: &mut [f32], eog: &[u32]) {
        let Some(closers) = &self.closers else {
            return;
        };
        const LIFT: f32 = 1.0e4;
        let allowed = |l: &[f32], t: u32| l.get(t as usize).is_some_and(|l| l.is_finite());
        let quotes: Vec<u32> = closers
            .quoted
            .iter()
            .copied()
            .filter(|&t| allowed(logits, t))
            .collect();
        let lift: Vec<u32> = if quotes.is_empty() {
            closers
                .brackets
                .iter()
                .copied()
                .filter(|&t| allowed(logits, t))
                .collect()
        } else {
            quotes
        };
        let ends = eog.iter().copied().filter(|&t| allowed(logits, t));
        for t in lift.into_iter().chain(ends).collect::<Vec<_>>() {
            logits[t as usize] += LIFT;
        }
    }

    /// Advances the grammar past `token` (an end-of-generation token is not committed:
    /// the sequence ends there).
    pub fn commit(&mut self, token: u32) -> Result<(), String> {
        self.mask = None;
        self.matcher
            .consume_token(token)
            .map_err(|e| format!("the output grammar rejected token {token}: {e}"))
    }

    /// Whether the grammar is complete and allows nothing more.
    pub fn is_finished(&self) -> bool {
        self.matcher.is_stopped()
    }
}
