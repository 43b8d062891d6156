//! AMX-INT8 tiles for the quantized matmul's compute-bound case: 16 activation rows
//! against two adjacent panels (16 outputs), where the CPU has AMX-INT8 and the OS
//! granted this process the tile state (`CpuFeatures::amx_int8`, proven by running
//! tile instructions in a child process first).
//!
//! One `tdpbsud` (4-bit weights, unsigned) or `tdpbssd` (8-bit, signed) per block of
//! 32 values (per half block for the layouts with a scale per 16) gives the 16 x 16
//! exact integer block sums at once; the float epilogue then folds them in exactly as
//! `x86_zmm` does (`sumi * (d_w * d_x)` fused into the row's accumulator, blocks in
//! order, then the offset terms lane by lane as `x86::finish` adds them), so results
//! are bit-identical to every other path. AMX's B operand wants 4 consecutive values of 16 outputs in 64 contiguous
//! bytes; the panels keep them 32 bytes per panel (and nibble-packed for U4), so a
//! [`Strip`] unpacks both panels once per group of activation rows and every 16-row
//! tile of the group reads it from cache.
//!
//! Rust has no stable AMX intrinsics: the tile instructions are inline assembly on
//! fixed registers, configured by [`Tiles`] for the lifetime of one matmul task on one
//! thread (released on drop, panics included).
//!
//! Tile registers: `tmm0`-`tmm3` the 16 x 16 i32 block sums (two rounds of two blocks
//! in flight), `tmm4` / `tmm5` the activations (16 rows x 32 bytes, or 16 for half
//! blocks), `tmm6` / `tmm7` the weights (8 rows x 64 bytes, or 4): the tile unit works
//! on one round while the vector units fold in the one before.

use std::arch::asm;
use std::arch::x86_64::*;

use super::acts::{QActs, QK};
use super::panels::{Panels, enc};
use super::repack::{Layout, PANEL};
use super::x86::{Rows, check_scales, scales8};

/// Activation rows per AMX tile.
pub(super) const ROWS: usize = 16;
/// Bytes of one (block, two panels) in a [`Strip`]: 8 rows of 64 bytes.
const BLOCK_BYTES: usize = 2 * PANEL * QK;
/// Bytes of one block of a 16-row activation tile in `QActs::tiled`.
const TILE_BLOCK: usize = ROWS * QK;

/// The tile configuration of one matmul task; releases the tiles when dropped.
pub(super) struct Tiles {
    halves: bool,
}

impl Tiles {
    /// Loads the tile configuration for panels of `layout` on this thread.
    ///
    /// # Safety
    /// The CPU must have AMX-TILE and AMX-INT8 and the OS must have granted this
    /// process the tile data state.
    pub(super) unsafe fn configure(layout: Layout) -> Self {
        let halves = layout == Layout::I8Halves;
        let (a_cols, b_rows) = if halves { (16u16, 4u8) } else { (32, 8) };
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        let mut set = |t: usize, colsb: u16, rows: u8| {
            cfg[16 + 2 * t..18 + 2 * t].copy_from_slice(&colsb.to_le_bytes());
            cfg[48 + t] = rows;
        };
        for t in 0..4 {
            set(t, 64, 16);
        }
        for t in [4, 5] {
            set(t, a_cols, 16);
        }
        for t in [6, 7] {
            set(t, 64, b_rows);
        }
        // SAFETY: the caller guarantees AMX and the permission; `cfg` is 64 bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly)) };
        Self { halves }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        // SAFETY: `configure` succeeded on this thread (it is the only constructor).
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }
}

