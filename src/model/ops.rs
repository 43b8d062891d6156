//! Small row-wise CPU ops of the decoder: RMSNorm, SiLU and GELU gating, the residual
//! add.
//! Each works on flat `[rows, width]` f32 buffers, one row at a time, so a row's result
//! never depends on the other rows of the batch (nor on how the rows are split over
//! threads: a prefill's rows go in parallel blocks, [`map_rows`]). RMSNorm and SiLU
//! run on the SIMD kernels of `device::cpu::rowops`.

use rayon::prelude::*;

use crate::device::cpu::rowops;

/// Output values below which a row-wise op runs on the calling thread (a decode
/// step's rows), and about how many each parallel block gets.
pub(crate) const PAR_MIN_VALUES: usize = 1 << 16;

/// `f(input rows, output rows)` over `[rows, in_w]` into `[rows, out_w]`: all at once
/// on the calling thread for a small batch, in parallel blocks of whole rows for a
/// big one.
pub fn map_rows(
    input: &[f32],
    in_w: usize,
    out: &mut [f32],
    out_w: usize,
    f: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let rows = out.len() / out_w.max(1);
    assert!(
        input.len() == rows * in_w && out.len() == rows * out_w,
        "row shapes"
    );
    if out.len() < PAR_MIN_VALUES || rows < 2 {
        f(input, out);
        return;
    }
    let per = (PAR_MIN_VALUES / 4 / out_w).clamp(1, rows);
    out.par_chunks_mut(per * out_w)
        .zip(input.par_chunks(per * in_w))
        .for_each(|(o, i)| f(i, o));
}

/// `x += y`, elementwise (the residual connection): in parallel blocks for a
/// prefill-sized batch, on the calling thread for a decode step.
pub fn add_in_place(x: &mut [f32], y: &[f32]) {
    assert_eq!(x.len(), y.len(), "residual shapes");
    let add = |x: &mut [f32], y: &[f32]| {
        for (a, b) in x.iter_mut().zip(y) {
            *a += b;
        }
    };
    if x.len() < PAR_MIN_VALUES {
        add(x, y);
        return;
    }
    x.par_chunks_mut(PAR_MIN_VALUES / 4)
        .zip(y.par_chunks(PAR_MIN_VALUES / 4))
        .for_each(|(x, y)| add(x, y));
}

/// RMSNorm of each row of `x` (width `w.len()`), scaled by `w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let mut out = vec![0f32; x.len()];
    let n = w.len();
    map_rows(x, n, &mut out, n, |i, o| rowops::rms_norm(i, w, eps, o));
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
    map_rows(gu, 2 * ff, &mut out, ff, |i, o| {
        for (row, o) in i.chunks_exact(2 * ff).zip(o.chunks_exact_mut(ff)) {
            rowops::silu_mul(&row[..ff], &row[ff..], o);
        }
    });
    out
}

/// GeGLU over fused rows `[gate | up]` of width `2 * ff`: `gelu(gate) * up` with the
/// tanh approximation of GELU (as Gemma and ggml use), `[rows, ff]`.
pub fn gelu_gate_up(gu: &[f32], ff: usize) -> Vec<f32> {
    let mut out = vec![0f32; gu.len() / 2];
    map_rows(gu, 2 * ff, &mut out, ff, |i, o| gelu_rows(i, o, ff));
    out
}

/// [`gelu_gate_up`] of whole rows `gu` into `out`.
fn gelu_rows(gu: &[f32], out: &mut [f32], ff: usize) {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    for (row, o) in gu.chunks_exact(2 * ff).zip(out.chunks_exact_mut(ff)) {
        for ((o, &g), &u) in o.iter_mut().zip(&row[..ff]).zip(&row[ff..]) {
            let inner = SQRT_2_OVER_PI * (g + 0.044_715 * g * g * g);
            *o = 0.5 * g * (1.0 + inner.tanh()) * u;
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
    fn gelu_gate_matches_the_tanh_formula() {
        let out = gelu_gate_up(&[1.0, -2.0, 3.0, 0.5], 2);
        let gelu = |x: f32| 0.5 * x * (1.0 + (0.797_884_6 * (x + 0.044_715 * x * x * x)).tanh());
        assert!((out[0] - gelu(1.0) * 3.0).abs() < 1e-6);
        assert!((out[1] - gelu(-2.0) * 0.5).abs() < 1e-6);
    }
}
