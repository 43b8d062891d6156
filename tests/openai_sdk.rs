//! The official OpenAI Python SDK against a running server: `tests/python/openai_sdk_check.py`
//! runs in a virtual environment created once under `target/py-openai-venv` (`pip install
//! openai`; needs `python3` with `venv` and a reachable package index); the embeddings
//! client is checked by `tests/python/openai_embeddings_check.py` the same way.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{MODEL, Server};

fn has_openai(python: &Path) -> bool {
    Command::new(python)
        .args(["-c", "import openai"])
        .status()
        .is_ok_and(|s| s.success())
}

/// The venv's python, creating the venv and installing `openai` on first use.
fn venv() -> PathBuf {
    let python = common::python_venv("py-openai-venv", &["openai"]);
    assert!(
        has_openai(&python),
        "openai not importable after pip install"
    );
    python
}

#[test]
fn official_python_sdk_works_against_the_server() {
    let python = venv();
    let s = Server::start(&[]);
    let script = common::repo_root()
        .join("tests")
        .join("python")
        .join("openai_sdk_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([s.url.as_str(), MODEL])
        .output()
        .expect("running the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "SDK checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all OpenAI SDK checks passed"), "{stdout}");
}

#[test]
fn official_python_sdk_embeddings_work_against_the_server() {
    let python = venv();
    let encoder = common::default_encoder();
    let s = Server::start(&["--encoder", encoder.to_str().unwrap()]);
    let script = common::repo_root()
        .join("tests")
        .join("python")
        .join("openai_embeddings_check.py");
    let out = Command::new(&python)
        .arg(&script)
        .args([s.url.as_str(), "all-MiniLM-L6-v2"])
        .output()
        .expect("running the SDK script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK embeddings checks failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all OpenAI SDK embeddings checks passed"),
        "{stdout}"
    );
}
