//! The expected wall time of an engine step from what it computes, fitted online from
//! the steps that ran: `ms ≈ a + b·tokens + c·pairs`, where `pairs` counts the
//! query-key products of attention (a chunk of `len` tokens at position `start` reads
//! `len·start + len·(len + 1)/2` cached keys).
//!
//! The fit is least squares with exponential forgetting (each step's weight decays by
//! [`FORGET`] per later step, a memory of about 30 steps): the three terms are never
//! measured apart (every step has all of them), so a per-term EWMA cannot separate
//! them, while the normal equations do as soon as steps of different shapes have run;
//! forgetting follows a machine whose speed changes (other load, thermal limits, a
//! longer context). A term the data would make negative is dropped and the rest refit
//! (time never falls with more work), and a small ridge keeps the solve defined while
//! the steps seen are all alike (then the cost is shared by the terms in
//! proportion, so a smaller step is expected to be faster).
//!
//! Plain numbers, no clocks: the caller measures and feeds them ([`StepCost::observe`]).

/// Per-step decay of older observations' weight.
pub const FORGET: f64 = 0.97;
/// Observations before predictions are trusted.
const MIN_OBSERVATIONS: usize = 3;
/// Ridge added to each diagonal term of the normal equations, relative to it.
const RIDGE: f64 = 1e-6;
/// Attention pairs per unit of the third feature (keeps the features' scales close).
const PAIRS_UNIT: f64 = 1000.0;

/// What a step computes, in the model's terms.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StepWork {
    /// Tokens computed (rows of every weight matmul).
    pub tokens: f64,
    /// Query-key pairs of attention.
    pub pairs: f64,
}

impl StepWork {
    /// The work of `len` tokens of one sequence starting at position `start`.
    pub fn chunk(start: usize, len: usize) -> Self {
        let (s, l) = (start as f64, len as f64);
        Self {
            tokens: l,
            pairs: l * s + l * (l + 1.0) / 2.0,
        }
    }

    /// Both works in one step.
    pub fn plus(self, other: Self) -> Self {
        Self {
            tokens: self.tokens + other.tokens,
            pairs: self.pairs + other.pairs,
        }
    }

    fn features(self) -> [f64; 3] {
        [1.0, self.tokens, self.pairs / PAIRS_UNIT]
    }
}

/// The online fit (see the module docs).
#[derive(Debug, Clone, Default)]
pub struct StepCost {
    /// Weighted `Σ f fᵀ`.
    s: [[f64; 3]; 3],
    /// Weighted `Σ f · ms`.
    r: [f64; 3],
    observed: usize,
    /// `[a, b, c]` from the last observation; `None` until enough are seen.
    coef: Option<[f64; 3]>,
}

impl StepCost {
    /// A model that has seen nothing.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that a step doing `work` took `ms` milliseconds.
    pub fn observe(&mut self, work: StepWork, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        let f = work.features();
        for i in 0..3 {
            for j in 0..3 {
                self.s[i][j] = FORGET * self.s[i][j] + f[i] * f[j];
            }
            self.r[i] = FORGET * self.r[i] + f[i] * ms;
        }
        self.observed += 1;
        if self.observed >= MIN_OBSERVATIONS {
            self.coef = self.fit();
        }
    }

    /// `[a, b, c]` (ms, ms per token, ms per thousand attention pairs), once fitted.
    pub fn coefficients(&self) -> Option<[f64; 3]> {
        self.coef
    }

    /// Expected milliseconds of a step doing `work`; `None` until fitted.
    pub fn predict(&self, work: StepWork) -> Option<f64> {
        let c = self.coef?;
        let f = work.features();
        Some(c.iter().zip(f).map(|(c, f)| c * f).sum())
    }

    /// The most tokens (at most `limit`) one sequence at position `start` can add to a
    /// step already doing `base` with the step expected to stay within `target_ms`;
    /// `None` until fitted. May be 0 when `base` alone reaches the target.
    pub fn max_tokens(
        &self,
        base: StepWork,
        start: usize,
        target_ms: f64,
        limit: usize,
    ) -> Option<usize> {
        let fits = |x: usize| {
            self.predict(base.plus(StepWork::chunk(start, x)))
                .is_some_and(|ms| ms <= target_ms)
        };
        self.coef?;
        // The cost grows with x (non-negative terms): bisect for the last x that fits.
        let (mut lo, mut hi) = (0usize, limit);
        if fits(hi) {
            return Some(hi);
        }
        if !fits(0) {
            return Some(0);
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if fits(mid) { lo = mid } else { hi = mid }
        }
        Some(lo)
    }

    /// Non-negative least squares over the active terms: solve, drop the most negative
    /// term, repeat.
    fn fit(&self) -> Option<[f64; 3]> {
        let mut active = [true; 3];
        loop {
            let c = self.solve(&active)?;
            let worst = (0..3)
                .filter(|&i| active[i] && c[i] < 0.0)
                .min_by(|&i, &j| c[i].total_cmp(&c[j]));
            match worst {
                None => return Some(c),
                Some(i) => active[i] = false,
            }
            if !active.contains(&true) {
                return Some([0.0; 3]);
            }
        }
    }

