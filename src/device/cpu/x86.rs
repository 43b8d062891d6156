//! AVX2 + FMA kernels: each weight block is unpacked once into a register and dotted
//! with a tile of activation rows; every row keeps its own accumulators, so its
//! arithmetic does not depend on the tile or the batch.

use std::arch::x86_64::*;

use super::acts::{QActs, QK};
use super::qmatmul::{CpuQMatrix, QKind};

/// Activation rows per tile.
const TILE: usize = 4;

/// Dot products of weight row `j` with activation rows `r0..r0 + out.len()` of `a`.
///
/// # Safety
/// The CPU must support AVX2 and FMA; `j < w.n`, `a` must hold at least
/// `r0 + out.len()` rows of `w.k` values.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn row_dots(w: &CpuQMatrix, j: usize, a: &QActs, r0: usize, out: &mut [f32]) {
    let m = out.len();
    let full = m - m % TILE;
    for t in (0..full).step_by(TILE) {
        let o = &mut out[t..t + TILE];
        // SAFETY: same contract as this function; rows r0+t..r0+t+TILE exist.
        unsafe { dispatch::<TILE>(w, j, a, r0 + t, o) };
    }
    for t in full..m {
        // SAFETY: as above, one row.
        unsafe { dispatch::<1>(w, j, a, r0 + t, &mut out[t..t + 1]) };
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn dispatch<const R: usize>(w: &CpuQMatrix, j: usize, a: &QActs, r0: usize, o: &mut [f32]) {
    // SAFETY: forwarded contract.
    unsafe {
        match w.kind {
            QKind::Q4_1 => q4_1_tile::<R>(w, j, a, r0, o),
            QKind::Q8_0 => q8_0_tile::<R>(w, j, a, r0, o),
        }
    }
}

/// Raw pointers to the quantized values, scales and sums of `R` activation rows.
struct Rows<const R: usize> {
    qs: [*const i8; R],
    d: [*const f32; R],
    s: [*const f32; R],
}

impl<const R: usize> Rows<R> {
    /// Rows `r0..r0 + R` of `a`; panics if they do not exist.
    fn new(a: &QActs, r0: usize) -> Self {
        let (nb, k) = (a.nb, a.nb * QK);
        assert!(a.qs.len() >= (r0 + R) * k && a.d.len() >= (r0 + R) * nb);
        Self {
            qs: std::array::from_fn(|r| a.qs[(r0 + r) * k..].as_ptr()),
            d: std::array::from_fn(|r| a.d[(r0 + r) * nb..].as_ptr()),
            s: std::array::from_fn(|r| a.s[(r0 + r) * nb..].as_ptr()),
        }
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q4_1_tile<const R: usize>(w: &CpuQMatrix, j: usize, a: &QActs, r0: usize, o: &mut [f32]) {
    let nb = a.nb;
    let x = Rows::<R>::new(a, r0);
    let mut acc = [_mm256_setzero_ps(); R];
    let mut summ = [0f32; R];
    let low = _mm256_set1_epi8(0x0F);
    let ones = _mm256_set1_epi16(1);
    let wq = &w.qs[j * nb * 16..(j + 1) * nb * 16];
    let ws = &w.scales[j * nb * 2..(j + 1) * nb * 2];
    for b in 0..nb {
        // SAFETY: `wq` holds nb blocks of 16 bytes; `Rows::new` checked that every
        // row has nb blocks of 32 values and nb scales and sums.
        unsafe {
            let q = _mm_loadu_si128(wq.as_ptr().add(b * 16).cast());
            let wv = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(q, 4), q), low);
            let (dw, mw) = (*ws.get_unchecked(2 * b), *ws.get_unchecked(2 * b + 1));
            for r in 0..R {
                let xv = _mm256_loadu_si256(x.qs[r].add(b * QK).cast());
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, xv), ones);
                let sc = _mm256_set1_ps(dw * *x.d[r].add(b));
                acc[r] = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), acc[r]);
                summ[r] += mw * *x.s[r].add(b);
            }
        }
    }
    for r in 0..R {
        o[r] = hsum(acc[r]) + summ[r];
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn q8_0_tile<const R: usize>(w: &CpuQMatrix, j: usize, a: &QActs, r0: usize, o: &mut [f32]) {
    let nb = a.nb;
    let x = Rows::<R>::new(a, r0);
    let mut acc = [_mm256_setzero_ps(); R];
    let ones = _mm256_set1_epi16(1);
    let wq = &w.qs[j * nb * QK..(j + 1) * nb * QK];
    let ws = &w.scales[j * nb..(j + 1) * nb];
    for b in 0..nb {
        // SAFETY: `wq` holds nb blocks of 32 bytes; `Rows::new` checked the rows.
        unsafe {
            let wv = _mm256_loadu_si256(wq.as_ptr().add(b * QK).cast());
            // |w| as u8; the signs move onto the activations.
            let aw = _mm256_sign_epi8(wv, wv);
            let dw = *ws.get_unchecked(b);
            for (r, acc) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_si256(x.qs[r].add(b * QK).cast());
                let sx = _mm256_sign_epi8(xv, wv);
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), ones);
                let sc = _mm256_set1_ps(dw * *x.d[r].add(b));
                *acc = _mm256_fmadd_ps(sc, _mm256_cvtepi32_ps(p), *acc);
            }
        }
    }
    for r in 0..R {
        o[r] = hsum(acc[r]);
    }
}

/// Horizontal sum in the order `scalar::hsum8` reproduces.
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}
