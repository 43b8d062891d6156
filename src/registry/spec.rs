//! What to serve, before anything is loaded: one [`ModelSpec`] per model, from the
//! repeatable `--model` / `--encoder` flags (`[NAME=]SOURCE`) and from `--config FILE`
//! (TOML, the same and more per model: aliases, kind, device, KV share, keep-alive).
//!
//! Invariants: a spec's `source` is what the user wrote (a path, `hf:…`, or `None` for
//! the default model of its kind); names and aliases are checked for clashes by the
//! registry, not here.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde::Deserialize;

/// Whether a model generates text (a GGUF) or encodes it (a Hugging Face folder).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpecKind {
    /// A GGUF LLM.
    Llm,
    /// A BERT / XLM-R encoder (embeddings, rerank, classification).
    Encoder,
}

/// How long an idle model stays loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepAlive {
    /// Never unloaded for being idle (nor evicted to make room).
    Forever,
    /// Unloaded once idle this long (and evictable, least recently used first).
    For(Duration),
}

impl KeepAlive {
    /// Parses `-1` / `never` / `forever` (keep), or a duration: `300` (seconds), `90s`,
    /// `5m`, `1h`, `250ms`, `0` (unload as soon as idle).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        if matches!(t.as_str(), "-1" | "never" | "forever" | "inf") {
            return Ok(Self::Forever);
        }
        let split = t
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(t.len());
        let (num, unit) = t.split_at(split);
        let n: f64 = num.parse().map_err(|_| {
            format!("`{s}` is not a keep-alive: use -1, or a duration like 300, 90s, 5m, 1h")
        })?;
        let secs = match unit.trim() {
            "" | "s" => n,
            "ms" => n / 1000.0,
            "m" => n * 60.0,
            "h" => n * 3600.0,
            u => return Err(format!("`{s}`: unknown unit `{u}` (use ms, s, m or h)")),
        };
        Ok(Self::For(Duration::from_secs_f64(secs)))
    }
}

impl<'de> Deserialize<'de> for KeepAlive {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) => f.to_string(),
            Raw::Text(t) => t,
        };
        KeepAlive::parse(&text).map_err(serde::de::Error::custom)
    }
}

/// One model to serve (or to offer for loading on demand).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelSpec {
    /// The id clients send in `model` (default: derived from the source).
    #[serde(default)]
    pub name: Option<String>,
    /// Other names that resolve to it.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// A path, `hf:…`, or `None`: the default model of its kind.
    #[serde(default)]
    pub source: Option<String>,
    /// LLM or encoder (in a config file, inferred from the source when left out).
    #[serde(default = "default_kind")]
    pub kind: SpecKind,
    /// Where it runs (`cpu`, `cuda:N`; default: the server's `--device`).
    #[serde(default)]
    pub device: Option<String>,
    /// An LLM's weight in the split of the KV memory (default: an even split).
    #[serde(default)]
    pub kv_share: Option<f64>,
    /// How long it stays loaded while idle (default: for ever for models named at
    /// start-up, `--keep-alive` for models loaded on demand).
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
}

fn default_kind() -> SpecKind {
    SpecKind::Llm
}

impl ModelSpec {
    /// A spec of `kind` from a `[NAME=]SOURCE` flag value.
    pub fn from_flag(value: &str, kind: SpecKind) -> Self {
        let (name, source) = split_name(value);
        Self {
            name,
            aliases: Vec::new(),
            source: Some(source),
            kind,
            device: None,
            kv_share: None,
            keep_alive: None,
        }
    }

    /// The default model of `kind`, unnamed.
    pub fn default_of(kind: SpecKind) -> Self {
        Self {
            source: None,
            ..Self::from_flag("", kind)
        }
    }
}

/// Splits `NAME=SOURCE`; a value whose part before `=` looks like a path (or is empty)
/// is all source.
fn split_name(value: &str) -> (Option<String>, String) {
    match value.split_once('=') {
        Some((name, source))
            if !name.is_empty()
                && !source.is_empty()
                && !name.contains(['/', '\\', ':'])
                && !name.ends_with(".gguf") =>
        {
            (Some(name.to_string()), source.to_string())
        }
        _ => (None, value.to_string()),
    }
}

/// What `--config FILE` holds.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The memory budget (same spellings as `--memory`).
    #[serde(default)]
    pub memory: Option<String>,
    /// Keep-alive of models loaded on demand (as `--keep-alive`).
    #[serde(default)]
    pub keep_alive: Option<KeepAlive>,
    /// Folder whose GGUF files and encoder folders are loadable by name.
    #[serde(default)]
    pub models_dir: Option<String>,
    /// The models, in order (the first of each kind serves requests without `model`).
    #[serde(default, alias = "model")]
    pub models: Vec<RawSpec>,
}

/// A `[[models]]` table: a spec whose kind may be left to inference.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    aliases: Vec<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(default)]
    kind: Option<SpecKind>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    kv_share: Option<f64>,
    #[serde(default)]
    keep_alive: Option<KeepAlive>,
}

