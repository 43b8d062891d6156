//! Llama (1, 2, 3.x) and Mistral: adjacent-pair rotary (the converter permuted Q/K),
//! SwiGLU. Llama 3.x frequency factors (`rope_freqs.weight`), biases and a sliding
//! window are whatever the file holds; a window applies to every layer.

use super::super::{ArchRules, Shape};

pub(super) fn rules(_: &Shape) -> ArchRules {
    ArchRules::llama()
}
