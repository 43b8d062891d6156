//! One decoder layer over the whole batch on the device, in the CPU decoder's order
//! (`model::transformer::layer`): norm, Q|K|V (+ bias), per-head Q/K norm, rotary by the
//! layer's own table, cache write, attention by the layer's [`ScoreRule`], output
//! projection (+ bias), optional post-norm, residual; then the same shape for the gated
//! FFN.
//!
//! Invariant: a layer leaves its FFN output (post-normed when it has a post-FFN norm)
//! as the step's [`Pending`] delta; the next fused norm (the next layer's, or the final
//! one) adds it to the residual stream, so the no-post-norm path costs no extra launch.

use anyhow::Result;

use super::weights::DevProjections;
use crate::device::cpu::attention::ScoreRule;
use crate::device::kernels::ops::{self, AttnBatch, DevKvLayer, DevRope, HeadColumns, KvColumns};
use crate::device::kernels::{DevBuf, DevIndex, Device};
use crate::model::spec::{Activation, ModelSpec};
use crate::model::weights::Proj;

/// A projection on the device and its optional bias.
pub(super) type DevProj = Proj<DevProjections, DevBuf<f32>>;

/// One layer's weights on the device, and what its spec says about it.
pub(super) struct DevLayer {
    pub attn_norm: DevBuf<f32>,
    pub qkv: DevProj,
    pub q_norm: Option<DevBuf<f32>>,
    pub k_norm: Option<DevBuf<f32>>,
    pub wo: DevProj,
    pub post_attn_norm: Option<DevBuf<f32>>,
    pub ffn_norm: DevBuf<f32>,
    pub gate_up: DevProj,
    pub down: DevProj,
    pub post_ffn_norm: Option<DevBuf<f32>>,
    /// Index into the decoder's rotary tables.
    pub rope: usize,
    /// Which keys a query sees and how scores are formed.
    pub rule: ScoreRule,
}

impl DevLayer {
    /// Bytes of the weight matrices.
    pub(super) fn bytes(&self) -> usize {
        self.qkv.w.bytes() + self.wo.w.bytes() + self.gate_up.w.bytes() + self.down.w.bytes()
    }
}

/// Per-step work buffers, `rows` tokens each.
pub(super) struct Bufs {
    /// The residual stream.
    pub x: DevBuf<f32>,
    /// Normed input of the next projection.
    pub h: DevBuf<f32>,
    pub qkv: DevBuf<f32>,
    pub attn: DevBuf<f32>,
    /// Output of `wo` and of `down`.
    pub o: DevBuf<f32>,
    /// `o` after a post-norm.
    pub post: DevBuf<f32>,
    pub gu: DevBuf<f32>,
    pub act: DevBuf<f32>,
}

/// Which buffer holds the delta that has yet to join the residual stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Pending {
    /// None (before the first layer).
    Nothing,
    /// `Bufs::o`.
    Out,
    /// `Bufs::post`.
    Post,
}

/// `x += pending delta`, then `h = rms_norm(x) * w`, over `t` rows.
pub(super) fn add_and_norm(
    d: &dyn Device,
    b: &mut Bufs,
    pending: Pending,
    w: &DevBuf<f32>,
    t: usize,
    eps: f32,
) -> Result<()> {
    let delta = match pending {
        Pending::Nothing => None,
        Pending::Out => Some(&b.o),
        Pending::Post => Some(&b.post),
    };
    ops::rms_norm_residual(d, &mut b.x, delta, w, &mut b.h, t, eps)?;
    Ok(())
}

/// `y = x · Wᵀ (+ bias)` for `m` rows.
pub(super) fn project(
    d: &dyn Device,
    p: &DevProj,
    x: &DevBuf<f32>,
    m: usize,
    y: &mut DevBuf<f32>,
) -> Result<()> {
    p.w.forward(d, x, m, y)?;
    if let Some(bias) = &p.bias {
        ops::add_bias(d, y, bias, m, bias.len(), 0)?;
    }
    Ok(())
}

