//! The CPU decoder: executes a [`ModelSpec`] (any supported architecture) with one
//! batched forward per engine step over a flat batch of tokens from many sequences.
//!
//! Every weight matmul runs once per step on all `T` tokens of the batch (`[T, k] x
//! [k, n]`); only attention is per sequence, reading K/V through block tables. Each
//! row's result depends on that row alone, which keeps outputs batch-invariant.

use std::sync::Arc;

use anyhow::{Result, bail};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

mod layer;
mod linear;
mod profile;

use linear::{Linear, Projections};
use profile::Laps;
pub use profile::{Phase, StepProfile};

use super::ops::rms_norm;
use super::paged_attention::{PagedKvCache, SeqSpan};
use super::rope::RopeTable;
use super::spec::ModelSpec;
use super::weights::{self, LayerWeights, Proj, RawTensor, TensorSource, WeightSink, Weights};
use crate::device::cpu::hot_workers::with_hot_workers;

/// A flat batch: the tokens one step computes, from any number of sequences.
#[derive(Debug, Clone, Default)]
pub struct BatchInput {
    /// Token ids, `T` of them.
    pub tokens: Vec<u32>,
    /// Position of each token in its sequence.
    pub positions: Vec<usize>,
    /// Cache slot where each token's K/V is written.
    pub slots: Vec<usize>,
    /// The sequences, in row order.
    pub spans: Vec<SeqSpan>,
    /// Rows whose logits are wanted (each sampling sequence's last row).
    pub logits_rows: Vec<usize>,
}

type CpuLayer = LayerWeights<Projections, Vec<f32>>;

/// A decoder whose weights live in host memory, run by our CPU kernels.
pub struct CpuModel {
    spec: ModelSpec,
    embed: Arc<QTensor>,
    layers: Vec<CpuLayer>,
    norm: Vec<f32>,
    output: Proj<Projections, Vec<f32>>,
    ropes: Vec<RopeTable>,
}

/// Builds CPU weights: our batched kernels (fused where formats match), f32 vectors.
struct CpuSink;

impl WeightSink for CpuSink {
    type Matrix = Projections;
    type Vector = Vec<f32>;
    type Embedding = Arc<QTensor>;

    fn matrix(&self, parts: Vec<(String, QTensor)>) -> Result<Projections> {
        Projections::new(parts.into_iter().map(|(_, t)| t).collect())
    }

    fn matrix_raw(&self, parts: &[RawTensor<'_>]) -> Result<Projections> {
        Projections::from_raw(parts)
    }

    fn vector(&self, _: &str, values: Vec<f32>) -> Result<Vec<f32>> {
        Ok(values)
    }

    fn embedding(&self, table: QTensor) -> Result<Arc<QTensor>> {
        Ok(Arc::new(table))
    }
}

impl CpuModel {
    /// Loads the weights `src` describes, layers in parallel.
    pub fn load(src: TensorSource<'_>) -> Result<Self> {
        let spec = weights::read_spec(&src)?;
        let Weights {
            embed,
            layers,
            output_norm,
            output,
            output_bias,
        } = weights::load_weights_par(&spec, &src, &CpuSink)?;
        // Tied embeddings share one copy of the table with the output projection.
        let output = Proj {
            w: match output {
                Some(w) => w,
                None => Projections::Split(vec![Linear::from_arc(embed.clone())?]),
            },
            bias: output_bias,
        };
        let ropes = spec
            .ropes
            .iter()
            .map(|r| RopeTable::new(r, spec.context_length))
            .collect();
        Ok(Self {
            norm: output_norm,
            spec,
            embed,
            layers,
            output,
            ropes,
        })
    }

    /// The model's description.
    pub fn config(&self) -> &ModelSpec {
        &self.spec
    }

    /// Runs one step: writes the batch's K/V into `cache` and returns the logits of
    /// `input.logits_rows`, one `vocab_size` row each.
    pub fn forward(&self, input: &BatchInput, cache: &mut PagedKvCache) -> Result<Vec<Vec<f32>>> {
        self.forward_profiled(input, cache, None)
    }

    /// [`Self::forward`], adding the wall-clock time of each phase to `profile` when one
    /// is given (without one, no clock is read).
    ///
    /// The whole step runs on a rayon worker: its parallel regions (one per matmul and
    /// attention, hundreds per step) then fork from inside the pool, instead of this
    /// thread handing each one over and sleeping until it is done, and the other
    /// workers keep polling for them instead of parking between regions
    /// ([`with_hot_workers`]).
    pub fn forward_profiled(
        &self,
        input: &BatchInput,
        cache: &mut PagedKvCache,
        profile: Option<&mut StepProfile>,
    ) -> Result<Vec<Vec<f32>>> {
        with_hot_workers(|| self.step(input, cache, profile))
    }

    fn step(
        &self,
        input: &BatchInput,
        cache: &mut PagedKvCache,
        profile: Option<&mut StepProfile>,
    ) -> Result<Vec<Vec<f32>>> {
        let t = input.tokens.len();
        let spec = &self.spec;
        if t == 0 {
            return Ok(Vec::new());
        }
        let max_pos = self.ropes[0].max_positions();
        if let Some(&p) = input.positions.iter().find(|&&p| p >= max_pos) {
            bail!(
                "position {p} is beyond the model's context length {}",
                spec.context_length
            );
        }
        let mut laps = Laps::new(profile);
        let ids = Tensor::from_slice(&input.tokens, t, &Device::Cpu)?;
        let mut x = self
            .embed
            .embedding(&ids)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if spec.embed_scale != 1.0 {
            x.iter_mut().for_each(|v| *v *= spec.embed_scale);
        }
        laps.lap(Phase::Embed);
        let mut attn = vec![0f32; t * spec.q_width()];
        for (li, w) in self.layers.iter().enumerate() {
            let step = layer::LayerStep {
                spec,
                li,
                w,
                rope: &self.ropes[spec.layers[li].rope],
                input,
            };
            step.run(cache, &mut x, &mut attn, &mut laps)?;
        }
        let d = spec.n_embd;
        let r = input.logits_rows.len();
        if r == 0 {
            return Ok(Vec::new());
        }
        let mut last = Vec::with_capacity(r * d);
        for &row in &input.logits_rows {
            last.extend_from_slice(&x[row * d..(row + 1) * d]);
        }
        let h = rms_norm(&last, &self.norm, spec.rms_eps);
        laps.lap(Phase::Norm);
        let mut logits = layer::project(&self.output, &h, r)?;
        if let Some(cap) = spec.final_softcap {
            let inv = 1.0 / cap;
            logits.iter_mut().for_each(|l| *l = cap * (*l * inv).tanh());
        }
        let rows = logits
            .chunks(spec.vocab_size)
            .map(<[f32]>::to_vec)
            .collect();
        laps.lap(Phase::LmHead);
        Ok(rows)
    }
}
