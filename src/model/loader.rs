//! Reading a GGUF file into a model, its tokenizer and its chat template.

use std::fs::File;
use std::io::Cursor;
use std::path::Path;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;

use super::chat_template::ChatTemplate;
use super::decoder::Decoder;
use super::tokenizer::ModelTokenizer;
use super::transformer::CpuModel;
use super::weights::TensorSource;

/// Everything a GGUF file yields; `M` is the decoder (the CPU [`CpuModel`] unless loaded
/// with [`load_gguf_with`]).
pub struct LoadedModel<M = CpuModel> {
    /// Weights and forward pass.
    pub llama: M,
    /// Tokenizer from the metadata.
    pub tokenizer: ModelTokenizer,
    /// Chat template (the model's; [`ChatTemplate::missing`] when it has none).
    pub template: ChatTemplate,
}

impl<M> LoadedModel<M> {
    /// The same tokenizer and template with the decoder mapped by `f`.
    pub fn map<N>(self, f: impl FnOnce(M) -> N) -> LoadedModel<N> {
        LoadedModel {
            llama: f(self.llama),
            tokenizer: self.tokenizer,
            template: self.template,
        }
    }
}

impl From<LoadedModel<CpuModel>> for LoadedModel<Decoder> {
    fn from(m: LoadedModel<CpuModel>) -> Self {
        m.map(|l| Decoder::Cpu(Box::new(l)))
    }
}

/// Loads a GGUF decoder (any supported architecture) for the CPU.
pub fn load_gguf(path: &Path) -> Result<LoadedModel> {
    load_gguf_with(path, CpuModel::load)
}

/// Loads a GGUF file's tokenizer and template, and its weights with `load`.
pub fn load_gguf_with<M>(
    path: &Path,
    load: impl FnOnce(TensorSource<'_>) -> Result<M>,
) -> Result<LoadedModel<M>> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // SAFETY: the map is read-only and dropped when loading ends; a file changed on
    // disk meanwhile could only make the weights read wrong, never unsound, as they
    // are copied out as plain bytes.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("mapping {}", path.display()))?;
    let content = gguf_file::Content::read(&mut Cursor::new(&map[..]))
        .map_err(|e| anyhow::anyhow!("{} is not a readable GGUF file: {e}", path.display()))?;
    let tokenizer =
        ModelTokenizer::from_gguf(&content.metadata).context("building the tokenizer")?;
    let source = content
        .metadata
        .get("tokenizer.chat_template")
        .and_then(|v| v.to_string().ok())
        .map(String::as_str);
    let template = match source {
        Some(src) => chat_template(&tokenizer, src).context("compiling the chat template")?,
        None => {
            tracing::warn!(
                "{} has no chat template: chat requests will get a 400 (use /v1/completions, \
                 or --chat-template FILE)",
                path.display()
            );
            ChatTemplate::missing()
        }
    };
    let llama = load(TensorSource::from_map(&content, &map))?;
    Ok(LoadedModel {
        llama,
        tokenizer,
        template,
    })
}

/// Compiles `source` with the tokenizer's BOS / EOS texts as `bos_token` / `eos_token`.
pub fn chat_template(tokenizer: &ModelTokenizer, source: &str) -> Result<ChatTemplate> {
    let special = |id: Option<u32>| id.and_then(|i| tokenizer.token_text(i)).unwrap_or_default();
    Ok(ChatTemplate::new(
        source,
        &special(tokenizer.bos_id),
        &special(tokenizer.eos_id),
    )?)
}

/// Reads a Jinja chat template from `path` (`--chat-template`) and compiles it.
pub fn chat_template_file(tokenizer: &ModelTokenizer, path: &Path) -> Result<ChatTemplate> {
    let source = std::fs::read_to_string(path)
        .with_context(|| format!("reading the chat template {}", path.display()))?;
    chat_template(tokenizer, &source)
        .with_context(|| format!("compiling the chat template {}", path.display()))
}
