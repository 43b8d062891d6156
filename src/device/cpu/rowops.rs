//! Row-wise kernels of the decoder and the encoder: RMSNorm, SiLU gating, argmax over
//! logits and softmax rows, AVX2 and FMA where the CPU has them, with portable versions
//! that give bit-identical results (same sums, same polynomial `exp`). Each row's
//! result depends on that row alone.

use super::isa::Isa;
use super::math::{exp_scalar, hsum8};

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

/// Softmax of each row of `x` (width `w`) in place: `e^(v - max) / sum`, the exps by
/// the polynomial `exp` (about 2 ulp), summed in eight lanes (the AVX2 kernel's order).
pub fn softmax_rows(x: &mut [f32], w: usize) {
    softmax_rows_with(Isa::detect(), x, w);
}

/// [`softmax_rows`] with the portable kernel.
pub fn softmax_rows_scalar(x: &mut [f32], w: usize) {
    softmax_rows_with(Isa::Scalar, x, w);
}

fn softmax_rows_with(isa: Isa, x: &mut [f32], w: usize) {
    assert!(w > 0 && x.len().is_multiple_of(w), "softmax shapes");
    let full = w - w % 8;
    for row in x.chunks_exact_mut(w) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let (body, tail) = row.split_at_mut(full);
        let lanes = match isa {
            // SAFETY: Avx2 is only detected on CPUs with AVX2 and FMA; `body` holds a
            // multiple of 8 values.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::exp_shift_sum(body, max) },
            _ => {
                let mut lanes = [0f32; 8];
                for chunk in body.chunks_exact_mut(8) {
                    for (v, l) in chunk.iter_mut().zip(&mut lanes) {
                        *v = exp_scalar(*v - max);
                        *l += *v;
                    }
                }
                lanes
            }
        };
        let mut sum = hsum8(&lanes);
        for v in tail.iter_mut() {
            *v = exp_scalar(*v - max);
            sum += *v;
        }
        let inv = 1.0 / sum;
        row.iter_mut().for_each(|v| *v *= inv);
    }
}

/// Index of the largest value: the lowest index on ties, NaN never wins, 0 when no
/// value beats `-inf` (as a strict `>` scan from the start gives).
pub fn argmax(v: &[f32]) -> usize {
    match Isa::detect() {
        // SAFETY: Avx2 is only detected on CPUs with AVX2.
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => unsafe { x86::argmax(v) },
        _ => argmax_scalar(v),
    }
}