/// Two adjacent panels' weights in AMX's B layout: per block, 8 rows (value groups
/// `4u..4u + 4`, `u = 0..8`) of 64 bytes, panel `g`'s 8 outputs then panel `g + 1`'s,
/// 4 bytes each. U4 values are unpacked to bytes; I8 values are copied as they are.
/// The scales (16 per unit) and offsets (16 per block and offset) of both panels are
/// decoded to f32 once per fill, by the same `scales8` the other kernels use, so each
/// tile's epilogue loads them instead of decoding them again.
pub(super) struct Strip {
    buf: Vec<u8>,
    d: Vec<f32>,
    m: Vec<f32>,
}

impl Strip {
    /// A strip for panels of `nb` blocks.
    pub(super) fn new(nb: usize) -> Self {
        Self {
            buf: vec![0; nb * BLOCK_BYTES],
            d: Vec::new(),
            m: Vec::new(),
        }
    }

    /// Decodes both panels' scales and offsets (`S` the scales' encoding, `SM` the
    /// offsets').
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; panels `g` and `g + 1` must exist in `p`.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn fill_scales<const S: u8, const SM: u8>(&mut self, p: &Panels, g: usize) {
        check_scales(p, g + 1);
        let (nb, no) = (p.nb, p.n_off);
        let units = nb * p.layout.n_scales() / PANEL;
        let per_block = units / nb;
        self.d.resize(units * 16, 0.0);
        self.m.resize(nb * no * 16, 0.0);
        let (ds, ms) = (p.d.ptrs(), p.m.ptrs());
        for u in 0..units {
            let b = u / per_block;
            // SAFETY: unit u of both panels has scales (checked above); the stores
            // write 16 floats inside `d`.
            unsafe {
                let lo = scales8::<S>(ds, (g * units + u) * PANEL, p.sup_index(g, b));
                let hi = scales8::<S>(ds, ((g + 1) * units + u) * PANEL, p.sup_index(g + 1, b));
                _mm256_storeu_ps(self.d.as_mut_ptr().add(16 * u), lo);
                _mm256_storeu_ps(self.d.as_mut_ptr().add(16 * u + 8), hi);
            }
        }
        for b in 0..nb {
            for h in 0..no {
                let at = 16 * (b * no + h);
                // SAFETY: as above, for the offsets.
                unsafe {
                    let lo = scales8::<SM>(ms, p.m_index(g * nb + b, h), p.sup_index(g, b));
                    let i1 = p.m_index((g + 1) * nb + b, h);
                    let hi = scales8::<SM>(ms, i1, p.sup_index(g + 1, b));
                    _mm256_storeu_ps(self.m.as_mut_ptr().add(at), lo);
                    _mm256_storeu_ps(self.m.as_mut_ptr().add(at + 8), hi);
                }
            }
        }
    }

    /// Fills the strip with panels `g` and `g + 1` of `p`.
    ///
    /// # Safety
    /// The CPU must have AVX2, FMA and F16C; panels `g` and `g + 1` must exist in `p`,
    /// an integer layout of this strip's block count.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn fill(&mut self, p: &Panels, g: usize) {
        // SAFETY: forwarded contract. K-quant offsets are stored negated.
        unsafe {
            match p.d.code() {
                enc::F32 => self.fill_scales::<{ enc::F32 }, { enc::F32 }>(p, g),
                enc::F16 => self.fill_scales::<{ enc::F16 }, { enc::F16 }>(p, g),
                _ => self.fill_scales::<{ enc::SUB }, { enc::SUB_NEG }>(p, g),
            }
        }
        let (nb, qb) = (p.nb, p.layout.qs_bytes());
        assert!(!p.layout.is_float() && self.buf.len() == nb * BLOCK_BYTES);
        assert!(p.qs.len() >= (g + 2) * nb * qb);
        let q0 = p.qs[g * nb * qb..].as_ptr();
        let q1 = p.qs[(g + 1) * nb * qb..].as_ptr();
        let dst = self.buf.as_mut_ptr();
        let mask = _mm256_set1_epi8(0x0F);
        for b in 0..nb {
            // SAFETY: block b of both panels exists (asserted) and the strip holds
            // `nb` blocks of BLOCK_BYTES.
            unsafe {
                let out = dst.add(b * BLOCK_BYTES);
                let put = |u: usize, lo: __m256i, hi: __m256i| {
                    _mm256_storeu_si256(out.add(64 * u).cast(), lo);
                    _mm256_storeu_si256(out.add(64 * u + 32).cast(), hi);
                };
                if p.layout == Layout::U4 {
                    for q in 0..4 {
                        let at = b * qb + 32 * q;
                        let r0 = _mm256_loadu_si256(q0.add(at).cast());
                        let r1 = _mm256_loadu_si256(q1.add(at).cast());
                        put(q, _mm256_and_si256(r0, mask), _mm256_and_si256(r1, mask));
                        let h0 = _mm256_and_si256(_mm256_srli_epi16::<4>(r0), mask);
                        let h1 = _mm256_and_si256(_mm256_srli_epi16::<4>(r1), mask);
                        put(q + 4, h0, h1);
                    }
                } else {
                    for u in 0..8 {
                        let at = b * qb + 32 * u;
                        put(
                            u,
                            _mm256_loadu_si256(q0.add(at).cast()),
                            _mm256_loadu_si256(q1.add(at).cast()),
                        );
                    }
                }
            }
        }
    }
}

