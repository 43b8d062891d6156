//! Keeps the CPU kernels' rayon workers awake for the length of one model step.
//!
//! A decode step forks hundreds of short parallel regions (every matmul, every
//! attention), separated by short serial parts (norms, rope, activation quantizing).
//! Left alone, a rayon worker that finds no work for a few microseconds parks on a
//! futex, and on a virtual machine waking a halted vCPU costs tens of microseconds per
//! region. [`with_hot_workers`] runs the step on one worker (the *driver*) and parks a
//! *keeper* job on each of the others: it polls the pool for work (stealing the step's
//! forked halves as soon as they appear) and yields the CPU to the OS between polls,
//! so the HTTP threads still get it, until the step is over.
//!
//! A keeper blocks the thread it runs on until the step ends, so it must never run
//! above a frame the step waits for, or the step would wait forever. Hence:
//! - keepers only start during a *start window* before the step runs (the driver waits
//!   for them, at most [`START_WINDOW`], then closes it); a keeper picked up later
//!   returns at once. During the window no job of the step exists yet, so no thread
//!   can be inside one when it picks a keeper up.
//! - the driver never runs a keeper (it may pop one from its own queue while waiting
//!   inside the step), and no thread runs two (a keeper's polls may pop another).
//! - one step at a time in the process has keepers (a claim); a step that starts while
//!   another holds it runs without (as with two engines in one test binary).
//! - a panicking step still ends its keepers (the flag is set on unwinding), so the
//!   panic reaches the engine thread instead of hanging the scope.
//! - with one thread in the pool, or `FERRITE_KEEP_WORKERS=0` in the environment (an
//!   operator who would rather the idle cores sleep through a step), nothing is spawned.
//!
//! What remains is latency coupling, not a deadlock: a worker busy inside other pool
//! work (a second engine's step without keepers) that picks a keeper up during the
//! window holds that work until this step ends; and when the other workers are busy
//! the driver spends the whole window waiting.
//!
//! Results do not depend on any of this: the kernels' arithmetic is the same on
//! whichever thread runs a region.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long the driver waits for the other workers to pick their keepers up (a parked
/// worker takes tens of microseconds to wake); latecomers do not keep.
pub const START_WINDOW: Duration = Duration::from_micros(200);

/// Held by the one step in the process whose workers are being kept.
static CLAIMED: AtomicBool = AtomicBool::new(false);

/// Whether keepers are wanted at all (`FERRITE_KEEP_WORKERS=0` turns them off; read
/// once).
fn enabled() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("FERRITE_KEEP_WORKERS").map_or(true, |v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "false" | "off" | "no"
            )
        })
    })
}

/// The process-wide claim; released on drop.
struct Claim;

impl Claim {
    fn take() -> Option<Self> {
        CLAIMED
            .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
            .then_some(Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        CLAIMED.store(false, Ordering::SeqCst);
    }
}

/// What the driver and its keepers share.
struct Keepers {
    driver: Option<usize>,
    started: AtomicUsize,
    window_closed: AtomicBool,
    done: AtomicBool,
}

/// Sets its flag when dropped.
struct SetOnDrop<'a>(&'a AtomicBool);

impl Drop for SetOnDrop<'_> {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Runs `step` inside a rayon scope on a pool worker, with the pool's other workers
/// kept polling for work until `step` returns (see the module doc for when they are
/// not); returns its result.
pub fn with_hot_workers<R: Send>(step: impl FnOnce() -> R + Send) -> R {
    // On a pool worker: the step's regions then fork from inside the pool.
    rayon::scope(|_| {
        let helpers = rayon::current_num_threads().saturating_sub(1);
        let claim = if helpers > 0 && enabled() {
            Claim::take()
        } else {
            None
        };
        let Some(_claim) = claim else {
            return step();
        };
        let keepers = Keepers {
            driver: rayon::current_thread_index(),
            started: AtomicUsize::new(0),
            window_closed: AtomicBool::new(false),
            done: AtomicBool::new(false),
        };
        rayon::scope(|s| {
            for _ in 0..helpers {
                s.spawn(|_| keep_polling(&keepers));
            }
            let t0 = Instant::now();
            while keepers.started.load(Ordering::SeqCst) < helpers && t0.elapsed() < START_WINDOW {
                std::hint::spin_loop();
            }
            keepers.window_closed.store(true, Ordering::SeqCst);
            // Set on return and on unwinding alike: a panicking step must release its
            // keepers, or the scope would wait for them forever.
            let _done = SetOnDrop(&keepers.done);
            step()
        })
    })
}

