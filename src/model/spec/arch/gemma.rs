//! Gemma 1, 2 and 3: √width embedding scale, GeGLU (tanh GELU), half-split rotary,
//! tied output. Gemma 2 adds post-attention and post-FFN norms (optional tensors),
//! attention and final logit soft-caps (defaults 50 and 30 when the file names
//! none) and a 4096 window on every other layer; Gemma 3 adds Q/K norms and five
//! local layers per global one, the local ones rotating with base 10 000.
//!
//! The files' norm weights already hold Gemma's `1 + w` (the converter adds the 1), so
//! the norms are plain RMSNorms here. The query scale is 1/√head_dim except on the
//! 27B shapes (46 layers for Gemma 2, 62 for Gemma 3), where Google's
//! `query_pre_attn_scalar` is width / heads; GGUF files do not carry it as a key, so
//! this is llama.cpp's rule too (an `attention.scale` key overrides it).

use super::super::{Activation, ArchRules, RopeStyle, Shape};

fn base() -> ArchRules {
    ArchRules {
        style: RopeStyle::Halves,
        act: Activation::GeluTanh,
        scale_embeddings: true,
        swa_pattern: None,
        ..ArchRules::llama()
    }
}

/// 1/√(width / heads) on the 27B shapes (`layers`), else the default 1/√head_dim.
fn query_scale(s: &Shape, layers_27b: usize) -> Option<f32> {
    (s.n_layer == layers_27b).then(|| 1.0 / ((s.n_embd / s.n_head) as f32).sqrt())
}

pub(super) fn gemma(_: &Shape) -> ArchRules {
    base()
}

pub(super) fn gemma2(s: &Shape) -> ArchRules {
    ArchRules {
        swa_pattern: Some(2),
        default_window: Some(4096),
        attn_scale: query_scale(s, 46),
        default_attn_softcap: Some(50.0),
        default_final_softcap: Some(30.0),
        ..base()
    }
}

pub(super) fn gemma3(s: &Shape) -> ArchRules {
    ArchRules {
        swa_pattern: Some(6),
        default_base_swa: Some(10_000.0),
        attn_scale: query_scale(s, 62),
        ..base()
    }
}
