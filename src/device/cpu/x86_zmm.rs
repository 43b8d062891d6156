//! AVX-512 VNNI kernels over two adjacent panels at once: the same 32-byte weight
//! groups of panels `g` and `g + 1` side by side in one 512-bit register, against the
//! same broadcast activation group, so one `vpdpbusd` does 16 outputs' products (twice
//! the work of the 256-bit instruction at the same issue rate) and each scale
//! multiply and FMA of the epilogue serves 16 outputs.
//!
//! Invariant: lane `i` of the low half does exactly what lane `i` of panel `g`'s
//! 256-bit kernel (`x86_int`) does, and the high half what panel `g + 1`'s does: the
//! same exact integer block sums, the same float operations in the same order (the
//! offset terms and the store are `x86::finish`'s, lane for lane, in `finish_pair`), so
//! results are bit-identical to every other path.

use std::arch::x86_64::*;

use super::acts::QActs;
use super::panels::{Panels, enc};
use super::repack::{Layout, PANEL};
use super::x86::{Rows, check_scales, scales8};

/// Activation rows per tile.
pub(super) const TILE: usize = 8;

/// Panels `g` and `g + 1` of `p` against activation rows `r0..r0 + out0.len()` (1 or
/// [`TILE`] rows), into `out0` and `out1`.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C and AVX-512 F, BW, VL and VNNI; panels `g` and
/// `g + 1` must exist in `p`; `a` must hold the rows (with sums where the panels have
/// offsets); `out1` must have as many rows as `out0`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn pair(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
    out0: &mut [[f32; PANEL]],
    out1: &mut [[f32; PANEL]],
) {
    assert_eq!(out0.len(), out1.len());
    // SAFETY: forwarded contract.
    unsafe {
        if out0.len() == TILE {
            by_layout::<TILE>(p, g, a, r0, out0, out1)
        } else {
            by_layout::<1>(p, g, a, r0, out0, out1)
        }
    }
}

#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn by_layout<const R: usize>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
    out0: &mut [[f32; PANEL]],
    out1: &mut [[f32; PANEL]],
) {
    // SAFETY: forwarded contract.
    let acc = unsafe {
        match (p.layout, p.d.code()) {
            (Layout::U4, enc::F32) => u4::<R, { enc::F32 }>(p, g, a, r0),
            (Layout::U4, enc::F16) => u4::<R, { enc::F16 }>(p, g, a, r0),
            (Layout::U4, _) => u4::<R, { enc::SUB }>(p, g, a, r0),
            (Layout::I8, enc::F32) => i8s::<R, { enc::F32 }, false>(p, g, a, r0),
            (Layout::I8, enc::F16) => i8s::<R, { enc::F16 }, false>(p, g, a, r0),
            (Layout::I8, _) => i8s::<R, { enc::SUB }, false>(p, g, a, r0),
            (Layout::I8Halves, enc::F32) => i8s::<R, { enc::F32 }, true>(p, g, a, r0),
            (Layout::I8Halves, enc::F16) => i8s::<R, { enc::F16 }, true>(p, g, a, r0),
            (Layout::I8Halves, _) => i8s::<R, { enc::SUB }, true>(p, g, a, r0),
            (Layout::F16 | Layout::BF16, _) => unreachable!("float panels use float_tile"),
        }
    };
    // SAFETY: forwarded contract; both panels exist.
    unsafe {
        match p.d.code() {
            enc::F32 => finish_pair::<R, { enc::F32 }>(p, g, a, r0, acc, out0, out1),
            enc::F16 => finish_pair::<R, { enc::F16 }>(p, g, a, r0, acc, out0, out1),
            _ => finish_pair::<R, { enc::SUB_NEG }>(p, g, a, r0, acc, out0, out1),
        }
    }
}

