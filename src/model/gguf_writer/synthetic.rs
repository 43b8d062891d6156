//! A decoder GGUF of any supported architecture with random weights, real shapes and a
//! working tokenizer: the architecture's keys and every optional tensor it has (biases,
//! Q/K norms, post-norms, fused projections, rope frequency factors) per [`ArchFeatures`].

use std::path::Path;

use anyhow::{Result, ensure};
use candle_core::quantized::GgmlDType;

use super::random::SplitMix64;
use super::{MetaValue, TensorData, TensorSpec, write_gguf};

/// What an architecture's file holds beyond llama's tensors and keys.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ArchFeatures {
    /// Q, K and V biases (Qwen2).
    pub qkv_bias: bool,
    /// Per-head Q/K RMSNorm weights (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Post-attention and post-FFN norms (Gemma 2/3).
    pub post_norms: bool,
    /// One `attn_qkv` tensor (Phi-3).
    pub fused_qkv: bool,
    /// Gate and up as one `ffn_up` of twice the rows (Phi-3).
    pub fused_gate_up: bool,
    /// `attention.key_length` / `value_length` (`None`: width / heads, not written).
    pub head_dim: Option<usize>,
    /// `rope.dimension_count` (`None`: the head width).
    pub n_rot: Option<usize>,
    /// `attention.sliding_window`.
    pub sliding_window: Option<usize>,
    /// `attention.sliding_window_pattern`.
    pub swa_pattern: Option<u32>,
    /// `attn_logit_softcapping`.
    pub attn_softcap: Option<f32>,
    /// `final_logit_softcapping`.
    pub final_softcap: Option<f32>,
    /// A `rope_freqs.weight` tensor (Llama 3.x frequency divisors).
    pub rope_freqs: bool,
    /// `rope.freq_base` (`None`: 10 000).
    pub rope_base: Option<f32>,
    /// `rope.freq_base_swa`.
    pub rope_base_swa: Option<f32>,
}

/// A decoder model with random weights and real shapes.
#[derive(Debug, Clone)]
pub struct SyntheticModel {
    /// `general.architecture`.
    pub arch: String,
    /// Its extra keys and tensors.
    pub features: ArchFeatures,
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
    /// Vocabulary size (at least 262: 3 control tokens, 256 bytes, 3 merges).
    pub vocab_size: usize,
    /// Trained context length written to the metadata.
    pub context_length: usize,
    /// Type of the weight matrices and the token embedding.
    pub matrix_dtype: GgmlDType,
    /// Type of `output.weight`.
    pub output_dtype: GgmlDType,
    /// Type of `attn_v` / `ffn_down` in the layers a Q4_K_M mix gives more bits (the
    /// first and last eighth, and every third in between); `None`: `matrix_dtype`.
    pub more_bits_dtype: Option<GgmlDType>,
    /// No `output.weight`: the output projection reuses `token_embd.weight`.
    pub tie_embeddings: bool,
    /// Seed of the weights.
    pub seed: u64,
}

const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
const MERGES: [(&str, &str); 3] = [("Ġ", "t"), ("h", "e"), ("Ġt", "he")];

impl SyntheticModel {
    /// A tiny model (2 layers, 4 heads / 2 K/V heads, vocab 320, context 512) whose
    /// width suits `dtype`: 64 wide with a 128 feed-forward, or 256 / 512 for the
    /// K-quants (their rows must be multiples of 256).
    pub fn tiny(dtype: GgmlDType) -> Self {
        let (n_embd, n_ff) = if dtype.block_size() > 64 {
            (256, 512)
        } else {
            (64, 128)
        };
        Self {
            arch: "llama".into(),
            features: ArchFeatures::default(),
            n_layer: 2,
            n_embd,
            n_ff,
            n_head: 4,
            n_kv_head: 2,
            vocab_size: 320,
            context_length: 512,
            matrix_dtype: dtype,
            output_dtype: dtype,
            more_bits_dtype: None,
            tie_embeddings: false,
            seed: 0x5EED,
        }
    }

