//! Admission permits: a bounded counter of queued work (sequences waiting for their
//! first step, encoder inputs not yet run) whose units are released by dropping (or
//! partly releasing) the permit that holds them, never by hand-counted decrements.
//!
//! Invariants: a permit gives back exactly the units it holds, once (what `release`
//! returned early plus what its drop returns add up to what `try_acquire` took); the
//! counter therefore returns to zero when every permit is gone, whatever path (run,
//! fail, abort, engine panic) the work took.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A counter of queued units with an upper bound. Cheap to clone (clones share it).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicUsize>);

impl Gauge {
    /// Units held by live permits.
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Acquire)
    }

    /// Takes `n` units if the count stays within `max`.
    pub fn try_acquire(&self, n: usize, max: usize) -> Option<Permit> {
        self.take_if(n, |w| w + n <= max)
    }

    /// Like `try_acquire`, but an empty gauge admits any `n` (so a single job larger
    /// than the bound is not refused for ever).
    pub fn try_acquire_or_first(&self, n: usize, max: usize) -> Option<Permit> {
        self.take_if(n, |w| w == 0 || w + n <= max)
    }

    fn take_if(&self, n: usize, fits: impl Fn(usize) -> bool) -> Option<Permit> {
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                fits(w).then_some(w + n)
            })
            .ok()
            .map(|_| Permit {
                gauge: self.clone(),
                held: n,
            })
    }

    /// Takes `n` units whatever the bound (work already admitted elsewhere).
    pub fn acquire(&self, n: usize) -> Permit {
        self.0.fetch_add(n, Ordering::AcqRel);
        Permit {
            gauge: self.clone(),
            held: n,
        }
    }
}

/// Units of a [`Gauge`] held until released or dropped.
#[derive(Debug)]
pub struct Permit {
    gauge: Gauge,
    held: usize,
}

impl Permit {
    /// Gives back up to `n` units now (the rest stay held); returns how many.
    pub fn release(&mut self, n: usize) -> usize {
        let n = n.min(self.held);
        self.held -= n;
        self.gauge.0.fetch_sub(n, Ordering::AcqRel);
        n
    }

    /// Units still held.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Splits `n` units off into a permit of their own.
    pub fn split(&mut self, n: usize) -> Permit {
        let n = n.min(self.held);
        self.held -= n;
        Permit {
            gauge: self.gauge.clone(),
            held: n,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.held > 0 {
            self.gauge.0.fetch_sub(self.held, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permits_give_back_exactly_what_they_hold() {
        let g = Gauge::default();
        let mut a = g.try_acquire(3, 4).expect("fits");
        assert!(g.try_acquire(2, 4).is_none(), "3 + 2 > 4");
        let b = a.split(1);
        assert_eq!((a.held(), b.held(), g.get()), (2, 1, 3));
        assert_eq!(a.release(5), 2, "release is capped by what is held");
        assert_eq!(g.get(), 1);
        drop(a);
        assert_eq!(g.get(), 1, "a spent permit gives back nothing more");
        drop(b);
        assert_eq!(g.get(), 0);
    }

    #[test]
    fn an_empty_gauge_admits_a_job_larger_than_the_bound() {
        let g = Gauge::default();
        assert!(
            g.try_acquire(10, 4).is_none(),
            "the strict bound refuses it"
        );
        let p = g
            .try_acquire_or_first(10, 4)
            .expect("an empty queue admits anything");
        assert!(g.try_acquire_or_first(1, 4).is_none());
        drop(p);
        let _q = g.acquire(7);
        assert_eq!(g.get(), 7);
    }
}
