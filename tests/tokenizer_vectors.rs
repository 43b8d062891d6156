//! Every tokenizer family llama.cpp ships a vocab-only GGUF and test vectors for
//! tokenizes exactly as llama.cpp does: for each `ggml-vocab-*.gguf` with `.inp` /
//! `.out` beside it, every input gives the ids of the `.out` line (llama.cpp's
//! `test-tokenizer-0`: no BOS/EOS added, special-token text not parsed). Types ferrite
//! does not serve are skipped by name, with the reason; anything else that fails to load
//! is a failure.

mod common;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use common::llama_cpp::{models_dir, read_vectors};
use ferrite::model::tokenizer::{EncodeOptions, ModelTokenizer};

/// Tokenizer types (`tokenizer.ggml.model`) out of scope, and why.
const SKIPPED_TYPES: [(&str, &str); 4] = [
    (
        "bert",
        "WordPiece; encoders load their own tokenizer.json (src/model/encoder), not GGUF",
    ),
    (
        "t5",
        "Unigram (T5/UGM): no generative architecture ferrite serves uses it",
    ),
    (
        "rwkv",
        "RWKV's trie tokenizer: the RWKV architecture is not served",
    ),
    (
        "plamo2",
        "PLaMo-2's Aho-Corasick tokenizer: the architecture is not served",
    ),
];

fn vocab_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(models_dir())
        .expect("models dir")
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("ggml-vocab-") && name.ends_with(".gguf")
        })
        .collect();
    files.sort();
    files
}

fn metadata(path: &Path) -> std::collections::HashMap<String, gguf_file::Value> {
    let mut f = std::fs::File::open(path).unwrap();
    gguf_file::Content::read(&mut f)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .metadata
}

/// What happened to one vocab file.
enum Outcome {
    Passed(usize),
    Skipped(String),
    Failed(String),
}

fn check(path: &Path) -> Outcome {
    let Some(cases) = read_vectors(path) else {
        return Outcome::Skipped("no .inp/.out vectors ship with it".into());
    };
    let meta = metadata(path);
    let kind = meta
        .get("tokenizer.ggml.model")
        .and_then(|v| v.to_string().ok())
        .cloned()
        .unwrap_or_default();
    if let Some((_, why)) = SKIPPED_TYPES.iter().find(|(t, _)| *t == kind) {
        return Outcome::Skipped(format!("type `{kind}`: {why}"));
    }
    let tok = match ModelTokenizer::from_gguf(&meta) {
        Ok(t) => t,
        Err(e) => return Outcome::Failed(format!("does not load: {e:#}")),
    };
    let opts = EncodeOptions {
        add_special: false,
        parse_special: false,
    };
    let mut bad = Vec::new();
    for case in &cases {
        let ours = tok.encode_with(&case.text, opts).unwrap();
        if ours != case.ids {
            bad.push(format!(
                "  {:?}\n    llama.cpp {:?}\n    ours      {:?}",
                case.text, case.ids, ours
            ));
        }
    }
    if bad.is_empty() {
        Outcome::Passed(cases.len())
    } else {
        Outcome::Failed(format!(
            "{} of {} cases differ:\n{}",
            bad.len(),
            cases.len(),
            bad.join("\n")
        ))
    }
}

#[test]
fn every_llama_cpp_vocab_tokenizes_like_llama_cpp() {
    let files = vocab_files();
    assert!(
        files.len() >= 10,
        "expected llama.cpp's vocab files, found {files:?}"
    );
    let mut failed = Vec::new();
    let mut passed = 0;
    for path in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        match check(path) {
            Outcome::Passed(n) => {
                passed += 1;
                eprintln!("pass  {name}: {n} cases");
            }
            Outcome::Skipped(why) => eprintln!("skip  {name}: {why}"),
            Outcome::Failed(why) => {
                eprintln!("FAIL  {name}: {why}");
                failed.push(name);
            }
        }
    }
    assert!(
        failed.is_empty(),
        "vocab files that differ from llama.cpp: {failed:?}"
    );
    assert!(passed >= 10, "only {passed} vocab files were checked");
}