    /// Mistral-7B shapes as a Q4_K_M file: Q4_K matrices and embedding, Q6_K for
    /// `output.weight` and for `attn_v` / `ffn_down` in the "more bits" layers.
    pub fn mistral_7b_q4k() -> Self {
        Self {
            arch: "llama".into(),
            features: ArchFeatures::default(),
            n_layer: 32,
            n_embd: 4096,
            n_ff: 14336,
            n_head: 32,
            n_kv_head: 8,
            vocab_size: 32000,
            context_length: 32768,
            matrix_dtype: GgmlDType::Q4K,
            output_dtype: GgmlDType::Q6K,
            more_bits_dtype: Some(GgmlDType::Q6K),
            tie_embeddings: false,
            seed: 7,
        }
    }

    /// [`Self::tiny`] as `arch` (llama, mistral, qwen2, qwen3, gemma, gemma2, gemma3,
    /// phi3), with every optional tensor and key that architecture has: head widths
    /// other than width / heads where the family allows them, a sliding window of 16
    /// positions (so short tests run past it), soft-caps, partial rotary, Llama 3
    /// frequency factors.
    pub fn tiny_arch(arch: &str, dtype: GgmlDType) -> Self {
        let base = Self::tiny(dtype);
        let hd = base.n_embd / base.n_head;
        let f = match arch {
            "llama" => ArchFeatures {
                rope_freqs: true,
                rope_base: Some(500_000.0),
                ..ArchFeatures::default()
            },
            "qwen2" => ArchFeatures {
                qkv_bias: true,
                rope_base: Some(1_000_000.0),
                ..ArchFeatures::default()
            },
            "qwen3" => ArchFeatures {
                qk_norm: true,
                head_dim: Some(2 * hd),
                ..ArchFeatures::default()
            },
            "gemma" => ArchFeatures {
                head_dim: Some(2 * hd),
                ..ArchFeatures::default()
            },
            "gemma2" => ArchFeatures {
                post_norms: true,
                head_dim: Some(2 * hd),
                sliding_window: Some(16),
                attn_softcap: Some(50.0),
                final_softcap: Some(30.0),
                ..ArchFeatures::default()
            },
            "gemma3" => ArchFeatures {
                post_norms: true,
                qk_norm: true,
                head_dim: Some(2 * hd),
                sliding_window: Some(16),
                swa_pattern: Some(2),
                rope_base: Some(1_000_000.0),
                rope_base_swa: Some(10_000.0),
                ..ArchFeatures::default()
            },
            "phi3" => ArchFeatures {
                fused_qkv: true,
                fused_gate_up: true,
                n_rot: Some(hd / 2),
                ..ArchFeatures::default()
            },
            _ => ArchFeatures::default(),
        };
        Self {
            arch: arch.into(),
            features: f,
            tie_embeddings: arch.starts_with("gemma") || arch == "qwen2",
            ..base
        }
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.features.head_dim.unwrap_or(self.n_embd / self.n_head)
    }

    /// Writes the complete GGUF file (streamed; see [`write_gguf`]). A matrix whose row
    /// length is not a multiple of its type's block size falls back to Q8_0 (or F16
    /// when not even that fits).
    pub fn write(&self, path: &Path) -> Result<()> {
        ensure!(
            self.vocab_size >= 3 + 256 + MERGES.len(),
            "vocab_size must be at least 262"
        );
        ensure!(
            self.n_head > 0 && self.n_kv_head > 0 && self.n_head.is_multiple_of(self.n_kv_head),
            "n_head must be a multiple of n_kv_head"
        );
        ensure!(
            self.features.head_dim.is_some() || self.n_embd.is_multiple_of(self.n_head),
            "n_embd must be a multiple of n_head"
        );
        write_gguf(path, &self.metadata(), &self.tensors())
    }

    /// The tokens (control, 256 byte-level, merge results, fillers) and their types.
    pub fn vocab(&self) -> (Vec<String>, Vec<i32>) {
        let mut tokens: Vec<String> = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
            .map(String::from)
            .into();
        let mut types = vec![3; 3];
        tokens.extend(gpt2_byte_chars().iter().map(char::to_string));
        tokens.extend(MERGES.iter().map(|(a, b)| format!("{a}{b}")));
        tokens.extend((tokens.len()..self.vocab_size).map(|i| format!("tok{i}")));
        types.resize(tokens.len(), 1);
        (tokens, types)
    }

