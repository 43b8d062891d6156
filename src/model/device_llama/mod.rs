//! The decoder on a [`Device`] (a GPU, or the kernel emulator in tests): the same
//! [`ModelSpec`] and flat-batch step as the CPU model (`model::transformer`), with every tensor between
//! the embedding lookup and the logits kept on the device and every operation one of
//! our kernels. The KV cache is [`DeviceKvCache`], laid out as the CPU one, so the
//! engine's block tables and slot mapping mean the same on both.
//!
//! Invariants: scratch buffers grow to the largest batch seen and are reused; a step's
//! inputs are checked (positions within the context, slots and block tables within the
//! cache) before anything is launched; each row's result depends on that row alone.

mod weights;

use std::sync::Arc;

use anyhow::{Result, bail};

use super::rope::RopeTable;
use super::spec::{Activation, ModelSpec, RopeStyle};
use super::transformer::BatchInput;
use crate::device::kernels::ops::{
    self, AttnBatch, DevKvLayer, DevRope, HeadColumns, KvColumns, QWeight,
};
use crate::device::kernels::{DevBuf, DevIndex, Device, DeviceExt};
use crate::model::weights::{self as spec_weights, TensorSource};
use weights::{DevProjections, DevSink};

struct DevLayer {
    attn_norm: DevBuf<f32>,
    qkv: DevProjections,
    wo: DevProjections,
    ffn_norm: DevBuf<f32>,
    gate_up: DevProjections,
    down: DevProjections,
}

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

struct Bufs {
    x: DevBuf<f32>,
    h: DevBuf<f32>,
    qkv: DevBuf<f32>,
    attn: DevBuf<f32>,
    o: DevBuf<f32>,
    gu: DevBuf<f32>,
    act: DevBuf<f32>,
}

/// What of `spec` the device kernels cannot run yet (`None`: all of it).
fn unsupported(spec: &ModelSpec) -> Option<String> {
    let rope = &spec.ropes[0];
    let plain_scale = (spec.attn_scale * (spec.head_dim as f32).sqrt() - 1.0).abs() < 1e-6;
    let why = if rope.style != RopeStyle::Adjacent || rope.n_rot != spec.head_dim {
        "half-split or partial rotary"
    } else if spec.ropes.len() > 1 || spec.layers.iter().any(|l| l.window.is_some()) {
        "sliding-window layers"
    } else if spec.attn_softcap.is_some() || spec.final_softcap.is_some() {
        "logit soft-capping"
    } else if spec.act != Activation::Silu {
        "GELU gating"
    } else if spec.embed_scale != 1.0 || !plain_scale {
        "scaled embeddings or attention"
    } else {
        return None;
    };
    Some(why.to_string())
}

/// A decoder whose weights live on a device.
pub struct DeviceLlama {
    dev: Arc<dyn Device>,
    cfg: ModelSpec,
    embed: QWeight,
    /// `None`: tied to `embed`.
    output: Option<DevProjections>,
    norm: DevBuf<f32>,
    layers: Vec<DevLayer>,
    rope: DevRope,
    max_positions: usize,
    scratch: Scratch,
}

