//! The production layer every route passes through (one router layer, so routes added
//! later are covered without touching their handlers). In order:
//!
//! 1. `/health` is exempt from everything below; while the server drains it answers 503
//!    with `"status": "draining"` (the handler's body, status rewritten). Every other
//!    request that arrives while draining is refused (503 `server_shutting_down`,
//!    `Connection: close`); requests admitted before keep running, counted in
//!    [`InFlight`] until their body ends, so `main` closes the listener once they are
//!    done (load balancers keep seeing the 503 meanwhile).
//! 2. **Auth**: with API keys configured, `Authorization: Bearer <key>` is required
//!    (401 `invalid_api_key` otherwise). `/metrics` too, unless `--metrics-public`.
//! 3. **Rate limit** (`--rate-limit`): one bucket per API key, or per client IP for
//!    callers without a valid key, so bad-key guessing is throttled as well (it is
//!    charged before the 401). `/metrics` is not rate limited (scrapes are not traffic).
//! 4. **Cutoff**: the request runs against its deadline and the shutdown abort
//!    (`deadline`); the `Hooks` extension carries the cutoff, the caller's key and the
//!    response cache to the handlers that stream or cache.
//!
//! Invariants: no path other than exactly `/health` skips auth (unknown paths get a 401
//! before their 404), except `GET`/`HEAD` of the static, data-free pages `/` and
//! `/playground` (`playground::PUBLIC_PATHS`), which a browser must load before it can
//! ask for the key (they are still rate limited and refused while draining); a key's
//! text is never logged (only `KeyId`s leave `auth`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::auth::{ApiKeys, Caller, KeyId, unauthorized};
use super::connections::ClientAddr;
use super::deadline::Cutoff;
use super::error::ApiError;
use super::generate::PromptJob;
use super::in_flight::{self, InFlight};
use super::rate_limit::{self, ClientKey, RateLimiter, client_ip, too_many_requests};
use super::response_cache::{self, CacheKey, ResponseCache};
use super::validate::Endpoint;
use crate::config::ProductionArgs;
use crate::shutdown::Shutdown;

/// Response header saying whether the response cache answered (`hit`) or not (`miss`);
/// absent when the request could not be cached.
pub const CACHE_HEADER: &str = "x-ferrite-cache";

/// What the production layer enforces. `Default`: nothing (no keys, no rate limit, no
/// deadline, no cache, never shutting down), which is what tests of the bare API use.
#[derive(Debug, Clone, Default)]
pub struct Guard {
    /// Accepted API keys (none: auth off).
    pub keys: ApiKeys,
    /// Serve `/metrics` without a key.
    pub metrics_public: bool,
    /// Per-client token buckets (`None`: no rate limit).
    pub rate: Option<Arc<RateLimiter>>,
    /// Bucket by the last `X-Forwarded-For` address instead of the peer address.
    pub trust_forwarded_for: bool,
    /// Per-request deadline (`None`: none).
    pub request_timeout: Option<Duration>,
    /// Draining / abort state.
    pub shutdown: Shutdown,
    /// Whole-response cache (`None`: off).
    pub cache: Option<Arc<ResponseCache>>,
    /// Requests admitted and not yet fully answered.
    pub in_flight: InFlight,
}

impl Guard {
    /// The guard the `serve` flags ask for (logs what is on; never a key).
    pub fn from_args(p: &ProductionArgs, shutdown: Shutdown) -> Self {
        let g = Self {
            keys: ApiKeys::new(&p.api_keys),
            metrics_public: p.metrics_public,
            rate: RateLimiter::new(p.rate_limit, p.burst(), rate_limit::DEFAULT_CAPACITY)
                .map(Arc::new),
            trust_forwarded_for: p.trust_forwarded_for,
            request_timeout: (p.request_timeout > 0)
                .then(|| Duration::from_secs(p.request_timeout)),
            shutdown,
            cache: ResponseCache::new(
                p.response_cache_entries,
                Duration::from_secs(p.response_cache_ttl_secs),
            )
            .map(Arc::new),
            in_flight: InFlight::default(),
        };
        tracing::info!(
            api_keys = p.api_keys.len(),
            metrics_public = p.metrics_public,
            rate_limit = p.rate_limit,
            rate_limit_burst = g.rate.as_ref().map(|r| r.quota().burst),
            max_connections = p.max_connections,
            request_timeout_secs = p.request_timeout,
            shutdown_grace_secs = p.shutdown_grace_secs,
            response_cache_entries = p.response_cache_entries,
            "production settings"
        );
        g
    }
}

/// Per-request extension for handlers: when to stop, who asked, where to cache.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// The request's deadline / shutdown abort.
    pub cutoff: Cutoff,
    /// The API key that authenticated the request (`None` when auth is off).
    pub caller: Option<KeyId>,
    /// The response cache, when enabled.
    pub cache: Option<Arc<ResponseCache>>,
}

