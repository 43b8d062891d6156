//! The optional whole-response cache (`--response-cache-entries`, off by default):
//! exact-match reuse of non-streaming completions whose output is fully determined by
//! the request (greedy: temperature 0, or top_k 1), LRU-bounded with a TTL.
//!
//! The key is a SHA-256 digest of a normalized form of the *validated* request: the API
//! key that asked (never shared across keys), the served model, the endpoint, `n`, and
//! for each prompt its token ids (after the chat template, so JSON spelling, field order
//! and message formatting that tokenize alike share an entry) and the sampling
//! parameters that can change the body. Fields that cannot change the output are left
//! out: `user`, `stream_options`, `seed` (greedy draws no randomness), and under
//! temperature 0 also `top_p`, `top_k`, `min_p` (argmax survives any truncation; logprobs
//! are taken before truncation). `n`, `logprobs` / `top_logprobs`, `max_tokens`, `stop`,
//! penalties and `ignore_eos` are kept.
//!
//! A hit returns the stored body byte for byte: the same `id` and `created` as the
//! response it was first sent as (it is that completion, served again).
//!
//! Invariants: at most `capacity` entries, none older than `ttl` is ever served; bodies
//! over `MAX_ENTRY_BYTES` are not stored; the map and the LRU order hold the same keys.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::auth::KeyId;
use super::generate::PromptJob;
use super::validate::Endpoint;
use crate::engine::types::SamplingParams;
use crate::metrics::{CACHE_HITS_TOTAL, CACHE_MISSES_TOTAL};

/// Largest body kept (1 MiB): bounds the cache's memory to entries x this.
pub const MAX_ENTRY_BYTES: usize = 1 << 20;

/// Digest of a normalized request.
pub type CacheKey = [u8; 32];

/// The parts of one prompt's sampling parameters that can change a greedy response.
#[derive(Debug, Serialize, PartialEq)]
struct GreedyParams<'a> {
    temperature: f32,
    top_k: usize,
    presence_penalty: f32,
    frequency_penalty: f32,
    repetition_penalty: f32,
    logprobs: Option<usize>,
    max_tokens: usize,
    stop: &'a [String],
    ignore_eos: bool,
    logit_bias: &'a [(u32, f32)],
}

/// `Some` when `p` is greedy (temperature 0, or top_k 1): the fields that matter.
fn greedy(p: &SamplingParams) -> Option<GreedyParams<'_>> {
    // Destructured in full so that a new sampling field forces a decision here.
    let SamplingParams {
        temperature,
        top_p: _,
        top_k,
        min_p: _,
        seed: _,
        presence_penalty,
        frequency_penalty,
        repetition_penalty,
        logprobs,
        max_tokens,
        stop,
        ignore_eos,
        logit_bias,
        visible_control: _,
        // Speculation never changes the output.
        speculative: _,
    } = p;
    let argmax = *temperature <= 0.0;
    (argmax || *top_k == 1).then_some(GreedyParams {
        temperature: if argmax { 0.0 } else { *temperature },
        top_k: if argmax { 0 } else { *top_k },
        presence_penalty: *presence_penalty,
        frequency_penalty: *frequency_penalty,
        repetition_penalty: *repetition_penalty,
        logprobs: *logprobs,
        max_tokens: *max_tokens,
        stop,
        ignore_eos: *ignore_eos,
        logit_bias,
    })
}

#[derive(Serialize)]
struct KeyParts<'a> {
    client: Option<u32>,
    model: &'a str,
    endpoint: &'static str,
    n: usize,
    prompts: Vec<(&'a [u32], GreedyParams<'a>)>,
}

/// The cache key of a request, or `None` when its output is not determined by it.
pub fn key(
    client: Option<KeyId>,
    model: &str,
    endpoint: Endpoint,
    n: usize,
    jobs: &[PromptJob],
) -> Option<CacheKey> {
    // A grammar changes the output but is not part of the key: such requests are not
    // cached.
    if jobs.iter().any(|j| j.grammar.is_some()) {
        return None;
    }
    let prompts = jobs
        .iter()
        .map(|j| greedy(&j.params).map(|g| (j.ids.as_slice(), g)))
        .collect::<Option<Vec<_>>>()?;
    let parts = KeyParts {
        client: client.map(|k| k.0),
        model,
        endpoint: match endpoint {
            Endpoint::Chat => "chat",
            Endpoint::Completion => "completion",
        },
        n,
        prompts,
    };
    let bytes = serde_json::to_vec(&parts).ok()?;
    Some(Sha256::digest(&bytes).into())
}

