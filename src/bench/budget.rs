//! The bench's wall-clock budget: phases that would start after it are skipped (and
//! reported as skipped), and a running decode stops early once it is spent, so a slow
//! device still produces a report in bounded time.

use std::time::{Duration, Instant};

/// A deadline from the start of the bench.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    start: Instant,
    limit: Duration,
}

impl Budget {
    /// `limit` from now.
    pub fn new(limit: Duration) -> Self {
        Self {
            start: Instant::now(),
            limit,
        }
    }

    /// Seconds since the start.
    pub fn elapsed_s(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Whether the budget is spent.
    pub fn over(&self) -> bool {
        self.start.elapsed() >= self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_budget_is_over_at_once() {
        assert!(Budget::new(Duration::ZERO).over());
        assert!(!Budget::new(Duration::from_secs(3600)).over());
    }
}