impl Hooks {
    /// The hooks of `req`, if the guard layer ran.
    pub fn of(req: &Request) -> Option<Hooks> {
        req.extensions().get::<Hooks>().cloned()
    }

    /// The cache key of a non-streaming greedy request, when the cache is on.
    pub fn cache_key(
        &self,
        model: &str,
        endpoint: Endpoint,
        n: usize,
        jobs: &[PromptJob],
        stream: bool,
    ) -> Option<CacheKey> {
        if stream || self.cache.is_none() {
            return None;
        }
        response_cache::key(self.caller, model, endpoint, n, jobs)
    }

    /// A stored body for `key` (counts a hit or a miss).
    pub fn cached(&self, key: &CacheKey) -> Option<Bytes> {
        self.cache.as_ref()?.get(key, Instant::now())
    }

    /// Stores a body under `key`.
    pub fn store(&self, key: CacheKey, body: Bytes) {
        if let Some(c) = &self.cache {
            c.insert(key, body, Instant::now());
        }
    }
}

/// A JSON response from bytes, marked with the cache outcome when there is one.
pub fn json_response(body: Bytes, cache: Option<&'static str>) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Some(outcome) = cache {
        resp.headers_mut()
            .insert(CACHE_HEADER, HeaderValue::from_static(outcome));
    }
    resp
}

/// The middleware (install with `axum::middleware::from_fn_with_state(Arc<Guard>, layer)`).
pub async fn layer(State(g): State<Arc<Guard>>, mut req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if path == "/health" {
        let resp = next.run(req).await;
        return if g.shutdown.is_draining() {
            draining(resp).await
        } else {
            resp
        };
    }
    if g.shutdown.is_draining() {
        return shutting_down();
    }
    let ticket = g.in_flight.enter();
    let metrics = path == "/metrics";
    let public_page = super::playground::PUBLIC_PATHS.contains(&path)
        && matches!(*req.method(), Method::GET | Method::HEAD);
    let caller = if (metrics && g.metrics_public) || public_page {
        Caller::Open
    } else {
        g.keys.identify(req.headers())
    };
    if let Some(limiter) = g.rate.as_ref().filter(|_| !metrics) {
        let client = match caller {
            Caller::Key(id) => ClientKey::Key(id),
            _ => ClientKey::ip(client_ip(peer(&req), req.headers(), g.trust_forwarded_for)),
        };
        if let Err(wait) = limiter.check(client, Instant::now()) {
            return too_many_requests(limiter.quota(), wait);
        }
    }
    let caller = match caller {
        Caller::Missing | Caller::Invalid => {
            tracing::debug!(path, "request without a valid API key refused");
            return unauthorized(caller);
        }
        Caller::Key(id) => Some(id),
        Caller::Open => None,
    };
    let cutoff = Cutoff::new(g.request_timeout, g.shutdown.clone());
    let fired = cutoff.fired();
    req.extensions_mut().insert(Hooks {
        cutoff,
        caller,
        cache: g.cache.clone(),
    });
    let resp = tokio::select! {
        biased;
        resp = next.run(req) => resp,
        e = fired => {
            tracing::info!(status = e.status.as_u16(), "request cut off before its response: {}", e.message);
            e.into_response()
        }
    };
    in_flight::track(resp, ticket)
}

/// 503 for a request that arrives while the server drains; the connection is closed
/// after it so the client reconnects (through its load balancer) elsewhere.
fn shutting_down() -> Response {
    let message =
        "The server is shutting down and takes no new requests; retry on another instance.";
    let mut resp = ApiError::new(StatusCode::SERVICE_UNAVAILABLE, message)
        .with_code("server_shutting_down")
        .into_response();
    resp.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    resp
}

fn peer(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<ConnectInfo<ClientAddr>>()
        .map(|c| c.0.0.ip())
}