/// The two panels of `p` held in `strip` against activation rows `r0..r0 + 16` of
/// `a`, into `out[0]` (the first panel) and `out[1]`.
///
/// # Safety
/// The CPU must have AVX2, FMA, F16C, AVX-512 F/BW/VL and AMX-INT8, `tiles` must be
/// this thread's configuration for `p.layout`, and `strip` must hold two panels of
/// `p`; `a` must hold the rows (with sums where the panels have offsets).
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn pair(
    tiles: &Tiles,
    strip: &Strip,
    p: &Panels,
    a: &QActs,
    r0: usize,
    [out0, out1]: [&mut [[f32; PANEL]]; 2],
) {
    assert!(out0.len() == ROWS && out1.len() == ROWS);
    assert_eq!(tiles.halves, p.layout == Layout::I8Halves);
    // SAFETY: forwarded contract.
    unsafe {
        let acc = match p.layout {
            Layout::U4 => sums::<true, false>(strip, p, a, r0),
            Layout::I8 => sums::<false, false>(strip, p, a, r0),
            Layout::I8Halves => sums::<false, true>(strip, p, a, r0),
            Layout::F16 | Layout::BF16 => unreachable!("float panels use float_tile"),
        };
        let off = if p.n_off == 0 {
            [_mm512_setzero_ps(); ROWS]
        } else {
            offsets(strip, p, a, r0)
        };
        for r in 0..ROWS {
            let total = if p.n_off == 0 {
                acc[r]
            } else {
                _mm512_add_ps(acc[r], off[r])
            };
            _mm256_storeu_ps(out0[r].as_mut_ptr(), _mm512_castps512_ps256(total));
            let hi = _mm512_extractf64x4_pd::<1>(_mm512_castps_pd(total));
            _mm256_storeu_ps(out1[r].as_mut_ptr(), _mm256_castpd_ps(hi));
        }
    }
}

/// Both panels' offset terms `sum_b sum_h m[b][h] * s[b][h]` for the 16 rows, lane by
/// lane what `x86::finish` computes per panel (the offsets decoded in `strip`).
///
/// # Safety
/// As [`pair`], `p` with offsets and `a` with as many sums.
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn offsets(strip: &Strip, p: &Panels, a: &QActs, r0: usize) -> [__m512; ROWS] {
    let (nb, no) = (p.nb, p.n_off);
    assert!(no > 0 && a.s.len() >= (r0 + ROWS) * nb * no && strip.m.len() == nb * no * 16);
    let s: [*const f32; ROWS] = std::array::from_fn(|r| a.s[(r0 + r) * nb * no..].as_ptr());
    let mut acc = [_mm512_setzero_ps(); ROWS];
    for i in 0..nb * no {
        // SAFETY: bounds checked above.
        unsafe {
            let mv = _mm512_loadu_ps(strip.m.as_ptr().add(16 * i));
            for (x, sr) in acc.iter_mut().zip(&s) {
                *x = _mm512_fmadd_ps(mv, _mm512_set1_ps(*sr.add(i)), *x);
            }
        }
    }
    acc
}

