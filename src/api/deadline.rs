//! Per-request deadlines and the shutdown abort, as one `Cutoff` per request: the moment
//! `--request-timeout` seconds after arrival, or the start of the shutdown abort phase,
//! whichever comes first.
//!
//! The guard layer races every handler against its cutoff (dropping the handler drops
//! its `Generation`, so the engine frees the KV blocks); a streaming response outlives
//! its handler, so `sse` races each stream against the same cutoff (found in the request
//! extensions) and ends it with an error event, then `[DONE]`.
//!
//! Status: 504 for a passed deadline. The request reached us whole and we ran out of
//! time producing the answer, which is 504's meaning for a server that fronts a model;
//! 408 says the *client* was too slow to send its request (RFC 9110 15.5.9), which
//! would mislead retries and dashboards. Shutdown aborts are 503 (`server_shutting_down`).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use axum::http::StatusCode;
use tokio::time::Instant;

use super::error::ApiError;
use crate::shutdown::Shutdown;

/// When one request must end. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Cutoff {
    deadline: Option<(Instant, Duration)>,
    shutdown: Shutdown,
}

/// The future of a `Cutoff`: resolves with the error to answer.
pub type Fired = Pin<Box<dyn Future<Output = ApiError> + Send>>;

impl Cutoff {
    /// A cutoff `timeout` from now (`None`: no deadline) or at the shutdown abort.
    pub fn new(timeout: Option<Duration>, shutdown: Shutdown) -> Self {
        Self {
            deadline: timeout.map(|t| (Instant::now() + t, t)),
            shutdown,
        }
    }

    /// Resolves when the request must end, with the error to send.
    pub fn fired(&self) -> Fired {
        let deadline = self.deadline;
        let aborted = self.shutdown.aborted_owned();
        Box::pin(async move {
            let timer = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = aborted => shutting_down(),
                _ = timer => timed_out(deadline.map_or(Duration::ZERO, |(_, t)| t)),
            }
        })
    }
}

/// 504: the request ran past `--request-timeout`.
pub fn timed_out(limit: Duration) -> ApiError {
    let message = format!(
        "The request did not finish within the server's time limit of {} s; generation \
         was stopped.",
        limit.as_secs_f64()
    );
    ApiError::new(StatusCode::GATEWAY_TIMEOUT, message).with_code("request_timeout")
}

/// 503: the server is shutting down and its grace period is over.
pub fn shutting_down() -> ApiError {
    let message = "The server is shutting down; the request was stopped. Retry on another \
                   instance.";
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message).with_code("server_shutting_down")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn deadline_fires_with_504() {
        let c = Cutoff::new(Some(Duration::from_secs(5)), Shutdown::new());
        let t0 = Instant::now();
        let e = c.fired().await;
        assert_eq!(e.status, StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(e.code, Some("request_timeout"));
        assert_eq!(e.kind(), "server_error");
        assert!(t0.elapsed() >= Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_abort_fires_with_503_before_the_deadline() {
        let s = Shutdown::new();
        let c = Cutoff::new(None, s.clone());
        let fired = tokio::spawn(c.fired());
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(
            !fired.is_finished(),
            "no deadline and no abort: never fires"
        );
        s.abort();
        let e = fired.await.unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.code, Some("server_shutting_down"));
    }
}
