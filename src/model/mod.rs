//! Models: GGUF loading, the one model description of every supported decoder
//! architecture (`spec`) and the weights it names (`weights`), the CPU decoder that
//! executes it over the paged KV cache (`transformer`; the device one is
//! `device_decoder`), the tokenizer built from GGUF metadata, chat templates, encoders
//! (BERT / XLM-R embedding and rerank models), and obtaining model files.

pub mod chat_template;
pub mod decoder;
pub mod device_decoder;
pub mod encoder;
pub mod gguf_writer;
pub mod loader;
pub mod ops;
pub mod paged_attention;
pub mod rope;
pub mod source;
pub mod spec;
pub mod step_batch;
pub mod tokenizer;
pub mod transformer;
pub mod weights;

use std::sync::Arc;

use chat_template::ChatTemplate;
use tokenizer::ModelTokenizer;

/// What the HTTP side knows about the served model.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The id clients put in `model` (file stem, or `--served-model-name`).
    pub id: String,
    /// Maximum prompt + generated tokens of one sequence.
    pub context_length: usize,
    /// Where it runs, e.g. `cpu`.
    pub device: String,
    /// Unix seconds when the model was loaded (OpenAI's `created`).
    pub created: u64,
}

/// The text side of a loaded model, shared read-only with the HTTP layer.
pub struct ServedModel {
    /// Identity and limits.
    pub info: ModelInfo,
    /// Tokenizer (thread-safe, read-only).
    pub tokenizer: Arc<ModelTokenizer>,
    /// Chat template.
    pub template: ChatTemplate,
    /// Grammars for constrained decoding, over this model's vocabulary.
    pub grammar: crate::structured::GrammarCompiler,
}

impl ServedModel {
    /// The text side of a model: its grammar compiler is built from `tokenizer`.
    pub fn new(info: ModelInfo, tokenizer: Arc<ModelTokenizer>, template: ChatTemplate) -> Self {
        Self {
            info,
            grammar: crate::structured::GrammarCompiler::new(tokenizer.clone()),
            tokenizer,
            template,
        }
    }
}