/// Adds both panels' offset terms (if they have offsets) to `acc` and stores the low
/// halves into `out0`, the high halves into `out1`: lane for lane what `x86::finish`
/// does per panel (K-quant offsets are stored negated, so `S` is `SUB_NEG` for them).
///
/// # Safety
/// As [`pair`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn finish_pair<const R: usize, const S: u8>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
    acc: [__m512; R],
    out0: &mut [[f32; PANEL]],
    out1: &mut [[f32; PANEL]],
) {
    let total = if p.n_off == 0 {
        acc
    } else {
        // SAFETY: forwarded contract.
        let off = unsafe { offsets_pair::<R, S>(p, g, a, r0) };
        std::array::from_fn(|r| _mm512_add_ps(acc[r], off[r]))
    };
    for ((t, o0), o1) in total.iter().zip(out0.iter_mut()).zip(out1.iter_mut()) {
        let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(*t)));
        // SAFETY: each output row holds PANEL = 8 floats.
        unsafe {
            _mm256_storeu_ps(o0.as_mut_ptr(), _mm512_castps512_ps256(*t));
            _mm256_storeu_ps(o1.as_mut_ptr(), hi);
        }
    }
}

/// Both panels' offset terms `sum_b sum_h m[b][h] * s[b][h]` for `R` activation rows,
/// panel `g` in the low half: the same FMAs in the same order as `x86::offsets`.
///
/// # Safety
/// As [`pair`]; the panels have `n_off > 0` offsets encoded as `S`, `a` as many sums.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn offsets_pair<const R: usize, const S: u8>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
) -> [__m512; R] {
    let (nb, no) = (p.nb, p.n_off);
    check_scales(p, g + 1);
    assert!(no > 0 && a.s.len() >= (r0 + R) * nb * no);
    let m = p.m.ptrs();
    let s: [*const f32; R] = std::array::from_fn(|r| a.s[(r0 + r) * nb * no..].as_ptr());
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        for h in 0..no {
            // SAFETY: bounds checked above (both panels' offsets, every row's sums).
            unsafe {
                let mv = join_ps(
                    scales8::<S>(m, p.m_index(g * nb + b, h), p.sup_index(g, b)),
                    scales8::<S>(m, p.m_index((g + 1) * nb + b, h), p.sup_index(g + 1, b)),
                );
                for (x, sr) in acc.iter_mut().zip(&s) {
                    *x = _mm512_fmadd_ps(mv, _mm512_set1_ps(*sr.add(b * no + h)), *x);
                }
            }
        }
    }
    acc
}

/// Two 256-bit halves as one 512-bit integer vector.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

/// Two panels' eight scales as sixteen lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
fn join_ps(lo: __m256, hi: __m256) -> __m512 {
    _mm512_castsi512_ps(join(_mm256_castps_si256(lo), _mm256_castps_si256(hi)))
}

/// Activations `4u..4u + 4` of block `b` of row `r`, broadcast to all 16 lanes.
///
/// # Safety
/// Block `b` of row `r` must exist.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn quad16<const R: usize>(x: &Rows<R>, r: usize, b: usize, u: usize) -> __m512i {
    // SAFETY: forwarded contract.
    unsafe { _mm512_set1_epi32(x.word(r, b, u)) }
}

/// The scaled block sums of both panels (4-bit), `R` rows: `sum_b sumi * (d_w * d_x)`.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn u4<const R: usize, const S: u8>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
) -> [__m512; R] {
    let nb = p.nb;
    let x = Rows::<R>::new(a, r0);
    assert!(p.qs.len() >= (g + 2) * nb * 128);
    check_scales(p, g + 1);
    let (q0, ds) = (p.qs[g * nb * 128..].as_ptr(), p.d.ptrs());
    let q1 = p.qs[(g + 1) * nb * 128..].as_ptr();
    let mask = _mm512_set1_epi8(0x0F);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        // SAFETY: block b of panels g and g + 1 exists (asserted), rows checked by
        // `Rows::new`.
        unsafe {
            // One exact integer sum per row (low and high nibbles into the same
            // accumulator: i32 sums of at most 32 products, no overflow), so the
            // epilogue has no add.
            let mut sums = [_mm512_setzero_si512(); R];
            for q in 0..4 {
                let at = b * 128 + 32 * q;
                let raw = join(
                    _mm256_loadu_si256(q0.add(at).cast()),
                    _mm256_loadu_si256(q1.add(at).cast()),
                );
                let lo = _mm512_and_si512(raw, mask);
                let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(raw), mask);
                for (r, s) in sums.iter_mut().enumerate() {
                    *s = _mm512_dpbusd_epi32(*s, lo, quad16(&x, r, b, q));
                    *s = _mm512_dpbusd_epi32(*s, hi, quad16(&x, r, b, q + 4));
                }
            }
            let dv = join_ps(
                scales8::<S>(ds, (g * nb + b) * PANEL, p.sup_index(g, b)),
                scales8::<S>(ds, ((g + 1) * nb + b) * PANEL, p.sup_index(g + 1, b)),
            );
            for r in 0..R {
                let sumi = _mm512_cvtepi32_ps(sums[r]);
                let sc = _mm512_mul_ps(dv, _mm512_set1_ps(*x.d[r].add(b)));
                acc[r] = _mm512_fmadd_ps(sumi, sc, acc[r]);
            }
        }
    }
    acc
}

