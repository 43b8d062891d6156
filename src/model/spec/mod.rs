//! The one model description of a decoder-only transformer, read from GGUF metadata:
//! [`ModelSpec`] says everything that differs between architectures (hyper-parameters,
//! the rotary variant, attention scale, soft-caps, sliding-window layers, the FFN
//! activation, the embedding scale). Which optional tensors exist (biases, Q/K norms,
//! post-norms, fused projections, rope frequency factors) is read from the file by
//! `model::weights`. The CPU decoder (`model::transformer`) and the device decoder
//! (`model::device_decoder`) both execute a `ModelSpec`; neither knows an architecture
//! by name.
//!
//! Each architecture is one file in `arch/` that says only what its GGUF files leave
//! unsaid (llama.cpp's per-architecture rules): adding one is that file, a line in
//! [`ARCHITECTURES`] and its test.
//!
//! Invariants: `head_dim` comes from `attention.key_length` when set (never assumed to
//! be width / heads when the file says otherwise); `n_head` is a multiple of
//! `n_kv_head`; `n_rot` is even and at most `head_dim`; `layers.len() == n_layer`.

mod arch;
mod meta;

use std::collections::HashMap;

use anyhow::{Context, Result, bail, ensure};
use candle_core::quantized::gguf_file;

use super::paged_attention::HeadShape;

pub use arch::ARCHITECTURES;
use meta::Keys;

/// How rotary embedding pairs the values of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs `(x[2i], x[2i+1])` (llama.cpp's "normal": llama, mistral, whose
    /// Q/K weights the converter permuted).
    Adjacent,
    /// Halves `(x[i], x[i + n_rot/2])` (llama.cpp's "neox": qwen, gemma, phi3).
    Halves,
}

/// The FFN's gating activation: `act(gate) * up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SwiGLU.
    Silu,
    /// GeGLU with the tanh approximation of GELU.
    GeluTanh,
}

/// Rotary embedding of one layer kind.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSpec {
    /// Pairing of values.
    pub style: RopeStyle,
    /// Rotated values per head (the first `n_rot`; the rest pass through).
    pub n_rot: usize,
    /// Base frequency.
    pub base: f32,
    /// Position scale (`1 / factor` of linear or YaRN scaling; 1 = none).
    pub freq_scale: f32,
    /// YaRN: the trained context the scaling extends (`None`: plain linear scaling).
    pub yarn_orig_ctx: Option<usize>,
    /// Per-frequency divisors (`rope_freqs.weight`, Llama 3.x; `rope_factors_*`, Phi-3),
    /// `n_rot / 2` of them.
    pub freq_factors: Option<Vec<f32>>,
    /// Multiplier of cos/sin (YaRN / LongRoPE attention factor; 1 = none).
    pub attn_factor: f32,
}

/// What one layer does differently from the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LayerSpec {
    /// `Some(w)`: a query sees only the last `w` positions (itself included).
    pub window: Option<usize>,
    /// Index into [`ModelSpec::ropes`].
    pub rope: usize,
}

/// A decoder-only transformer, as the file describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// `general.architecture`.
    pub arch: String,
    /// Decoder layers.
    pub n_layer: usize,
    /// Hidden width.
    pub n_embd: usize,
    /// Feed-forward width.
    pub n_ff: usize,
    /// Query heads.
    pub n_head: usize,
    /// K/V heads.
    pub n_kv_head: usize,
    /// Width of one head (Q, K and V alike).
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Trained context length.
    pub context_length: usize,
    /// Vocabulary size (rows of the output projection).
    pub vocab_size: usize,
    /// Multiplier of the token embeddings (√width for Gemma; 1 elsewhere).
    pub embed_scale: f32,
    /// Multiplier of `q·k` before the softmax.
    pub attn_scale: f32,
    /// `c · tanh(s / c)` on attention scores (Gemma 2).
    pub attn_softcap: Option<f32>,
    /// `c · tanh(l / c)` on the output logits (Gemma 2).
    pub final_softcap: Option<f32>,
    /// FFN activation.
    pub act: Activation,
    /// The rotary tables layers use (one, or global and local).
    pub ropes: Vec<RopeSpec>,
    /// Per layer: window and rotary table.
    pub layers: Vec<LayerSpec>,
}

