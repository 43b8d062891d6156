//! f32 primitives of the encoder on row-major buffers: matrix products through the
//! `gemm` crate (the same GEMM candle uses, called directly so nothing is copied in
//! or out of tensors), and fused row kernels (bias + residual + LayerNorm, bias +
//! activation), parallel over rows.
//!
//! Invariant: every function is deterministic for a given input; a row's result
//! depends only on that row (never on which other rows share the buffer).

use gemm::Parallelism;
use rayon::prelude::*;

use super::config::Activation;
use super::precision::LinearPlan;
use super::qlinear::QLinear;

/// Rows per parallel task of the row kernels.
const ROWS_PER_TASK: usize = 16;

/// A row-major matrix view: `rows` x `cols`, row `r` starting at `r * stride`.
#[derive(Clone, Copy)]
pub struct View<'a> {
    /// The elements (the view may start anywhere inside a larger buffer).
    pub data: &'a [f32],
    /// Distance between consecutive rows.
    pub stride: usize,
}

/// `dst[rows, n] = scale * a[rows, k] @ b[k, n]` where `b` is read as given by
/// `b_row_stride` (step between its rows, i.e. along `k`) and `b_col_stride` (step
/// between its columns, along `n`); `dst` is dense row-major. `threads` 0 uses the
/// rayon pool, 1 runs on the calling thread.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    dst: &mut [f32],
    a: View<'_>,
    rows: usize,
    k: usize,
    b: &[f32],
    b_row_stride: usize,
    b_col_stride: usize,
    n: usize,
    scale: f32,
    threads: usize,
) {
    assert!(dst.len() >= rows * n, "destination too small");
    if rows == 0 || n == 0 {
        return;
    }
    assert!(
        a.data.len() >= (rows - 1) * a.stride + k,
        "lhs out of bounds"
    );
    assert!(
        k == 0 || b.len() > (k - 1) * b_row_stride + (n - 1) * b_col_stride,
        "rhs out of bounds"
    );
    let par = if threads == 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    };
    // SAFETY: the asserts above keep every index the strides reach inside the slices;
    // dst is exclusively borrowed and does not alias the inputs.
    unsafe {
        gemm::gemm(
            rows,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.data.as_ptr(),
            1,
            a.stride as isize,
            b.as_ptr(),
            b_col_stride as isize,
            b_row_stride as isize,
            0.0,
            scale,
            false,
            false,
            false,
            par,
        );
    }
}

/// A dense layer: `x @ w + b`, `w` stored `[in, out]` in f32, or quantized at load
/// (`qlinear.rs`) after which the f32 copy is dropped.
pub struct Dense {
    w: Vec<f32>,
    b: Vec<f32>,
    inp: usize,
    out: usize,
    quantized: Option<QLinear>,
}

impl Dense {
    /// From a weight `[in, out]` (row-major) and a bias `[out]`.
    pub fn new(w: Vec<f32>, b: Vec<f32>, inp: usize, out: usize) -> Self {
        assert_eq!(w.len(), inp * out, "weight shape");
        assert_eq!(b.len(), out, "bias shape");
        Self {
            w,
            b,
            inp,
            out,
            quantized: None,
        }
    }

    /// Output width.
    pub fn out(&self) -> usize {
        self.out
    }

    /// The same layer run as `plan` says (f32 leaves it as it is).
    pub fn with_plan(mut self, plan: LinearPlan) -> Self {
        if let (LinearPlan::Quantized(kernel), None) = (plan, &self.quantized) {
            self.quantized = Some(QLinear::new(&self.w, &self.b, self.inp, self.out, kernel));
            self.w = Vec::new();
        }
        self
    }

    /// `x` `[rows, in]` -> `[rows, out]`, bias added.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        if let Some(q) = &self.quantized {
            return q.forward(x);
        }
        let rows = x.len() / self.inp;
        let mut y = vec![0.0f32; rows * self.out];
        let a = View {
            data: x,
            stride: self.inp,
        };
        gemm_into(
            &mut y, a, rows, self.inp, &self.w, self.out, 1, self.out, 1.0, 0,
        );
        add_bias(&mut y, &self.b);
        y
    }

    /// Several f32 dense layers of the same input side by side: one weight `[in, sum
    /// out]` (used for the fused query/key/value projection). Quantize after fusing.
    pub fn concat(parts: &[Dense]) -> Dense {
        let inp = parts[0].inp;
        let out: usize = parts.iter().map(|p| p.out).sum();
        let mut w = Vec::with_capacity(inp * out);
        for r in 0..inp {
            for p in parts {
                assert_eq!(p.inp, inp, "parts share the input width");
                assert!(p.quantized.is_none(), "concat takes f32 layers");
                w.extend_from_slice(&p.w[r * p.out..(r + 1) * p.out]);
            }
        }
        let b = parts.iter().flat_map(|p| p.b.iter().copied()).collect();
        Dense::new(w, b, inp, out)
    }
}

