//! One decoder layer over the whole batch on the CPU, as the [`ModelSpec`] and the
//! weights found in the file say: norm, Q|K|V (+ bias), per-head Q/K norm, rotary,
//! cache write, attention (scale, soft-cap, window), output projection (+ bias),
//! optional post-norm, residual; then the same shape for the gated FFN.

use anyhow::Result;

use super::linear::Projections;
use super::profile::{Laps, Phase};
use super::{BatchInput, CpuLayer};
use crate::device::cpu::attention::ScoreRule;
use crate::device::cpu::rowops;
use crate::model::ops::{gelu_gate_up, rms_norm, silu_gate_up};
use crate::model::paged_attention::{PagedKvCache, Strided};
use crate::model::rope::RopeTable;
use crate::model::spec::{Activation, ModelSpec};
use crate::model::weights::Proj;

/// `x · Wᵀ (+ bias)` for `m` rows.
pub(super) fn project(p: &Proj<Projections, Vec<f32>>, x: &[f32], m: usize) -> Result<Vec<f32>> {
    let mut y = p.w.forward(x, m)?;
    if let Some(b) = &p.bias {
        for row in y.chunks_exact_mut(b.len()) {
            for (v, bv) in row.iter_mut().zip(b) {
                *v += bv;
            }
        }
    }
    Ok(y)
}

/// RMSNorm of each `w.len()`-wide head at columns `offset..offset + heads * w.len()` of
/// rows `stride` apart, in place.
fn norm_heads(x: &mut [f32], stride: usize, offset: usize, heads: usize, w: &[f32], eps: f32) {
    let width = heads * w.len();
    let mut tmp = vec![0f32; width];
    for row in x.chunks_exact_mut(stride) {
        let part = &mut row[offset..offset + width];
        rowops::rms_norm(part, w, eps, &mut tmp);
        part.copy_from_slice(&tmp);
    }
}

fn add_in_place(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// Everything one layer's step reads.
pub(super) struct LayerStep<'a> {
    pub spec: &'a ModelSpec,
    pub li: usize,
    pub w: &'a CpuLayer,
    pub rope: &'a RopeTable,
    pub input: &'a BatchInput,
}

impl LayerStep<'_> {
    /// Runs the layer, updating the residual stream `x`; `attn` is scratch of
    /// `[T, q_width]`.
    pub(super) fn run(
        &self,
        cache: &mut PagedKvCache,
        x: &mut [f32],
        attn: &mut [f32],
        laps: &mut Laps<'_>,
    ) -> Result<()> {
        let o = self.attention(cache, x, attn, laps)?;
        self.residual(x, o, self.w.post_attn_norm.as_deref(), laps);
        let f = self.ffn(x, laps)?;
        self.residual(x, f, self.w.post_ffn_norm.as_deref(), laps);
        Ok(())
    }

    /// `x += post_norm(delta)`.
    fn residual(&self, x: &mut [f32], delta: Vec<f32>, post: Option<&[f32]>, laps: &mut Laps<'_>) {
        let delta = match post {
            Some(w) => rms_norm(&delta, w, self.spec.rms_eps),
            None => delta,
        };
        add_in_place(x, &delta);
        laps.lap(Phase::Residual);
    }

    fn attention(
        &self,
        cache: &mut PagedKvCache,
        x: &[f32],
        attn: &mut [f32],
        laps: &mut Laps<'_>,
    ) -> Result<Vec<f32>> {
        let (s, w, input) = (self.spec, self.w, self.input);
        let t = input.tokens.len();
        let h = rms_norm(x, &w.attn_norm, s.rms_eps);
        laps.lap(Phase::Norm);
        // One [t, qw | kw | kw] buffer; the parts are read in place.
        let mut qkv = project(&w.qkv, &h, t)?;
        let (qw, kw, hd) = (s.q_width(), s.kv_width(), s.head_dim);
        let stride = qw + 2 * kw;
        laps.lap(Phase::Qkv);
        if let Some(n) = &w.q_norm {
            norm_heads(&mut qkv, stride, 0, s.n_head, n, s.rms_eps);
        }
        if let Some(n) = &w.k_norm {
            norm_heads(&mut qkv, stride, qw, s.n_kv_head, n, s.rms_eps);
        }
        let pos = &input.positions;
        self.rope
            .apply_strided(&mut qkv, stride, 0, pos, s.n_head, hd);
        self.rope
            .apply_strided(&mut qkv, stride, qw, pos, s.n_kv_head, hd);
        laps.lap(Phase::Rotary);
        let part = |offset| Strided {
            data: &qkv,
            stride,
            offset,
        };
        cache.write_strided(self.li, &input.slots, part(qw), part(qw + kw));
        laps.lap(Phase::KvWrite);
        let rule = ScoreRule {
            scale: s.attn_scale,
            softcap: s.attn_softcap,
            window: s.layers[self.li].window,
        };
        cache.attend_rule(self.li, s.heads(), rule, &input.spans, part(0), attn);
        laps.lap(Phase::Attention);
        let o = project(&w.wo, attn, t)?;
        laps.lap(Phase::OutProj);
        Ok(o)
    }

    fn ffn(&self, x: &[f32], laps: &mut Laps<'_>) -> Result<Vec<f32>> {
        let (s, w) = (self.spec, self.w);
        let t = self.input.tokens.len();
        let h = rms_norm(x, &w.ffn_norm, s.rms_eps);
        laps.lap(Phase::Norm);
        let gu = project(&w.gate_up, &h, t)?;
        laps.lap(Phase::FfnGateUp);
        let a = match s.act {
            Activation::Silu => silu_gate_up(&gu, s.n_ff),
            Activation::GeluTanh => gelu_gate_up(&gu, s.n_ff),
        };
        laps.lap(Phase::Silu);
        let dn = project(&w.down, &a, t)?;
        laps.lap(Phase::FfnDown);
        Ok(dn)
    }
}
