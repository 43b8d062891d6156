//! Per-client rate limiting: one token bucket per API key (or per client IP when no key
//! identifies the caller), `rate` requests per second with room for `burst` at once.
//! Over the limit a request gets 429 with `Retry-After` (seconds until a token is back,
//! rounded up).
//!
//! Invariants: the table holds at most `capacity` buckets. A bucket that has refilled to
//! `burst` behaves exactly like a missing one, so sweeping such idle buckets changes no
//! decision; only if the table is still full are the least recently used buckets
//! evicted (an eighth at a time, so the cost per new client stays O(1) amortised).
//! IPv6 clients are bucketed by their /64, which one host can otherwise cycle through.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::auth::KeyId;
use super::error::ApiError;

/// Most buckets kept at once (about 100 bytes each).
pub const DEFAULT_CAPACITY: usize = 65_536;

/// Whom a bucket belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An API key.
    Key(KeyId),
    /// A client address (IPv6 reduced to its /64).
    Ip(IpAddr),
}

impl ClientKey {
    /// The bucket of a client address.
    pub fn ip(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::Ip(IpAddr::V4(v4)),
                None => {
                    let s = v6.segments();
                    Self::Ip(IpAddr::V6(Ipv6Addr::new(
                        s[0], s[1], s[2], s[3], 0, 0, 0, 0,
                    )))
                }
            },
            v4 => Self::Ip(v4),
        }
    }
}

/// One token bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Bucket arithmetic: `rate` tokens per second, at most `burst` stored.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Quota {
    /// Tokens added per second (> 0).
    pub rate: f64,
    /// Bucket size (>= 1).
    pub burst: f64,
}

impl Quota {
    /// A full bucket, as a client that was never seen has.
    pub fn full(&self, now: Instant) -> Bucket {
        Bucket {
            tokens: self.burst,
            last: now,
        }
    }

    fn refilled(&self, b: &Bucket, now: Instant) -> f64 {
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        (b.tokens + dt * self.rate).min(self.burst)
    }

    /// Takes one token: `Ok` if there was one, else `Err(time until there is one)`.
    pub fn take(&self, b: &mut Bucket, now: Instant) -> Result<(), Duration> {
        let tokens = self.refilled(b, now);
        b.last = now.max(b.last);
        if tokens >= 1.0 {
            b.tokens = tokens - 1.0;
            Ok(())
        } else {
            b.tokens = tokens;
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
        }
    }