/// LayerNorm with weight and bias.
pub struct LayerNorm {
    w: Vec<f32>,
    b: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    /// From weight and bias of the same width.
    pub fn new(w: Vec<f32>, b: Vec<f32>, eps: f64) -> Self {
        assert_eq!(w.len(), b.len(), "LayerNorm weight and bias widths");
        Self {
            w,
            b,
            eps: eps as f32,
        }
    }

    /// Normalizes each row of `x` in place.
    pub fn apply(&self, x: &mut [f32]) {
        let width = self.w.len();
        x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|chunk| {
            for row in chunk.chunks_exact_mut(width) {
                self.row(row);
            }
        });
    }

    /// `x = LayerNorm(x + residual)`, row by row (the post-norm residual of BERT).
    pub fn apply_residual(&self, x: &mut [f32], residual: &[f32]) {
        let width = self.w.len();
        x.par_chunks_mut(width * ROWS_PER_TASK)
            .zip(residual.par_chunks(width * ROWS_PER_TASK))
            .for_each(|(chunk, res)| {
                for (row, r) in chunk.chunks_exact_mut(width).zip(res.chunks_exact(width)) {
                    for (v, &a) in row.iter_mut().zip(r) {
                        *v += a;
                    }
                    self.row(row);
                }
            });
    }

    fn row(&self, row: &mut [f32]) {
        let n = row.len() as f32;
        let mean = lane_sum(row, |v| v) / n;
        let var = lane_sum(row, |v| (v - mean) * (v - mean)) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for ((v, &g), &b) in row.iter_mut().zip(&self.w).zip(&self.b) {
            *v = (*v - mean) * inv * g + b;
        }
    }
}

/// `sum(f(v))` over `x` in eight interleaved lanes, then the lanes and the tail in
/// order: a fixed order the compiler can vectorize (a plain serial sum it cannot).
fn lane_sum(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let mut chunks = x.chunks_exact(8);
    for c in &mut chunks {
        for (l, &v) in lanes.iter_mut().zip(c) {
            *l += f(v);
        }
    }
    let mut s: f32 = lanes.iter().sum();
    for &v in chunks.remainder() {
        s += f(v);
    }
    s
}

/// Adds `bias` to every row of `x`.
pub fn add_bias(x: &mut [f32], bias: &[f32]) {
    let width = bias.len();
    x.par_chunks_mut(width * ROWS_PER_TASK).for_each(|chunk| {
        for row in chunk.chunks_exact_mut(width) {
            for (v, &b) in row.iter_mut().zip(bias) {
                *v += b;
            }
        }
    });
}

/// Applies the activation to every element, in place.
pub fn activate(x: &mut [f32], act: Activation) {
    x.par_chunks_mut(4096).for_each(|chunk| match act {
        Activation::GeluErf => chunk
            .iter_mut()
            .for_each(|v| *v = 0.5 * *v * (1.0 + libm::erff(*v * std::f32::consts::FRAC_1_SQRT_2))),
        Activation::GeluTanh => chunk.iter_mut().for_each(|v| {
            let x = *v;
            let inner = (2.0f32 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
            *v = 0.5 * x * (1.0 + inner.tanh())
        }),
        Activation::Relu => chunk.iter_mut().for_each(|v| *v = v.max(0.0)),
    });
}

/// GELU (erf form) of every element through [`erf_fast`], vectorized (AVX2 + FMA
/// where the CPU has them; the same arithmetic either way). For the reduced-precision
/// paths, whose own error is far larger than `erf_fast`'s; `f32` keeps `activate`.
pub fn gelu_fast(x: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if crate::device::cpu::isa::CpuFeatures::get().avx2_fma_f16c() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above).
        x.par_chunks_mut(4096)
            .for_each(|c| unsafe { gelu_fast_avx2(c) });
        return;
    }
    x.par_chunks_mut(4096).for_each(gelu_fast_rows);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gelu_fast_avx2(x: &mut [f32]) {
    gelu_fast_rows(x)
}