/// The scaled block sums of both panels (8-bit values): one scale per block, or per
/// half block when `HALVES` (Q6_K, Q3_K, Q2_K). The weights go in biased by 128 (as
/// u8, one XOR per register shared by every row), the activations as they are, and
/// `128 * sum(x)` (exact, from `QActs::isum`) is taken back from each block sum (as the
/// sum's starting value): `sum((w + 128) x) - 128 sum(x) = sum(w x)`, in i32.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i8s<const R: usize, const S: u8, const HALVES: bool>(
    p: &Panels,
    g: usize,
    a: &QActs,
    r0: usize,
) -> [__m512; R] {
    let nb = p.nb;
    let x = Rows::<R>::new(a, r0);
    assert!(p.qs.len() >= (g + 2) * nb * 256);
    check_scales(p, g + 1);
    let (q0, ds) = (p.qs[g * nb * 256..].as_ptr(), p.d.ptrs());
    let q1 = p.qs[(g + 1) * nb * 256..].as_ptr();
    let (parts, per) = if HALVES { (2, 4) } else { (1, 8) };
    let bias = _mm512_set1_epi8(i8::MIN);
    let mut acc = [_mm512_setzero_ps(); R];
    for b in 0..nb {
        for part in 0..parts {
            // SAFETY: as in `u4`.
            unsafe {
                // Each row's sum starts at `-128 * sum(x)` and takes the biased
                // products on top, so it ends exact with no correction step (i32,
                // |.| < 2^21).
                let mut sums: [__m512i; R] = std::array::from_fn(|r| {
                    let halves = x.isum[r].add(2 * b);
                    let xsum = if HALVES {
                        *halves.add(part)
                    } else {
                        *halves + *halves.add(1)
                    };
                    _mm512_set1_epi32(-128 * xsum)
                });
                // Step `u`'s weights of both panels, biased to u8.
                let weights = |u: usize| {
                    let at = b * 256 + 32 * u;
                    let w = join(
                        _mm256_loadu_si256(q0.add(at).cast()),
                        _mm256_loadu_si256(q1.add(at).cast()),
                    );
                    _mm512_xor_si512(w, bias)
                };
                for v in (0..per).step_by(2) {
                    let u = part * per + v;
                    let (w0, w1) = (weights(u), weights(u + 1));
                    for (r, s) in sums.iter_mut().enumerate() {
                        *s = _mm512_dpbusd_epi32(*s, w0, quad16(&x, r, b, u));
                        *s = _mm512_dpbusd_epi32(*s, w1, quad16(&x, r, b, u + 1));
                    }
                }
                let (i0, i1) = if HALVES {
                    (
                        ((g * nb + b) * 2 + part) * PANEL,
                        (((g + 1) * nb + b) * 2 + part) * PANEL,
                    )
                } else {
                    ((g * nb + b) * PANEL, ((g + 1) * nb + b) * PANEL)
                };
                let dv = join_ps(
                    scales8::<S>(ds, i0, p.sup_index(g, b)),
                    scales8::<S>(ds, i1, p.sup_index(g + 1, b)),
                );
                for r in 0..R {
                    let sumi = _mm512_cvtepi32_ps(sums[r]);
                    let sc = _mm512_mul_ps(dv, _mm512_set1_ps(*x.d[r].add(b)));
                    acc[r] = _mm512_fmadd_ps(sumi, sc, acc[r]);
                }
            }
        }
    }
    acc
}