/// What an architecture's file decides; everything else comes from the keys.
#[derive(Debug, Clone)]
pub(crate) struct ArchRules {
    pub style: RopeStyle,
    pub act: Activation,
    /// Scale embeddings by √width.
    pub scale_embeddings: bool,
    /// Layers with a sliding window when the file has a window: `Some(n)` = llama.cpp's
    /// pattern `n` (of every `n` layers all but the last slide; 0 = every layer, 1 =
    /// none) unless the file gives one; `None`: the architecture ignores windows.
    pub swa_pattern: Option<u32>,
    /// Window when the file names none but the architecture always has one.
    pub default_window: Option<usize>,
    /// Rotary base of sliding-window layers when the file names none (`None`: the
    /// global base).
    pub default_base_swa: Option<f32>,
    /// Attention scale when the file has no `attention.scale` (`None`: 1/√head_dim).
    pub attn_scale: Option<f32>,
    /// Attention soft-cap when the file names none.
    pub default_attn_softcap: Option<f32>,
    /// Final soft-cap when the file names none.
    pub default_final_softcap: Option<f32>,
}

impl ArchRules {
    /// Llama's rules: adjacent-pair rotary, SwiGLU, nothing else.
    pub(crate) fn llama() -> Self {
        Self {
            style: RopeStyle::Adjacent,
            act: Activation::Silu,
            scale_embeddings: false,
            swa_pattern: Some(0),
            default_window: None,
            default_base_swa: None,
            attn_scale: None,
            default_attn_softcap: None,
            default_final_softcap: None,
        }
    }
}

/// Raw hyper-parameters an architecture's rules may look at.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_head: usize,
}

impl ModelSpec {
    /// Reads the description from a GGUF header. Rope frequency factors are tensors:
    /// `factor` reads one by name (`None` when absent).
    pub fn from_gguf(
        metadata: &HashMap<String, gguf_file::Value>,
        factor: &mut dyn FnMut(&str) -> Result<Option<Vec<f32>>>,
    ) -> Result<Self> {
        let arch = metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .cloned()
            .unwrap_or_else(|| "llama".into());
        let Some(rules_of) = arch::rules(&arch) else {
            bail!(
                "unsupported architecture `{arch}` (supported: {})",
                ARCHITECTURES.join(", ")
            );
        };
        let k = Keys::new(metadata, &arch);
        let n_embd = k.usize("embedding_length")?;
        let n_head = k.usize("attention.head_count")?;
        let n_kv_head = k.usize_or("attention.head_count_kv", n_head)?;
        ensure!(
            n_head > 0 && n_kv_head > 0 && n_head.is_multiple_of(n_kv_head),
            "invalid head counts: {n_head} heads, {n_kv_head} kv heads"
        );
        let default_hd = n_embd / n_head;
        let head_dim = k.usize_or("attention.key_length", default_hd)?;
        let v_dim = k.usize_or("attention.value_length", head_dim)?;
        ensure!(
            v_dim == head_dim && head_dim > 0,
            "heads with key width {head_dim} and value width {v_dim} are not supported"
        );
        let n_layer = k.usize("block_count")?;
        let shape = Shape {
            n_layer,
            n_embd,
            n_head,
        };
        let rules = rules_of(&shape);
        let vocab_size = metadata
            .get("tokenizer.ggml.tokens")
            .and_then(|v| v.to_vec().ok())
            .map(Vec::len)
            .or_else(|| k.usize("vocab_size").ok())
            .context("GGUF metadata has neither tokenizer.ggml.tokens nor vocab_size")?;
        let context_length = k.usize_or("context_length", 2048)?;
        let ropes = rope_specs(&k, &rules, head_dim, context_length, factor)?;
        let layers = layer_specs(&k, &rules, n_layer, ropes.len())?;
        let attn_scale = k
            .f32_opt("attention.scale")
            .filter(|s| *s != 0.0)
            .or(rules.attn_scale)
            .unwrap_or(1.0 / (head_dim as f32).sqrt());
        let cap = |key: &str, default: Option<f32>| k.f32_opt(key).or(default).filter(|c| *c > 0.0);
        Ok(Self {
            n_layer,
            n_embd,
            n_ff: k.usize("feed_forward_length")?,
            n_head,
            n_kv_head,
            head_dim,
            rms_eps: k
                .f32_opt("attention.layer_norm_rms_epsilon")
                .unwrap_or(1e-5),
            context_length,
            vocab_size,
            embed_scale: if rules.scale_embeddings {
                (n_embd as f32).sqrt()
            } else {
                1.0
            },
            attn_scale,
            attn_softcap: cap("attn_logit_softcapping", rules.default_attn_softcap),
            final_softcap: cap("final_logit_softcapping", rules.default_final_softcap),
            act: rules.act,
            ropes,
            layers,
            arch,
        })
    }