/// Normalises `b.o` into `b.post` when the layer has a post-norm `w`; says where the
/// delta now is.
fn post_norm(
    d: &dyn Device,
    b: &mut Bufs,
    w: Option<&DevBuf<f32>>,
    t: usize,
    eps: f32,
) -> Result<Pending> {
    let Some(w) = w else {
        return Ok(Pending::Out);
    };
    ops::rms_norm_residual(d, &mut b.o, None, w, &mut b.post, t, eps)?;
    Ok(Pending::Post)
}

/// What every layer of one step reads.
pub(super) struct StepCtx<'a> {
    pub d: &'a dyn Device,
    pub spec: &'a ModelSpec,
    pub t: usize,
    pub pos: &'a DevIndex,
    pub slots: &'a DevIndex,
    pub ropes: &'a [DevRope],
}

impl DevLayer {
    /// Runs the layer on `t` rows: adds `pending` to the residual stream first and
    /// returns where this layer's FFN delta is.
    pub(super) fn run(
        &self,
        c: &StepCtx<'_>,
        b: &mut Bufs,
        pending: Pending,
        kv: &mut DevKvLayer,
        batch: &mut AttnBatch,
    ) -> Result<Pending> {
        let (d, s, t) = (c.d, c.spec, c.t);
        add_and_norm(d, b, pending, &self.attn_norm, t, s.rms_eps)?;
        self.attention(c, b, kv, batch)?;
        let pending = post_norm(d, b, self.post_attn_norm.as_ref(), t, s.rms_eps)?;
        add_and_norm(d, b, pending, &self.ffn_norm, t, s.rms_eps)?;
        project(d, &self.gate_up, &b.h, t, &mut b.gu)?;
        match s.act {
            Activation::Silu => ops::silu_gate_up(d, &b.gu, &mut b.act, t, s.n_ff)?,
            Activation::GeluTanh => ops::gelu_gate_up(d, &b.gu, &mut b.act, t, s.n_ff)?,
        }
        project(d, &self.down, &b.act, t, &mut b.o)?;
        post_norm(d, b, self.post_ffn_norm.as_ref(), t, s.rms_eps)
    }

    /// From the normed input `b.h` to the attention output projection in `b.o`.
    fn attention(
        &self,
        c: &StepCtx<'_>,
        b: &mut Bufs,
        kv: &mut DevKvLayer,
        batch: &mut AttnBatch,
    ) -> Result<()> {
        let (d, s, t) = (c.d, c.spec, c.t);
        let (qw, kw, hd) = (s.q_width(), s.kv_width(), s.head_dim);
        let stride = qw + 2 * kw;
        project(d, &self.qkv, &b.h, t, &mut b.qkv)?;
        let heads = |offset, n_heads| HeadColumns {
            stride,
            offset,
            n_heads,
            head_dim: hd,
        };
        if let Some(w) = &self.q_norm {
            ops::rms_norm_heads(d, &mut b.qkv, w, t, heads(0, s.n_head), s.rms_eps)?;
        }
        if let Some(w) = &self.k_norm {
            ops::rms_norm_heads(d, &mut b.qkv, w, t, heads(qw, s.n_kv_head), s.rms_eps)?;
        }
        // Q and K side by side: one launch rotates both.
        let rope = &c.ropes[self.rope];
        ops::rotary(
            d,
            &mut b.qkv,
            rope,
            c.pos,
            t,
            heads(0, s.n_head + s.n_kv_head),
        )?;
        let cols = KvColumns {
            stride,
            k_off: qw,
            v_off: qw + kw,
        };
        ops::kv_write(d, &b.qkv, cols, c.slots, kv, t)?;
        ops::paged_attention(
            d,
            &b.qkv,
            stride,
            0,
            kv,
            batch,
            s.heads(),
            self.rule,
            &mut b.attn,
        )?;
        project(d, &self.wo, &b.attn, t, &mut b.o)
    }
}