/// The LRU + TTL store. `Debug` shows its size, never the stored bodies.
pub struct ResponseCache {
    capacity: usize,
    ttl: Duration,
    inner: Mutex<Lru>,
}

impl std::fmt::Debug for ResponseCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseCache")
            .field("capacity", &self.capacity)
            .field("ttl", &self.ttl)
            .field("entries", &self.len())
            .finish()
    }
}

#[derive(Default)]
struct Lru {
    map: HashMap<CacheKey, Entry>,
    /// Last use -> key; the first entry is the least recently used.
    order: BTreeMap<u64, CacheKey>,
    tick: u64,
}

struct Entry {
    body: Bytes,
    stored: Instant,
    tick: u64,
}

impl Lru {
    fn remove(&mut self, key: &CacheKey) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.tick);
        }
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }
}

impl ResponseCache {
    /// A cache of `capacity` entries living `ttl`; `None` when `capacity` is 0 (off).
    pub fn new(capacity: usize, ttl: Duration) -> Option<Self> {
        (capacity > 0).then(|| Self {
            capacity,
            ttl,
            inner: Mutex::new(Lru::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The body stored under `key` if younger than the TTL (counts a hit or a miss).
    pub fn get(&self, key: &CacheKey, now: Instant) -> Option<Bytes> {
        let mut lru = self.lock();
        let fresh = lru
            .map
            .get(key)
            .map(|e| now.saturating_duration_since(e.stored) < self.ttl);
        let hit = match fresh {
            Some(true) => {
                let tick = lru.next_tick();
                let entry = lru.map.get_mut(key).map(|e| {
                    let old = std::mem::replace(&mut e.tick, tick);
                    (old, e.body.clone())
                });
                entry.map(|(old, body)| {
                    lru.order.remove(&old);
                    lru.order.insert(tick, *key);
                    body
                })
            }
            Some(false) => {
                lru.remove(key);
                None
            }
            None => None,
        };
        let counter = if hit.is_some() {
            CACHE_HITS_TOTAL
        } else {
            CACHE_MISSES_TOTAL
        };
        metrics::counter!(counter).increment(1);
        hit
    }

    /// Stores `body` under `key`, evicting the least recently used entry when full.
    pub fn insert(&self, key: CacheKey, body: Bytes, now: Instant) {
        if body.len() > MAX_ENTRY_BYTES {
            return;
        }
        let mut lru = self.lock();
        lru.remove(&key);
        while lru.map.len() >= self.capacity {
            let Some((_, oldest)) = lru.order.pop_first() else {
                break;
            };
            lru.map.remove(&oldest);
        }
        let tick = lru.next_tick();
        lru.order.insert(tick, key);
        lru.map.insert(
            key,
            Entry {
                body,
                stored: now,
                tick,
            },
        );
    }

    /// Entries held (expired ones included until touched or evicted).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(ids: &[u32], f: impl FnOnce(&mut SamplingParams)) -> PromptJob {
        let mut params = SamplingParams {
            temperature: 0.0,
            max_tokens: 8,
            ..SamplingParams::default()
        };
        f(&mut params);
        PromptJob {
            grammar: None,
            ids: ids.to_vec(),
            params,
        }
    }

    fn k(client: Option<u32>, jobs: &[PromptJob]) -> Option<CacheKey> {
        key(client.map(KeyId), "m", Endpoint::Chat, 1, jobs)
    }

    #[test]
    fn only_greedy_requests_have_keys() {
        assert!(k(None, &[job(&[1, 2], |_| {})]).is_some());
        assert!(k(None, &[job(&[1, 2], |p| p.temperature = 0.7)]).is_none());
        assert!(
            k(
                None,
                &[job(&[1, 2], |p| {
                    p.temperature = 0.7;
                    p.top_k = 1;
                })]
            )
            .is_some()
        );
        // One sampled prompt among greedy ones makes the request uncacheable.
        let mixed = [job(&[1], |_| {}), job(&[2], |p| p.temperature = 1.0)];
        assert!(k(None, &mixed).is_none());
    }

    #[test]
    fn irrelevant_fields_share_a_key_and_relevant_ones_do_not() {
        let base = k(Some(0), &[job(&[1, 2, 3], |_| {})]).unwrap();
        let same = [
            job(&[1, 2, 3], |p| p.seed = Some(42)),
            job(&[1, 2, 3], |p| p.top_p = 0.5),
            job(&[1, 2, 3], |p| p.min_p = 0.1),
            job(&[1, 2, 3], |p| p.top_k = 40),
        ];
        for j in same {
            assert_eq!(k(Some(0), std::slice::from_ref(&j)), Some(base), "{j:?}");
        }
        let different = [
            job(&[1, 2, 4], |_| {}),
            job(&[1, 2, 3], |p| p.max_tokens = 9),
            job(&[1, 2, 3], |p| p.logprobs = Some(2)),
            job(&[1, 2, 3], |p| p.stop = vec!["x".into()]),
            job(&[1, 2, 3], |p| p.presence_penalty = 0.5),
            job(&[1, 2, 3], |p| p.frequency_penalty = 0.5),
            job(&[1, 2, 3], |p| p.ignore_eos = true),
        ];
        for j in different {
            assert_ne!(k(Some(0), std::slice::from_ref(&j)), Some(base), "{j:?}");
        }
        let j = [job(&[1, 2, 3], |_| {})];
        assert_ne!(k(Some(1), &j), Some(base), "another API key");
        assert_ne!(k(None, &j), Some(base), "no API key");
        assert_ne!(
            key(Some(KeyId(0)), "m", Endpoint::Chat, 2, &j),
            Some(base),
            "n"
        );
        assert_ne!(
            key(Some(KeyId(0)), "m", Endpoint::Completion, 1, &j),
            Some(base)
        );
        assert_ne!(
            key(Some(KeyId(0)), "other", Endpoint::Chat, 1, &j),
            Some(base)
        );
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let c = ResponseCache::new(4, Duration::from_secs(10)).unwrap();
        let t0 = Instant::now();
        c.insert([1; 32], Bytes::from_static(b"one"), t0);
        let later = t0 + Duration::from_secs(9);
        assert_eq!(c.get(&[1; 32], later).as_deref(), Some(&b"one"[..]));
        assert_eq!(c.get(&[1; 32], t0 + Duration::from_secs(10)), None);
        assert!(c.is_empty(), "an expired entry is dropped when found");
        assert!(ResponseCache::new(0, Duration::from_secs(1)).is_none());
    }

    #[test]
    fn least_recently_used_goes_first() {
        let c = ResponseCache::new(2, Duration::from_secs(60)).unwrap();
        let t0 = Instant::now();
        c.insert([1; 32], Bytes::from_static(b"1"), t0);
        c.insert([2; 32], Bytes::from_static(b"2"), t0);
        assert!(c.get(&[1; 32], t0).is_some()); // 2 is now the oldest use
        c.insert([3; 32], Bytes::from_static(b"3"), t0);
        assert_eq!(c.len(), 2);
        assert!(c.get(&[2; 32], t0).is_none());
        assert!(c.get(&[1; 32], t0).is_some() && c.get(&[3; 32], t0).is_some());
        // Re-inserting a key replaces it without growing.
        c.insert([3; 32], Bytes::from_static(b"3b"), t0);
        assert_eq!(c.len(), 2);
        assert_eq!(c.get(&[3; 32], t0).as_deref(), Some(&b"3b"[..]));
        let big = Bytes::from(vec![0u8; MAX_ENTRY_BYTES + 1]);
        c.insert([4; 32], big, t0);
        assert!(c.get(&[4; 32], t0).is_none());
    }
}
