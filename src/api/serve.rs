//! The HTTP server loop (instead of `axum::serve`, which cannot bound how long a
//! client may take to send its request headers): accepts on the connection-limited
//! listener, serves each connection with hyper (HTTP/1.1, or HTTP/2 by prior
//! knowledge), hands handlers the peer address as `ConnectInfo<ClientAddr>`, and on
//! the shutdown signal stops accepting, lets every connection finish its in-flight
//! request (idle keep-alive connections are closed at once), then returns.
//!
//! `--header-read-timeout`: an HTTP/1 connection that has not sent a whole request
//! head that long after it was opened, or after its previous response (an idle
//! keep-alive connection), is closed. Slow-header clients (slowloris) therefore hold a
//! `--max-connections` slot for at most that long; a request whose head has arrived is
//! not affected however long its body or its response stream takes.
//!
//! Invariants: every accepted connection runs in its own task and is watched by the
//! graceful-shutdown tracker; `serve` returns only when all of them have ended.

use std::future::Future;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::serve::Listener;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use super::connections::{ClientAddr, LimitedListener};

/// Connection-level settings.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Longest wait for a request head on an HTTP/1 connection (see the module docs).
    pub header_read_timeout: Duration,
}

/// Serves `app` on `listener` until `shutdown` resolves and every connection has
/// ended.
pub async fn serve(
    mut listener: LimitedListener,
    app: Router,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout);
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (io, addr) = tokio::select! {
            conn = listener.accept() => conn,
            () = &mut shutdown => break,
        };
        let service = app
            .clone()
            .map_request(move |mut req: hyper::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(ClientAddr(addr)));
                req
            });
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(service))
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(%addr, "connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    tracing::info!(
        connections = graceful.count(),
        "listener closed; waiting for open connections"
    );
    graceful.shutdown().await;
}
