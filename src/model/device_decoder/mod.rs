//! The decoder on a [`Device`] (a GPU, or the kernel emulator in tests): executes the
//! same [`ModelSpec`] (every supported architecture) and flat-batch step as the CPU
//! decoder (`model::transformer`), with every tensor between the embedding lookup and
//! the logits kept on the device and every operation one of our kernels. The KV cache
//! is [`DeviceKvCache`], laid out as the CPU one, so the engine's block tables and slot
//! mapping mean the same on both. One layer's step is `layer`.
//!
//! Invariants: scratch buffers grow to the largest batch seen and are reused; a step's
//! inputs are checked (positions within the context, slots and block tables within the
//! cache) before anything is launched; each row's result depends on that row alone.
//! A spec the kernels cannot run (heads wider than 256, more than 8 query heads per K/V
//! head) is refused at load with the reason.

mod layer;
mod weights;

use std::sync::Arc;

use anyhow::{Result, bail};

use super::rope::RopeTable;
use super::spec::ModelSpec;
use super::transformer::BatchInput;
use crate::device::cpu::attention::ScoreRule;
use crate::device::kernels::ops::{self, AttnBatch, DevKvLayer, DevRope, QWeight};
use crate::device::kernels::{DevBuf, DevIndex, Device, DeviceExt};
use crate::model::weights::{self as spec_weights, TensorSource};
use layer::{Bufs, DevLayer, Pending, StepCtx};
use weights::{DevProjections, DevSink};

/// The K/V cache of every layer on the device.
pub struct DeviceKvCache {
    layers: Vec<DevKvLayer>,
    block_size: usize,
}

impl DeviceKvCache {
    /// Zeroed storage for `num_blocks` blocks of `block_size` tokens in every layer.
    pub fn new(
        dev: &dyn Device,
        cfg: &ModelSpec,
        num_blocks: usize,
        block_size: usize,
    ) -> Result<Self> {
        let kvw = cfg.n_kv_head * cfg.head_dim;
        let layers = (0..cfg.n_layer)
            .map(|_| DevKvLayer::alloc(dev, num_blocks, block_size, kvw))
            .collect::<Result<_, _>>()?;
        Ok(Self { layers, block_size })
    }
}

/// Per-step work buffers, sized for `rows` tokens, and the step's inputs on the device
/// (reused from step to step: no allocation, hence no implicit device synchronisation
/// of freeing, in the steady state).
#[derive(Default)]
struct Scratch {
    rows: usize,
    bufs: Option<Bufs>,
    inputs: Inputs,
    /// Hidden states of the rows whose logits are wanted, and their logits.
    last: Option<DevBuf<f32>>,
    logits: Option<DevBuf<f32>>,
    /// Argmax ids of the rows (device-side greedy sampling).
    picked: Option<DevBuf<i32>>,
}

/// A step's inputs on the device, reused from step to step.
#[derive(Default)]
struct Inputs {
    ids: Option<DevIndex>,
    pos: Option<DevIndex>,
    slots: Option<DevIndex>,
    logit_rows: Option<DevIndex>,
    batch: Option<AttnBatch>,
}

impl Inputs {
    /// Checks `input`'s shape and uploads its token ids, positions, slots and spans.
    fn load(&mut self, d: &dyn Device, input: &BatchInput, block_size: usize) -> Result<()> {
        let t = input.tokens.len();
        if input.positions.len() != t || input.slots.len() != t {
            bail!(
                "batch of {t} tokens with {} positions and {} slots",
                input.positions.len(),
                input.slots.len()
            );
        }
        let tokens: Vec<i32> = input.tokens.iter().map(|&x| x as i32).collect();
        d.refill_index(&mut self.ids, &tokens)?;
        d.refill_index(&mut self.pos, &to_i32(&input.positions)?)?;
        d.refill_index(&mut self.slots, &to_i32(&input.slots)?)?;
        let batch = match &mut self.batch {
            Some(b) => {
                b.refill(d, &input.spans, block_size)?;
                b
            }
            none => none.insert(AttnBatch::upload(d, &input.spans, block_size)?),
        };
        if batch.rows() != t {
            bail!("spans cover {} rows, the batch has {t}", batch.rows());
        }
        Ok(())
    }
}

/// Indices as the kernels take them.
fn to_i32(v: &[usize]) -> Result<Vec<i32>> {
    v.iter()
        .map(|&x| i32::try_from(x).map_err(|_| anyhow::anyhow!("index {x} overflows i32")))
        .collect()
}

