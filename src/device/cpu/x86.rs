//! AVX2 + FMA pieces of the matmul over 8-row panels (see `repack`): what every integer
//! dot-product path of `x86_int` shares (the activation rows' broadcast groups, the
//! panels' scales, the offset terms and the store) and the float kernels. Each 32-byte
//! weight register holds 4 consecutive values of each of 8 weight rows; the products
//! against a broadcast group of 4 activations give the 8 rows' partial sums side by
//! side, so every f32 lane is one output and no horizontal sums are needed. Each row of
//! a tile keeps its own accumulators, so its arithmetic does not depend on the tile or
//! the batch (`scalar::tile` reproduces it bitwise). F16 / BF16 panels take f32
//! activations and plain FMAs (`float_tile`).

use std::arch::x86_64::*;

use super::acts::{QActs, QK};
use super::panels::{Panels, enc};
use super::qmatmul::TILE;
use super::repack::{Layout, PANEL};

/// Eight scales (lanes) starting at value `i` of a `Scales` whose base addresses are
/// `p`, encoded as `S` (`panels::enc`); `si` indexes the super-block scales.
///
/// # Safety
/// Values `i..i + 8` (and super-block scales `si..si + 8` for `Sub`) must exist.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn scales8<const S: u8>(
    p: (*const u8, *const u8),
    i: usize,
    si: usize,
) -> __m256 {
    // SAFETY: the caller guarantees the 8 elements.
    unsafe {
        match S {
            enc::F32 => _mm256_loadu_ps(p.0.cast::<f32>().add(i)),
            enc::F16 => _mm256_cvtph_ps(_mm_loadu_si128(p.0.cast::<u16>().add(i).cast())),
            _ => {
                let q = _mm256_cvtepi8_epi32(_mm_loadl_epi64(p.0.add(i).cast()));
                let sup = _mm256_cvtph_ps(_mm_loadu_si128(p.1.cast::<u16>().add(si).cast()));
                let v = _mm256_mul_ps(sup, _mm256_cvtepi32_ps(q));
                if S == enc::SUB_NEG {
                    _mm256_xor_ps(v, _mm256_set1_ps(-0.0))
                } else {
                    v
                }
            }
        }
    }
}

/// Checks that panel `g`'s scales (and offsets) exist for all `nb` blocks.
pub(super) fn check_scales(p: &Panels, g: usize) {
    let (nb, ns) = (p.nb, p.layout.n_scales());
    assert!(p.d.len() >= (g + 1) * nb * ns);
    assert!(p.d.sup_len() == 0 || p.d.sup_len() >= p.sup_index(g + 1, 0));
    if p.n_off > 0 {
        assert!(p.m.len() >= (g + 1) * nb * PANEL * p.n_off);
        assert!(p.m.sup_len() == 0 || p.m.sup_len() >= p.sup_index(g + 1, 0));
    }
}

/// Pointers to the quantized values and scales of `R` activation rows.
pub(super) struct Rows<const R: usize> {
    qs: [*const i8; R],
    pub(super) d: [*const f32; R],
    /// Exact half-block sums (`QActs::isum`), two per block.
    pub(super) isum: [*const i32; R],
}

impl<const R: usize> Rows<R> {
    /// Rows `r0..r0 + R` of `a`; panics if they do not exist.
    pub(super) fn new(a: &QActs, r0: usize) -> Self {
        let (nb, k) = (a.nb, a.nb * QK);
        assert!(a.qs.len() >= (r0 + R) * k && a.d.len() >= (r0 + R) * nb);
        assert!(a.isum.len() >= (r0 + R) * nb * 2);
        let (qs, d, isum) = (a.qs.as_ptr(), a.d.as_ptr(), a.isum.as_ptr());
        // SAFETY: every offset is within its buffer (asserted above); plain pointer
        // arithmetic rather than 3 * R bounds-checked slices (this runs once per tile,
        // and decode tiles are short).
        unsafe {
            Self {
                qs: std::array::from_fn(|r| qs.add((r0 + r) * k)),
                d: std::array::from_fn(|r| d.add((r0 + r) * nb)),
                isum: std::array::from_fn(|r| isum.add((r0 + r) * nb * 2)),
            }
        }
    }

    /// Activations `4u..4u + 4` of block `b` of row `r`, as one little-endian word.
    ///
    /// # Safety
    /// Block `b` must exist.
    #[inline]
    pub(super) unsafe fn word(&self, r: usize, b: usize, u: usize) -> i32 {
        // SAFETY: the caller guarantees block b; 4u + 4 <= 32.
        unsafe {
            self.qs[r]
                .add(b * QK + 4 * u)
                .cast::<i32>()
                .read_unaligned()
        }
    }

    /// Activations `4u..4u + 4` of block `b` of row `r`, broadcast to all 8 lanes.
    ///
    /// # Safety
    /// Block `b` must exist.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quad(&self, r: usize, b: usize, u: usize) -> __m256i {
        // SAFETY: the caller guarantees block b; 4u + 4 <= 32.
        unsafe {
            let p = self.qs[r].add(b * QK + 4 * u).cast::<i32>();
            _mm256_set1_epi32(p.read_unaligned())
        }
    }
}