    fn metadata(&self) -> Vec<(String, MetaValue)> {
        let (tokens, types) = self.vocab();
        let u = |v: usize| MetaValue::U32(v as u32);
        let s = |v: &str| MetaValue::Str(v.to_string());
        let f = &self.features;
        let merges = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
        let mut arch_keys = vec![
            ("block_count", u(self.n_layer)),
            ("context_length", u(self.context_length)),
            ("embedding_length", u(self.n_embd)),
            ("feed_forward_length", u(self.n_ff)),
            ("attention.head_count", u(self.n_head)),
            ("attention.head_count_kv", u(self.n_kv_head)),
            (
                "rope.freq_base",
                MetaValue::F32(f.rope_base.unwrap_or(10_000.0)),
            ),
            ("attention.layer_norm_rms_epsilon", MetaValue::F32(1e-5)),
            (
                "rope.dimension_count",
                u(f.n_rot.unwrap_or(self.head_dim())),
            ),
            ("vocab_size", u(self.vocab_size)),
        ];
        let optional = [
            ("attention.key_length", f.head_dim.map(u)),
            ("attention.value_length", f.head_dim.map(u)),
            ("attention.sliding_window", f.sliding_window.map(u)),
            (
                "attention.sliding_window_pattern",
                f.swa_pattern.map(MetaValue::U32),
            ),
            ("attn_logit_softcapping", f.attn_softcap.map(MetaValue::F32)),
            (
                "final_logit_softcapping",
                f.final_softcap.map(MetaValue::F32),
            ),
            ("rope.freq_base_swa", f.rope_base_swa.map(MetaValue::F32)),
        ];
        arch_keys.extend(optional.into_iter().filter_map(|(k, v)| Some((k, v?))));
        let mut out: Vec<(String, MetaValue)> = vec![
            ("general.architecture".into(), s(&self.arch)),
            // Not named after the architecture: llama.cpp keys vocabulary quirks on
            // names such as "phi3".
            ("general.name".into(), s("ferrite synthetic decoder")),
        ];
        out.extend(
            arch_keys
                .into_iter()
                .map(|(k, v)| (format!("{}.{k}", self.arch), v)),
        );
        let tokenizer = [
            ("tokenizer.ggml.model", s("gpt2")),
            ("tokenizer.ggml.pre", s("default")),
            ("tokenizer.ggml.tokens", MetaValue::StrArray(tokens)),
            ("tokenizer.ggml.token_type", MetaValue::I32Array(types)),
            ("tokenizer.ggml.merges", MetaValue::StrArray(merges)),
            ("tokenizer.ggml.bos_token_id", MetaValue::U32(1)),
            ("tokenizer.ggml.eos_token_id", MetaValue::U32(2)),
            ("tokenizer.ggml.add_bos_token", MetaValue::Bool(false)),
            ("tokenizer.chat_template", s(CHATML)),
        ];
        out.extend(tokenizer.into_iter().map(|(k, v)| (k.to_string(), v)));
        out
    }

    /// The first and last eighth of the layers, and every third one in between.
    fn more_bits(&self, layer: usize) -> bool {
        let (first, last) = (self.n_layer / 8, 7 * self.n_layer / 8);
        // `layer >= first` once the first test fails, so the subtraction cannot wrap.
        layer < first || layer >= last || (layer - first) % 3 == 2
    }

