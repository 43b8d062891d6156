//! Small row-wise CPU ops of the decoder: RMSNorm, rotary embedding, SiLU gating.
//! Each works on flat `[rows, width]` f32 buffers, one row at a time, so a row's result
//! never depends on the other rows of the batch.

/// RMSNorm of each row of `x` (width `w.len()`), scaled by `w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ss + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
    out
}

/// `silu(g) * u`, elementwise.
pub fn silu_mul(g: &[f32], u: &[f32]) -> Vec<f32> {
    g.iter()
        .zip(u)
        .map(|(&a, &b)| a / (1.0 + (-a).exp()) * b)
        .collect()
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

    /// Positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.cos.len() / self.half.max(1)
    }

    /// Rotates every head of every row of `x` (`[rows, n_heads * head_dim]`) in place.
    pub fn apply(&self, x: &mut [f32], positions: &[usize], n_heads: usize) {
        let hd = self.half * 2;
        for (row, &pos) in x.chunks_exact_mut(n_heads * hd).zip(positions) {
            let cos = &self.cos[pos * self.half..][..self.half];
            let sin = &self.sin[pos * self.half..][..self.half];
            for head in row.chunks_exact_mut(hd) {
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
