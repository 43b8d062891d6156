//! Which tensors a decoder has and how they are read, said once for the CPU and the
//! device decoders: [`load_weights`] finds every required and optional tensor of a
//! [`ModelSpec`] by its GGUF name (biases, Q/K norms, post-norms, fused `attn_qkv` or
//! gate|up `ffn_up`, tied output), checks its shape against the spec, and hands it to a
//! [`WeightSink`], which turns it into the backend's own weight type.
//!
//! Invariants: a layer's `qkv` projection outputs `[q | k | v]` (widths `q_width`,
//! `kv_width`, `kv_width`) and `gate_up` outputs `[gate | up]` (`n_ff` each), whether
//! the file stores them fused or apart; a bias, when any part has one, covers the
//! whole output (zeros for parts without).

use anyhow::{Context, Result, bail, ensure};
use candle_core::Device;
use candle_core::quantized::{QTensor, gguf_file};
use rayon::prelude::*;

use super::spec::ModelSpec;

mod raw;
pub use raw::RawTensor;

/// Turns tensors into a backend's weights.
pub trait WeightSink: Sync {
    /// Projections of one input, side by side in one output row.
    type Matrix;
    /// A vector (norm weights, biases).
    type Vector;
    /// The token embedding table.
    type Embedding;
    /// `parts` (each `(name, [n_i, k])`) as one matrix of output width `sum n_i`.
    fn matrix(&self, parts: Vec<(String, QTensor)>) -> Result<Self::Matrix>;
    /// [`Self::matrix`] from the bytes as stored (shapes checked): sinks that repack
    /// straight from the file override it; by default each part is copied into a
    /// `QTensor`.
    fn matrix_raw(&self, parts: &[RawTensor<'_>]) -> Result<Self::Matrix> {
        let parts = parts
            .iter()
            .map(|p| Ok((p.name.clone(), p.to_qtensor()?)))
            .collect::<Result<Vec<_>>>()?;
        self.matrix(parts)
    }
    /// A vector of f32 values.
    fn vector(&self, name: &str, values: Vec<f32>) -> Result<Self::Vector>;
    /// The embedding table (`[vocab, n_embd]`).
    fn embedding(&self, table: QTensor) -> Result<Self::Embedding>;
}

/// A projection and its optional bias.
pub struct Proj<M, V> {
    /// The matrix.
    pub w: M,
    /// Added to every output row.
    pub bias: Option<V>,
}

/// One decoder layer's weights.
pub struct LayerWeights<M, V> {
    /// Norm before attention.
    pub attn_norm: V,
    /// `[q | k | v]`.
    pub qkv: Proj<M, V>,
    /// Per-head RMSNorm of queries and keys (Qwen3, Gemma 3), before rotary.
    pub q_norm: Option<V>,
    /// See `q_norm`.
    pub k_norm: Option<V>,
    /// Attention output projection.
    pub wo: Proj<M, V>,
    /// Norm of the attention output before the residual add (Gemma 2/3).
    pub post_attn_norm: Option<V>,
    /// Norm before the FFN.
    pub ffn_norm: V,
    /// `[gate | up]`.
    pub gate_up: Proj<M, V>,
    /// FFN down projection.
    pub down: Proj<M, V>,
    /// Norm of the FFN output before the residual add (Gemma 2/3).
    pub post_ffn_norm: Option<V>,
}

/// Every weight of a decoder.
pub struct Weights<M, V, E> {
    /// Token embeddings.
    pub embed: E,
    /// The layers.
    pub layers: Vec<LayerWeights<M, V>>,
    /// Final norm.
    pub output_norm: V,
    /// Output projection; `None`: tied to the embedding table.
    pub output: Option<M>,
    /// Bias of the output projection.
    pub output_bias: Option<V>,
}

/// A GGUF file in memory (memory-mapped) for reading tensors; tensors can be read
/// from several threads at once.
#[derive(Clone, Copy)]
pub struct TensorSource<'a> {
    /// Its header.
    pub content: &'a gguf_file::Content,
    /// The whole file.
    pub data: &'a [u8],
    /// Whether `data` is a read-only file mapping (pages may be dropped once read).
    mapped: bool,
}