/// The panel's offset terms `sum_b sum_h m[b][h] * s[b][h]` for `R` activation rows
/// (lane per weight row), each row with its own accumulator.
///
/// # Safety
/// As [`tile`]; `p` has `n_off > 0` offsets encoded as `S` and `a` as many sums.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn offsets<const R: usize, const S: u8>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
) -> [__m256; R] {
    let (nb, no) = (p.nb, p.n_off);
    check_scales(p, g);
    assert!(no > 0 && a.s.len() >= (r0 + R) * nb * no);
    let m = p.m.ptrs();
    let s: [*const f32; R] = std::array::from_fn(|r| a.s[(r0 + r) * nb * no..].as_ptr());
    let mut acc = [_mm256_setzero_ps(); R];
    for b in 0..nb {
        for h in 0..no {
            // SAFETY: bounds checked above.
            unsafe {
                let mv = scales8::<S>(m, p.m_index(g * nb + b, h), p.sup_index(g, b));
                for (x, sr) in acc.iter_mut().zip(&s) {
                    *x = _mm256_fmadd_ps(mv, _mm256_set1_ps(*sr.add(b * no + h)), *x);
                }
            }
        }
    }
    acc
}

/// Adds the panel's offset terms (if it has offsets) and stores the `R` rows.
///
/// # Safety
/// As [`offsets`] when `p.n_off > 0`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn finish<const R: usize, const S: u8>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
    acc: [__m256; R],
    out: &mut [[f32; PANEL]],
) {
    let off = if p.n_off == 0 {
        [_mm256_setzero_ps(); R]
    } else if S == enc::SUB {
        // SAFETY: rows r0..r0 + R exist and have sums (caller contract); K-quant
        // offsets are stored negated.
        unsafe { offsets::<R, { enc::SUB_NEG }>(p, g, a, r0) }
    } else {
        // SAFETY: as above.
        unsafe { offsets::<R, S>(p, g, a, r0) }
    };
    for (r, o) in out.iter_mut().enumerate().take(R) {
        let total = if p.n_off == 0 {
            acc[r]
        } else {
            _mm256_add_ps(acc[r], off[r])
        };
        // SAFETY: `o` holds PANEL = 8 floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), total) };
    }
}

/// Float panel `g` (F16 or BF16 values, `repack::Layout`) against f32 activation rows
/// `r0..r0 + out.len()` of `x` (rows of `k = p.nb * 32`): each loaded and converted
/// weight vector (8 rows' value `t`) serves every row of the tile; per row two FMA
/// chains over even and odd `t`, added at the end (`scalar::float_tile` bitwise).
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn float_tile(
    p: &Panels,
    g: usize,
    x: &[f32],
    r0: usize,
    out: &mut [[f32; PANEL]],
) {
    // SAFETY: forwarded contract.
    unsafe {
        match (p.layout == Layout::BF16, out.len() == TILE) {
            (true, true) => floats::<TILE, true>(p, g, x, r0, out),
            (true, false) => floats::<1, true>(p, g, x, r0, out),
            (false, true) => floats::<TILE, false>(p, g, x, r0, out),
            (false, false) => floats::<1, false>(p, g, x, r0, out),
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn floats<const R: usize, const BF: bool>(
    p: &Panels,
    g: usize,
    x: &[f32],
    r0: usize,
    out: &mut [[f32; PANEL]],
) {
    let k = p.nb * QK;
    assert!(p.layout.is_float() && p.qs.len() >= (g + 1) * k * 2 * PANEL);
    assert!(x.len() >= (r0 + R) * k && out.len() >= R);
    let w = p.qs[g * k * 2 * PANEL..].as_ptr().cast::<u16>();
    let xr: [*const f32; R] = std::array::from_fn(|r| x[(r0 + r) * k..].as_ptr());
    let load = |t: usize| {
        // SAFETY: t < k, so the 8 values of t are inside panel g (asserted above).
        unsafe {
            let raw = _mm_loadu_si128(w.add(t * PANEL).cast());
            if BF {
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
            } else {
                _mm256_cvtph_ps(raw)
            }
        }
    };
    let (mut a0, mut a1) = ([_mm256_setzero_ps(); R], [_mm256_setzero_ps(); R]);
    for t in (0..k).step_by(2) {
        let (w0, w1) = (load(t), load(t + 1));
        for ((c0, c1), x) in a0.iter_mut().zip(a1.iter_mut()).zip(&xr) {
            // SAFETY: t + 1 < k and row r0 + r exists (asserted above).
            unsafe {
                *c0 = _mm256_fmadd_ps(_mm256_set1_ps(*x.add(t)), w0, *c0);
                *c1 = _mm256_fmadd_ps(_mm256_set1_ps(*x.add(t + 1)), w1, *c1);
            }
        }
    }
    for (r, o) in out.iter_mut().enumerate().take(R) {
        // SAFETY: `o` holds PANEL = 8 floats.
        unsafe { _mm256_storeu_ps(o.as_mut_ptr(), _mm256_add_ps(a0[r], a1[r])) };
    }
}