thread_local! {
    /// This thread is running a keeper (whose polls may pop another keeper of the same
    /// step, which must then return at once: one thread, one keeper).
    static KEEPING: Cell<bool> = const { Cell::new(false) };
}

/// Clears this thread's [`KEEPING`] flag when dropped (a panic in polled work too).
struct ResetOnDrop;

impl Drop for ResetOnDrop {
    fn drop(&mut self) {
        KEEPING.set(false);
    }
}

/// Executes pool work until the step is done, yielding to the OS whenever none is
/// pending. Returns at once on the driver, on a thread already keeping, or once the
/// start window has closed.
fn keep_polling(k: &Keepers) {
    if rayon::current_thread_index() == k.driver
        || KEEPING.get()
        || k.window_closed.load(Ordering::SeqCst)
    {
        return;
    }
    KEEPING.set(true);
    let _reset = ResetOnDrop;
    k.started.fetch_add(1, Ordering::SeqCst);
    while !k.done.load(Ordering::Acquire) {
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

    /// A step of many nested parallel regions (recursive joins): the exact sum.
    fn nested_step(round: u64) -> u64 {
        (0..64u64)
            .map(|i| {
                (0..1000usize)
                    .into_par_iter()
                    .with_max_len(8)
                    .map(|x| x as u64 * i + round)
                    .sum::<u64>()
            })
            .sum()
    }

    fn want(round: u64) -> u64 {
        (0..64u64)
            .map(|i| (0..1000u64).map(|x| x * i + round).sum::<u64>())
            .sum()
    }

    /// Nested parallel work inside the step completes with the keepers running, the
    /// result comes back, and the scope ends (no keeper left spinning).
    #[test]
    fn a_step_with_nested_parallel_regions_completes() {
        for round in 0..50u64 {
            assert_eq!(with_hot_workers(|| nested_step(round)), want(round));
        }
    }

    /// Works from inside a pool worker too.
    #[test]
    fn works_from_inside_the_pool() {
        let v = rayon::scope(|_| with_hot_workers(|| (0..10_000u32).into_par_iter().count()));
        assert_eq!(v, 10_000);
    }

    /// A step that panics (after the keepers started) unwinds out of the call instead
    /// of leaving the keepers spinning and the scope waiting, and the pool still runs
    /// steps afterwards. (Whether the claim was released is not asserted: other tests
    /// of this binary may hold it at that moment.)
    #[test]
    fn a_panicking_step_releases_its_keepers() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        for _ in 0..20 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.install(|| {
                    with_hot_workers(|| {
                        let _ = nested_step(1);
                        panic!("the step failed");
                    })
                })
            }));
            assert!(r.is_err());
        }
        assert_eq!(
            pool.install(|| with_hot_workers(|| nested_step(2))),
            want(2)
        );
    }

    /// Many workers (where a worker waiting inside a stolen half could otherwise pick
    /// a keeper up and block the step) and several steps at once from other threads:
    /// every step finishes with the right result. (A hang here is the failure; the
    /// unguarded design did not hang in this test either, the interleaving is rare.)
    #[test]
    fn many_workers_and_concurrent_steps_never_hang() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(7)
            .build()
            .unwrap();
        std::thread::scope(|ts| {
            for t in 0..3u64 {
                let pool = &pool;
                ts.spawn(move || {
                    for round in 0..40u64 {
                        let r = t * 100 + round;
                        let got = pool.install(|| with_hot_workers(|| nested_step(r)));
                        assert_eq!(got, want(r));
                    }
                });
            }
        });
    }
}
