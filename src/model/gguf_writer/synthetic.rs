//! A llama-architecture GGUF with random weights, real shapes and a working tokenizer.

use std::path::Path;

use anyhow::{Result, ensure};
use candle_core::quantized::GgmlDType;

use super::random::SplitMix64;
use super::{MetaValue, TensorData, TensorSpec, write_gguf};

/// A llama-architecture model with random weights and real shapes.
#[derive(Debug, Clone)]
pub struct SyntheticLlama {
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

impl SyntheticLlama {
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

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.n_embd / self.n_head
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
            self.n_embd.is_multiple_of(self.n_head),
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
        let merges = MERGES.iter().map(|(a, b)| format!("{a} {b}")).collect();
        let entries = [
            ("general.architecture", s("llama")),
            ("general.name", s("ferrite synthetic llama")),
            ("llama.block_count", u(self.n_layer)),
            ("llama.context_length", u(self.context_length)),
            ("llama.embedding_length", u(self.n_embd)),
            ("llama.feed_forward_length", u(self.n_ff)),
            ("llama.attention.head_count", u(self.n_head)),
            ("llama.attention.head_count_kv", u(self.n_kv_head)),
            ("llama.rope.freq_base", MetaValue::F32(10_000.0)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                MetaValue::F32(1e-5),
            ),
            ("llama.rope.dimension_count", u(self.head_dim())),
            ("llama.vocab_size", u(self.vocab_size)),
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
        entries
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
    }

    /// The first and last eighth of the layers, and every third one in between.
    fn more_bits(&self, layer: usize) -> bool {
        let (first, last) = (self.n_layer / 8, 7 * self.n_layer / 8);
        // `layer >= first` once the first test fails, so the subtraction cannot wrap.
        layer < first || layer >= last || (layer - first) % 3 == 2
    }

    fn tensors(&self) -> Vec<TensorSpec> {
        let mut out = Vec::new();
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
        let (d, kv, m) = (
            self.n_embd,
            self.n_kv_head * self.head_dim(),
            self.matrix_dtype,
        );
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
            pending.push(matrix(p("attn_q"), d, d, m));
            pending.push(matrix(p("attn_k"), kv, d, m));
            pending.push(matrix(p("attn_v"), kv, d, big));
            pending.push(matrix(p("attn_output"), d, d, m));
            pending.push(matrix(p("ffn_gate"), self.n_ff, d, m));
            pending.push(matrix(p("ffn_up"), self.n_ff, d, m));
            pending.push(matrix(p("ffn_down"), d, self.n_ff, big));
        }
        let mut rng = SplitMix64(self.seed ^ 0xA5A5);
        let mut norm = |name: String| {
            let bytes = (0..d)
                .flat_map(|_| (1.0f32 + 0.05 * rng.signed_unit()).to_le_bytes())
                .collect();
            TensorSpec {
                name,
                shape: vec![d],
                dtype: GgmlDType::F32,
                data: TensorData::Bytes(bytes),
            }
        };
        out.push(norm("output_norm.weight".into()));
        for i in 0..self.n_layer {
            out.push(norm(format!("blk.{i}.attn_norm.weight")));
            out.push(norm(format!("blk.{i}.ffn_norm.weight")));
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
