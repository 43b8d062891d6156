//! Row-wise kernels of the decoder: RMSNorm and SiLU gating, AVX2 + FMA where the CPU
//! has them, with portable versions that give bit-identical results (same eight-lane
//! sums, same polynomial `exp`). Each row's result depends on that row alone.

use super::isa::Isa;
use super::math::exp_scalar;

/// RMSNorm of each row of `x` (width `w.len()`), scaled by `w`, into `out`:
/// `out = x / sqrt(mean(x²) + eps) * w`.
pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(Isa::detect(), x, w, eps, out);
}

/// [`rms_norm`] with the portable kernel.
pub fn rms_norm_scalar(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    rms_norm_with(Isa::Scalar, x, w, eps, out);
}

fn rms_norm_with(isa: Isa, x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let d = w.len();
    assert!(
        d > 0 && x.len().is_multiple_of(d) && out.len() == x.len(),
        "rms_norm shapes"
    );
    for (xr, or) in x.chunks_exact(d).zip(out.chunks_exact_mut(d)) {
        let ss = match isa {
            // SAFETY: Avx2 is only detected on CPUs with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::sum_squares(xr) },
            _ => sum_squares(xr),
        };
        let inv = 1.0 / (ss / d as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

/// `sum(x²)`: squares rounded to f32, summed in f64 (as ggml's `rms_norm` does), in
/// four f64 lanes, the AVX2 kernel's order.
fn sum_squares(x: &[f32]) -> f32 {
    let mut acc = [0f64; 4];
    let full = x.len() - x.len() % 4;
    for c in (0..full).step_by(4) {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f64::from(x[c + l] * x[c + l]);
        }
    }
    let mut s = (acc[0] + acc[2]) + (acc[1] + acc[3]);
    for &v in &x[full..] {
        s += f64::from(v * v);
    }
    s as f32
}

/// `out = silu(g) * u = g / (1 + e^-g) * u`, elementwise.
pub fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) {
    silu_mul_with(Isa::detect(), g, u, out);
}

/// [`silu_mul`] with the portable kernel.
pub fn silu_mul_scalar(g: &[f32], u: &[f32], out: &mut [f32]) {
    silu_mul_with(Isa::Scalar, g, u, out);
}

fn silu_mul_with(isa: Isa, g: &[f32], u: &[f32], out: &mut [f32]) {
    assert!(
        g.len() == u.len() && out.len() == g.len(),
        "silu_mul shapes"
    );
    let done = match isa {
        // SAFETY: Avx2 is only detected on CPUs with AVX2 and FMA; lengths checked.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::silu_mul(g, u, out) },
        _ => 0,
    };
    for ((o, &a), &b) in out[done..].iter_mut().zip(&g[done..]).zip(&u[done..]) {
        *o = a / (1.0 + exp_scalar(-a)) * b;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::super::x86_math::exp8;

    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn sum_squares(x: &[f32]) -> f32 {
        let full = x.len() - x.len() % 4;
        let mut acc = _mm256_setzero_pd();
        for c in (0..full).step_by(4) {
            // SAFETY: c + 4 <= x.len().
            let v = unsafe { _mm_loadu_ps(x.as_ptr().add(c)) };
            acc = _mm256_add_pd(acc, _mm256_cvtps_pd(_mm_mul_ps(v, v)));
        }
        let mut l = [0f64; 4];
        // SAFETY: `l` holds 4 doubles.
        unsafe { _mm256_storeu_pd(l.as_mut_ptr(), acc) };
        let mut s = (l[0] + l[2]) + (l[1] + l[3]);
        for &v in &x[full..] {
            s += f64::from(v * v);
        }
        s as f32
    }

    /// SiLU gating of the first multiple of 8 elements; returns how many were done.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `u` and `out` at least as long as `g`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn silu_mul(g: &[f32], u: &[f32], out: &mut [f32]) -> usize {
        let full = g.len() - g.len() % 8;
        let one = _mm256_set1_ps(1.0);
        let zero = _mm256_setzero_ps();
        for c in (0..full).step_by(8) {
            // SAFETY: c + 8 <= full <= every length.
            unsafe {
                let a = _mm256_loadu_ps(g.as_ptr().add(c));
                let b = _mm256_loadu_ps(u.as_ptr().add(c));
                let e = exp8(_mm256_sub_ps(zero, a));
                let s = _mm256_mul_ps(_mm256_div_ps(a, _mm256_add_ps(one, e)), b);
                _mm256_storeu_ps(out.as_mut_ptr().add(c), s);
            }
        }
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf_writer::signed_units;

    #[test]
    fn simd_equals_scalar_and_matches_plain_formulas() {
        for d in [8, 64, 576, 13] {
            let x: Vec<f32> = signed_units(3 * d, d as u64)
                .iter()
                .map(|v| 4.0 * v)
                .collect();
            let w = signed_units(d, 7);
            let (mut a, mut b) = (vec![0f32; x.len()], vec![0f32; x.len()]);
            rms_norm(&x, &w, 1e-5, &mut a);
            rms_norm_scalar(&x, &w, 1e-5, &mut b);
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "rms d={d}"
            );
            for (r, row) in x.chunks(d).enumerate() {
                let ms = row.iter().map(|v| (v * v) as f64).sum::<f64>() / d as f64;
                for i in 0..d {
                    let want = row[i] as f64 / (ms + 1e-5).sqrt() * w[i] as f64;
                    assert!((a[r * d + i] as f64 - want).abs() < 1e-5 * (1.0 + want.abs()));
                }
            }
            let u = signed_units(3 * d, 9);
            silu_mul(&x, &u, &mut a);
            silu_mul_scalar(&x, &u, &mut b);
            assert!(
                a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()),
                "silu d={d}"
            );
            for i in 0..x.len() {
                let want = x[i] as f64 / (1.0 + (-x[i] as f64).exp()) * u[i] as f64;
                assert!((a[i] as f64 - want).abs() < 1e-6 * (1.0 + want.abs()));
            }
        }
    }
}
