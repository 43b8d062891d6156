//! The integer tile kernels of the quantized matmul on x86-64, stamped out once per
//! dot-product path ([`super::isa::MatmulPath`]) by `int_kernels!`:
//!
//! - `avx2`: `vpmaddubsw` pairs summed in i16, widened by `vpmaddwd` (tiles of 4 rows);
//! - `avxvnni`: VEX `vpdpbusd`, four products straight into i32 (tiles of 4 rows, the
//!   16 ymm registers);
//! - `avx512vnni`: EVEX `vpdpbusd` on 256-bit vectors, whose 32 registers hold tiles
//!   of 8 rows (each weight load and nibble unpack serves twice as many rows).
//!
//! The layouts are those of `x86.rs` / `repack`: a 32-byte weight register holds 4
//! consecutive values of each of 8 weight rows, multiplied against a broadcast group
//! of 4 activations, so every i32 lane is one output's partial sum. Each row keeps two
//! integer accumulators per block (even and odd groups, for two independent dependency
//! chains) added at the block's end.
//!
//! Invariant: every path forms the same exact integer block sums (no i16 sum can
//! saturate: the bounds are noted per kernel) and folds them in with the same float
//! operations in the same order as `scalar::tile`, so results are bit-identical across
//! paths, tile sizes and batch sizes.

use std::arch::x86_64::*;

use super::acts::QActs;
use super::panels::{Panels, enc};
use super::repack::{Layout, PANEL};
use super::x86::{Rows, check_scales, finish, scales8};