/// `/health` while draining: 503, `"status": "draining"`, other fields kept.
async fn draining(resp: Response) -> Response {
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let mut v: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| serde_json::json!({}));
    if !v.is_object() {
        v = serde_json::json!({});
    }
    v["status"] = "draining".into();
    let mut out = (StatusCode::SERVICE_UNAVAILABLE, Body::from(v.to_string())).into_response();
    out.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::auth::ApiKey;
    use axum::Router;
    use axum::routing::get;
    use tower::ServiceExt;

    fn guarded(guard: Guard) -> Router {
        let health = || async { axum::Json(serde_json::json!({"status": "ok", "model": "m"})) };
        let slow = || async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            "never"
        };
        Router::new()
            .route("/health", get(health))
            .route("/metrics", get(|| async { "metrics" }))
            .route("/", get(|| async { "page" }))
            .route("/playground", get(|| async { "page" }))
            .route("/v1/models", get(|| async { "models" }))
            .route("/slow", get(slow))
            .layer(axum::middleware::from_fn_with_state(Arc::new(guard), layer))
    }

    async fn call(app: &Router, path: &str, key: Option<&str>) -> (u16, Response) {
        let mut req = Request::builder().uri(path);
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let resp = app
            .clone()
            .oneshot(req.body(Body::empty()).unwrap())
            .await
            .unwrap();
        (resp.status().as_u16(), resp)
    }

    async fn json(resp: Response) -> serde_json::Value {
        serde_json::from_slice(
            &axum::body::to_bytes(resp.into_body(), 1 << 16)
                .await
                .unwrap(),
        )
        .unwrap()
    }

    fn keyed(metrics_public: bool) -> Guard {
        Guard {
            keys: ApiKeys::new(&[ApiKey::parse("k1").unwrap()]),
            metrics_public,
            ..Guard::default()
        }
    }

    #[tokio::test]
    async fn every_route_but_health_needs_a_key() {
        let app = guarded(keyed(false));
        assert_eq!(call(&app, "/health", None).await.0, 200);
        assert_eq!(call(&app, "/v1/models", None).await.0, 401);
        assert_eq!(call(&app, "/v1/models", Some("k2")).await.0, 401);
        assert_eq!(call(&app, "/v1/models", Some("k1")).await.0, 200);
        assert_eq!(call(&app, "/metrics", None).await.0, 401);
        assert_eq!(call(&app, "/metrics", Some("k1")).await.0, 200);
        assert_eq!(call(&app, "/nowhere", None).await.0, 401);
        assert_eq!(call(&app, "/health/", None).await.0, 401);
        assert_eq!(call(&app, "/nowhere", Some("k1")).await.0, 404);
        // The static pages load without a key (the page then asks for it).
        assert_eq!(call(&app, "/", None).await.0, 200);
        assert_eq!(call(&app, "/playground", None).await.0, 200);
        assert_eq!(call(&app, "/playground/x", None).await.0, 401);
        let public = guarded(keyed(true));
        assert_eq!(call(&public, "/metrics", None).await.0, 200);
        assert_eq!(call(&public, "/v1/models", None).await.0, 401);
    }

    #[tokio::test]
    async fn rate_limit_answers_429_with_retry_after() {
        let guard = Guard {
            rate: RateLimiter::new(0.25, 2, 100).map(Arc::new),
            ..Guard::default()
        };
        let app = guarded(guard);
        assert_eq!(call(&app, "/v1/models", None).await.0, 200);
        assert_eq!(call(&app, "/v1/models", None).await.0, 200);
        let (status, resp) = call(&app, "/v1/models", None).await;
        assert_eq!(status, 429);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "4");
        let v = json(resp).await;
        assert_eq!(v["error"]["type"], "rate_limit_error");
        assert_eq!(v["error"]["code"], "rate_limit_exceeded");
        // Probes and scrapes are not charged.
        for _ in 0..5 {
            assert_eq!(call(&app, "/health", None).await.0, 200);
            assert_eq!(call(&app, "/metrics", None).await.0, 200);
        }
    }

    #[tokio::test]
    async fn health_turns_503_draining_and_requests_are_cut_off() {
        let guard = Guard {
            request_timeout: Some(Duration::from_millis(50)),
            ..Guard::default()
        };
        let shutdown = guard.shutdown.clone();
        let app = guarded(guard);
        let (status, resp) = call(&app, "/slow", None).await;
        assert_eq!(status, 504);
        assert_eq!(json(resp).await["error"]["code"], "request_timeout");
        shutdown.begin_draining();
        let (status, resp) = call(&app, "/health", None).await;
        assert_eq!(status, 503);
        let v = json(resp).await;
        assert_eq!(
            (v["status"].as_str(), v["model"].as_str()),
            (Some("draining"), Some("m"))
        );
        // A request admitted before draining keeps running; one arriving after is
        // refused at once; the admitted one is cut off at the abort.
        let fresh = Shutdown::new();
        let no_deadline = Guard {
            shutdown: fresh.clone(),
            ..Guard::default()
        };
        let in_flight = no_deadline.in_flight.clone();
        let app = guarded(no_deadline);
        let slow = tokio::spawn({
            let app = app.clone();
            async move { call(&app, "/slow", None).await.0 }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(in_flight.count(), 1);
        fresh.begin_draining();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !slow.is_finished(),
            "admitted requests run on while draining"
        );
        let (status, resp) = call(&app, "/v1/models", None).await;
        assert_eq!(status, 503);
        assert_eq!(resp.headers()[header::CONNECTION], "close");
        assert_eq!(json(resp).await["error"]["code"], "server_shutting_down");
        assert_eq!(call(&app, "/health", None).await.0, 503);
        fresh.abort();
        assert_eq!(slow.await.unwrap(), 503);
        tokio::time::timeout(Duration::from_secs(1), in_flight.idle())
            .await
            .expect("nothing left in flight");
    }
}
