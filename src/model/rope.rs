//! Rotary position embedding tables built from a [`RopeSpec`], as ggml computes them:
//! angle `pos · base^(-2i/n_rot) / factor_i`, scaled linearly or by YaRN, with cos and
//! sin multiplied by the attention factor. The CPU applies them here; the device path
//! uploads the same tables, so both rotate by the same numbers.
//!
//! Invariants: `cos.len() == sin.len() == max_positions * n_rot / 2`; values past
//! `n_rot` in a head pass through unchanged.

use rayon::prelude::*;

use super::ops::PAR_MIN_VALUES;
use super::spec::{RopeSpec, RopeStyle};

/// Precomputed rotary cos/sin for every position of one [`RopeSpec`].
pub struct RopeTable {
    style: RopeStyle,
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

/// YaRN's low and high correction dimensions (ggml's `rope_yarn_corr_dims`, with its
/// default beta_fast 32 and beta_slow 1).
fn yarn_corr_dims(n_rot: usize, orig_ctx: usize, base: f32) -> (f32, f32) {
    let dim = |rotations: f32| {
        n_rot as f32 * (orig_ctx as f32 / (rotations * 2.0 * std::f32::consts::PI)).ln()
            / (2.0 * base.ln())
    };
    let lo = dim(32.0).floor().max(0.0);
    let hi = dim(1.0).ceil().min(n_rot as f32 - 1.0);
    (lo, hi)
}

impl RopeTable {
    /// The table of `spec` for positions `0..max_positions`.
    pub fn new(spec: &RopeSpec, max_positions: usize) -> Self {
        let half = spec.n_rot / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        let theta_scale = (spec.base as f64).powf(-2.0 / spec.n_rot as f64);
        let yarn = spec
            .yarn_orig_ctx
            .map(|ctx| yarn_corr_dims(spec.n_rot, ctx, spec.base));
        let mut mscale = spec.attn_factor as f64;
        if yarn.is_some() {
            mscale *= 1.0 + 0.1 * (1.0 / spec.freq_scale as f64).ln();
        }
        let scale = spec.freq_scale as f64;
        for p in 0..max_positions {
            for i in 0..half {
                let ff = spec.freq_factors.as_ref().map_or(1.0, |f| f[i] as f64);
                let extrap = p as f64 * theta_scale.powi(i as i32) / ff;
                let interp = scale * extrap;
                let theta = match yarn {
                    Some((lo, hi)) => {
                        let y = (i as f64 - lo as f64) / (hi as f64 - lo as f64).max(0.001);
                        let ramp = 1.0 - y.clamp(0.0, 1.0);
                        interp * (1.0 - ramp) + extrap * ramp
                    }
                    None => interp,
                };
                cos.push((theta.cos() * mscale) as f32);
                sin.push((theta.sin() * mscale) as f32);
            }
        }
        Self {
            style: spec.style,
            half,
            cos,
            sin,
        }
    }

    /// Llama's plain table: adjacent pairs over whole heads of `head_dim`, base `base`.
    pub fn plain(head_dim: usize, max_positions: usize, base: f32) -> Self {
        let spec = RopeSpec {
            style: RopeStyle::Adjacent,
            n_rot: head_dim,
            base,
            freq_scale: 1.0,
            yarn_orig_ctx: None,
            freq_factors: None,
            attn_factor: 1.0,
        };
        Self::new(&spec, max_positions)
    }

    /// The `cos` and `sin` tables, `[position][n_rot / 2]` each.
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// How values are paired.
    pub fn style(&self) -> RopeStyle {
        self.style
    }

    /// Rotated values per head.
    pub fn n_rot(&self) -> usize {
        self.half * 2
    }

