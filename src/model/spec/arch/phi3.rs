//! Phi-3 / Phi-3.5: fused `attn_qkv` and gate|up `ffn_up` tensors (found by the weights
//! loader), half-split rotary over `rope.dimension_count` values, LongRoPE factors
//! (`rope_factors_short` / `_long`). llama.cpp ignores the sliding window Phi-3 files
//! declare (it was never applied as written); so do we, to answer as it does.

use super::super::{ArchRules, RopeStyle, Shape};

pub(super) fn rules(_: &Shape) -> ArchRules {
    ArchRules {
        style: RopeStyle::Halves,
        swa_pattern: None,
        ..ArchRules::llama()
    }
}
