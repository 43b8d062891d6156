//! x86-64 tile kernels of the encoder's reduced-precision linear layers (layouts and
//! arithmetic in `qlinear.rs`): `MR` rows x `NR` outputs per call.
//!
//! - `int8_tile_avx512`: 24 zmm accumulators (6 rows x 4 blocks of 16 outputs), one
//!   `vpdpbusd` per row and block for every 4 inputs.
//! - `int8_tile_avxvnni`: the same layout through 256-bit AVX-VNNI, one block of 16
//!   outputs (2 ymm) at a time so 12 accumulators fit the 16 ymm registers.
//! - `int16_tile_avx2`: int16 weights against int16 activations, one `vpmaddwd` +
//!   `vpaddd` per row and 8 outputs for every 2 inputs, 6 rows x 16 outputs (12
//!   integer accumulators) at a time, each block of `K_BLOCK` inputs converted and
//!   added to f32 sums kept in L1 (the registers hold the integer ones).
//! - `int16_tile_avx512`: the same arithmetic through 512-bit VNNI `vpdpwssd` (which
//!   cannot wrap on these ranges, so it equals `vpmaddwd` + `vpaddd`), 6 rows x 64
//!   outputs (24 zmm accumulators); issued through inline asm so that LLVM cannot split
//!   it back into those two instructions.
//! - `bf16_tile_avx512`: 24 zmm f32 accumulators, one `vdpbf16ps` per row and block
//!   for every 2 inputs.
//!
//! Invariant: the epilogue is `cvt(acc) * (sa * sw) + b` as separate multiplies and
//! adds (no FMA), the same operations in the same order as the scalar references, so
//! int8 results are bit-identical to them.
//!
//! Safety contract of every function: the CPU has the named target features, the
//! tile's activation slices hold `MR * kp` values, its weight slice one full panel
//! (`kp * NR`), its per-output slices `NR` values, and `out` covers
//! `(rows - 1) * stride + cols` elements.

use std::arch::asm;
use std::arch::x86_64::*;

use super::qlinear::{K_BLOCK, MR, NR, Tile};

/// Bit mask of the first `n` of 16 lanes.
fn lanes(n: usize) -> u16 {
    if n >= 16 { u16::MAX } else { (1u16 << n) - 1 }
}

/// int8 tile with 512-bit VNNI.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn int8_tile_avx512(t: &Tile<'_>, out: &mut [f32]) {
    debug_assert!(t.a8.len() >= MR * t.kp && t.w8.len() >= t.kp * NR);
    let (a, w, kp) = (t.a8.as_ptr(), t.w8.as_ptr(), t.kp);
    // SAFETY: the caller's contract covers every read (MR rows of kp bytes, one panel
    // of kp * NR bytes, NR per-output values) and every (masked) store.
    unsafe {
        let comp: [__m512i; 4] =
            std::array::from_fn(|b| _mm512_loadu_si512(t.comp.as_ptr().add(16 * b).cast()));
        let mut acc = [comp; MR];
        for k4 in 0..kp / 4 {
            let wp = w.add(k4 * 4 * NR);
            let wv: [__m512i; 4] =
                std::array::from_fn(|b| _mm512_loadu_si512(wp.add(64 * b).cast()));
            for (r, row) in acc.iter_mut().enumerate() {
                let av = _mm512_set1_epi32(a.add(r * kp + 4 * k4).cast::<i32>().read_unaligned());
                for (acc, &wb) in row.iter_mut().zip(&wv) {
                    *acc = _mm512_dpbusd_epi32(*acc, av, wb);
                }
            }
        }
        let ws: [__m512; 4] =
            std::array::from_fn(|b| _mm512_loadu_ps(t.w_scale.as_ptr().add(16 * b)));
        let bias: [__m512; 4] =
            std::array::from_fn(|b| _mm512_loadu_ps(t.bias.as_ptr().add(16 * b)));
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            let sa = _mm512_set1_ps(t.a_scale[r]);
            for b in 0..4 {
                if 16 * b >= t.cols {
                    break;
                }
                let v = _mm512_mul_ps(_mm512_cvtepi32_ps(row[b]), _mm512_mul_ps(sa, ws[b]));
                let v = _mm512_add_ps(v, bias[b]);
                let dst = out.as_mut_ptr().add(r * t.stride + 16 * b);
                _mm512_mask_storeu_ps(dst, lanes(t.cols - 16 * b), v);
            }
        }
    }
}