impl ConfigFile {
    /// Reads and checks `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --config {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in --config {}", path.display()))
    }

    /// Parses a config's text.
    pub fn parse(text: &str) -> Result<Self> {
        let cfg: ConfigFile = toml::from_str(text)?;
        for (i, m) in cfg.models.iter().enumerate() {
            if m.source.is_none() && m.kind.is_none() {
                bail!(
                    "[[models]] #{}: give a `source` or a `kind` (llm or encoder)",
                    i + 1
                );
            }
            if let Some(s) = m.kv_share
                && !(s.is_finite() && s > 0.0)
            {
                bail!(
                    "[[models]] #{}: kv_share must be a positive number, not {s}",
                    i + 1
                );
            }
        }
        Ok(cfg)
    }

    /// The models as specs, each kind given or inferred from its source.
    pub fn specs(&self) -> Vec<ModelSpec> {
        self.models
            .iter()
            .map(|m| ModelSpec {
                name: m.name.clone(),
                aliases: m.aliases.clone(),
                source: m.source.clone(),
                kind: m
                    .kind
                    .unwrap_or_else(|| infer_kind(m.source.as_deref().unwrap_or_default())),
                device: m.device.clone(),
                kv_share: m.kv_share,
                keep_alive: m.keep_alive,
            })
            .collect()
    }
}

/// A source ending in `.gguf` is an LLM; anything else (a folder, `hf:OWNER/REPO`) an
/// encoder.
pub fn infer_kind(source: &str) -> SpecKind {
    if source.to_ascii_lowercase().ends_with(".gguf") {
        SpecKind::Llm
    } else {
        SpecKind::Encoder
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_split_a_name_only_where_one_is_meant() {
        let s = ModelSpec::from_flag("chat=models/a.gguf", SpecKind::Llm);
        assert_eq!(s.name.as_deref(), Some("chat"));
        assert_eq!(s.source.as_deref(), Some("models/a.gguf"));
        for whole in [
            "models/a=b.gguf",
            "hf:org/repo/x.gguf",
            "=x.gguf",
            "x.gguf=y",
        ] {
            let s = ModelSpec::from_flag(whole, SpecKind::Llm);
            assert_eq!(s.name, None, "{whole}");
            assert_eq!(s.source.as_deref(), Some(whole));
        }
    }

    #[test]
    fn keep_alive_spellings() {
        assert_eq!(KeepAlive::parse("-1"), Ok(KeepAlive::Forever));
        assert_eq!(KeepAlive::parse("never"), Ok(KeepAlive::Forever));
        let secs = |s: &str| match KeepAlive::parse(s).unwrap() {
            KeepAlive::For(d) => d.as_secs_f64(),
            KeepAlive::Forever => -1.0,
        };
        assert_eq!(secs("300"), 300.0);
        assert_eq!(secs("5m"), 300.0);
        assert_eq!(secs("1h"), 3600.0);
        assert_eq!(secs("250ms"), 0.25);
        assert_eq!(secs("0"), 0.0);
        assert!(KeepAlive::parse("5 parsecs").is_err());
        assert!(KeepAlive::parse("soon").is_err());
    }

    #[test]
    fn a_config_file_describes_models_with_inferred_kinds() {
        let cfg = ConfigFile::parse(
            r#"
            memory = "8GiB"
            keep_alive = "10m"
            [[models]]
            name = "chat"
            source = "models/a.gguf"
            aliases = ["gpt-4o-mini"]
            kv_share = 2
            [[models]]
            name = "embed"
            source = "models/minilm"
            keep_alive = -1
            [[models]]
            kind = "encoder"
            "#,
        )
        .unwrap();
        let specs = cfg.specs();
        assert_eq!(specs.len(), 3);
        assert_eq!(specs[0].kind, SpecKind::Llm);
        assert_eq!(specs[0].aliases, ["gpt-4o-mini"]);
        assert_eq!(specs[0].kv_share, Some(2.0));
        assert_eq!(specs[1].kind, SpecKind::Encoder);
        assert_eq!(specs[1].keep_alive, Some(KeepAlive::Forever));
        assert_eq!(specs[2].source, None);
        assert_eq!(cfg.memory.as_deref(), Some("8GiB"));
    }

    #[test]
    fn a_config_file_with_mistakes_is_refused_with_the_reason() {
        let err = |t: &str| format!("{:#}", ConfigFile::parse(t).unwrap_err());
        assert!(err("[[models]]\nname = \"x\"\n").contains("source"));
        assert!(err("[[models]]\nsource = \"a.gguf\"\nkv_share = -1\n").contains("kv_share"));
        assert!(err("[[models]]\nsource = \"a.gguf\"\ncolour = 1\n").contains("colour"));
        assert!(err("[[models]]\nsource = \"a.gguf\"\nkeep_alive = \"later\"\n").contains("later"));
    }
}