    /// The ridge-regularised normal equations restricted to `active` terms (the
    /// others 0), by Gaussian elimination with partial pivoting.
    fn solve(&self, active: &[bool; 3]) -> Option<[f64; 3]> {
        let idx: Vec<usize> = (0..3).filter(|&i| active[i]).collect();
        let n = idx.len();
        let mut m = vec![[0f64; 4]; n];
        for (a, &i) in idx.iter().enumerate() {
            for (b, &j) in idx.iter().enumerate() {
                // A ridge relative to each term's own scale (scale-free).
                let ridge = if a == b {
                    RIDGE * self.s[i][i] + 1e-12
                } else {
                    0.0
                };
                m[a][b] = self.s[i][j] + ridge;
            }
            m[a][3] = self.r[i];
        }
        for col in 0..n {
            let piv = (col..n).max_by(|&x, &y| m[x][col].abs().total_cmp(&m[y][col].abs()))?;
            if m[piv][col].abs() < 1e-300 {
                return None;
            }
            m.swap(col, piv);
            let pivot = m[col];
            for (row, r) in m.iter_mut().enumerate() {
                if row != col {
                    let k = r[col] / pivot[col];
                    for (x, p) in r[col..].iter_mut().zip(&pivot[col..]) {
                        *x -= k * p;
                    }
                }
            }
        }
        let mut out = [0f64; 3];
        for (a, &i) in idx.iter().enumerate() {
            out[i] = m[a][3] / m[a][a];
        }
        out.iter().all(|v| v.is_finite()).then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn truth(w: StepWork) -> f64 {
        4.0 + 0.2 * w.tokens + 0.01 * w.pairs / PAIRS_UNIT
    }

    /// Steps of varied shapes: decodes of 8 sequences, with and without prefill chunks.
    fn shapes() -> Vec<StepWork> {
        let decodes = (0..8).fold(StepWork::default(), |w, i| {
            w.plus(StepWork::chunk(300 + 50 * i, 1))
        });
        (0..40)
            .map(|i| match i % 4 {
                0 => decodes,
                1 => decodes.plus(StepWork::chunk(64 * (i % 7), 96)),
                2 => StepWork::chunk(0, 512),
                _ => decodes.plus(StepWork::chunk(512, 256)),
            })
            .collect()
    }

    #[test]
    fn recovers_a_linear_cost_exactly() {
        let mut m = StepCost::new();
        assert!(
            m.predict(StepWork::chunk(0, 10)).is_none(),
            "nothing seen yet"
        );
        for w in shapes() {
            m.observe(w, truth(w));
        }
        let c = m.coefficients().unwrap();
        assert!((c[0] - 4.0).abs() < 0.05, "{c:?}");
        assert!((c[1] - 0.2).abs() < 1e-3, "{c:?}");
        assert!((c[2] - 0.01).abs() < 1e-3, "{c:?}");
        let w = StepWork::chunk(800, 200);
        assert!((m.predict(w).unwrap() - truth(w)).abs() < 0.01 * truth(w));
    }

    #[test]
    fn forgets_an_old_machine_speed() {
        let mut m = StepCost::new();
        for w in shapes() {
            m.observe(w, truth(w));
        }
        // The machine gets twice as slow: within ~100 steps the model follows.
        for _ in 0..3 {
            for w in shapes() {
                m.observe(w, 2.0 * truth(w));
            }
        }
        let w = StepWork::chunk(0, 300);
        let got = m.predict(w).unwrap();
        assert!((got - 2.0 * truth(w)).abs() < 0.05 * truth(w), "{got}");
    }

    #[test]
    fn never_fits_a_negative_term() {
        let mut m = StepCost::new();
        // Noise that would make the attention term negative: the time falls slightly
        // with context at equal tokens.
        for i in 0..30 {
            let w = StepWork::chunk(100 * (i % 5), 64);
            m.observe(w, 20.0 - 0.001 * w.pairs / PAIRS_UNIT);
        }
        let c = m.coefficients().unwrap();
        assert!(c.iter().all(|&v| v >= 0.0), "{c:?}");
    }

    #[test]
    fn alike_steps_scale_with_their_size() {
        // Only full 512-token prefills seen: a 128-token step is expected at about a
        // quarter of their time, not at their full time.
        let mut m = StepCost::new();
        for _ in 0..5 {
            m.observe(StepWork::chunk(0, 512), 400.0);
        }
        let small = m.predict(StepWork::chunk(0, 128)).unwrap();
        assert!(small > 50.0 && small < 200.0, "{small}");
    }

    #[test]
    fn max_tokens_is_the_largest_chunk_under_the_target() {
        let mut m = StepCost::new();
        for w in shapes() {
            m.observe(w, truth(w));
        }
        let base = StepWork::chunk(500, 1).plus(StepWork::chunk(700, 1));
        let x = m.max_tokens(base, 200, 60.0, 512).unwrap();
        let at = |x| m.predict(base.plus(StepWork::chunk(200, x))).unwrap();
        assert!(x > 0 && x < 512, "{x}");
        assert!(
            at(x) <= 60.0 && at(x + 1) > 60.0,
            "{x}: {} {}",
            at(x),
            at(x + 1)
        );
        assert_eq!(
            m.max_tokens(base, 200, 1e9, 512),
            Some(512),
            "everything fits"
        );
        assert_eq!(m.max_tokens(base, 200, 1.0, 512), Some(0), "nothing fits");
        assert_eq!(StepCost::new().max_tokens(base, 0, 60.0, 512), None);
    }
}
