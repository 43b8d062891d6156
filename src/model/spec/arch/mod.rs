//! Per-architecture rules: what each family's GGUF files leave unsaid. One file each;
//! [`rules`] maps `general.architecture` to them.

mod gemma;
mod llama;
mod phi3;
mod qwen;

use super::{ArchRules, Shape};

/// Every `general.architecture` ferrite serves.
pub const ARCHITECTURES: [&str; 8] = [
    "llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3", "phi3",
];

/// The rules of `arch`, or `None` when it is not supported.
pub(super) fn rules(arch: &str) -> Option<fn(&Shape) -> ArchRules> {
    Some(match arch {
        "llama" | "mistral" => llama::rules,
        "qwen2" | "qwen3" => qwen::rules,
        "gemma" => gemma::gemma,
        "gemma2" => gemma::gemma2,
        "gemma3" => gemma::gemma3,
        "phi3" => phi3::rules,
        _ => return None,
    })
}