/// One kernel family: `$feat` the target features, `$rows` the tile rows, and the
/// items `acc16` (add the products of a u8 and an i8 vector to an accumulator that
/// [`widen16`] finishes), `widen16` (two such accumulators to i32 lanes) and `acc32`
/// (add the products to i32 lanes).
macro_rules! int_kernels {
    ($path:ident, $feat:literal, $rows:expr, { $($steps:item)* }) => {
        pub(super) mod $path {
            use super::*;

            $($steps)*

            /// Activation rows per tile.
            pub(in super::super) const TILE: usize = $rows;

            /// Panel `g` of `p` against activation rows `r0..r0 + out.len()` (1 or
            /// `TILE` rows).
            ///
            /// # Safety
            /// The CPU must have the features `$feat` names; panel `g` must exist in
            /// `p`, `a` must hold rows `r0..r0 + out.len()` of `p.nb` blocks (with sums
            /// where the panels have offsets).
            #[target_feature(enable = $feat)]
            pub(in super::super) unsafe fn tile(
                p: &Panels,
                g: usize,
                a: &QActs,
                r0: usize,
                out: &mut [[f32; PANEL]],
            ) {
                // SAFETY: forwarded contract.
                unsafe {
                    if out.len() == TILE {
                        by_layout::<TILE>(p, g, a, r0, out)
                    } else {
                        by_layout::<1>(p, g, a, r0, out)
                    }
                }
            }

            #[target_feature(enable = $feat)]
            unsafe fn by_layout<const R: usize>(
                p: &Panels,
                g: usize,
                a: &QActs,
                r0: usize,
                out: &mut [[f32; PANEL]],
            ) {
                // SAFETY: forwarded contract.
                unsafe {
                    match (p.layout, p.d.code()) {
                        (Layout::U4, enc::F32) => u4::<R, { enc::F32 }>(p, g, a, r0, out),
                        (Layout::U4, enc::F16) => u4::<R, { enc::F16 }>(p, g, a, r0, out),
                        (Layout::U4, _) => u4::<R, { enc::SUB }>(p, g, a, r0, out),
                        (Layout::I8, enc::F32) => i8_full::<R, { enc::F32 }>(p, g, a, r0, out),
                        (Layout::I8, enc::F16) => i8_full::<R, { enc::F16 }>(p, g, a, r0, out),
                        (Layout::I8, _) => i8_full::<R, { enc::SUB }>(p, g, a, r0, out),
                        (Layout::I8Halves, enc::F32) => {
                            i8_halves::<R, { enc::F32 }>(p, g, a, r0, out)
                        }
                        (Layout::I8Halves, enc::F16) => {
                            i8_halves::<R, { enc::F16 }>(p, g, a, r0, out)
                        }
                        (Layout::I8Halves, _) => i8_halves::<R, { enc::SUB }>(p, g, a, r0, out),
                        (Layout::F16 | Layout::BF16, _) => {
                            unreachable!("float panels use float_tile")
                        }
                    }
                }
            }

            /// 4-bit panels: 8 groups of 4 values per block, two per byte. Each i16
            /// accumulator sums 4 `maddubs` of a 4-bit and a 7-bit value, their sum
            /// 8 (|.| <= 8 * 2 * 15 * 127 = 30480).
            #[target_feature(enable = $feat)]
            unsafe fn u4<const R: usize, const S: u8>(
                p: &Panels,
                g: usize,
                a: &QActs,
                r0: usize,
                out: &mut [[f32; PANEL]],
            ) {
                let nb = p.nb;
                let x = Rows::<R>::new(a, r0);
                assert!(p.qs.len() >= (g + 1) * nb * 128);
                check_scales(p, g);
                let (qs, ds) = (p.qs[g * nb * 128..].as_ptr(), p.d.ptrs());
                let mask = _mm256_set1_epi8(0x0F);
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..nb {
                    // SAFETY: block b of panel g exists (asserted), rows checked by
                    // `Rows::new`.
                    unsafe {
                        let wb = qs.add(b * 128);
                        let mut lo_s = [_mm256_setzero_si256(); R];
                        let mut hi_s = [_mm256_setzero_si256(); R];
                        for q in 0..4 {
                            let raw = _mm256_loadu_si256(wb.add(32 * q).cast());
                            let lo = _mm256_and_si256(raw, mask);
                            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(raw), mask);
                            for r in 0..R {
                                lo_s[r] = acc16(lo_s[r], lo, x.quad(r, b, q));
                                hi_s[r] = acc16(hi_s[r], hi, x.quad(r, b, q + 4));
                            }
                        }
                        let dv = scales8::<S>(ds, (g * nb + b) * PANEL, p.sup_index(g, b));
                        for r in 0..R {
                            let sumi = _mm256_cvtepi32_ps(widen16(lo_s[r], hi_s[r]));
                            let sc = _mm256_mul_ps(dv, _mm256_set1_ps(*x.d[r].add(b)));
                            acc[r] = _mm256_fmadd_ps(sumi, sc, acc[r]);
                        }
                    }
                }
                // SAFETY: forwarded contract (U4 panels always have offsets and `a`
                // sums).
                unsafe { finish::<R, S>(p, g, a, r0, acc, out) }
            }

            /// 8-bit panels with one scale (and maybe offset) per block (Q8_0, Q5_0,
            /// Q5_1, Q5_K): `|w|` as u8 against the activations with `w`'s sign, summed
            /// in i32.
            #[target_feature(enable = $feat)]
            unsafe fn i8_full<const R: usize, const S: u8>(
                p: &Panels,
                g: usize,
                a: &QActs,
                r0: usize,
                out: &mut [[f32; PANEL]],
            ) {
                let nb = p.nb;
                let x = Rows::<R>::new(a, r0);
                assert!(p.qs.len() >= (g + 1) * nb * 256);
                check_scales(p, g);
                let (qs, ds) = (p.qs[g * nb * 256..].as_ptr(), p.d.ptrs());
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..nb {
                    // SAFETY: as in `u4`.
                    unsafe {
                        let wb = qs.add(b * 256);
                        let mut s = [[_mm256_setzero_si256(); R]; 2];
                        for u in 0..8 {
                            let w = _mm256_loadu_si256(wb.add(32 * u).cast());
                            let aw = _mm256_sign_epi8(w, w);
                            for r in 0..R {
                                let sx = _mm256_sign_epi8(x.quad(r, b, u), w);
                                s[u % 2][r] = acc32(s[u % 2][r], aw, sx);
                            }
                        }
                        let dv = scales8::<S>(ds, (g * nb + b) * PANEL, p.sup_index(g, b));
                        for r in 0..R {
                            let sumi = _mm256_cvtepi32_ps(_mm256_add_epi32(s[0][r], s[1][r]));
                            let sc = _mm256_mul_ps(dv, _mm256_set1_ps(*x.d[r].add(b)));
                            acc[r] = _mm256_fmadd_ps(sumi, sc, acc[r]);
                        }
                    }
                }
                // SAFETY: forwarded contract (sums exist when the panels have offsets).
                unsafe { finish::<R, S>(p, g, a, r0, acc, out) }
            }

            /// Values in `-32..32` with a scale (and maybe offset) per 16 (Q6_K, Q3_K,
            /// Q2_K): each i16 accumulator sums 2 `maddubs`, their sum 4
            /// (|.| <= 4 * 2 * 32 * 127 = 32512).
            #[target_feature(enable = $feat)]
            unsafe fn i8_halves<const R: usize, const S: u8>(
                p: &Panels,
                g: usize,
                a: &QActs,
                r0: usize,
                out: &mut [[f32; PANEL]],
            ) {
                let nb = p.nb;
                let x = Rows::<R>::new(a, r0);
                assert!(p.qs.len() >= (g + 1) * nb * 256);
                check_scales(p, g);
                let (qs, ds) = (p.qs[g * nb * 256..].as_ptr(), p.d.ptrs());
                let mut acc = [_mm256_setzero_ps(); R];
                for b in 0..nb {
                    for half in 0..2 {
                        // SAFETY: as in `u4`.
                        unsafe {
                            let wb = qs.add(b * 256 + 128 * half);
                            let mut s = [[_mm256_setzero_si256(); R]; 2];
                            for u in 0..4 {
                                let w = _mm256_loadu_si256(wb.add(32 * u).cast());
                                let aw = _mm256_sign_epi8(w, w);
                                for r in 0..R {
                                    let sx = _mm256_sign_epi8(x.quad(r, b, 4 * half + u), w);
                                    s[u % 2][r] = acc16(s[u % 2][r], aw, sx);
                                }
                            }
                            let di = ((g * nb + b) * 2 + half) * PANEL;
                            let dv = scales8::<S>(ds, di, p.sup_index(g, b));
                            for r in 0..R {
                                let sumi = _mm256_cvtepi32_ps(widen16(s[0][r], s[1][r]));
                                let sc = _mm256_mul_ps(dv, _mm256_set1_ps(*x.d[r].add(b)));
                                acc[r] = _mm256_fmadd_ps(sumi, sc, acc[r]);
                            }
                        }
                    }
                }
                // SAFETY: forwarded contract (sums exist when the panels have offsets).
                unsafe { finish::<R, S>(p, g, a, r0, acc, out) }
            }
        }
    };
}