/// int8 tile with 256-bit AVX-VNNI.
#[target_feature(enable = "avx2,avxvnni")]
pub(super) unsafe fn int8_tile_avxvnni(t: &Tile<'_>, out: &mut [f32]) {
    debug_assert!(t.a8.len() >= MR * t.kp && t.w8.len() >= t.kp * NR);
    let (a, w, kp) = (t.a8.as_ptr(), t.w8.as_ptr(), t.kp);
    // SAFETY: as for `int8_tile_avx512`; stores go through a local buffer and only
    // `cols` values per row are copied out.
    unsafe {
        for b in 0..4 {
            if 16 * b >= t.cols {
                break;
            }
            let comp: [__m256i; 2] = std::array::from_fn(|h| {
                _mm256_loadu_si256(t.comp.as_ptr().add(16 * b + 8 * h).cast())
            });
            let mut acc = [comp; MR];
            for k4 in 0..kp / 4 {
                let wp = w.add(k4 * 4 * NR + 64 * b);
                let wv: [__m256i; 2] =
                    std::array::from_fn(|h| _mm256_loadu_si256(wp.add(32 * h).cast()));
                for (r, row) in acc.iter_mut().enumerate() {
                    let av =
                        _mm256_set1_epi32(a.add(r * kp + 4 * k4).cast::<i32>().read_unaligned());
                    row[0] = _mm256_dpbusd_avx_epi32(row[0], av, wv[0]);
                    row[1] = _mm256_dpbusd_avx_epi32(row[1], av, wv[1]);
                }
            }
            let acc = acc.map(|row| row.map(|v| _mm256_cvtepi32_ps(v)));
            store_block(t, b, &acc, out);
        }
    }
}

/// int16 tile with AVX2 `vpmaddwd`: 16 outputs (2 ymm) of the panel at a time.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn int16_tile_avx2(t: &Tile<'_>, out: &mut [f32]) {
    debug_assert!(t.ai16.len() >= MR * t.kp && t.wi16.len() >= t.kp * NR);
    let (a, w, kp) = (t.ai16.as_ptr(), t.wi16.as_ptr(), t.kp);
    // SAFETY: as for `int8_tile_avx512`, with 2-byte values (MR rows of kp, one panel
    // of kp * NR); stores go through `store_block`.
    unsafe {
        for b in 0..4 {
            if 16 * b >= t.cols {
                break;
            }
            let mut sums = [[_mm256_setzero_ps(); 2]; MR];
            for k0 in (0..kp).step_by(K_BLOCK) {
                let mut acc = [[_mm256_setzero_si256(); 2]; MR];
                for k2 in k0 / 2..(k0 + K_BLOCK).min(kp) / 2 {
                    let wp = w.add(k2 * 2 * NR + 32 * b);
                    let wv: [__m256i; 2] =
                        std::array::from_fn(|h| _mm256_loadu_si256(wp.add(16 * h).cast()));
                    for (r, row) in acc.iter_mut().enumerate() {
                        let pair = a.add(r * kp + 2 * k2).cast::<i32>().read_unaligned();
                        let av = _mm256_set1_epi32(pair);
                        row[0] = _mm256_add_epi32(row[0], _mm256_madd_epi16(av, wv[0]));
                        row[1] = _mm256_add_epi32(row[1], _mm256_madd_epi16(av, wv[1]));
                    }
                }
                for (s, row) in sums.iter_mut().zip(&acc) {
                    for (s, &v) in s.iter_mut().zip(row) {
                        *s = _mm256_add_ps(*s, _mm256_cvtepi32_ps(v));
                    }
                }
            }
            store_block(t, b, &sums, out);
        }
    }
}