    /// Whether `b` has refilled completely (it may be forgotten).
    pub fn is_idle(&self, b: &Bucket, now: Instant) -> bool {
        self.refilled(b, now) >= self.burst
    }
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub fn retry_after_secs(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// The bucket table. `Debug` shows the quota and the table size, not the clients.
pub struct RateLimiter {
    quota: Quota,
    capacity: usize,
    table: Mutex<Table>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("quota", &self.quota)
            .field("capacity", &self.capacity)
            .field("buckets", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Table {
    buckets: HashMap<ClientKey, Bucket>,
    /// Size at which the next sweep of idle buckets runs.
    sweep_at: usize,
}

impl RateLimiter {
    /// `rate` requests/s (> 0) with `burst` (>= 1) at once; `None` when `rate` is 0 (off).
    pub fn new(rate: f64, burst: u32, capacity: usize) -> Option<Self> {
        (rate > 0.0 && rate.is_finite()).then(|| Self {
            quota: Quota {
                rate,
                burst: f64::from(burst.max(1)),
            },
            capacity: capacity.max(1),
            table: Mutex::new(Table::default()),
        })
    }

    /// The bucket arithmetic in use.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    /// Charges one request to `client` at `now`: `Err(wait)` when over the limit.
    pub fn check(&self, client: ClientKey, now: Instant) -> Result<(), Duration> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if !t.buckets.contains_key(&client) {
            self.make_room(&mut t, now);
        }
        let quota = self.quota;
        let bucket = t.buckets.entry(client).or_insert_with(|| quota.full(now));
        quota.take(bucket, now)
    }

    /// Number of buckets held.
    pub fn len(&self) -> usize {
        self.table.lock().map_or(0, |t| t.buckets.len())
    }

    /// Whether no bucket is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Before a new bucket goes in: sweep idle buckets when the table has doubled since
    /// the last sweep or is full; if it is still full, drop the least recently used
    /// eighth.
    fn make_room(&self, t: &mut Table, now: Instant) {
        let len = t.buckets.len();
        if len < t.sweep_at.max(1024).min(self.capacity) {
            return;
        }
        let quota = self.quota;
        t.buckets.retain(|_, b| !quota.is_idle(b, now));
        if t.buckets.len() >= self.capacity {
            let mut lasts: Vec<Instant> = t.buckets.values().map(|b| b.last).collect();
            let cut = (self.capacity / 8).max(1).min(lasts.len() - 1);
            let (_, &mut nth, _) = lasts.select_nth_unstable(cut);
            t.buckets.retain(|_, b| b.last > nth);
        }
        t.sweep_at = (2 * t.buckets.len()).max(1024);
    }
}

/// The client address to bucket by: the connection's peer, or, with
/// `--trust-forwarded-for`, the last address in `X-Forwarded-For` (the one the trusted
/// proxy appended; earlier entries are client-supplied and could be forged).
pub fn client_ip(peer: Option<IpAddr>, headers: &HeaderMap, trust_forwarded: bool) -> IpAddr {
    let forwarded = trust_forwarded
        .then(|| {
            headers
                .get_all("x-forwarded-for")
                .iter()
                .next_back()?
                .to_str()
                .ok()?
                .rsplit(',')
                .next()?
                .trim()
                .parse::<IpAddr>()
                .ok()
        })
        .flatten();
    forwarded
        .or(peer)
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

/// The 429 in OpenAI's shape with `Retry-After`.
pub fn too_many_requests(quota: Quota, wait: Duration) -> Response {
    let secs = retry_after_secs(wait);
    let message = format!(
        "Rate limit reached: {} requests per second with bursts of {}. Please try again in {secs}s.",
        quota.rate, quota.burst
    );
    let mut resp = ApiError::new(StatusCode::TOO_MANY_REQUESTS, message)
        .with_code("rate_limit_exceeded")
        .into_response();
    resp.headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: ClientKey = ClientKey::Key(KeyId(0));

    #[test]
    fn bucket_allows_burst_then_refills_at_rate() {
        let q = Quota {
            rate: 2.0,
            burst: 3.0,
        };
        let t0 = Instant::now();
        let mut b = q.full(t0);
        for _ in 0..3 {
            assert_eq!(q.take(&mut b, t0), Ok(()));
        }
        let wait = q.take(&mut b, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}");
        // Half a token after 250 ms: still 250 ms to go.
        let wait = q.take(&mut b, t0 + Duration::from_millis(250)).unwrap_err();
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-9, "{wait:?}");
        assert_eq!(q.take(&mut b, t0 + Duration::from_millis(500)), Ok(()));
        // Never more than `burst` saved up.
        let later = t0 + Duration::from_secs(100);
        assert!(q.is_idle(&b, later));
        for _ in 0..3 {
            assert_eq!(q.take(&mut b, later), Ok(()));
        }
        assert!(q.take(&mut b, later).is_err());
    }

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1000)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1001)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs_f64(4.2)), 5);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }

    #[test]
    fn clients_have_separate_buckets() {
        let rl = RateLimiter::new(1.0, 1, 100).unwrap();
        let now = Instant::now();
        assert!(rl.check(K, now).is_ok());
        assert!(rl.check(K, now).is_err());
        assert!(rl.check(ClientKey::Key(KeyId(1)), now).is_ok());
        let ip = ClientKey::ip("10.0.0.1".parse().unwrap());
        assert!(rl.check(ip, now).is_ok());
        assert!(rl.check(ip, now).is_err());
        assert!(RateLimiter::new(0.0, 5, 100).is_none());
    }

    #[test]
    fn ipv6_clients_share_their_64() {
        let a = ClientKey::ip("2001:db8:1:2:aaaa::1".parse().unwrap());
        let b = ClientKey::ip("2001:db8:1:2:bbbb::9".parse().unwrap());
        let c = ClientKey::ip("2001:db8:1:3::1".parse().unwrap());
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mapped = ClientKey::ip("::ffff:10.1.2.3".parse().unwrap());
        assert_eq!(mapped, ClientKey::ip("10.1.2.3".parse().unwrap()));
    }

    #[test]
    fn table_stays_bounded_and_keeps_active_clients() {
        let cap = 2048;
        let rl = RateLimiter::new(0.001, 2, cap).unwrap();
        let t0 = Instant::now();
        // One client that keeps coming back stays limited throughout.
        assert!(rl.check(K, t0).is_ok());
        assert!(rl.check(K, t0).is_ok());
        for i in 0..20_000u32 {
            let now = t0 + Duration::from_micros(u64::from(i) + 1);
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            assert!(rl.check(ClientKey::Ip(ip), now).is_ok());
            assert!(rl.len() <= cap, "table grew to {}", rl.len());
            if i % 500 == 0 {
                assert!(rl.check(K, now).is_err(), "active client forgotten at {i}");
            }
        }
    }

    #[test]
    fn idle_buckets_are_swept() {
        let rl = RateLimiter::new(100.0, 1, 100_000).unwrap();
        let t0 = Instant::now();
        for i in 0..5000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(i));
            let _ = rl.check(ClientKey::Ip(ip), t0);
        }
        assert_eq!(rl.len(), 5000);
        // A second later every bucket has refilled; new clients trigger a sweep.
        let t1 = t0 + Duration::from_secs(1);
        for i in 0..5000u32 {
            let ip = IpAddr::V4(std::net::Ipv4Addr::from(1_000_000 + i));
            let _ = rl.check(ClientKey::Ip(ip), t1);
        }
        assert!(rl.len() < 10_000, "idle buckets kept: {}", rl.len());
    }

    #[test]
    fn forwarded_for_only_when_trusted() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.7"),
        );
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let peer = Some(ip);
        assert_eq!(client_ip(peer, &h, false), ip);
        assert_eq!(
            client_ip(peer, &h, true),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
        h.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(client_ip(peer, &h, true), ip);
    }
}
