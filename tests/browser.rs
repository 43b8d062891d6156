//! ferrite in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, installed with apt-get when missing), driven through chromedriver's
//! WebDriver HTTP API.
//!
//! - A page served from another origin (a tiny HTTP server in this test) streams a chat
//!   from ferrite with `fetch` under `--allowed-origins`; the same page loaded from an
//!   origin that is not allowed gets the browser's CORS refusal.
//! - The playground streams a reply when text is typed and send is clicked, its output
//!   growing in steps; a screenshot is written to `target/playground.png`.
//!
//! Skipped, loudly, only when Chromium cannot be installed (no root, no package index).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{MODEL, Server};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// Installs Chromium when missing; `false` when it cannot be.
fn chromium_available() -> bool {
    if Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists() {
        return true;
    }
    let sh = "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver";
    let ok = Command::new("sh")
        .args(["-c", sh])
        .status()
        .is_ok_and(|s| s.success());
    ok && Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists()
}

fn skip_loudly() {
    eprintln!(
        "\n\n*** SKIPPED: Chromium and chromedriver could not be installed \
         (apt-get install chromium chromium-driver failed); the browser tests did not run ***\n\n"
    );
}

/// A chromedriver process and one headless Chromium session, both ended on drop.
struct Browser {
    driver: Child,
    base: String,
    session: String,
    http: reqwest::blocking::Client,
    _profile: tempdir::Dir,
}

mod tempdir {
    /// A fresh folder under the temp dir, removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new(name: &str) -> Self {
            let p = std::env::temp_dir().join(format!("ferrite-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Self(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Browser {
    fn start() -> Browser {
        let port = free_port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting chromedriver");
        let base = format!("http://127.0.0.1:{port}");
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .unwrap();
        let t0 = Instant::now();
        while http.get(format!("{base}/status")).send().is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempdir::Dir::new("chromium-profile");
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1000,760",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--user-data-dir={}", profile.0.display())])
        .collect::<Vec<_>>();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args}
        }}});
        let v: Value = http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .expect("new session")
            .json()
            .unwrap();
        let session = v["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {v}"))
            .to_string();
        Browser {
            driver,
            base,
            session,
            http,
            _profile: profile,
        }
    }

    fn cmd(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let url = format!("{}/session/{}{path}", self.base, self.session);
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().expect("webdriver call");
        let ok = resp.status().is_success();
        let v: Value = resp.json().unwrap();
        assert!(ok, "webdriver {path}: {v}");
        v["value"].clone()
    }

    fn goto(&self, url: &str) {
        self.cmd(reqwest::Method::POST, "/url", Some(json!({"url": url})));
    }

    fn js(&self, script: &str) -> Value {
        self.cmd(
            reqwest::Method::POST,
            "/execute/sync",
            Some(json!({"script": script, "args": []})),
        )
    }

    fn element(&self, testid: &str) -> String {
        let v = self.cmd(
            reqwest::Method::POST,
            "/element",
            Some(json!({"using": "css selector", "value": format!("[data-testid=\"{testid}\"]")})),
        );
        v.as_object()
            .unwrap()
            .values()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    }

    /// Polls `script` until it returns something other than null/false.
    fn wait_for(&self, script: &str, limit: Duration) -> Value {
        let t0 = Instant::now();
        loop {
            let v = self.js(script);
            if !(v.is_null() || v == json!(false)) {
                return v;
            }
            assert!(t0.elapsed() < limit, "timed out waiting for: {script}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self
            .http
            .delete(format!("{}/session/{}", self.base, self.session))
            .send();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The page of the other origin: streams a chat from `api` with fetch, recording each
/// chunk, and says `done` (or the error) in `window.result`.
fn other_origin_page(api: &str) -> String {
    format!(
        r#"<!doctype html><html><body><pre id="out"></pre><script>
window.result = null; window.chunks = [];
(async () => {{
  try {{
    const r = await fetch("{api}/api/chat", {{method: "POST", headers: {{"content-type": "application/json"}},
      body: JSON.stringify({{model: "{MODEL}", messages: [{{role: "user", content: "Say hello."}}],
                             options: {{num_predict: 12, temperature: 0}}}})}});
    const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
    for (;;) {{
      const {{value, done}} = await reader.read(); if (done) break;
      buf += dec.decode(value, {{stream: true}});
      let i; while ((i = buf.indexOf("\n")) >= 0) {{
        const line = JSON.parse(buf.slice(0, i)); buf = buf.slice(i + 1);
        window.chunks.push(line);
        if (line.message) document.getElementById("out").textContent += line.message.content;
      }}
    }}
    window.result = {{ok: true, status: r.status, requestId: r.headers.get("x-request-id")}};
  }} catch (e) {{ window.result = {{ok: false, error: String(e)}}; }}
}})();
</script></body></html>"#
    )
}

/// Serves `page` to every request on `listener`, in a background thread.
fn serve_page(listener: TcpListener, page: String) {
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{page}",
                page.len()
            );
        }
    });
}

