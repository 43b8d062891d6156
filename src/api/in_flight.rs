//! Requests in flight, counted until their response body is fully sent (or dropped),
//! so a draining server knows when the last stream has ended and may close.
//!
//! Invariants: every [`Ticket`] decrements the count exactly once (on drop); a ticket
//! moved into a response body lives exactly as long as the body; [`InFlight::idle`]
//! resolves as soon as the count is zero (at once if it already is).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::body::Body;
use axum::response::Response;
use http_body_util::BodyExt;
use tokio::sync::Notify;

#[derive(Debug, Default)]
struct Inner {
    count: AtomicUsize,
    zero: Notify,
}

/// The shared counter. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct InFlight(Arc<Inner>);

/// One request in flight; dropping it ends the request's count.
#[derive(Debug)]
pub struct Ticket(Arc<Inner>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.zero.notify_waiters();
        }
    }
}

impl InFlight {
    /// Counts one more request until the ticket drops.
    pub fn enter(&self) -> Ticket {
        self.0.count.fetch_add(1, Ordering::AcqRel);
        Ticket(self.0.clone())
    }

    /// Requests in flight now.
    pub fn count(&self) -> usize {
        self.0.count.load(Ordering::Acquire)
    }

    /// Resolves once no request is in flight.
    pub async fn idle(&self) {
        loop {
            let notified = self.0.zero.notified();
            tokio::pin!(notified);
            // Register before checking, so a drop between the check and the wait is seen.
            notified.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// `resp` with the ticket moved into its body: the request counts until the body has
/// been sent to the end or dropped (a client that disconnects mid-stream).
pub fn track(resp: Response, ticket: Ticket) -> Response {
    hold(resp, ticket)
}

/// `resp` with `guard` moved into its body, dropped when the body has been sent to the
/// end or dropped (tickets, model leases).
pub fn hold<T: Send + Sync + 'static>(resp: Response, guard: T) -> Response {
    let (parts, body) = resp.into_parts();
    let body = body.map_frame(move |frame| {
        let _held = &guard;
        frame
    });
    Response::from_parts(parts, Body::new(body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_the_last_body_to_end() {
        let flight = InFlight::default();
        flight.idle().await;
        let resp = track(Response::new(Body::from("hello")), flight.enter());
        let other = flight.enter();
        assert_eq!(flight.count(), 2);
        drop(other);
        let waiter = tokio::spawn({
            let f = flight.clone();
            async move { f.idle().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "a body is still unsent");
        let bytes = axum::body::to_bytes(resp.into_body(), 1024).await.unwrap();
        assert_eq!(&bytes[..], b"hello");
        tokio::time::timeout(Duration::from_secs(1), waiter)
            .await
            .expect("idle resolves once the body is gone")
            .unwrap();
        assert_eq!(flight.count(), 0);
    }
}
