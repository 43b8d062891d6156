//! Models found in `--models-dir`: every `*.gguf` file (an LLM, named by its file stem)
//! and every encoder folder (`config.json` + `model.safetensors`, named by the folder,
//! or by its parent when the folder is a package's `model/`; the default encoder by its
//! served name), up to three levels deep, hidden entries skipped.
//!
//! Invariant: scanning only reads directory listings; nothing is opened or loaded.

use std::path::{Path, PathBuf};

use super::spec::{ModelSpec, SpecKind};
use crate::model::source::{DefaultEncoder, DefaultModel};

/// How deep below the models folder files are looked for.
const MAX_DEPTH: usize = 3;

/// `(name, spec)` of every model in `dir`, in a stable (sorted) order.
pub fn scan(dir: &Path) -> Vec<(String, ModelSpec)> {
    let mut found = Vec::new();
    walk(dir, dir, 0, &mut found);
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<(String, ModelSpec)>) {
    if is_encoder_dir(dir) {
        out.push((encoder_name(root, dir), spec(dir, SpecKind::Encoder)));
        return;
    }
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(read) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = read.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        let hidden = p
            .file_name()
            .and_then(|n| n.to_str())
            .is_none_or(|n| n.starts_with('.'));
        if hidden {
            continue;
        }
        if p.is_dir() {
            walk(root, &p, depth + 1, out);
        } else if p
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
            && let Some(stem) = p.file_stem().and_then(|s| s.to_str())
        {
            out.push((stem.to_string(), spec(&p, SpecKind::Llm)));
        }
    }
}

fn is_encoder_dir(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("model.safetensors").is_file()
}

/// The name an encoder folder is served under: the default encoder's (when `dir` is
/// the default encoder's folder under `models_dir`), else the folder's name, or its
/// parent's when the folder is a package's `model/`.
pub fn encoder_name(models_dir: &Path, dir: &Path) -> String {
    let canon = |p: &Path| std::fs::canonicalize(p).ok();
    if canon(dir).is_some() && canon(dir) == canon(&DefaultEncoder::ASSET.path(models_dir)) {
        return DefaultEncoder::NAME.to_string();
    }
    let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
    match name(dir) {
        Some(n) if n == "model" => dir.parent().and_then(name).unwrap_or(n),
        Some(n) => n,
        None => "encoder".into(),
    }
}

fn spec(path: &Path, kind: SpecKind) -> ModelSpec {
    ModelSpec {
        source: Some(path.to_string_lossy().into_owned()),
        ..ModelSpec::default_of(kind)
    }
}

/// The name a GGUF file is served under: its file stem.
pub fn llm_name(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned())
}

/// The default LLM's name.
pub fn default_llm_name() -> String {
    llm_name(Path::new(DefaultModel::FILE))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_gguf_files_and_encoder_folders_by_name() {
        let root = std::env::temp_dir().join(format!("ferrite-discover-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let touch = |p: &Path| {
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, b"x").unwrap();
        };
        touch(&root.join("llms/chat-a.gguf"));
        touch(&root.join("b.GGUF"));
        touch(&root.join(".download/hidden.gguf"));
        touch(&root.join("notes.txt"));
        for enc in ["ner-x", "pkg/model"] {
            touch(&root.join(enc).join("config.json"));
            touch(&root.join(enc).join("model.safetensors"));
        }
        touch(&root.join("half/config.json"));
        let found = scan(&root);
        let names: Vec<(&str, SpecKind)> =
            found.iter().map(|(n, s)| (n.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("b", SpecKind::Llm),
                ("chat-a", SpecKind::Llm),
                ("ner-x", SpecKind::Encoder),
                ("pkg", SpecKind::Encoder),
            ]
        );
        let _ = std::fs::remove_dir_all(&root);
    }
}
