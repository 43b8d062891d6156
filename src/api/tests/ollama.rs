//! Ollama's routes against the fake engine: NDJSON framing byte by byte, one-body
//! answers, model names and aliases, refused features, Ollama's error shape (also for
//! errors from the shared layers), the listing routes, `/` and CORS.

use serde_json::{Value, json};

use super::*;

async fn post_raw(
    s: &Server,
    path: &str,
    body: Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let r = s.post(path, body).await;
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

/// An Ollama error: status, `{"error": "<string>"}` and nothing else.
async fn ollama_error(s: &Server, path: &str, body: Value, status: u16) -> String {
    let (got, _, text) = post_raw(s, path, body.clone()).await;
    assert_eq!(got, status, "{body}: {text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    let obj = v.as_object().unwrap();
    assert_eq!(obj.len(), 1, "{text}");
    v["error"]
        .as_str()
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

/// The keys of `v` in wire order (`ndjson_lines` keeps each line's text in `_line`).
fn keys(v: &Value) -> Vec<String> {
    match v.get("_line").and_then(Value::as_str) {
        Some(line) => wire_keys(line),
        None => v.as_object().unwrap().keys().cloned().collect(),
    }
}

/// The keys of a JSON object line in the order they appear on the wire.
fn wire_keys(line: &str) -> Vec<String> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a JSON object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut map: A,
        ) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some((k, _)) = map.next_entry::<String, serde::de::IgnoredAny>()? {
                keys.push(k);
            }
            Ok(keys)
        }
    }
    use serde::Deserializer as _;
    serde_json::Deserializer::from_str(line)
        .deserialize_map(Keys)
        .expect("a JSON object")
}

/// Splits an NDJSON body into its objects, checking the framing: every line is one
/// compact JSON object ended by exactly one `\n`, no blank lines, no SSE framing.
fn ndjson_lines(body: &str) -> Vec<Value> {
    assert!(
        body.ends_with('\n'),
        "the last line ends with a newline: {body:?}"
    );
    assert!(!body.contains("\n\n") && !body.contains('\r'), "{body:?}");
    assert!(!body.starts_with("data:"), "{body:?}");
    body.split_terminator('\n')
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line:?}: {e}"));
            assert!(v.is_object(), "{line}");
            assert_eq!(
                serde_json::to_string(&v).unwrap().len(),
                line.len(),
                "compact: {line}"
            );
            let mut v = v;
            v["_line"] = line.into();
            v
        })
        .collect()
}

const FINAL_KEYS: [&str; 11] = [
    "model",
    "created_at",
    "response",
    "done",
    "done_reason",
    "total_duration",
    "load_duration",
    "prompt_eval_count",
    "prompt_eval_duration",
    "eval_count",
    "eval_duration",
];

