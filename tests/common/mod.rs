//! Shared harness of the integration tests: fetches the default model once (through
//! the binary's own `fetch-model`), starts the real `ferrite` binary on a free port,
//! waits until `/health` says ready, and kills it on drop.

#![allow(dead_code)]

pub mod engine;

pub mod llama_cpp;

pub mod sse;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A file path in the temp dir, unique to this process and `name`, removed on drop.
pub struct TempFile(pub PathBuf);

impl TempFile {
    /// `$TMPDIR/ferrite-<pid>-<name>` (nothing is created).
    pub fn new(name: &str) -> Self {
        let file = format!("ferrite-{}-{name}", std::process::id());
        Self(std::env::temp_dir().join(file))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Path of the `ferrite` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ferrite")
}

/// Repository root (models/ lives there).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A Python virtual environment under `target/NAME` with `packages` (pip specs)
/// installed: created on first use, and again whenever its stamp file does not list
/// exactly these packages. Returns its python. Calls are serialised within a test
/// binary (its tests run in parallel and may share a venv).
pub fn python_venv(name: &str, packages: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let venv = repo_root().join("target").join(name);
    let python = venv.join("bin").join("python");
    let stamp = venv.join("ferrite-packages.txt");
    let wanted = packages.join("\n");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) {
        return python;
    }
    let status = Command::new("python3")
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .expect("running python3 -m venv");
    assert!(
        status.success(),
        "python3 -m venv {} failed",
        venv.display()
    );
    let out = Command::new(&python)
        .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .args(packages)
        .output()
        .expect("running pip");
    assert!(
        out.status.success(),
        "pip install {packages:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(&stamp, wanted).expect("writing the venv stamp");
    python
}

/// The default model's path, fetched on first use (a file lock serialises fetches).
pub fn default_model() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fetch(&[])).clone()
}

/// The default encoder's folder, fetched on first use.
pub fn default_encoder() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| fetch(&["--encoder"])).clone()
}

/// Runs `ferrite fetch-model EXTRA` and returns the path it prints.
fn fetch(extra: &[&str]) -> PathBuf {
    let out = Command::new(binary())
        .args(["fetch-model", "--models-dir"])
        .arg(repo_root().join("models"))
        .args(extra)
        .stderr(Stdio::inherit())
        .output()
        .expect("running ferrite fetch-model");
    assert!(out.status.success(), "fetch-model {extra:?} failed");
    let stdout = String::from_utf8(out.stdout).unwrap();
    let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
    assert!(path.exists(), "fetch-model printed {stdout:?}, not a path");
    path
}

/// A running server, killed on drop.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Lines the server logged (collected in the background).
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    /// Starts the default model with extra flags.
    pub fn start(extra: &[&str]) -> Server {
        let model = default_model();
        let mut args: Vec<String> = vec!["--model".into(), model.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_raw(&args)
    }

    /// Starts the default model with extra flags and extra environment variables.
    pub fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let model = default_model();
        let mut args: Vec<String> = vec!["--model".into(), model.display().to_string()];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::start_raw_env(&args, env)
    }

    /// Starts `ferrite serve --port 0 ARGS`, waiting until ready (panics after 120 s).
    pub fn start_raw(args: &[String]) -> Server {
        Self::start_raw_env(args, &[])
    }

    /// `start_raw` with extra environment variables.
    /// The default encoder is left out (`--encoder none`) unless `args` name one.
    pub fn start_raw_env(args: &[String], env: &[(&str, &str)]) -> Server {
        let no_encoder: &[&str] = if args.iter().any(|a| a == "--encoder") {
            &[]
        } else {
            &["--encoder", "none"]
        };
        let mut child = Command::new(binary())
            .arg("serve")
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .args(no_encoder)
            .env("FERRITE_LOG", "info")
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawning ferrite serve");
        let stderr = child.stderr.take().unwrap();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(i) = line.find("listening on http://") {
                    let _ = tx.send(line[i + "listening on ".len()..].trim().to_string());
                }
                sink.lock().unwrap().push(line);
            }
        });
        let url = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(u) => u,
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "server did not report its address; log: {:?}",
                    log.lock().unwrap()
                );
            }
        };
        let mut server = Server { child, url, log };
        server.wait_ready(Duration::from_secs(120));
        server
    }

    fn wait_ready(&mut self, limit: Duration) {
        let t0 = Instant::now();
        let client = reqwest::blocking::Client::new();
        while t0.elapsed() < limit {
            assert!(
                self.is_running(),
                "server exited before it was ready; log: {:?}",
                self.log.lock().unwrap()
            );
            if let Ok(r) = client
                .get(format!("{}/health", self.url))
                .timeout(Duration::from_secs(5))
                .send()
                && r.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "server not ready after {limit:?}; log: {:?}",
            self.log.lock().unwrap()
        );
    }

    /// One server per distinct flag list, shared by the tests of one test binary (they
    /// run on parallel threads). It lives until the test process exits: a small watchdog
    /// process kills it then, since statics are never dropped.
    pub fn shared(extra: &[&str]) -> &'static Server {
        static SERVERS: std::sync::Mutex<Vec<(Vec<String>, &'static Server)>> =
            std::sync::Mutex::new(Vec::new());
        let key: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        let mut servers = SERVERS.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, s)) = servers.iter().find(|(k, _)| *k == key) {
            return s;
        }
        let server: &'static Server = Box::leak(Box::new(Server::start(extra)));
        server.kill_when_test_exits();
        servers.push((key, server));
        server
    }

    /// Spawns `sh` that waits for this test process to end, then kills the server.
    fn kill_when_test_exits(&self) {
        let script = format!(
            "while kill -0 {parent} 2>/dev/null; do sleep 0.5; done; kill {child} 2>/dev/null",
            parent = std::process::id(),
            child = self.child.id()
        );
        let _ = Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
    }

    /// Whether the process is still alive.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, ...) to the server through `kill(1)`.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.pid().to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// Waits up to `limit` for the process to exit; its status, or `None` if still alive.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let t0 = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if t0.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything the server logged so far, one line per log line.
    pub fn log_text(&self) -> String {
        self.log
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .join("\n")
    }

    /// The server's resident memory in KiB (`VmRSS` of /proc/PID/status; Linux only).
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// Whether the server logged a panic (or the process aborted on one).
    pub fn logged_panic(&self) -> Option<String> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().find(|l| l.contains("panicked")).cloned()
    }
}

/// Resident memory of process `pid` in KiB (`VmRSS` of /proc/PID/status), if readable.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The default model's id, as clients send it.
pub const MODEL: &str = "SmolLM2-135M-Instruct.Q4_1";

/// `body` with every field of `extra` set over it.
pub fn merged(mut body: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    for (k, v) in extra.as_object().expect("extra fields are an object") {
        body[k] = v.clone();
    }
    body
}

/// A greedy chat request with one user message, `extra` fields set over it.
pub fn chat_body(content: &str, extra: serde_json::Value) -> serde_json::Value {
    merged(
        serde_json::json!({
            "model": MODEL,
            "messages": [{"role": "user", "content": content}],
            "temperature": 0,
        }),
        extra,
    )
}