impl<'a> TensorSource<'a> {
    /// A file held in `data` (any memory).
    pub fn new(content: &'a gguf_file::Content, data: &'a [u8]) -> Self {
        Self {
            content,
            data,
            mapped: false,
        }
    }

    /// A file memory-mapped read-only: tensors' pages leave the resident set once read.
    pub fn from_map(content: &'a gguf_file::Content, map: &'a memmap2::Mmap) -> Self {
        Self {
            content,
            data: map,
            mapped: true,
        }
    }
}

impl TensorSource<'_> {
    /// Whether the file has tensor `name`.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Tensor `name`, as stored (a copy; its file pages are released).
    pub fn tensor(&self, name: &str) -> Result<QTensor> {
        let raw = self.raw(name)?;
        let t = raw.to_qtensor()?;
        raw.release();
        Ok(t)
    }

    /// Tensor `name` as f32 values, or `None` when the file lacks it.
    pub fn f32s(&self, name: &str) -> Result<Option<Vec<f32>>> {
        if !self.has(name) {
            return Ok(None);
        }
        let t = self.tensor(name)?;
        Ok(Some(
            t.dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?,
        ))
    }
}

/// Reads the spec from the file's metadata (rope factors from its tensors).
pub fn read_spec(src: &TensorSource<'_>) -> Result<ModelSpec> {
    let metadata = &src.content.metadata;
    ModelSpec::from_gguf(metadata, &mut |name| src.f32s(name))
}

/// Reads every weight of `spec` from `src` into `sink`, one layer after another.
pub fn load_weights<S: WeightSink>(
    spec: &ModelSpec,
    src: &TensorSource<'_>,
    sink: &S,
) -> Result<Weights<S::Matrix, S::Vector, S::Embedding>> {
    let r = Reader { spec, src, sink };
    let layers = (0..spec.n_layer)
        .map(|i| r.layer(i))
        .collect::<Result<Vec<_>>>()?;
    r.finish(layers)
}

/// [`load_weights`] with the layers read and converted in parallel (rayon), for sinks
/// whose weights may move between threads (the CPU's).
pub fn load_weights_par<S>(
    spec: &ModelSpec,
    src: &TensorSource<'_>,
    sink: &S,
) -> Result<Weights<S::Matrix, S::Vector, S::Embedding>>
where
    S: WeightSink,
    S::Matrix: Send,
    S::Vector: Send,
{
    let r = Reader { spec, src, sink };
    let layers = (0..spec.n_layer)
        .into_par_iter()
        .map(|i| r.layer(i))
        .collect::<Result<Vec<_>>>()?;
    r.finish(layers)
}

impl<S: WeightSink> Reader<'_, '_, S> {
    /// The weights outside the layers, with `layers`.
    fn finish(
        &self,
        layers: Vec<LayerWeights<S::Matrix, S::Vector>>,
    ) -> Result<Weights<S::Matrix, S::Vector, S::Embedding>> {
        let spec = self.spec;
        let table = self.src.tensor("token_embd.weight")?;
        self.check("token_embd.weight", &table, spec.vocab_size, spec.n_embd)?;
        let embed = self.sink.embedding(table)?;
        let (output, output_bias) = if self.src.has("output.weight") {
            let p = self.proj(&["output"], &[spec.vocab_size], spec.n_embd)?;
            (Some(p.w), p.bias)
        } else {
            (None, self.bias("output.bias")?)
        };
        Ok(Weights {
            embed,
            layers,
            output_norm: self.norm("output_norm.weight", spec.n_embd)?,
            output,
            output_bias,
        })
    }
}

struct Reader<'a, 'b, S> {
    spec: &'a ModelSpec,
    src: &'a TensorSource<'b>,
    sink: &'a S,
}

impl<S: WeightSink> Reader<'_, '_, S> {
    fn check(&self, name: &str, t: &QTensor, n: usize, k: usize) -> Result<()> {
        let dims = t
            .shape()
            .dims2()
            .with_context(|| format!("{name} is not a matrix"))?;
        ensure!(
            dims == (n, k),
            "{name} is {dims:?}, the metadata says ({n}, {k})"
        );
        Ok(())
    }