    fn tensors(&self) -> Vec<TensorSpec> {
        let f = &self.features;
        let mut seed = SplitMix64(self.seed);
        let mut matrix = |name: String, rows: usize, cols: usize, dtype: GgmlDType| {
            let dtype = fit_dtype(dtype, cols);
            let data = TensorData::Random {
                seed: seed.next_u64(),
                scale: 1.0 / (cols as f32).sqrt(),
            };
            TensorSpec {
                name,
                shape: vec![rows, cols],
                dtype,
                data,
            }
        };
        let (d, hd, m) = (self.n_embd, self.head_dim(), self.matrix_dtype);
        let (qw, kv, ff) = (self.n_head * hd, self.n_kv_head * hd, self.n_ff);
        let mut pending = vec![matrix("token_embd.weight".into(), self.vocab_size, d, m)];
        if !self.tie_embeddings {
            pending.push(matrix(
                "output.weight".into(),
                self.vocab_size,
                d,
                self.output_dtype,
            ));
        }
        for i in 0..self.n_layer {
            let big = self
                .more_bits_dtype
                .filter(|_| self.more_bits(i))
                .unwrap_or(m);
            let p = |n: &str| format!("blk.{i}.{n}.weight");
            if f.fused_qkv {
                pending.push(matrix(p("attn_qkv"), qw + 2 * kv, d, m));
            } else {
                pending.push(matrix(p("attn_q"), qw, d, m));
                pending.push(matrix(p("attn_k"), kv, d, m));
                pending.push(matrix(p("attn_v"), kv, d, big));
            }
            pending.push(matrix(p("attn_output"), d, qw, m));
            if f.fused_gate_up {
                pending.push(matrix(p("ffn_up"), 2 * ff, d, m));
            } else {
                pending.push(matrix(p("ffn_gate"), ff, d, m));
                pending.push(matrix(p("ffn_up"), ff, d, m));
            }
            pending.push(matrix(p("ffn_down"), d, ff, big));
        }
        let mut rng = SplitMix64(self.seed ^ 0xA5A5);
        let mut vector = |name: String, len: usize, center: f32, spread: f32| {
            let bytes = (0..len)
                .flat_map(|_| (center + spread * rng.signed_unit()).to_le_bytes())
                .collect();
            TensorSpec {
                name,
                shape: vec![len],
                dtype: GgmlDType::F32,
                data: TensorData::Bytes(bytes),
            }
        };
        let mut out = vec![vector("output_norm.weight".into(), d, 1.0, 0.05)];
        if f.rope_freqs {
            // Llama 3 style divisors: 1 for high frequencies, rising for low ones.
            let half = f.n_rot.unwrap_or(hd) / 2;
            let bytes = (0..half)
                .flat_map(|i| (1.0f32 + 7.0 * (i as f32 / half as f32).powi(2)).to_le_bytes())
                .collect();
            out.push(TensorSpec {
                name: "rope_freqs.weight".into(),
                shape: vec![half],
                dtype: GgmlDType::F32,
                data: TensorData::Bytes(bytes),
            });
        }
        for i in 0..self.n_layer {
            let p = |n: &str| format!("blk.{i}.{n}");
            out.push(vector(p("attn_norm.weight"), d, 1.0, 0.05));
            out.push(vector(p("ffn_norm.weight"), d, 1.0, 0.05));
            if f.qkv_bias {
                out.push(vector(p("attn_q.bias"), qw, 0.0, 0.5));
                out.push(vector(p("attn_k.bias"), kv, 0.0, 0.5));
                out.push(vector(p("attn_v.bias"), kv, 0.0, 0.5));
            }
            if f.qk_norm {
                out.push(vector(p("attn_q_norm.weight"), hd, 1.0, 0.2));
                out.push(vector(p("attn_k_norm.weight"), hd, 1.0, 0.2));
            }
            if f.post_norms {
                out.push(vector(p("post_attention_norm.weight"), d, 1.0, 0.2));
                out.push(vector(p("post_ffw_norm.weight"), d, 1.0, 0.2));
            }
        }
        out.append(&mut pending);
        out
    }
}

/// `want` if rows of length `n_in` are whole blocks of it, else Q8_0, else F16.
fn fit_dtype(want: GgmlDType, n_in: usize) -> GgmlDType {
    [want, GgmlDType::Q8_0]
        .into_iter()
        .find(|t| n_in.is_multiple_of(t.block_size()))
        .unwrap_or(GgmlDType::F16)
}

/// GPT-2's byte-to-printable-char table, indexed by byte.
pub fn gpt2_byte_chars() -> [char; 256] {
    let printable = |b: u32| {
        (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b)
    };
    let mut next = 256;
    std::array::from_fn(|b| {
        let b = b as u32;
        let c = if printable(b) {
            b
        } else {
            next += 1;
            next - 1
        };
        char::from_u32(c).expect("valid char")
    })
}
