//! Graceful shutdown: the two phases a SIGTERM (or ctrl-c) starts, shared by `main` and
//! the HTTP layers.
//!
//! 1. **Draining** (at once): `/health` answers 503 `"status": "draining"`, new requests
//!    are refused with a 503 (`api::guard`) and requests already in flight keep running;
//!    the listener stays open (so probes see the 503) until none is left in flight.
//! 2. **Abort** (after `--shutdown-grace-secs`, or at a second signal): every request
//!    still running is cut off with a final error (a JSON 503, or an SSE error event then
//!    `[DONE]`); dropping its event receivers makes the engine free its KV blocks.
//!
//! Invariants: the phases only move forward (draining never ends, abort implies
//! draining); both are observable without locks; clones share one state.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// The process-wide shutdown state. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Shutdown {
    /// A server that is not shutting down.
    pub fn new() -> Self {
        Self::default()
    }

    /// Enters the draining phase (idempotent).
    pub fn begin_draining(&self) {
        let first = !self.drain.is_cancelled();
        self.drain.cancel();
        if first {
            tracing::info!("draining: /health answers 503, new requests are refused");
        }
    }

    /// Enters the abort phase (implies draining; idempotent).
    pub fn abort(&self) {
        self.begin_draining();
        let first = !self.abort.is_cancelled();
        self.abort.cancel();
        if first {
            tracing::info!("grace period over: aborting the requests still running");
        }
    }

    /// Whether draining has begun.
    pub fn is_draining(&self) -> bool {
        self.drain.is_cancelled()
    }

    /// Whether in-flight requests are being aborted.
    pub fn is_aborting(&self) -> bool {
        self.abort.is_cancelled()
    }

    /// Resolves once draining has begun.
    pub async fn draining(&self) {
        self.drain.cancelled().await;
    }

    /// Resolves once the abort phase has begun.
    pub async fn aborted(&self) {
        self.abort.cancelled().await;
    }

    /// A future that resolves at the abort phase and owns what it needs (`'static`).
    pub fn aborted_owned(&self) -> tokio_util::sync::WaitForCancellationFutureOwned {
        self.abort.clone().cancelled_owned()
    }
}

/// Waits for SIGTERM or ctrl-c (SIGINT).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Drives `shutdown` from the process signals: the first signal starts draining; the
/// grace period running out, or a second signal, starts the abort phase.
pub async fn on_signals(shutdown: Shutdown, grace: Duration) {
    signal().await;
    // State first, logs after: nothing may stand between the signal and the drain.
    shutdown.begin_draining();
    tracing::info!(grace_secs = grace.as_secs_f64(), "shutdown signal received");
    run_grace(shutdown, grace, signal()).await;
}

/// After draining began: aborts when `grace` has passed or `early` resolves.
pub async fn run_grace(shutdown: Shutdown, grace: Duration, early: impl Future<Output = ()>) {
    tokio::select! {
        _ = tokio::time::sleep(grace) => {},
        _ = early => tracing::info!("second signal: aborting now"),
        _ = shutdown.aborted() => {},
    }
    shutdown.abort();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn phases_move_forward_after_the_grace_period() {
        let s = Shutdown::new();
        assert!(!s.is_draining() && !s.is_aborting());
        s.begin_draining();
        assert!(s.is_draining() && !s.is_aborting());
        let clone = s.clone();
        let t0 = tokio::time::Instant::now();
        let grace = tokio::spawn(run_grace(s.clone(), Duration::from_secs(30), async {
            std::future::pending::<()>().await
        }));
        clone.aborted().await;
        assert!(
            t0.elapsed() >= Duration::from_secs(30),
            "aborted before the grace period"
        );
        assert!(s.is_aborting() && s.is_draining());
        grace.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_second_signal_aborts_at_once() {
        let s = Shutdown::new();
        s.begin_draining();
        let t0 = tokio::time::Instant::now();
        run_grace(s.clone(), Duration::from_secs(30), async {}).await;
        assert!(s.is_aborting());
        assert!(t0.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn abort_implies_draining() {
        let s = Shutdown::new();
        s.abort();
        assert!(s.is_draining() && s.is_aborting());
    }
}