    fn norm(&self, name: &str, width: usize) -> Result<S::Vector> {
        let v = self
            .src
            .f32s(name)?
            .with_context(|| format!("the file has no {name}"))?;
        ensure!(
            v.len() == width,
            "{name} has {} values, not {width}",
            v.len()
        );
        self.sink.vector(name, v)
    }

    fn opt_norm(&self, name: &str, width: usize) -> Result<Option<S::Vector>> {
        if self.src.has(name) {
            self.norm(name, width).map(Some)
        } else {
            Ok(None)
        }
    }

    fn bias(&self, name: &str) -> Result<Option<S::Vector>> {
        match self.src.f32s(name)? {
            Some(v) => self.sink.vector(name, v).map(Some),
            None => Ok(None),
        }
    }

    /// Tensors `{base}.weight` of output widths `widths`, input `k`, side by side,
    /// with their biases (`{base}.bias`) when any has one.
    fn proj(
        &self,
        bases: &[&str],
        widths: &[usize],
        k: usize,
    ) -> Result<Proj<S::Matrix, S::Vector>> {
        let mut parts = Vec::with_capacity(bases.len());
        let mut biases = Vec::with_capacity(bases.len());
        for (base, &n) in bases.iter().zip(widths) {
            let t = self.src.raw(&format!("{base}.weight"))?;
            let dims = t.dims2()?;
            ensure!(
                dims == (n, k),
                "{} is {dims:?}, the metadata says ({n}, {k})",
                t.name
            );
            parts.push(t);
            let b = self.src.f32s(&format!("{base}.bias"))?;
            if let Some(b) = &b {
                ensure!(b.len() == n, "{base}.bias has {} values, not {n}", b.len());
            }
            biases.push(b);
        }
        let bias = if biases.iter().any(Option::is_some) {
            let all: Vec<f32> = biases
                .into_iter()
                .zip(widths)
                .flat_map(|(b, &n)| b.unwrap_or_else(|| vec![0.0; n]))
                .collect();
            Some(self.sink.vector(&format!("{}.bias", bases[0]), all)?)
        } else {
            None
        };
        let w = self.sink.matrix_raw(&parts)?;
        parts.iter().for_each(RawTensor::release);
        Ok(Proj { w, bias })
    }

    fn layer(&self, i: usize) -> Result<LayerWeights<S::Matrix, S::Vector>> {
        let s = self.spec;
        let (d, qw, kw, ff) = (s.n_embd, s.q_width(), s.kv_width(), s.n_ff);
        let p = |n: &str| format!("blk.{i}.{n}");
        let qkv = if self.src.has(&p("attn_qkv.weight")) {
            self.proj(&[&p("attn_qkv")], &[qw + 2 * kw], d)?
        } else {
            self.proj(
                &[&p("attn_q"), &p("attn_k"), &p("attn_v")],
                &[qw, kw, kw],
                d,
            )?
        };
        let gate_up = if self.src.has(&p("ffn_gate.weight")) {
            self.proj(&[&p("ffn_gate"), &p("ffn_up")], &[ff, ff], d)?
        } else if self.src.has(&p("ffn_up.weight")) {
            // Phi-3 stores gate and up as one tensor of 2 * n_ff rows, gate first.
            self.proj(&[&p("ffn_up")], &[2 * ff], d)?
        } else {
            bail!("layer {i} has neither ffn_gate nor ffn_up");
        };
        let hd = s.head_dim;
        Ok(LayerWeights {
            attn_norm: self.norm(&p("attn_norm.weight"), d)?,
            qkv,
            q_norm: self.opt_norm(&p("attn_q_norm.weight"), hd)?,
            k_norm: self.opt_norm(&p("attn_k_norm.weight"), hd)?,
            wo: self.proj(&[&p("attn_output")], &[d], qw)?,
            post_attn_norm: self.opt_norm(&p("post_attention_norm.weight"), d)?,
            ffn_norm: self.norm(&p("ffn_norm.weight"), d)?,
            gate_up,
            down: self.proj(&[&p("ffn_down")], &[d], ff)?,
            post_ffn_norm: self.opt_norm(&p("post_ffw_norm.weight"), d)?,
        })
    }
}
