//! One check's outcome and the accumulator that produces it: every output element is
//! compared with its reference under its own bound; the row reported is the element
//! whose error is the largest fraction of its bound (so `max_error` and `bound` are read
//! off the same element), and the check passes only when every element is within its
//! bound and none is NaN where the reference is not.

use serde::Serialize;

/// One row of the selftest table.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// What was checked (`qmatvec q4_k`, `paged_attention split`, …).
    pub kernel: String,
    /// The shapes it ran on.
    pub shapes: String,
    /// Error of the worst element (absolute, in the output's units).
    pub max_error: f64,
    /// That element's bound.
    pub bound: f64,
    /// Every element within its bound.
    pub pass: bool,
    /// Elements compared.
    pub compared: usize,
    /// Wall time of the check (inputs, launches, reference), ms.
    pub elapsed_ms: f64,
    /// Why it failed or was skipped, or a remark.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl CheckResult {
    /// A failed row that compared nothing: `detail` says why.
    pub fn failed(kernel: &str, shapes: &str, detail: String) -> Self {
        Self {
            kernel: kernel.into(),
            shapes: shapes.into(),
            max_error: f64::NAN,
            bound: f64::NAN,
            pass: false,
            compared: 0,
            elapsed_ms: 0.0,
            detail: Some(detail),
        }
    }
}

/// The worst element seen so far.
#[derive(Debug, Clone, Default)]
pub struct Worst {
    err: f64,
    bound: f64,
    ratio: f64,
    bad: usize,
    compared: usize,
    first_bad: Option<String>,
}

impl Worst {
    /// Compares one element: `|got - want| <= bound`.
    pub fn add(&mut self, got: f64, want: f64, bound: f64, at: impl FnOnce() -> String) {
        self.compared += 1;
        let err = (got - want).abs();
        let ok = err <= bound || (got.to_bits() == want.to_bits());
        let ratio = if ok && err == 0.0 {
            0.0
        } else if bound > 0.0 && err.is_finite() {
            err / bound
        } else {
            f64::INFINITY
        };
        if ratio > self.ratio || self.compared == 1 {
            self.ratio = ratio;
            self.err = if err.is_nan() { f64::INFINITY } else { err };
            self.bound = bound;
        }
        if !ok {
            self.bad += 1;
            if self.first_bad.is_none() {
                self.first_bad = Some(format!("{}: got {got}, want {want}", at()));
            }
        }
    }

    /// Compares exact values (indices, copies): bound 0.
    pub fn exact(&mut self, got: f64, want: f64, at: impl FnOnce() -> String) {
        self.add(got, want, 0.0, at);
    }

    /// Folds another accumulator in.
    pub fn merge(&mut self, other: Worst) {
        if other.ratio > self.ratio || self.compared == 0 {
            self.ratio = other.ratio;
            self.err = other.err;
            self.bound = other.bound;
        }
        self.bad += other.bad;
        self.compared += other.compared;
        if self.first_bad.is_none() {
            self.first_bad = other.first_bad;
        }
    }

    /// The table row.
    pub fn finish(self, kernel: &str, shapes: &str) -> CheckResult {
        let pass = self.bad == 0 && self.compared > 0;
        let detail = match (self.bad, self.first_bad) {
            (0, _) if self.compared == 0 => Some("nothing compared".into()),
            (0, _) => None,
            (n, first) => Some(format!(
                "{n} of {} elements out of bound; first {}",
                self.compared,
                first.unwrap_or_default()
            )),
        };
        CheckResult {
            kernel: kernel.into(),
            shapes: shapes.into(),
            max_error: self.err,
            bound: self.bound,
            pass,
            compared: self.compared,
            elapsed_ms: 0.0,
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worst_element_is_the_largest_fraction_of_its_bound() {
        let mut w = Worst::default();
        w.add(1.0, 1.0, 0.1, String::new);
        w.add(2.05, 2.0, 0.1, String::new); // 0.5 of its bound
        w.add(10.5, 10.0, 10.0, String::new); // 0.05
        let r = w.finish("k", "s");
        assert!(r.pass);
        assert!((r.max_error - 0.05).abs() < 1e-9 && r.bound == 0.1, "{r:?}");
        assert_eq!(r.compared, 3);
    }

    #[test]
    fn nan_and_out_of_bound_elements_fail() {
        let mut w = Worst::default();
        w.add(f64::NAN, 1.0, 1.0, || "[3]".into());
        let r = w.finish("k", "s");
        assert!(!r.pass && r.max_error.is_infinite(), "{r:?}");
        assert!(r.detail.unwrap().contains("[3]"));
        let mut w = Worst::default();
        w.exact(3.0, 3.0, String::new);
        w.exact(4.0, 3.0, || "row 1".into());
        let r = w.finish("argmax", "s");
        assert!(!r.pass && r.max_error == 1.0 && r.bound == 0.0);
        // NaN where the reference is NaN (bitwise equal copies) passes.
        let mut w = Worst::default();
        w.exact(f64::NAN, f64::NAN, String::new);
        assert!(w.finish("copy", "s").pass);
        assert!(!Worst::default().finish("none", "s").pass);
    }
}