/// What of `spec` the device kernels cannot run (`None`: all of it).
fn unsupported(spec: &ModelSpec) -> Option<String> {
    let group = spec.n_head / spec.n_kv_head.max(1);
    if spec.head_dim > 256 {
        Some(format!("heads of {} values (at most 256)", spec.head_dim))
    } else if group > 8 {
        Some(format!("{group} query heads per K/V head (at most 8)"))
    } else {
        None
    }
}

/// A decoder whose weights live on a device.
pub struct DeviceDecoder {
    dev: Arc<dyn Device>,
    cfg: ModelSpec,
    embed: QWeight,
    /// `None`: tied to `embed`.
    output: Option<DevProjections>,
    output_bias: Option<DevBuf<f32>>,
    norm: DevBuf<f32>,
    layers: Vec<DevLayer>,
    /// One table per entry of `ModelSpec::ropes`.
    ropes: Vec<DevRope>,
    max_positions: usize,
    scratch: Scratch,
}

impl DeviceDecoder {
    /// Loads the weights `src` describes onto `dev`. A description the
    /// device kernels cannot run is refused with the reason (an `auto` load then
    /// serves on the CPU).
    pub fn load(dev: Arc<dyn Device>, src: TensorSource<'_>) -> Result<Self> {
        let cfg = spec_weights::read_spec(&src)?;
        if let Some(why) = unsupported(&cfg) {
            bail!(
                "the device decoder cannot run this {} model: {why}",
                cfg.arch
            );
        }
        let d: &dyn Device = dev.as_ref();
        let w = spec_weights::load_weights(&cfg, &src, &DevSink(d))?;
        let layers = w
            .layers
            .into_iter()
            .zip(&cfg.layers)
            .map(|(l, ls)| DevLayer {
                attn_norm: l.attn_norm,
                qkv: l.qkv,
                q_norm: l.q_norm,
                k_norm: l.k_norm,
                wo: l.wo,
                post_attn_norm: l.post_attn_norm,
                ffn_norm: l.ffn_norm,
                gate_up: l.gate_up,
                down: l.down,
                post_ffn_norm: l.post_ffn_norm,
                rope: ls.rope,
                rule: ScoreRule {
                    scale: cfg.attn_scale,
                    softcap: cfg.attn_softcap,
                    window: ls.window,
                },
            })
            .collect();
        let ropes = cfg
            .ropes
            .iter()
            .map(|r| DevRope::upload(d, &RopeTable::new(r, cfg.context_length)))
            .collect::<Result<Vec<_>, _>>()?;
        let max_positions = ropes.iter().map(DevRope::max_positions).min().unwrap_or(0);
        Ok(Self {
            ropes,
            max_positions,
            norm: w.output_norm,
            embed: w.embed,
            output: w.output,
            output_bias: w.output_bias,
            layers,
            cfg,
            scratch: Scratch::default(),
            dev,
        })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelSpec {
        &self.cfg
    }

    /// Bytes of the weight matrices on the device (what a decode step reads).
    pub fn weight_bytes(&self) -> usize {
        let layers: usize = self.layers.iter().map(DevLayer::bytes).sum();
        layers
            + self
                .output
                .as_ref()
                .map_or(self.embed.bytes(), DevProjections::bytes)
    }

    /// The device it runs on.
    pub fn device(&self) -> &Arc<dyn Device> {
        &self.dev
    }

    /// Allocates the scratch of a step of `rows` tokens now (so device memory measured
    /// afterwards already accounts for it).
    pub fn reserve(&mut self, rows: usize) -> Result<()> {
        self.ensure_scratch(rows.max(1))
    }

    fn ensure_scratch(&mut self, t: usize) -> Result<()> {
        if self.scratch.rows >= t && self.scratch.bufs.is_some() {
            return Ok(());
        }
        let c = &self.cfg;
        let rows = t.next_power_of_two();
        let (qw, kw) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let d = self.dev.as_ref();
        self.scratch.rows = rows;
        self.scratch.bufs = Some(Bufs {
            x: d.alloc(rows * c.n_embd)?,
            h: d.alloc(rows * c.n_embd)?,
            qkv: d.alloc(rows * (qw + 2 * kw))?,
            attn: d.alloc(rows * qw)?,
            o: d.alloc(rows * c.n_embd)?,
            post: d.alloc(rows * c.n_embd)?,
            gu: d.alloc(rows * 2 * c.n_ff)?,
            act: d.alloc(rows * c.n_ff)?,
        });
        Ok(())
    }

    /// Runs one step: writes the batch's K/V into `cache` and returns the logits of
    /// `input.logits_rows`, one `vocab_size` row each.
    pub fn forward(
        &mut self,
        input: &BatchInput,
        cache: &mut DeviceKvCache,
    ) -> Result<Vec<Vec<f32>>> {
        let r = input.logits_rows.len();
        if !self.step(input, cache)? {
            return Ok(Vec::new());
        }
        let vocab = self.cfg.vocab_size;
        let logits = self.scratch.logits.as_ref().expect("filled by step");
        let mut host = vec![0f32; r * vocab];
        self.dev.download_into(logits, &mut host)?;
        Ok(host.chunks(vocab).map(<[f32]>::to_vec).collect())
    }

    /// [`Self::forward`] that picks each row's argmax on the device (lowest id on
    /// ties, as the host sampler) and returns only the ids.
    pub fn forward_argmax(
        &mut self,
        input: &BatchInput,
        cache: &mut DeviceKvCache,
    ) -> Result<Vec<u32>> {
        let r = input.logits_rows.len();
        if !self.step(input, cache)? {
            return Ok(Vec::new());
        }
        let d = self.dev.as_ref();
        let sc = &mut self.scratch;
        let logits = sc.logits.as_ref().expect("filled by step");
        let picked = d.grown(&mut sc.picked, r)?;
        ops::argmax_rows(d, logits, r, self.cfg.vocab_size, picked)?;
        let mut ids = vec![0i32; r];
        d.download_into(picked, &mut ids)?;
        Ok(ids.into_iter().map(|i| i as u32).collect())
    }

    /// The step up to the logits of `input.logits_rows`, left in `scratch.logits`;
    /// false when no row wants logits.
    fn step(&mut self, input: &BatchInput, cache: &mut DeviceKvCache) -> Result<bool> {
        let t = input.tokens.len();
        if t == 0 {
            return Ok(false);
        }
        if let Some(&p) = input.positions.iter().find(|&&p| p >= self.max_positions) {
            bail!(
                "position {p} is beyond the model's context length {}",
                self.cfg.context_length
            );
        }
        self.ensure_scratch(t)?;
        let dev = self.dev.clone();
        let d = dev.as_ref();
        let c = &self.cfg;
        let sc = &mut self.scratch;
        sc.inputs.load(d, input, cache.block_size)?;
        let Inputs {
            ids: Some(ids),
            pos: Some(pos),
            slots: Some(slots),
            batch: Some(batch),
            ..
        } = &mut sc.inputs
        else {
            bail!("step inputs missing after upload");
        };
        let b = sc.bufs.as_mut().expect("ensured above");
        ops::dequant_rows(d, &self.embed, ids, &mut b.x)?;
        if c.embed_scale != 1.0 {
            ops::scale_values(d, &mut b.x, t * c.n_embd, c.embed_scale)?;
        }
        let ctx = StepCtx {
            d,
            spec: c,
            t,
            pos,
            slots,
            ropes: &self.ropes,
        };
        let mut pending = Pending::Nothing;
        for (layer, kv) in self.layers.iter().zip(&mut cache.layers) {
            pending = layer.run(&ctx, b, pending, kv, batch)?;
        }
        let r = input.logits_rows.len();
        if r == 0 {
            return Ok(false);
        }
        // Last residual add and the final norm over every row, then the wanted rows.
        layer::add_and_norm(d, b, pending, &self.norm, t, c.rms_eps)?;
        let rows = d.refill_index(&mut sc.inputs.logit_rows, &to_i32(&input.logits_rows)?)?;
        let last = d.grown(&mut sc.last, r * c.n_embd)?;
        ops::gather_rows(d, &b.h, t, rows, c.n_embd, last)?;
        let logits = d.grown(&mut sc.logits, r * c.vocab_size)?;
        match &self.output {
            Some(w) => w.forward(d, last, r, logits)?,
            None => ops::qmatmul(d, &self.embed, last, r, logits)?,
        }
        if let Some(bias) = &self.output_bias {
            ops::add_bias(d, logits, bias, r, c.vocab_size, 0)?;
        }
        if let Some(cap) = c.final_softcap {
            ops::softcap_values(d, logits, r * c.vocab_size, cap)?;
        }
        Ok(true)
    }
}