    /// Positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates the `n_heads` heads of width `head_dim` at columns `offset..` of each
    /// row of `x` (rows `stride` values apart; row `r` at position `positions[r]`).
    pub fn apply_strided(
        &self,
        x: &mut [f32],
        stride: usize,
        offset: usize,
        positions: &[usize],
        n_heads: usize,
        head_dim: usize,
    ) {
        assert!(
            offset + n_heads * head_dim <= stride && 2 * self.half <= head_dim,
            "rotary columns outside the row"
        );
        let h = self.half;
        let rotate = |row: &mut [f32], pos: usize| {
            let cos = &self.cos[pos * h..][..h];
            let sin = &self.sin[pos * h..][..h];
            for head in row[offset..offset + n_heads * head_dim].chunks_exact_mut(head_dim) {
                let (step, second) = match self.style {
                    RopeStyle::Adjacent => (2, 1),
                    RopeStyle::Halves => (1, h),
                };
                for i in 0..h {
                    let (ia, ib) = (i * step, i * step + second);
                    let (a, b) = (head[ia], head[ib]);
                    head[ia] = a * cos[i] - b * sin[i];
                    head[ib] = a * sin[i] + b * cos[i];
                }
            }
        };
        // A prefill's rows in parallel blocks (each row on its own, so the split does
        // not change a value); a decode step's few rows here.
        if positions.len() * n_heads * head_dim < PAR_MIN_VALUES {
            for (row, &pos) in x.chunks_exact_mut(stride).zip(positions) {
                rotate(row, pos);
            }
        } else {
            let per = (PAR_MIN_VALUES / 4 / (n_heads * head_dim)).max(1);
            x.par_chunks_mut(per * stride)
                .zip(positions.par_chunks(per))
                .for_each(|(rows, pos)| {
                    for (row, &p) in rows.chunks_exact_mut(stride).zip(pos) {
                        rotate(row, p);
                    }
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(style: RopeStyle, n_rot: usize) -> RopeSpec {
        RopeSpec {
            style,
            n_rot,
            base: 10_000.0,
            freq_scale: 1.0,
            yarn_orig_ctx: None,
            freq_factors: None,
            attn_factor: 1.0,
        }
    }

    #[test]
    fn adjacent_rotates_pairs_and_keeps_norm() {
        let t = RopeTable::new(&spec(RopeStyle::Adjacent, 4), 8);
        let mut x = vec![1.0, 0.0, 0.5, 0.5];
        t.apply_strided(&mut x, 4, 0, &[3], 1, 4);
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        let n: f32 = x.iter().map(|v| v * v).sum();
        assert!((n - 1.5).abs() < 1e-5);
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        t.apply_strided(&mut y, 4, 0, &[0], 1, 4);
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0], "position 0 is the identity");
    }

    #[test]
    fn halves_pair_across_the_head_and_partial_rotary_leaves_the_tail() {
        // n_rot 4 of a 6-wide head: pairs (0, 2) and (1, 3); 4 and 5 untouched.
        let t = RopeTable::new(&spec(RopeStyle::Halves, 4), 8);
        let mut x = vec![1.0, 0.0, 0.0, 1.0, 7.0, 8.0];
        t.apply_strided(&mut x, 6, 0, &[2], 1, 6);
        let f1 = 2.0f32 * 10_000f32.powf(-0.5);
        assert!((x[0] - 2f32.cos()).abs() < 1e-6 && (x[2] - 2f32.sin()).abs() < 1e-6);
        assert!((x[1] + f1.sin()).abs() < 1e-6 && (x[3] - f1.cos()).abs() < 1e-6);
        assert_eq!(&x[4..], &[7.0, 8.0]);
    }

    #[test]
    fn frequency_factors_and_linear_scale_slow_the_rotation() {
        let mut s = spec(RopeStyle::Adjacent, 2);
        s.freq_factors = Some(vec![4.0]);
        let t = RopeTable::new(&s, 9);
        let mut lin = spec(RopeStyle::Adjacent, 2);
        lin.freq_scale = 0.25;
        let u = RopeTable::new(&lin, 9);
        assert!((t.tables().0[8] - 2f32.cos()).abs() < 1e-6);
        assert!((u.tables().1[8] - 2f32.sin()).abs() < 1e-6);
    }
}