/// int16 tile with 512-bit VNNI `vpdpwssd`: the whole panel (4 zmm) at once.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
pub(super) unsafe fn int16_tile_avx512(t: &Tile<'_>, out: &mut [f32]) {
    debug_assert!(t.ai16.len() >= MR * t.kp && t.wi16.len() >= t.kp * NR);
    let (a, w, kp) = (t.ai16.as_ptr(), t.wi16.as_ptr(), t.kp);
    // SAFETY: as for `int8_tile_avx512`, with 2-byte values (MR rows of kp, one panel
    // of kp * NR) and masked stores of `cols` values per row.
    unsafe {
        let mut sums = [[_mm512_setzero_ps(); 4]; MR];
        for k0 in (0..kp).step_by(K_BLOCK) {
            let mut acc = [[_mm512_setzero_si512(); 4]; MR];
            for k2 in k0 / 2..(k0 + K_BLOCK).min(kp) / 2 {
                let wp = w.add(k2 * 2 * NR);
                let wv: [__m512i; 4] =
                    std::array::from_fn(|b| _mm512_loadu_si512(wp.add(32 * b).cast()));
                for (r, row) in acc.iter_mut().enumerate() {
                    let pair = a.add(r * kp + 2 * k2).cast::<i32>().read_unaligned();
                    let av = _mm512_set1_epi32(pair);
                    for (acc, &wb) in row.iter_mut().zip(&wv) {
                        // Inline asm, not `_mm512_dpwssd_epi32`: LLVM's tuning for
                        // generic x86-64 rewrote 20 of the 24 into `vpmaddwd` +
                        // `vpaddd` (two instructions per product block; the layer
                        // went from 427 to 486-500 GOP/s on Zen 5 with all 24 kept).
                        asm!(
                            "vpdpwssd {acc}, {a}, {w}",
                            acc = inout(zmm_reg) *acc,
                            a = in(zmm_reg) av,
                            w = in(zmm_reg) wb,
                            options(pure, nomem, nostack),
                        );
                    }
                }
            }
            for (s, row) in sums.iter_mut().zip(&acc) {
                for (s, &v) in s.iter_mut().zip(row) {
                    *s = _mm512_add_ps(*s, _mm512_cvtepi32_ps(v));
                }
            }
        }
        let ws: [__m512; 4] =
            std::array::from_fn(|b| _mm512_loadu_ps(t.w_scale.as_ptr().add(16 * b)));
        let bias: [__m512; 4] =
            std::array::from_fn(|b| _mm512_loadu_ps(t.bias.as_ptr().add(16 * b)));
        for (r, row) in sums.iter().enumerate().take(t.rows) {
            let sa = _mm512_set1_ps(t.a_scale[r]);
            for b in 0..4 {
                if 16 * b >= t.cols {
                    break;
                }
                let v = _mm512_mul_ps(row[b], _mm512_mul_ps(sa, ws[b]));
                let v = _mm512_add_ps(v, bias[b]);
                let dst = out.as_mut_ptr().add(r * t.stride + 16 * b);
                _mm512_mask_storeu_ps(dst, lanes(t.cols - 16 * b), v);
            }
        }
    }
}

/// The epilogue of the 256-bit integer kernels: block `b` (16 outputs) of every row,
/// `sum * (sa * sw) + bias` from the rows' sums as f32, `cols` values per row copied
/// out.
#[target_feature(enable = "avx2")]
unsafe fn store_block(t: &Tile<'_>, b: usize, sums: &[[__m256; 2]; MR], out: &mut [f32]) {
    let n = (t.cols - 16 * b).min(16);
    // SAFETY: the per-output slices hold NR values (the callers' contract); stores go
    // to a local buffer and a bounds-checked copy.
    unsafe {
        for (r, row) in sums.iter().enumerate().take(t.rows) {
            let sa = _mm256_set1_ps(t.a_scale[r]);
            let mut tmp = [0.0f32; 16];
            for (h, &v) in row.iter().enumerate() {
                let c = 16 * b + 8 * h;
                let ws = _mm256_loadu_ps(t.w_scale.as_ptr().add(c));
                let v = _mm256_mul_ps(v, _mm256_mul_ps(sa, ws));
                let v = _mm256_add_ps(v, _mm256_loadu_ps(t.bias.as_ptr().add(c)));
                _mm256_storeu_ps(tmp.as_mut_ptr().add(8 * h), v);
            }
            let dst = r * t.stride + 16 * b;
            out[dst..dst + n].copy_from_slice(&tmp[..n]);
        }
    }
}

/// bf16 tile with AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512bf16")]
pub(super) unsafe fn bf16_tile_avx512(t: &Tile<'_>, out: &mut [f32]) {
    debug_assert!(t.a16.len() >= MR * t.kp && t.w16.len() >= t.kp * NR);
    let (a, w, kp) = (t.a16.as_ptr(), t.w16.as_ptr(), t.kp);
    // SAFETY: as for `int8_tile_avx512`, with 2-byte values; `__m512i` and `__m512bh`
    // are both 64 bytes of plain bits.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 4]; MR];
        for k2 in 0..kp / 2 {
            let wp = w.add(k2 * 2 * NR);
            let wv: [__m512bh; 4] = std::array::from_fn(|b| {
                std::mem::transmute::<__m512i, __m512bh>(_mm512_loadu_si512(wp.add(32 * b).cast()))
            });
            for (r, row) in acc.iter_mut().enumerate() {
                let pair = a.add(r * kp + 2 * k2).cast::<i32>().read_unaligned();
                let av = std::mem::transmute::<__m512i, __m512bh>(_mm512_set1_epi32(pair));
                for (acc, &wb) in row.iter_mut().zip(&wv) {
                    *acc = _mm512_dpbf16_ps(*acc, av, wb);
                }
            }
        }
        for (r, row) in acc.iter().enumerate().take(t.rows) {
            for (b, &v) in row.iter().enumerate() {
                if 16 * b >= t.cols {
                    break;
                }
                let v = _mm512_add_ps(v, _mm512_loadu_ps(t.bias.as_ptr().add(16 * b)));
                let dst = out.as_mut_ptr().add(r * t.stride + 16 * b);
                _mm512_mask_storeu_ps(dst, lanes(t.cols - 16 * b), v);
            }
        }
    }
}
