//! API keys: the secret type that keeps them out of logs, the set the server accepts,
//! and the constant-time check of an `Authorization: Bearer <key>` header.
//!
//! Invariants: a key's text is never formatted (`Debug` prints `<redacted>`, there is no
//! `Display`); the server keeps only SHA-256 digests of its keys; a presented key is
//! hashed and compared with every digest without early exit (`subtle`), so neither which
//! key matched, nor how much of a key was right, nor its length shows in the timing.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

use super::error::ApiError;

/// One API key as configured. Its text never reaches a log: `Debug` is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Parses one key (surrounding whitespace trimmed). Empty keys and keys that cannot
    /// travel in an HTTP header (controls, spaces, non-ASCII) are refused; the message
    /// never quotes the key. Refusing empty ones means a secret that failed to render
    /// (`FERRITE_API_KEYS=`) stops the server instead of silently turning auth off.
    pub fn parse(s: &str) -> Result<Self, String> {
        let k = s.trim();
        if k.is_empty() {
            return Err("an API key is empty (unset the variable to turn auth off)".into());
        }
        if !k.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("an API key holds a space, control or non-ASCII character".into());
        }
        Ok(Self(k.to_string()))
    }
}

impl std::str::FromStr for ApiKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// Which configured key a request presented (its position on the command line). Used
/// to key rate limits and the response cache; it names no secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub u32);

/// Outcome of checking a request's credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// No keys are configured: everyone may call.
    Open,
    /// A configured key was presented.
    Key(KeyId),
    /// Keys are configured and the request has no `Authorization: Bearer` header.
    Missing,
    /// Keys are configured and the presented one is not among them.
    Invalid,
}

/// The keys the server accepts, as SHA-256 digests. `Default`: none (auth off).
#[derive(Clone, Default)]
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys, <redacted>)", self.digests.len())
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl ApiKeys {
    /// The accepted set (duplicates are harmless).
    pub fn new(keys: &[ApiKey]) -> Self {
        Self {
            digests: keys.iter().map(|k| digest(k.0.as_bytes())).collect(),
        }
    }

    /// Whether any key is configured (auth on).
    pub fn enabled(&self) -> bool {
        !self.digests.is_empty()
    }

    /// The configured key equal to `presented`, compared in constant time against all.
    pub fn find(&self, presented: &[u8]) -> Option<KeyId> {
        let d = digest(presented);
        let mut found = Choice::from(0);
        let mut index = 0u32;
        for (i, k) in self.digests.iter().enumerate() {
            let eq = k.ct_eq(&d);
            index.conditional_assign(&(i as u32), eq & !found);
            found |= eq;
        }
        bool::from(found).then_some(KeyId(index))
    }

    /// Who is calling, from the request headers.
    pub fn identify(&self, headers: &HeaderMap) -> Caller {
        if !self.enabled() {
            return Caller::Open;
        }
        match bearer(headers) {
            None => Caller::Missing,
            Some(token) => self.find(token).map_or(Caller::Invalid, Caller::Key),
        }
    }
}

/// The token of `Authorization: Bearer <token>` (scheme case-insensitive, RFC 7235).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = v.split_at_checked(6)?;
    if !scheme.eq_ignore_ascii_case(b"bearer") {
        return None;
    }
    let token = rest.trim_ascii();
    (rest.first() == Some(&b' ') && !token.is_empty()).then_some(token)
}

/// The 401 for a request without a valid key, in OpenAI's shape (`invalid_api_key`) with
/// `WWW-Authenticate: Bearer` (RFC 6750). The presented key is not echoed.
pub fn unauthorized(caller: Caller) -> Response {
    let message = match caller {
        Caller::Missing => {
            "You didn't provide an API key. Send it in an Authorization header using Bearer \
             auth (i.e. Authorization: Bearer YOUR_KEY)."
        }
        _ => "Incorrect API key provided.",
    };
    let mut resp = ApiError::new(StatusCode::UNAUTHORIZED, message)
        .with_code("invalid_api_key")
        .into_response();
    resp.headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &[&str]) -> ApiKeys {
        ApiKeys::new(
            &k.iter()
                .map(|s| ApiKey::parse(s).unwrap())
                .collect::<Vec<_>>(),
        )
    }

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn finds_exactly_the_configured_keys() {
        let k = keys(&["alpha-key", "beta-key", "alpha-key"]);
        assert_eq!(k.find(b"alpha-key"), Some(KeyId(0)));
        assert_eq!(k.find(b"beta-key"), Some(KeyId(1)));
        for wrong in [
            &b"alpha"[..],
            b"alpha-key ",
            b"alpha-kez",
            b"",
            b"beta-keyx",
            b"ALPHA-KEY",
        ] {
            assert_eq!(k.find(wrong), None, "{:?}", String::from_utf8_lossy(wrong));
        }
    }

    #[test]
    fn identifies_callers_from_the_bearer_header() {
        let k = keys(&["s3cret"]);
        assert_eq!(k.identify(&headers("Bearer s3cret")), Caller::Key(KeyId(0)));
        assert_eq!(k.identify(&headers("bearer s3cret")), Caller::Key(KeyId(0)));
        assert_eq!(
            k.identify(&headers("Bearer  s3cret ")),
            Caller::Key(KeyId(0))
        );
        assert_eq!(k.identify(&headers("Bearer nope")), Caller::Invalid);
        assert_eq!(k.identify(&headers("Basic s3cret")), Caller::Missing);
        assert_eq!(k.identify(&headers("Bearers3cret")), Caller::Missing);
        assert_eq!(k.identify(&headers("Bearer ")), Caller::Missing);
        assert_eq!(k.identify(&HeaderMap::new()), Caller::Missing);
        assert_eq!(ApiKeys::default().identify(&HeaderMap::new()), Caller::Open);
    }

    #[test]
    fn keys_never_show_in_debug_output() {
        let key = ApiKey::parse(" sk-very-secret ").unwrap();
        assert_eq!(key, ApiKey("sk-very-secret".into()));
        let all = format!("{:?} {:?}", key, ApiKeys::new(std::slice::from_ref(&key)));
        assert!(!all.contains("very-secret"), "{all}");
        assert!(ApiKey::parse("  ").is_err());
        let err = ApiKey::parse("has space-secret").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn unauthorized_is_openai_shaped() {
        let resp = unauthorized(Caller::Invalid);
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
        assert_eq!(resp.headers()[header::WWW_AUTHENTICATE], "Bearer");
        let body = axum::body::to_bytes(resp.into_body(), 4096).await.unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["code"], "invalid_api_key");
        assert!(v["error"]["param"].is_null());
    }
}