/// 16 x 16 exact i32 block sums, row-major (what `tilestored` writes).
#[repr(align(64))]
struct Sums16([i32; ROWS * 16]);

/// `acc[r] += sumi[r] * (dv * d_x[r])` for the 16 rows: `x86_zmm`'s block fold.
#[inline]
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
fn fold(acc: &mut [__m512; ROWS], c: &Sums16, dv: __m512, dx: &[f32; ROWS]) {
    for r in 0..ROWS {
        // SAFETY: row r of `c` is 16 aligned i32.
        let s = unsafe { _mm512_load_si512(c.0[16 * r..].as_ptr().cast()) };
        let sc = _mm512_mul_ps(dv, _mm512_set1_ps(dx[r]));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), sc, acc[r]);
    }
}

/// The 16 rows' activation scales of block `b`.
fn block_scales(x: &Rows<ROWS>, b: usize) -> [f32; ROWS] {
    // SAFETY: `Rows::new` checked that block b of every row exists (b < nb).
    std::array::from_fn(|r| unsafe { *x.d[r].add(b) })
}

/// The scaled sums of every unit (block of 32, or half block where the panels have a
/// scale per 16): `UNSIGNED` 4-bit weights (`tdpbsud`) or signed 8-bit ones
/// (`tdpbssd`), scaled by the strip's decoded scales. Software-pipelined over rounds of
/// two units: round `j`'s tile products
/// go into one pair of sum tiles while round `j - 1`'s, issued a round earlier, are
/// stored and folded in, so the vector units never wait for the tile unit's latency.
/// Units are folded in order, so the float arithmetic is `x86_zmm`'s.
///
/// # Safety
/// As [`pair`].
#[target_feature(enable = "avx2,fma,f16c,avx512f,avx512bw,avx512vl")]
unsafe fn sums<const UNSIGNED: bool, const HALVES: bool>(
    strip: &Strip,
    p: &Panels,
    a: &QActs,
    r0: usize,
) -> [__m512; ROWS] {
    let (nb, k) = (p.nb, p.nb * QK);
    let x = Rows::<ROWS>::new(a, r0);
    let per_block = if HALVES { 2 } else { 1 };
    let units = nb * per_block;
    assert!(strip.buf.len() == nb * BLOCK_BYTES && a.nb == nb && strip.d.len() == units * 16);
    let uw = BLOCK_BYTES / per_block;
    // Activation bytes from a round's first unit to its second: the next block's
    // tile, or the second half of the same block's.
    let next = if HALVES { QK / 2 } else { TILE_BLOCK };
    let mut c = [Sums16([0; 256]), Sums16([0; 256])];
    assert!(r0.is_multiple_of(ROWS) && a.tiled.len() >= (r0 + ROWS) * k);
    let base = a.tiled[r0 * k..].as_ptr();
    let w = strip.buf.as_ptr();
    let mut acc = [_mm512_setzero_ps(); ROWS];
    let rounds = units.div_ceil(2);
    for j in 0..=rounds {
        // SAFETY: units 2j..2j + 2 (at most `units`) of rows r0..r0 + 16 lie in
        // `a.tiled` (asserted), of both panels in the strip (asserted); the stores write the
        // two 1 KiB `Sums16`; the tiles are configured (caller contract).
        unsafe {
            if j < rounds {
                let u0 = 2 * j;
                let (au, wu) = (base.add(u0 / per_block * TILE_BLOCK), w.add(u0 * uw));
                products::<UNSIGNED>(j % 2, (au, next), (wu, uw), u0 + 1 < units);
            }
            if j == 0 {
                continue;
            }
            store((j - 1) % 2, &mut c);
        }
        let u0 = 2 * (j - 1);
        for (i, cu) in c.iter().enumerate().take((units - u0).min(2)) {
            let u = u0 + i;
            let b = u / per_block;
            // SAFETY: the strip holds 16 scales per unit (asserted).
            let dv = unsafe { _mm512_loadu_ps(strip.d.as_ptr().add(16 * u)) };
            fold(&mut acc, cu, dv, &block_scales(&x, b));
        }
    }
    acc
}