impl DeviceLlama {
    /// Loads the weights `src` describes onto `dev`. A description the
    /// device kernels cannot run yet is refused with the reason (an `auto` load then
    /// serves on the CPU).
    pub fn load(dev: Arc<dyn Device>, src: TensorSource<'_>) -> Result<Self> {
        let cfg = spec_weights::read_spec(&src)?;
        if let Some(why) = unsupported(&cfg) {
            bail!(
                "the device decoder cannot run this {} model yet: {why}",
                cfg.arch
            );
        }
        let d: &dyn Device = dev.as_ref();
        let w = spec_weights::load_weights(&cfg, &src, &DevSink(d))?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for (i, l) in w.layers.into_iter().enumerate() {
            let extra = l.qkv.bias.is_some()
                || l.wo.bias.is_some()
                || l.gate_up.bias.is_some()
                || l.down.bias.is_some()
                || l.q_norm.is_some()
                || l.k_norm.is_some()
                || l.post_attn_norm.is_some()
                || l.post_ffn_norm.is_some();
            if extra {
                bail!(
                    "the device decoder cannot run this {} model yet: layer {i} has \
                     biases, Q/K norms or post-norms",
                    cfg.arch
                );
            }
            layers.push(DevLayer {
                attn_norm: l.attn_norm,
                qkv: l.qkv.w,
                wo: l.wo.w,
                ffn_norm: l.ffn_norm,
                gate_up: l.gate_up.w,
                down: l.down.w,
            });
        }
        if w.output_bias.is_some() {
            bail!("the device decoder cannot run an output bias yet");
        }
        let table = RopeTable::new(&cfg.ropes[0], cfg.context_length);
        Ok(Self {
            rope: DevRope::upload(d, &table)?,
            max_positions: table.max_positions(),
            norm: w.output_norm,
            embed: w.embed,
            output: w.output,
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
        let layers: usize = self
            .layers
            .iter()
            .map(|l| l.qkv.bytes() + l.wo.bytes() + l.gate_up.bytes() + l.down.bytes())
            .sum();
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
        let c = self.cfg.clone();
        let (qw, kw) = (c.n_head * c.head_dim, c.n_kv_head * c.head_dim);
        let stride = qw + 2 * kw;
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
        let shape = c.heads();
        let rot = HeadColumns {
            stride,
            offset: 0,
            n_heads: c.n_head + c.n_kv_head,
            head_dim: c.head_dim,
        };
        let kv_cols = KvColumns {
            stride,
            k_off: qw,
            v_off: qw + kw,
        };
        let b = sc.bufs.as_mut().expect("ensured above");
        ops::dequant_rows(d, &self.embed, ids, &mut b.x)?;
        for (li, layer) in self.layers.iter().enumerate() {
            // The previous layer's FFN output joins the residual stream here.
            let delta = (li > 0).then_some(&b.o);
            ops::rms_norm_residual(d, &mut b.x, delta, &layer.attn_norm, &mut b.h, t, c.rms_eps)?;
            layer.qkv.forward(d, &b.h, t, &mut b.qkv)?;
            ops::rotary(d, &mut b.qkv, &self.rope, pos, t, rot)?;
            let kv = &mut cache.layers[li];
            ops::kv_write(d, &b.qkv, kv_cols, slots, kv, t)?;
            ops::paged_attention(d, &b.qkv, stride, 0, kv, batch, shape, &mut b.attn)?;
            layer.wo.forward(d, &b.attn, t, &mut b.o)?;
            ops::rms_norm_residual(
                d,
                &mut b.x,
                Some(&b.o),
                &layer.ffn_norm,
                &mut b.h,
                t,
                c.rms_eps,
            )?;
            layer.gate_up.forward(d, &b.h, t, &mut b.gu)?;
            ops::silu_gate_up(d, &b.gu, &mut b.act, t, c.n_ff)?;
            layer.down.forward(d, &b.act, t, &mut b.o)?;
        }
        let r = input.logits_rows.len();
        if r == 0 {
            return Ok(false);
        }
        // Last residual add and the final norm over every row, then the wanted rows.
        let delta = (!self.layers.is_empty()).then_some(&b.o);
        ops::rms_norm_residual(d, &mut b.x, delta, &self.norm, &mut b.h, t, c.rms_eps)?;
        let rows = d.refill_index(&mut sc.inputs.logit_rows, &to_i32(&input.logits_rows)?)?;
        let last = d.grown(&mut sc.last, r * c.n_embd)?;
        ops::gather_rows(d, &b.h, t, rows, c.n_embd, last)?;
        let logits = d.grown(&mut sc.logits, r * c.vocab_size)?;
        match &self.output {
            Some(w) => w.forward(d, last, r, logits)?,
            None => ops::qmatmul(d, &self.embed, last, r, logits)?,
        }
        Ok(true)
    }
}