int_kernels!(avx2, "avx2,fma,f16c", 4, {
    /// `s + maddubs(u, x)` in i16 lanes (the callers keep the sums in range).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn acc16(s: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_add_epi16(s, _mm256_maddubs_epi16(u, x))
    }

    /// Two i16 accumulators to one i32 lane per output.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn widen16(a: __m256i, b: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_add_epi16(a, b), _mm256_set1_epi16(1))
    }

    /// `s + (u · x per 4 bytes)` in i32 lanes.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    fn acc32(s: __m256i, u: __m256i, x: __m256i) -> __m256i {
        let pairs = _mm256_maddubs_epi16(u, x);
        _mm256_add_epi32(s, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    }
});

int_kernels!(avxvnni, "avx2,fma,f16c,avxvnni", 4, {
    /// `s + (u · x per 4 bytes)` in i32 lanes (`vpdpbusd` never saturates).
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    fn acc16(s: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(s, u, x)
    }

    /// The two accumulators' i32 lanes added.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    fn widen16(a: __m256i, b: __m256i) -> __m256i {
        _mm256_add_epi32(a, b)
    }

    /// As `acc16`.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c,avxvnni")]
    fn acc32(s: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(s, u, x)
    }
});

int_kernels!(
    avx512vnni,
    "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni",
    8,
    {
        /// `s + (u · x per 4 bytes)` in i32 lanes (`vpdpbusd` never saturates).
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn acc16(s: __m256i, u: __m256i, x: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(s, u, x)
        }

        /// The two accumulators' i32 lanes added.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn widen16(a: __m256i, b: __m256i) -> __m256i {
            _mm256_add_epi32(a, b)
        }

        /// As `acc16`.
        #[inline]
        #[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni")]
        fn acc32(s: __m256i, u: __m256i, x: __m256i) -> __m256i {
            _mm256_dpbusd_epi32(s, u, x)
        }
    }
);
