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

/// Bytes of a gate|up output block, at most: below glibc's largest mmap threshold (32
/// MiB, see `malloc_tuning`), so the buffer is reused from the heap from layer to layer
/// instead of being mapped, faulted in and zeroed afresh (a 7B model's 512-row chunk
/// would need 59 MB: ~10 % of its step went to page faults).
const FFN_BLOCK_BYTES: usize = 24 << 20;

/// Rows per block of the FFN: all `t`, or as many (a multiple of 64, the matmul's row
/// group) as keep the gate|up output within [`FFN_BLOCK_BYTES`].
fn ffn_block_rows(n_ff: usize, t: usize) -> usize {
    let row_bytes = 2 * n_ff * std::mem::size_of::<f32>();
    if t * row_bytes <= FFN_BLOCK_BYTES {
        return t;
    }
    (FFN_BLOCK_BYTES / row_bytes / 64 * 64).max(64)
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
        crate::model::ops::add_in_place(x, &delta);
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
        let rows = ffn_block_rows(s.n_ff, t);
        if rows >= t {
            return self.ffn_rows(&h, t, laps);
        }
        // A prefill chunk of a wide FFN in blocks of rows (each row's result is its
        // own, so the split changes nothing).
        let d = h.len() / t;
        let mut out = Vec::with_capacity(x.len());
        for r0 in (0..t).step_by(rows) {
            let n = rows.min(t - r0);
            out.extend(self.ffn_rows(&h[r0 * d..(r0 + n) * d], n, laps)?);
        }
        Ok(out)
    }

    /// The gated FFN of `t` normed rows `h`.
    fn ffn_rows(&self, h: &[f32], t: usize, laps: &mut Laps<'_>) -> Result<Vec<f32>> {
        let (s, w) = (self.spec, self.w);
        let gu = project(&w.gate_up, h, t)?;
        laps.lap(Phase::FfnGateUp);
        let a = match s.act {
            Activation::Silu => silu_gate_up(&gu, s.n_ff),
            Activation::GeluTanh => gelu_gate_up(&gu, s.n_ff),
        };
        drop(gu);
        laps.lap(Phase::Silu);
        let dn = project(&w.down, &a, t)?;
        laps.lap(Phase::FfnDown);
        Ok(dn)
    }
}

#[cfg(test)]
mod tests {
    use super::{FFN_BLOCK_BYTES, ffn_block_rows};

    #[test]
    fn wide_ffn_prefills_go_in_row_blocks_below_the_mmap_threshold() {
        // SmolLM2-135M's 512-row chunk fits whole; a 7B's (n_ff 14336) goes 192 rows at
        // a time, each block's gate|up output under the limit.
        assert_eq!(ffn_block_rows(1536, 512), 512);
        assert_eq!(ffn_block_rows(14336, 512), 192);
        assert_eq!(ffn_block_rows(14336, 100), 100);
        for n_ff in [14336, 28672, 1 << 20] {
            let rows = ffn_block_rows(n_ff, 4096);
            assert!(rows >= 64 && rows.is_multiple_of(64));
            assert!(rows == 64 || rows * 2 * n_ff * 4 <= FFN_BLOCK_BYTES);
        }
    }
}
