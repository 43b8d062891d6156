//! llama.cpp's own test data, taken from the `llama-cpp-python` sdist on PyPI (which
//! vendors llama.cpp) by `tests/fixtures/llama_cpp_sdist.sh`: vocab-only GGUFs with
//! tokenization vectors (`models/ggml-vocab-*.gguf{,.inp,.out}`) and real chat templates
//! (`models/templates/*.jinja`). Unpacked under `~/.cache/ferrite/llama.cpp` (or
//! `$LLAMA_CPP_DIR`), never into the repository.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The vendored llama.cpp tree (fetched and unpacked on first use).
pub fn vendored_llama_cpp() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let script = super::repo_root().join("tests/fixtures/llama_cpp_sdist.sh");
        let out = Command::new("bash")
            .arg(&script)
            .stderr(Stdio::inherit())
            .output()
            .expect("running tests/fixtures/llama_cpp_sdist.sh");
        assert!(out.status.success(), "{} failed", script.display());
        let stdout = String::from_utf8(out.stdout).expect("UTF-8 path");
        let path = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
        assert!(
            path.join("models").is_dir(),
            "the script printed {stdout:?}, not a llama.cpp tree"
        );
        path
    })
    .clone()
}

/// `vendor/llama.cpp/models`.
pub fn models_dir() -> PathBuf {
    vendored_llama_cpp().join("models")
}

/// One tokenization case: input text and the ids llama.cpp produces for it
/// (`common_tokenize(ctx, text, add_special = false, parse_special = false)`).
pub struct VocabCase {
    pub text: String,
    pub ids: Vec<u32>,
}

/// Reads `FILE.inp` / `FILE.out` the way llama.cpp's `test-tokenizer-0` does: inputs are
/// separated by `\n__ggml_vocab_test__\n`, outputs are one line of space-separated ids
/// per input.
pub fn read_vectors(gguf: &std::path::Path) -> Option<Vec<VocabCase>> {
    let inp = std::fs::read_to_string(format!("{}.inp", gguf.display())).ok()?;
    let out = std::fs::read_to_string(format!("{}.out", gguf.display())).ok()?;
    let sep = "\n__ggml_vocab_test__\n";
    let mut texts = Vec::new();
    let mut rest = inp.as_str();
    while !rest.is_empty() {
        match rest.find(sep) {
            Some(i) => {
                texts.push(rest[..i].to_string());
                rest = &rest[i + sep.len()..];
            }
            None => {
                texts.push(rest.to_string());
                rest = "";
            }
        }
    }
    let ids: Vec<Vec<u32>> = out
        .lines()
        .map(|l| {
            l.split_whitespace()
                .map(|t| t.parse().expect("token id"))
                .collect()
        })
        .collect();
    assert_eq!(
        texts.len(),
        ids.len(),
        "{}: inputs and outputs differ in number",
        gguf.display()
    );
    Some(
        texts
            .into_iter()
            .zip(ids)
            .map(|(text, ids)| VocabCase { text, ids })
            .collect(),
    )
}