#[inline(always)]
fn gelu_fast_rows(x: &mut [f32]) {
    for v in x.iter_mut() {
        *v = 0.5 * *v * (1.0 + erf_fast(*v * std::f32::consts::FRAC_1_SQRT_2));
    }
}

/// `erf(x)` as an odd polynomial over an even one in `x` (clamped to |x| <= 4, where
/// erf is 1 to f32 precision): no branches or calls, so loops over it vectorize.
/// Largest absolute error against `libm::erff` below 2e-6 (tested).
#[inline(always)]
pub fn erf_fast(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 - 2.101_024e-6;
    p = p * x2 - 5.692_506_4e-5;
    p = p * x2 - 7.349_906_3e-4;
    p = p * x2 - 2.954_600_2e-3;
    p = p * x2 - 1.609_603_3e-2;
    let mut q = -1.456_607_2e-5f32;
    q = q * x2 - 2.133_740_6e-4;
    q = q * x2 - 1.682_827e-3;
    q = q * x2 - 7.373_329e-3;
    q = q * x2 - 1.426_473_9e-2;
    x * p / q
}

/// `tanh` of every element, in place.
pub fn tanh(x: &mut [f32]) {
    x.iter_mut().for_each(|v| *v = v.tanh());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], rows: usize, k: usize, b: &[f32], n: usize) -> Vec<f32> {
        let mut y = vec![0.0f32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                y[r * n + c] = (0..k).map(|i| a[r * k + i] * b[i * n + c]).sum();
            }
        }
        y
    }

    fn data(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| (((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0) - 1.0)
            .collect()
    }

    #[test]
    fn gemm_matches_naive_product_and_transposed_reads() {
        let (rows, k, n) = (37, 19, 23);
        let a = data(rows * k, 1);
        let b = data(k * n, 2);
        let mut y = vec![0.0; rows * n];
        gemm_into(
            &mut y,
            View {
                data: &a,
                stride: k,
            },
            rows,
            k,
            &b,
            n,
            1,
            n,
            1.0,
            0,
        );
        let want = naive(&a, rows, k, &b, n);
        for (x, w) in y.iter().zip(&want) {
            assert!((x - w).abs() < 1e-4, "{x} vs {w}");
        }
        // The same product with b stored transposed ([n, k]) and read through strides.
        let bt: Vec<f32> = (0..n * k).map(|i| b[(i % k) * n + i / k]).collect();
        let mut yt = vec![0.0; rows * n];
        gemm_into(
            &mut yt,
            View {
                data: &a,
                stride: k,
            },
            rows,
            k,
            &bt,
            1,
            k,
            n,
            1.0,
            1,
        );
        for (x, w) in yt.iter().zip(&want) {
            assert!((x - w).abs() < 1e-4, "{x} vs {w}");
        }
    }

    #[test]
    fn erf_fast_is_close_to_libm_and_gelu_fast_to_gelu() {
        let mut worst = 0.0f32;
        for i in -60_000..=60_000 {
            let x = i as f32 / 10_000.0;
            worst = worst.max((erf_fast(x) - libm::erff(x)).abs());
        }
        assert!(worst < 2e-6, "erf error {worst}");
        let x: Vec<f32> = (0..10_000).map(|i| (i as f32 - 5000.0) / 700.0).collect();
        let (mut a, mut b) = (x.clone(), x);
        activate(&mut a, Activation::GeluErf);
        gelu_fast(&mut b);
        for (u, v) in a.iter().zip(&b) {
            assert!((u - v).abs() < 1e-5 * (1.0 + u.abs()), "{u} vs {v}");
        }
    }

    #[test]
    fn layer_norm_rows_have_zero_mean_unit_variance() {
        // Widths below, at and past the eight summing lanes, with a tail.
        for w in [5usize, 8, 13, 384] {
            let ln = LayerNorm::new(vec![1.0; w], vec![0.0; w], 1e-12);
            let mut x = data(w * 40, 3);
            ln.apply(&mut x);
            for row in x.chunks_exact(w) {
                let mean = row.iter().map(|&v| v as f64).sum::<f64>() / w as f64;
                let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / w as f64;
                assert!(
                    mean.abs() < 1e-5 && (var - 1.0).abs() < 1e-3,
                    "width {w}: {mean} {var}"
                );
            }
        }
    }
}
