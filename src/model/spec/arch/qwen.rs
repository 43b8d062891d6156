//! Qwen2 / Qwen2.5 (Q/K/V biases) and Qwen3 (per-head Q/K RMSNorm, head width from
//! `attention.key_length`): half-split ("neox") rotary, SwiGLU. The biases and norms
//! are optional tensors the weights loader finds; the head width is a key.

use super::super::{ArchRules, RopeStyle, Shape};

pub(super) fn rules(_: &Shape) -> ArchRules {
    ArchRules {
        style: RopeStyle::Halves,
        // Qwen files carry `sliding_window` for configs that never use it.
        swa_pattern: None,
        ..ArchRules::llama()
    }
}