#[tokio::test]
async fn generate_streams_ndjson_like_ollamas_docs() {
    let s = start(true, 8).await;
    let (status, headers, body) = post_raw(
        &s,
        "/api/generate",
        json!({"model": "tiny", "prompt": "Why is the sky blue?", "options": {"num_predict": 3}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert!(headers.contains_key("x-request-id"));
    let lines = ndjson_lines(&body);
    // The fake engine sends "ab", "" (held back), "ab", then "!" with Done.
    assert_eq!(lines.len(), 4, "{body}");
    for l in &lines[..3] {
        assert_eq!(keys(l), ["model", "created_at", "response", "done"], "{l}");
        assert_eq!(
            (l["model"].as_str(), l["done"].as_bool()),
            (Some("tiny"), Some(false))
        );
        let t = l["created_at"].as_str().unwrap();
        assert!(
            t.len() == 27 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
    let text: String = lines
        .iter()
        .map(|l| l["response"].as_str().unwrap())
        .collect();
    assert_eq!(text, "abab!");
    let last = &lines[3];
    assert_eq!(keys(last), FINAL_KEYS, "{last}");
    assert_eq!(
        (last["response"].as_str(), last["done"].as_bool()),
        (Some(""), Some(true))
    );
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 3);
    assert!(last["prompt_eval_count"].as_u64().unwrap() > 3);
    let total = last["total_duration"].as_u64().unwrap();
    let parts =
        last["prompt_eval_duration"].as_u64().unwrap() + last["eval_duration"].as_u64().unwrap();
    assert!(parts <= total + 1_000_000, "{last}");
}

#[tokio::test]
async fn chat_streams_messages_and_answers_one_body_without_stream() {
    let s = start(true, 8).await;
    let body = json!({"model": "tiny", "messages": [{"role": "user", "content": "hi"}],
                      "options": {"num_predict": 2}});
    let (status, _, text) = post_raw(&s, "/api/chat", body.clone()).await;
    assert_eq!(status, 200, "{text}");
    let lines = ndjson_lines(&text);
    assert_eq!(keys(&lines[0]), ["model", "created_at", "message", "done"]);
    assert_eq!(
        lines[0]["message"],
        json!({"role": "assistant", "content": "ab"})
    );
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    assert_eq!(last["message"], json!({"role": "assistant", "content": ""}));
    assert_eq!(last["eval_count"], 2);

    let (status, headers, text) =
        post_raw(&s, "/api/chat", merged(body, json!({"stream": false}))).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(headers["content-type"], "application/json");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        keys(&json!({"_line": text}))[..4],
        ["model", "created_at", "message", "done"]
    );
    assert_eq!(v["message"], json!({"role": "assistant", "content": "ab!"}));
    assert_eq!(
        (v["done"].as_bool(), v["done_reason"].as_str()),
        (Some(true), Some("length"))
    );
    assert_eq!(v["eval_count"], 2);
}

fn merged(mut a: Value, b: Value) -> Value {
    a.as_object_mut()
        .unwrap()
        .extend(b.as_object().unwrap().clone());
    a
}

#[tokio::test]
async fn names_resolve_through_tags_and_aliases() {
    let s = start(true, 8).await;
    for name in ["tiny", "tiny:latest", "TINY", "tiny-alias:7b"] {
        let (status, _, text) = post_raw(
            &s,
            "/api/generate",
            json!({"model": name, "prompt": "x", "stream": false, "options": {"num_predict": 1}}),
        )
        .await;
        assert_eq!(status, 200, "{name}: {text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["model"], name, "the name is echoed as sent");
    }
    for name in ["tiny-alias", "tiny:7b", "nope"] {
        let msg = ollama_error(&s, "/api/chat", json!({"model": name, "messages": []}), 404).await;
        assert_eq!(msg, format!("model '{name}' not found"));
    }
    let msg = ollama_error(&s, "/api/generate", json!({"prompt": "x"}), 400).await;
    assert_eq!(msg, "model is required");
}

#[tokio::test]
async fn unsupported_features_are_clear_400s() {
    let s = start(true, 8).await;
    let body = |extra: Value| merged(json!({"model": "tiny", "prompt": "x"}), extra);
    for (extra, needle) in [
        (
            json!({"format": "yaml"}),
            "`format` must be \"json\" or a JSON schema",
        ),
        (
            json!({"format": 7}),
            "`format` must be \"json\" or a JSON schema",
        ),
        (json!({"suffix": "end"}), "`suffix`"),
        (json!({"template": "{{ .Prompt }}"}), "`template`"),
        (json!({"context": [1, 2, 3]}), "`context`"),
        (json!({"images": ["aGk="]}), "`images`"),
        (json!({"think": true}), "`think`"),
        (json!({"options": {"temperature": 9}}), "temperature"),
        (json!({"options": {"num_predict": 0}}), "num_predict"),
        (json!({"options": {"top_k": "many"}}), "options"),
    ] {
        let msg = ollama_error(&s, "/api/generate", body(extra.clone()), 400).await;
        assert!(msg.contains(needle), "{extra}: {msg}");
    }
    let msg = ollama_error(
        &s,
        "/api/chat",
        json!({"model": "tiny", "messages": [{"role": "user", "content": "x", "images": ["aGk="]}]}),
        400,
    )
    .await;
    assert!(msg.contains("images"), "{msg}");
    // Unknown options and keep_alive are accepted.
    let (status, _, text) = post_raw(
        &s,
        "/api/generate",
        body(json!({"stream": false, "keep_alive": "5m", "options": {"num_gpu": 1, "num_predict": 1}})),
    )
    .await;
    assert_eq!(status, 200, "{text}");
}

#[tokio::test]
async fn generate_raw_and_system_shape_the_prompt() {
    let s = start(true, 8).await;
    let prompt_len = |v: &Value| v["prompt_eval_count"].as_u64().unwrap();
    let run = |extra: Value| {
        let body = merged(
            json!({"model": "tiny", "prompt": "abc", "stream": false, "options": {"num_predict": 1}}),
            extra,
        );
        async {
            serde_json::from_str::<Value>(&post_raw(&s, "/api/generate", body).await.2).unwrap()
        }
    };
    let raw = run(json!({"raw": true})).await;
    let templated = run(json!({})).await;
    let system = run(json!({"system": "be brief"})).await;
    assert_eq!(prompt_len(&raw), 3, "raw: the prompt alone ({raw})");
    assert!(prompt_len(&templated) > 3);
    assert!(prompt_len(&system) > prompt_len(&templated) + 3);
}

#[tokio::test]
async fn empty_prompt_or_messages_answer_the_load_reply() {
    let s = start(true, 8).await;
    let (status, _, text) = post_raw(&s, "/api/generate", json!({"model": "tiny"})).await;
    assert_eq!(status, 200);
    let lines = ndjson_lines(&text);
    assert_eq!(lines.len(), 1);
    assert_eq!(
        (lines[0]["done"].as_bool(), lines[0]["done_reason"].as_str()),
        (Some(true), Some("load"))
    );
    let (_, _, text) = post_raw(
        &s,
        "/api/chat",
        json!({"model": "tiny", "messages": [], "stream": false}),
    )
    .await;
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["done_reason"], "load");
    assert!(
        s.seen.requests.lock().unwrap().is_empty(),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn mid_stream_failure_is_one_error_line() {
    let s = start(true, 8).await;
    let (status, _, text) = post_raw(
        &s,
        "/api/generate",
        json!({"model": "tiny", "prompt": "x", "options": {"stop": ["FAIL"], "num_predict": 3}}),
    )
    .await;
    assert_eq!(status, 200);
    let lines = ndjson_lines(&text);
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(lines[0]["response"], "ab");
    assert_eq!(keys(&lines[1]), ["error"]);
    assert!(lines[1]["error"].as_str().unwrap().contains("boom"));
    // Without streaming, the error is the whole answer.
    let msg = ollama_error(
        &s,
        "/api/generate",
        json!({"model": "tiny", "prompt": "x", "stream": false, "options": {"stop": ["FAIL"]}}),
        500,
    )
    .await;
    assert!(msg.contains("boom"), "{msg}");
}

#[tokio::test]
async fn shared_layer_errors_are_reshaped() {
    let s = start(true, 8).await;
    // Bad JSON (body layer), too large (limit), wrong method and unknown route (fallbacks).
    let r = s
        .client
        .post(format!("{}/api/chat", s.base))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(v["error"].is_string(), "{v}");
    let big = "x".repeat(5000);
    let msg = ollama_error(
        &s,
        "/api/generate",
        json!({"model": "tiny", "prompt": big}),
        413,
    )
    .await;
    assert!(msg.contains("4096"), "{msg}");
    let r = s.get("/api/chat").await;
    assert_eq!(r.status(), 405);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    let r = s.get("/api/nothing").await;
    assert_eq!(r.status(), 404);
    assert!(r.json::<Value>().await.unwrap()["error"].is_string());
    // The OpenAI routes keep their own shape.
    let e = error_of(
        s.post(
            "/v1/chat/completions",
            json!({"model": "nope", "messages": []}),
        )
        .await,
        404,
    )
    .await;
    assert_eq!(e["code"], "model_not_found");
}

#[tokio::test]
async fn listing_routes_have_ollamas_shapes() {
    let s = start(true, 8).await;
    let tags: Value = s.get("/api/tags").await.json().await.unwrap();
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["tiny:latest", "tiny-alias:7b"]);
    let m = &tags["models"][0];
    for k in ["name", "model", "modified_at", "size", "digest", "details"] {
        assert!(m.get(k).is_some(), "{k}: {m}");
    }
    assert_eq!(m["details"]["format"], "gguf");
    let ps: Value = s.get("/api/ps").await.json().await.unwrap();
    assert_eq!(ps["models"][0]["context_length"], 2048);
    assert!(ps["models"][0]["expires_at"].is_string());
    let v: Value = s.get("/api/version").await.json().await.unwrap();
    assert!(v["version"].as_str().unwrap().starts_with("0."));
    let show: Value = s
        .post("/api/show", json!({"model": "tiny-alias:7b"}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(show["model_info"]["llama.context_length"], 2048);
    assert_eq!(show["capabilities"], json!(["completion"]));
    let msg = ollama_error(&s, "/api/show", json!({"model": "nope"}), 404).await;
    assert_eq!(msg, "model 'nope' not found");
    // No encoder is served: embed names no model that exists.
    let msg = ollama_error(
        &s,
        "/api/embed",
        json!({"model": "minilm", "input": "x"}),
        404,
    )
    .await;
    assert_eq!(msg, "model 'minilm' not found");
    let msg = ollama_error(
        &s,
        "/api/embed",
        json!({"model": "tiny", "input": "x"}),
        400,
    )
    .await;
    assert!(msg.contains("does not support embeddings"), "{msg}");
}

#[tokio::test]
async fn root_is_liveness_for_clients_and_the_playground_for_browsers() {
    let s = start(true, 8).await;
    let r = s.get("/").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "Ollama is running");
    let head = s.client.head(format!("{}/", s.base)).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let browser = s
        .client
        .get(format!("{}/", s.base))
        .header("accept", "text/html,application/xhtml+xml,*/*;q=0.8")
        .send()
        .await
        .unwrap();
    assert!(
        browser.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    assert!(
        browser
            .text()
            .await
            .unwrap()
            .contains("data-testid=\"send\"")
    );
    assert!(
        s.get("/playground")
            .await
            .text()
            .await
            .unwrap()
            .contains("<html")
    );

    let off = start_web(
        true,
        8,
        None,
        WebSettings {
            playground: false,
            ..WebSettings::default()
        },
    )
    .await;
    let r = off
        .client
        .get(format!("{}/", off.base))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "Ollama is running");
    assert_eq!(off.get("/playground").await.status(), 404);
}

async fn preflight(s: &Server, origin: &str, path: &str) -> reqwest::Response {
    s.client
        .request(reqwest::Method::OPTIONS, format!("{}{path}", s.base))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header(
            "access-control-request-headers",
            "authorization,content-type",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn cors_allows_listed_origins_only() {
    let cors = crate::api::cors::layer(&["http://allowed.test:3000".into()]).unwrap();
    let s = start_web(
        true,
        8,
        None,
        WebSettings {
            cors,
            ..WebSettings::default()
        },
    )
    .await;
    for path in ["/api/chat", "/v1/chat/completions", "/api/tags", "/nowhere"] {
        let r = preflight(&s, "http://allowed.test:3000", path).await;
        assert!(r.status().is_success(), "{path}: {}", r.status());
        let h = r.headers();
        assert_eq!(
            h["access-control-allow-origin"], "http://allowed.test:3000",
            "{path}"
        );
        assert_eq!(h["access-control-allow-credentials"], "true");
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
        let refused = preflight(&s, "http://evil.test", path).await;
        assert!(
            !refused
                .headers()
                .contains_key("access-control-allow-origin"),
            "{path}"
        );
    }
    // Actual requests: a stream and an error both carry the headers for the allowed origin.
    let stream = s
        .client
        .post(format!("{}/api/generate", s.base))
        .header("origin", "http://allowed.test:3000")
        .json(&json!({"model": "tiny", "prompt": "x", "options": {"num_predict": 2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        stream.headers()["access-control-allow-origin"],
        "http://allowed.test:3000"
    );
    let exposed = stream.headers()["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    assert!(exposed.contains("x-request-id"), "{exposed}");
    assert_eq!(ndjson_lines(&stream.text().await.unwrap()).len(), 3);
    let err = s
        .client
        .post(format!("{}/api/chat", s.base))
        .header("origin", "http://allowed.test:3000")
        .json(&json!({"model": "nope"}))
        .send()
        .await
        .unwrap();
    assert_eq!(err.status(), 404);
    assert_eq!(
        err.headers()["access-control-allow-origin"],
        "http://allowed.test:3000"
    );
    let refused = s
        .client
        .post(format!("{}/api/tags", s.base))
        .header("origin", "http://evil.test")
        .send()
        .await
        .unwrap();
    assert!(
        !refused
            .headers()
            .contains_key("access-control-allow-origin")
    );

    // `*`: any origin, never with credentials.
    let any = crate::api::cors::layer(&["*".into()]).unwrap();
    let s = start_web(
        true,
        8,
        None,
        WebSettings {
            cors: any,
            ..WebSettings::default()
        },
    )
    .await;
    let r = preflight(&s, "http://anyone.test", "/api/chat").await;
    assert_eq!(r.headers()["access-control-allow-origin"], "*");
    assert!(!r.headers().contains_key("access-control-allow-credentials"));
    // Without --allowed-origins there is no CORS: the preflight is the router's 405.
    let none = start(true, 8).await;
    let r = preflight(&none, "http://anyone.test", "/api/chat").await;
    assert_eq!(r.status(), 405);
    assert!(!r.headers().contains_key("access-control-allow-origin"));
}