    /// Width of the query projection.
    pub fn q_width(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Width of the key (and value) projection.
    pub fn kv_width(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// The attention heads' shape.
    pub fn heads(&self) -> HeadShape {
        HeadShape {
            n_head: self.n_head,
            n_kv_head: self.n_kv_head,
            head_dim: self.head_dim,
        }
    }
}

/// The global rotary table and, when sliding layers use another base, a local one.
fn rope_specs(
    k: &Keys,
    rules: &ArchRules,
    head_dim: usize,
    context_length: usize,
    factor: &mut dyn FnMut(&str) -> Result<Option<Vec<f32>>>,
) -> Result<Vec<RopeSpec>> {
    let n_rot = k.usize_or("rope.dimension_count", head_dim)?;
    ensure!(
        n_rot > 0 && n_rot <= head_dim && n_rot.is_multiple_of(2),
        "rope.dimension_count {n_rot} does not fit heads of {head_dim}"
    );
    let base = k.f32_opt("rope.freq_base").unwrap_or(10_000.0);
    let kind = k.str_opt("rope.scaling.type").unwrap_or("none");
    let factor_key = k
        .f32_opt("rope.scaling.factor")
        .or_else(|| k.f32_opt("rope.scale_linear"))
        .filter(|f| *f > 0.0);
    let orig_ctx = k.usize_or("rope.scaling.original_context_length", context_length)?;
    let (freq_scale, yarn_orig_ctx) = match (kind, factor_key) {
        ("none", _) | (_, None) => (1.0, None),
        ("linear", Some(f)) => (1.0 / f, None),
        ("yarn", Some(f)) => (1.0 / f, Some(orig_ctx)),
        ("longrope", Some(_)) => (1.0, None),
        (other, _) => bail!("rope scaling `{other}` is not supported (none, linear, yarn)"),
    };
    let attn_factor = k.f32_opt("rope.scaling.attn_factor").unwrap_or(1.0);
    // Llama 3.x: one set of divisors; Phi-3: long factors beyond the original context.
    let mut freq_factors = factor("rope_freqs.weight")?;
    if freq_factors.is_none() {
        let long = context_length > orig_ctx;
        let name = if long {
            "rope_factors_long.weight"
        } else {
            "rope_factors_short.weight"
        };
        freq_factors = factor(name)?;
    }
    if let Some(f) = &freq_factors {
        ensure!(
            f.len() == n_rot / 2,
            "rope frequency factors: {} values for {n_rot} rotated dims",
            f.len()
        );
    }
    let global = RopeSpec {
        style: rules.style,
        n_rot,
        base,
        freq_scale,
        yarn_orig_ctx,
        freq_factors,
        attn_factor,
    };
    let base_swa = k.f32_opt("rope.freq_base_swa").or(rules.default_base_swa);
    Ok(match base_swa {
        Some(b) if b != base => {
            let local = RopeSpec {
                base: b,
                freq_scale: 1.0,
                yarn_orig_ctx: None,
                attn_factor: 1.0,
                ..global.clone()
            };
            vec![global, local]
        }
        _ => vec![global],
    })
}

/// Which layers slide, over which window, with which rotary table.
fn layer_specs(
    k: &Keys,
    rules: &ArchRules,
    n_layer: usize,
    ropes: usize,
) -> Result<Vec<LayerSpec>> {
    let window = k
        .usize_opt("attention.sliding_window")?
        .or(rules.default_window)
        .filter(|w| *w > 0);
    let sliding: Vec<bool> = match (window, rules.swa_pattern) {
        (Some(_), Some(default)) => match k.bools_opt("attention.sliding_window_pattern") {
            Some(v) => {
                ensure!(
                    v.len() >= n_layer,
                    "sliding_window_pattern has {} entries for {n_layer} layers",
                    v.len()
                );
                v[..n_layer].to_vec()
            }
            None => {
                let n = k
                    .usize_opt("attention.sliding_window_pattern")?
                    .map_or(default, |n| n as u32);
                (0..n_layer as u32)
                    .map(|il| n == 0 || il % n < n - 1)
                    .collect()
            }
        },
        _ => vec![false; n_layer],
    };
    Ok(sliding
        .into_iter()
        .map(|s| LayerSpec {
            window: if s { window } else { None },
            rope: if s && ropes > 1 { 1 } else { 0 },
        })
        .collect())
}

#[cfg(test)]
mod tests;
