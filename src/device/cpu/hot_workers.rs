//! Keeps the CPU kernels' rayon workers awake for the length of one model step.
//!
//! A decode step forks hundreds of short parallel regions (every matmul, every
//! attention), separated by short serial parts (norms, rope, activation quantizing).
//! Left alone, a rayon worker that finds no work for a few microseconds parks on a
//! futex, and on a virtual machine waking a halted vCPU costs tens of microseconds per
//! region. [`with_hot_workers`] runs the step on one worker and parks a *keeper* job on
//! each of the others: it polls the pool for work (stealing the step's forked halves as
//! soon as they appear) and yields the CPU to the OS between polls, so the HTTP threads
//! still get it, until the step is over.
//!
//! Invariants: the keeper never runs on the thread driving the step (that would spin
//! there until the step ends, which it then never would); it returns as soon as the
//! step's closure has returned, so the scope ends with the step; with one thread in the
//! pool no keeper is spawned. Results do not depend on it: the kernels' arithmetic is
//! the same on whichever thread runs a region.

use std::sync::atomic::{AtomicBool, Ordering};

/// Runs `step` inside a rayon scope on a pool worker, with every other worker kept
/// polling for work until `step` returns; returns its result.
pub fn with_hot_workers<R: Send>(step: impl FnOnce() -> R + Send) -> R {
    let done = AtomicBool::new(false);
    rayon::scope(|s| {
        let driver = rayon::current_thread_index();
        for _ in 1..rayon::current_num_threads() {
            let done = &done;
            s.spawn(move |_| keep_polling(done, driver));
        }
        let out = step();
        done.store(true, Ordering::Release);
        out
    })
}

/// Executes pool work until `done`, yielding to the OS whenever none is pending. Does
/// nothing on the `driver` thread (a worker waiting inside the step may pop this job
/// from its own queue).
fn keep_polling(done: &AtomicBool, driver: Option<usize>) {
    if rayon::current_thread_index() == driver {
        return;
    }
    while !done.load(Ordering::Acquire) {
        match rayon::yield_now() {
            Some(rayon::Yield::Executed) => {}
            Some(rayon::Yield::Idle) => std::thread::yield_now(),
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// Nested parallel work inside the step completes with the keepers running, the
    /// result comes back, and the scope ends (no keeper left spinning).
    #[test]
    fn a_step_with_nested_parallel_regions_completes() {
        for round in 0..50u64 {
            let total = with_hot_workers(|| {
                (0..64u64)
                    .map(|i| {
                        (0..1000u64)
                            .into_par_iter()
                            .map(|x| x * i + round)
                            .sum::<u64>()
                    })
                    .sum::<u64>()
            });
            let want: u64 = (0..64u64)
                .map(|i| (0..1000u64).map(|x| x * i + round).sum::<u64>())
                .sum();
            assert_eq!(total, want);
        }
    }

    /// Works from a thread outside the pool and from inside a pool worker alike.
    #[test]
    fn works_from_inside_the_pool() {
        let v = rayon::scope(|_| with_hot_workers(|| (0..10_000u32).into_par_iter().count()));
        assert_eq!(v, 10_000);
    }
}
