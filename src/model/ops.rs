//! Small row-wise CPU ops of the decoder: RMSNorm, SiLU and GELU gating.
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

/// GeGLU over fused rows `[gate | up]` of width `2 * ff`: `gelu(gate) * up` with the
/// tanh approximation of GELU (as Gemma and ggml use), `[rows, ff]`.
pub fn gelu_gate_up(gu: &[f32], ff: usize) -> Vec<f32> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let mut out = vec![0f32; gu.len() / 2];
    for (row, o) in gu.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
        for ((o, &g), &u) in o.iter_mut().zip(&row[..ff]).zip(&row[ff..]) {
            let inner = SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
            *o = 0.5 * g * (1.0 + inner.tanh()) * u;
        }
    }
    out
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
    fn gelu_gate_matches_the_tanh_formula() {
        let out = gelu_gate_up(&[1.0, -2.0, 3.0, 0.5], 2);
        let gelu = |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
        assert!((out[0] - gelu(1.0) * 3.0).abs() < 1e-6);
        assert!((out[1] - gelu(-2.0) * 0.5).abs() < 1e-6);
    }
}
