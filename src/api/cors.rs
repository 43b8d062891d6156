//! CORS for browsers (`--allowed-origins`), as tower-http's `CorsLayer` around the whole
//! router: a preflight `OPTIONS` on any route is answered by the layer itself (before
//! auth, which a preflight cannot pass: browsers send no `Authorization` on it), and
//! every actual response, errors and streams included, carries
//! `Access-Control-Allow-Origin` for an allowed origin, so a page sees the real error.
//!
//! Invariants: no origins configured means no layer at all (no CORS headers, preflights
//! get the router's 405); `*` allows any origin without credentials (browsers refuse
//! credentials with `*`), an explicit list allows credentials; a refused origin gets no
//! `Access-Control-Allow-Origin`, so its browser blocks the response.

use std::time::Duration;

use axum::http::{HeaderName, HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::guard::CACHE_HEADER;
use super::middleware::REQUEST_ID;

/// Request headers a page may send: what the OpenAI and Ollama clients send.
const ALLOWED_HEADERS: [HeaderName; 5] = [
    header::AUTHORIZATION,
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static(REQUEST_ID),
    HeaderName::from_static("openai-organization"),
];

/// Response headers a page may read.
const EXPOSED_HEADERS: [HeaderName; 3] = [
    HeaderName::from_static(REQUEST_ID),
    header::RETRY_AFTER,
    HeaderName::from_static(CACHE_HEADER),
];

/// The CORS layer for `origins` (`None` when empty). Each origin must be a bare
/// `scheme://host[:port]` (no path, no trailing slash), or `*` alone.
pub fn layer(origins: &[String]) -> Result<Option<CorsLayer>, String> {
    let origins: Vec<&str> = origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return Ok(None);
    }
    let base = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::HEAD, Method::OPTIONS])
        .allow_headers(ALLOWED_HEADERS)
        .expose_headers(EXPOSED_HEADERS)
        .max_age(Duration::from_secs(600));
    if origins.contains(&"*") {
        if origins.len() > 1 {
            return Err("--allowed-origins: `*` allows every origin; give it alone".into());
        }
        return Ok(Some(base.allow_origin(AllowOrigin::any())));
    }
    let values = origins
        .iter()
        .map(|o| parse_origin(o))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Some(
        base.allow_origin(AllowOrigin::list(values))
            .allow_credentials(true),
    ))
}

/// One origin as browsers send it in `Origin`.
fn parse_origin(o: &str) -> Result<HeaderValue, String> {
    let bad = |why: &str| Err(format!("--allowed-origins: `{o}` is not an origin ({why})"));
    let Some((scheme, rest)) = o.split_once("://") else {
        return bad("expected scheme://host[:port]");
    };
    if !matches!(scheme, "http" | "https") {
        return bad("the scheme must be http or https");
    }
    if rest.is_empty() || rest.contains('/') {
        return bad("no path or trailing slash");
    }
    HeaderValue::from_str(o).or_else(|_| bad("not a valid header value"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_parse_or_are_refused() {
        assert!(layer(&[]).unwrap().is_none());
        assert!(layer(&[" ".into()]).unwrap().is_none());
        assert!(layer(&["*".into()]).unwrap().is_some());
        assert!(
            layer(&["http://127.0.0.1:3000".into(), "https://a.example".into()])
                .unwrap()
                .is_some()
        );
        for bad in [
            "example.com",
            "ftp://a.example",
            "https://a.example/",
            "https://a.example/app",
            "https://",
        ] {
            assert!(layer(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(layer(&["*".into(), "https://a.example".into()]).is_err());
    }
}