/// Tile products of one round into sum tiles `tmm0`, `tmm1` (`set` 0) or `tmm2`,
/// `tmm3` (`set` 1): the unit at activations `a.0` (16 rows 32 bytes apart, as
/// `QActs::tiled` holds them) and weights `w.0` (rows 64 bytes apart), and if `two`
/// the next one, `a.1` activation and `w.1` weight bytes on.
///
/// # Safety
/// The tiles must be configured on this thread; the rows the configuration gives must
/// be readable at both units' addresses.
#[inline]
unsafe fn products<const UNSIGNED: bool>(
    set: usize,
    (a, next): (*const i8, usize),
    (w, uw): (*const u8, usize),
    two: bool,
) {
    macro_rules! round {
        ($op:literal, $c0:literal, $c1:literal) => {
            // SAFETY: forwarded contract.
            unsafe {
                asm!(
                    "tileloadd tmm4, [{a} + {sa} * 1]",
                    "tileloadd tmm6, [{w} + {sw} * 1]",
                    concat!("tilezero ", $c0),
                    concat!($op, " ", $c0, ", tmm4, tmm6"),
                    a = in(reg) a, sa = in(reg) QK, w = in(reg) w, sw = in(reg) 64usize,
                    options(nostack, readonly)
                );
                if two {
                    asm!(
                        "tileloadd tmm5, [{a} + {sa} * 1]",
                        "tileloadd tmm7, [{w} + {sw} * 1]",
                        concat!("tilezero ", $c1),
                        concat!($op, " ", $c1, ", tmm5, tmm7"),
                        a = in(reg) a.add(next), sa = in(reg) QK, w = in(reg) w.add(uw),
                        sw = in(reg) 64usize, options(nostack, readonly)
                    );
                }
            }
        };
    }
    match (UNSIGNED, set) {
        (true, 0) => round!("tdpbsud", "tmm0", "tmm1"),
        (true, _) => round!("tdpbsud", "tmm2", "tmm3"),
        (false, 0) => round!("tdpbssd", "tmm0", "tmm1"),
        (false, _) => round!("tdpbssd", "tmm2", "tmm3"),
    }
}

/// Stores sum tiles `set` (see [`products`]) into `c`.
///
/// # Safety
/// The tiles must be configured on this thread.
#[inline]
unsafe fn store(set: usize, c: &mut [Sums16; 2]) {
    let (c0, c1) = (c[0].0.as_mut_ptr(), c[1].0.as_mut_ptr());
    // SAFETY: each `Sums16` is 16 rows of 64 bytes; tiles configured (caller contract).
    unsafe {
        if set == 0 {
            asm!(
                "tilestored [{c0} + {s} * 1], tmm0",
                "tilestored [{c1} + {s} * 1], tmm1",
                c0 = in(reg) c0, c1 = in(reg) c1, s = in(reg) 64usize, options(nostack)
            );
        } else {
            asm!(
                "tilestored [{c0} + {s} * 1], tmm2",
                "tilestored [{c1} + {s} * 1], tmm3",
                c0 = in(reg) c0, c1 = in(reg) c1, s = in(reg) 64usize, options(nostack)
            );
        }
    }
}