/// [`argmax`] as a plain scan (the reference).
pub fn argmax_scalar(v: &[f32]) -> usize {
    let (mut best, mut best_v) = (0, f32::NEG_INFINITY);
    for (i, &x) in v.iter().enumerate() {
        if x > best_v {
            (best, best_v) = (i, x);
        }
    }
    best
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

    /// [`super::argmax`]: eight lanes each keep their first maximum, then the lanes are
    /// reduced (largest value, lowest index), then the tail is scanned.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn argmax(v: &[f32]) -> usize {
        let full = v.len() - v.len() % 8;
        let mut best = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut best_i = _mm256_setzero_si256();
        let mut idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let eight = _mm256_set1_epi32(8);
        for c in (0..full).step_by(8) {
            // SAFETY: c + 8 <= v.len().
            let x = unsafe { _mm256_loadu_ps(v.as_ptr().add(c)) };
            // Strictly greater (ordered): NaN and ties keep the earlier value.
            let gt = _mm256_cmp_ps::<_CMP_GT_OQ>(x, best);
            best = _mm256_blendv_ps(best, x, gt);
            best_i = _mm256_blendv_epi8(best_i, idx, _mm256_castps_si256(gt));
            idx = _mm256_add_epi32(idx, eight);
        }
        let (mut lanes, mut lane_i) = ([0f32; 8], [0i32; 8]);
        // SAFETY: 8 floats and 8 ints.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), best);
            _mm256_storeu_si256(lane_i.as_mut_ptr().cast(), best_i);
        }
        let (mut bi, mut bv) = (0usize, f32::NEG_INFINITY);
        for (&x, &i) in lanes.iter().zip(&lane_i) {
            let i = i as usize;
            if x > bv || (x == bv && x > f32::NEG_INFINITY && i < bi) {
                (bi, bv) = (i, x);
            }
        }
        for (i, &x) in v.iter().enumerate().skip(full) {
            if x > bv {
                (bi, bv) = (i, x);
            }
        }
        bi
    }

    /// `x = e^(x - max)` for every value (a multiple of 8 of them), returning the
    /// eight lane sums.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA; `x.len()` is a multiple of 8.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn exp_shift_sum(x: &mut [f32], max: f32) -> [f32; 8] {
        debug_assert!(x.len().is_multiple_of(8));
        let m = _mm256_set1_ps(max);
        let mut acc = _mm256_setzero_ps();
        let mut lanes = [0f32; 8];
        // SAFETY: c + 8 <= x.len(); `lanes` holds 8 floats.
        unsafe {
            for c in (0..x.len()).step_by(8) {
                let p = x.as_mut_ptr().add(c);
                let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), m));
                _mm256_storeu_ps(p, e);
                acc = _mm256_add_ps(acc, e);
            }
            _mm256_storeu_ps(lanes.as_mut_ptr(), acc);
        }
        lanes
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
    fn argmax_matches_the_plain_scan() {
        let mut v = signed_units(49152 + 5, 3);
        assert_eq!(argmax(&v), argmax_scalar(&v));
        // Ties: the lowest index wins, across lanes and in the tail.
        v[40000] = 2.0;
        v[100] = 2.0;
        v[49155] = 2.0;
        assert_eq!((argmax(&v), argmax_scalar(&v)), (100, 100));
        v[100] = f32::NAN;
        assert_eq!((argmax(&v), argmax_scalar(&v)), (40000, 40000));
        for x in [
            vec![f32::NEG_INFINITY; 20],
            vec![f32::NAN; 9],
            vec![1.0; 3],
            vec![],
        ] {
            assert_eq!(argmax(&x), argmax_scalar(&x), "{x:?}");
        }
        let mut w = vec![0.0f32; 17];
        w[3] = 1.0;
        w[11] = 1.0;
        assert_eq!(argmax(&w), 3);
    }

    #[test]
    fn softmax_rows_equal_the_scalar_kernel_and_the_plain_formula() {
        for w in [1, 7, 8, 37, 128, 300] {
            let x: Vec<f32> = signed_units(3 * w, w as u64)
                .iter()
                .map(|v| 20.0 * v)
                .collect();
            let (mut a, mut b) = (x.clone(), x.clone());
            softmax_rows(&mut a, w);
            softmax_rows_scalar(&mut b, w);
            assert!(crate::device::cpu::same_bits(&a, &b), "softmax w={w}");
            for (row, got) in x.chunks(w).zip(a.chunks(w)) {
                let m = row.iter().cloned().fold(f64::MIN, |m, v| m.max(v as f64));
                let z: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
                for (&v, &g) in row.iter().zip(got) {
                    let want = (v as f64 - m).exp() / z;
                    assert!(
                        (g as f64 - want).abs() < 1e-6 * (1.0 + want),
                        "{g} vs {want}"
                    );
                }
            }
        }
    }

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
            assert!(crate::device::cpu::same_bits(&a, &b), "rms d={d}");
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
            assert!(crate::device::cpu::same_bits(&a, &b), "silu d={d}");
            for i in 0..x.len() {
                let want = x[i] as f64 / (1.0 + (-x[i] as f64).exp()) * u[i] as f64;
                assert!((a[i] as f64 - want).abs() < 1e-6 * (1.0 + want.abs()));
            }
        }
    }
}