#[test]
fn browsers_stream_from_ferrite_cross_origin_and_in_the_playground() {
    if !chromium_available() {
        skip_loudly();
        return;
    }
    let site = TcpListener::bind("127.0.0.1:0").unwrap();
    let site_port = site.local_addr().unwrap().port();
    let allowed = format!("http://127.0.0.1:{site_port}");
    let s = Server::start(&["--allowed-origins", &allowed]);
    serve_page(site, other_origin_page(&s.url));
    let b = Browser::start();

    // Allowed origin: the stream arrives in several chunks, done last.
    b.goto(&format!("{allowed}/"));
    let result = b.wait_for("return window.result", Duration::from_secs(120));
    assert_eq!(result["ok"], true, "{result}");
    assert!(
        result["requestId"].is_string(),
        "exposed header readable: {result}"
    );
    let chunks = b.js("return window.chunks");
    let chunks = chunks.as_array().unwrap();
    assert!(chunks.len() >= 3, "{chunks:?}");
    assert_eq!(chunks.last().unwrap()["done"], true);
    let text = b.js("return document.getElementById('out').textContent");
    assert!(!text.as_str().unwrap().is_empty());
    println!("cross-origin stream: {} chunks, {text}", chunks.len());

    // Same page, origin not allowed (localhost is another origin than 127.0.0.1).
    b.goto(&format!("http://localhost:{site_port}/"));
    let refused = b.wait_for("return window.result", Duration::from_secs(60));
    assert_eq!(
        refused["ok"], false,
        "a refused origin must not read the stream: {refused}"
    );
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("Failed to fetch"),
        "{refused}"
    );

    // The playground: type, send, watch the output grow.
    b.goto(&format!("{}/", s.url));
    b.wait_for(
        "return document.querySelector('[data-testid=model]').options.length > 0",
        Duration::from_secs(30),
    );
    b.js(
        "window.lens = []; const o = document.querySelector('[data-testid=output]');
          new MutationObserver(() => window.lens.push(o.textContent.length))
            .observe(o, {childList: true, characterData: true, subtree: true}); return true;",
    );
    let prompt = b.element("prompt");
    b.cmd(
        reqwest::Method::POST,
        &format!("/element/{prompt}/value"),
        Some(json!({"text": "Write two sentences about the sea."})),
    );
    let send = b.element("send");
    b.cmd(
        reqwest::Method::POST,
        &format!("/element/{send}/click"),
        Some(json!({})),
    );
    b.wait_for(
        "const s = document.querySelector('[data-testid=stats]').textContent;
         return s.startsWith('TTFT') && !s.includes('…') && !document.querySelector('[data-testid=send]').disabled",
        Duration::from_secs(180),
    );
    let lens: Vec<u64> = serde_json::from_value(b.js("return window.lens")).unwrap();
    let output = b.js("return document.querySelector('[data-testid=output]').textContent");
    let stats = b.js("return document.querySelector('[data-testid=stats]').textContent");
    println!("playground: {lens:?}\n{output}\n{stats}");
    let mut steps = lens.clone();
    steps.dedup();
    assert!(steps.len() >= 5, "output did not grow in steps: {lens:?}");
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]),
        "output only grows: {lens:?}"
    );
    assert!(output.as_str().unwrap().len() > 10, "{output}");
    assert!(stats.as_str().unwrap().contains("tok/s"), "{stats}");

    let png = b.cmd(reqwest::Method::GET, "/screenshot", None);
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(png.as_str().unwrap())
        .unwrap();
    let path = common::repo_root().join("target").join("playground.png");
    std::fs::write(&path, &bytes).unwrap();
    println!("screenshot: {} ({} bytes)", path.display(), bytes.len());
}
