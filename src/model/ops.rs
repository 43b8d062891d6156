//! Small row-wise CPU ops of the decoder: RMSNorm, rotary embedding, SiLU gating.
//! Each works on flat `[rows, width]` f32 buffers, one row at a time, so a row's result
//! never depends on the other rows of the batch. RMSNorm and SiLU run on the SIMD
//! kernels of `device::cpu::rowops`.

use crate::device::cpu::rowops;

/// RMSNorm of each row of `x` (width `w.len()`), scaled by `w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    rowops::rms_norm(x, w, eps, &mut out);
    out
}

/// `silu(g) * u`, elementwise.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    let mut out = vec![0f32; g.len()];
    rowops::silu_mul(g, u, &mut out);
    out
}

/// SwiGLU over fused rows `[gate | up]` of width `2 * ff`: `silu(gate) * up`, `[rows, ff]`.
pub fn silu_gate_up(gu: &[f32], ff: usize) -> Vec<f32> {
    let mut out = vec![0f32; gu.len() / 2];
    for (row, o) in gu.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
        rowops::silu_mul(&row[..ff], &row[ff..], o);
    }
    out
}

/// Precomputed rotary cos/sin for every position, rotating adjacent pairs
/// `(x[2i], x[2i+1])` as GGUF llama weights expect.
pub struct RopeTable {
    half: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

impl RopeTable {
    /// Table for heads of width `head_dim`, positions `0..max_positions`.
    pub fn new(head_dim: usize, max_positions: usize, theta: f32) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(max_positions * half);
        let mut sin = Vec::with_capacity(max_positions * half);
        for p in 0..max_positions {
            for i in 0..half {
                let freq = (theta as f64).powf(-2.0 * i as f64 / head_dim as f64);
                let a = p as f64 * freq;
                cos.push(a.cos() as f32);
                sin.push(a.sin() as f32);
            }
        }
        Self { half, cos, sin }
    }

    /// The `cos` and `sin` tables, `[position][head_dim / 2]` each (what the GPU path
    /// uploads, so both paths rotate by the same numbers).
    pub fn tables(&self) -> (&[f32], &[f32]) {
        (&self.cos, &self.sin)
    }

    /// Positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates every head of every row of `x` (`[rows, n_heads * head_dim]`) in place.
    pub fn apply(&self, x: &mut [f32], positions: &[usize], n_heads: usize) {
        self.apply_strided(x, n_heads * self.half * 2, 0, positions, n_heads);
    }

    /// [`Self::apply`] on the heads at columns `offset..offset + n_heads * head_dim` of
    /// rows `stride` values apart (one part of a fused projection's output).
    pub fn apply_strided(
        &self,
        x: &mut [f32],
        stride: usize,
        offset: usize,
        positions: &[usize],
        n_heads: usize,
    ) {
        let hd = self.half * 2;
        assert!(
            offset + n_heads * hd <= stride,
            "rotary columns outside the row"
        );
        for (row, &pos) in x.chunks_exact_mut(stride).zip(positions) {
            let cos = &self.cos[pos * self.half..][..self.half];
            let sin = &self.sin[pos * self.half..][..self.half];
            for head in row[offset..offset + n_heads * hd].chunks_exact_mut(hd) {
                for i in 0..self.half {
                    let (a, b) = (head[2 * i], head[2 * i + 1]);
                    head[2 * i] = a * cos[i] - b * sin[i];
                    head[2 * i + 1] = a * sin[i] + b * cos[i];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_normalises_each_row() {
        let out = rms_norm(&[3.0, 4.0, 0.0, 0.0], &[1.0, 2.0], 1e-6);
        let inv = 1.0 / (12.5f32 + 1e-6).sqrt();
        assert!((out[0] - 3.0 * inv).abs() < 1e-6 && (out[1] - 8.0 * inv).abs() < 1e-6);
        assert_eq!(&out[2..], &[0.0, 0.0]);
    }

    #[test]
    fn rope_rotates_pairs_and_keeps_norm() {
        let t = RopeTable::new(4, 8, 10_000.0);
        let mut x = vec![1.0, 0.0, 0.5, 0.5];
        t.apply(&mut x, &[3], 1);
        assert!((x[0] - 3f32.cos()).abs() < 1e-6 && (x[1] - 3f32.sin()).abs() < 1e-6);
        let n: f32 = x.iter().map(|v| v * v).sum();
        assert!((n - 1.5).abs() < 1e-5);
        let mut y = vec![1.0, 2.0, 3.0, 4.0];
        t.apply(&mut y, &[0], 1);
        assert_eq!(y, vec![1.0, 2.0, 3.0, 4.0], "position 0 is the identity");
    }
}
