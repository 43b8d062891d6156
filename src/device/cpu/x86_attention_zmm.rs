//! The AVX-512 attention kernel: the AVX2 kernel's arithmetic on 512-bit vectors, so
//! results stay bit-identical to `attention::Scalar` (and to the AVX2 kernel).
//!
//! - Scores: a zmm holds two keys' eight-lane partial dot products (lanes 0-7 key `j`,
//!   8-15 key `j + 1`; the query's eight values broadcast to both halves), so each
//!   lane runs exactly the AVX2 kernel's FMA chain. A chunk's 16 keys are 8 such
//!   accumulators per head; their horizontal sums are taken together by a transposing
//!   reduction that adds in `math::hsum8`'s order (halves, then pairs, then the last
//!   two) and lands all 16 scores in one register.
//! - Softmax: the polynomial `exp` on 16 lanes (`math::exp_scalar` per lane); with
//!   eight or more heads, 16 heads at a time on their scores transposed to one vector
//!   per key (`transpose16`), so maxima and key-order sums are vertical operations.
//! - P·V: outputs in 16-column strips held in registers across the chunk's keys.
//! - Many heads (the rows of a prefill handed over together, `attention::attend_rows`):
//!   heads go in blocks of three either way; with more than three, the chunk's keys
//!   and values are first widened to f32 into a stage on the stack, so each is
//!   converted once for all heads instead of once per block. The arithmetic per head
//!   is the same, so staged and direct results are identical.
//!
//! Needs AVX-512 F plus AVX2, FMA and F16C; head widths a multiple of 16.

use std::arch::x86_64::*;

use half::f16;

use super::attention::{
    AttnScratch, CHUNK, Kern, KvHead, ScoreRule, chunk_sum, drive, softmax_per_head,
};
use super::math::{EXP_HI, EXP_LO, EXP_P, LN2_HI, LN2_LO, LOG2E};

/// Attention of `rows` query rows' heads; see `attention::attend_rows`.
///
/// # Safety
/// The CPU must support AVX-512 F, AVX2, FMA and F16C; `hd` must be a multiple of 16
/// and the arguments must satisfy the checks of `attention::attend_rows_with`.
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn attend(
    q: &[f32],
    ctx0: usize,
    rows: usize,
    kv: &KvHead<'_>,
    hd: usize,
    rule: ScoreRule,
    out: &mut [f32],
    sc: &mut AttnScratch,
) {
    drive::<Avx512>(q, ctx0, rows, kv, hd, rule, out, sc);
}

struct Avx512;

/// Sixteen lanes of `math::exp_scalar` (lane for lane `x86_math::exp8`).
#[inline]
#[target_feature(enable = "avx512f")]
fn exp16(x: __m512) -> __m512 {
    let x = _mm512_max_ps(
        _mm512_set1_ps(EXP_LO),
        _mm512_min_ps(x, _mm512_set1_ps(EXP_HI)),
    );
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_HI), x);
    let r = _mm512_fmadd_ps(n, _mm512_set1_ps(-LN2_LO), r);
    let mut p = _mm512_set1_ps(EXP_P[0]);
    for &c in &EXP_P[1..] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_add_ps(
        _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r),
        _mm512_set1_ps(1.0),
    );
    let e = _mm512_slli_epi32::<23>(_mm512_add_epi32(
        _mm512_cvtps_epi32(n),
        _mm512_set1_epi32(127),
    ));
    _mm512_mul_ps(y, _mm512_castsi512_ps(e))
}

/// Sixteen f16 values at `p` as f32.
#[inline]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn load16(p: *const f16) -> __m512 {
    // SAFETY: the caller guarantees 16 values at p.
    unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
}

/// Eight f16 values at `a` (lanes 0-7) and eight at `b` (lanes 8-15) as f32.
#[inline]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn load8x2(a: *const f16, b: *const f16) -> __m512 {
    // SAFETY: the caller guarantees 8 values at a and at b.
    unsafe {
        let lo = _mm256_castsi128_si256(_mm_loadu_si128(a.cast()));
        _mm512_cvtph_ps(_mm256_inserti128_si256::<1>(lo, _mm_loadu_si128(b.cast())))
    }
}

/// The 16 scores of one head from its 8 two-key accumulators (`acc[i]` holds keys
/// `2i` and `2i + 1`), each the eight-lane sum in `math::hsum8`'s order, in key order.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(acc: &[__m512; 8]) -> __m512 {
    // Per 128-bit lane L of a key's half, v[i] + v[i + 4]: four keys per vector.
    let halves = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0x88>(a, b),
            _mm512_shuffle_f32x4::<0xDD>(a, b),
        )
    };
    let y: [__m512; 4] = std::array::from_fn(|i| halves(acc[2 * i], acc[2 * i + 1]));
    // (s0 + s2, s1 + s3) of two vectors' keys side by side in each 128-bit lane.
    let pairs = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_ps::<0x44>(a, b),
            _mm512_shuffle_ps::<0xEE>(a, b),
        )
    };
    let (z0, z1) = (pairs(y[0], y[1]), pairs(y[2], y[3]));
    // The last two: lane 4 i + t holds key 4 t + i.
    let r = _mm512_add_ps(
        _mm512_shuffle_ps::<0x88>(z0, z1),
        _mm512_shuffle_ps::<0xDD>(z0, z1),
    );
    let idx = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    _mm512_permutexvar_ps(idx, r)
}

/// Transposes the 16 x 16 matrix whose rows are `r` in place (`r[j]` lane `i` becomes
/// what `r[i]` lane `j` was): pairs of rows interleaved, then pairs of pairs, then the
/// 128-bit lanes of four rows at a time (64 shuffles).
#[inline]
#[target_feature(enable = "avx512f")]
fn transpose16(r: &mut [__m512; 16]) {
    // a[2i], a[2i + 1]: rows 2i and 2i + 1 interleaved (elements 0, 1 and 2, 3 of each
    // 128-bit lane).
    let mut a = [_mm512_setzero_ps(); 16];
    for i in 0..8 {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // b[4i + c], 128-bit lane L: element 4L + c of rows 4i..4i + 4.
    let pd = _mm512_castps_pd;
    let ps = _mm512_castpd_ps;
    let mut b = [_mm512_setzero_ps(); 16];
    for i in 0..4 {
        let (x0, x1, y0, y1) = (a[4 * i], a[4 * i + 1], a[4 * i + 2], a[4 * i + 3]);
        b[4 * i] = ps(_mm512_unpacklo_pd(pd(x0), pd(y0)));
        b[4 * i + 1] = ps(_mm512_unpackhi_pd(pd(x0), pd(y0)));
        b[4 * i + 2] = ps(_mm512_unpacklo_pd(pd(x1), pd(y1)));
        b[4 * i + 3] = ps(_mm512_unpackhi_pd(pd(x1), pd(y1)));
    }
    // Column 4L + c: lane L of b[c], b[4 + c], b[8 + c], b[12 + c] side by side.
    for c in 0..4 {
        let lo01 = _mm512_shuffle_f32x4::<0x44>(b[c], b[4 + c]);
        let hi01 = _mm512_shuffle_f32x4::<0xEE>(b[c], b[4 + c]);
        let lo23 = _mm512_shuffle_f32x4::<0x44>(b[8 + c], b[12 + c]);
        let hi23 = _mm512_shuffle_f32x4::<0xEE>(b[8 + c], b[12 + c]);
        r[c] = _mm512_shuffle_f32x4::<0x88>(lo01, lo23);
        r[4 + c] = _mm512_shuffle_f32x4::<0xDD>(lo01, lo23);
        r[8 + c] = _mm512_shuffle_f32x4::<0x88>(hi01, hi23);
        r[12 + c] = _mm512_shuffle_f32x4::<0xDD>(hi01, hi23);
    }
}

/// Keys per widening stage of [`Kern::scores`]: the chunk's key pairs for all of
/// `hd` as f32 (`[8 pairs][hd / 8]` vectors), so each is converted once for every head.
const STAGE_PAIRS: usize = CHUNK / 2;
/// The widest head the staged kernels take (16 KiB of stack per stage).
const STAGE_HD: usize = 256;

/// Scores of `H` heads (`q`, `[H, hd]`) against the chunk's `n` keys, the key pair
/// vector of pair `i` and eight-value step `c` given by `keys(i, c)` (missing keys
/// are computed on key 0 and not stored); `s` is `[H, CHUNK]`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn scores_h<const H: usize>(
    q: *const f32,
    keys: impl Fn(usize, usize) -> __m512,
    n: usize,
    hd: usize,
    scale: f32,
    s: *mut f32,
) {
    debug_assert!((1..=CHUNK).contains(&n) && CHUNK == 16);
    // SAFETY (all accesses): q holds H rows of hd, s holds H rows of CHUNK; `keys`
    // reads only what its caller vouches for.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 8]; H];
        for c in 0..hd / 8 {
            let qv: [__m512; H] = std::array::from_fn(|h| {
                let x = _mm512_castps256_ps512(_mm256_loadu_ps(q.add(h * hd + 8 * c)));
                _mm512_shuffle_f32x4::<0x44>(x, x)
            });
            for i in 0..8 {
                let kv = keys(i, c);
                for (a, qh) in acc.iter_mut().zip(&qv) {
                    a[i] = _mm512_fmadd_ps(*qh, kv, a[i]);
                }
            }
        }
        let keep: __mmask16 = if n == CHUNK { !0 } else { (1 << n) - 1 };
        for (h, a) in acc.iter().enumerate() {
            let sc = _mm512_mul_ps(reduce16(a), _mm512_set1_ps(scale));
            _mm512_mask_storeu_ps(s.add(h * CHUNK), keep, sc);
        }
    }
}

/// [`scores_h`] for heads `0..g` of `q` in blocks of up to three.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn scores_all(
    q: *const f32,
    g: usize,
    keys: impl Fn(usize, usize) -> __m512 + Copy,
    n: usize,
    hd: usize,
    scale: f32,
    s: *mut f32,
) {
    let mut h = 0;
    // SAFETY: heads h..h + H exist; forwarded contract otherwise.
    unsafe {
        while h < g {
            let (qh, sh) = (q.add(h * hd), s.add(h * CHUNK));
            match g - h {
                1 => scores_h::<1>(qh, keys, n, hd, scale, sh),
                2 => scores_h::<2>(qh, keys, n, hd, scale, sh),
                _ => scores_h::<3>(qh, keys, n, hd, scale, sh),
            }
            h += (g - h).min(3);
        }
    }
}

/// `o_h = o_h * alpha[h] + sum_j p[h * CHUNK + j] * value j` for `H` heads over
/// columns `c0..c0 + 16 W` (accumulators in registers across all keys), the 16
/// values of key `j` from column `c` given by `vals(j, c)`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn pv_hw<const H: usize, const W: usize>(
    p: *const f32,
    vals: impl Fn(usize, usize) -> __m512,
    n: usize,
    alpha: &[f32],
    o: *mut f32,
    hd: usize,
    c0: usize,
) {
    // SAFETY (all accesses): c0 + 16 W <= hd; o is [H, hd]; p is [H, CHUNK]; `vals`
    // reads only what its caller vouches for.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); W]; H];
        for (h, a) in acc.iter_mut().enumerate() {
            let al = _mm512_set1_ps(alpha[h]);
            for (w, x) in a.iter_mut().enumerate() {
                *x = _mm512_mul_ps(_mm512_loadu_ps(o.add(h * hd + c0 + 16 * w)), al);
            }
        }
        for j in 0..n {
            let vv: [__m512; W] = std::array::from_fn(|w| vals(j, c0 + 16 * w));
            for (h, a) in acc.iter_mut().enumerate() {
                let pj = _mm512_set1_ps(*p.add(h * CHUNK + j));
                for (x, vw) in a.iter_mut().zip(&vv) {
                    *x = _mm512_fmadd_ps(pj, *vw, *x);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (w, x) in a.iter().enumerate() {
                _mm512_storeu_ps(o.add(h * hd + c0 + 16 * w), *x);
            }
        }
    }
}

/// [`pv_hw`] over all columns: `W`-vector strips, then single vectors.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn pv_h<const H: usize, const W: usize>(
    p: *const f32,
    vals: impl Fn(usize, usize) -> __m512 + Copy,
    n: usize,
    alpha: &[f32],
    o: *mut f32,
    hd: usize,
) {
    let mut c0 = 0;
    // SAFETY: forwarded contract; every strip lies within hd.
    unsafe {
        while c0 + 16 * W <= hd {
            pv_hw::<H, W>(p, vals, n, alpha, o, hd, c0);
            c0 += 16 * W;
        }
        while c0 < hd {
            pv_hw::<H, 1>(p, vals, n, alpha, o, hd, c0);
            c0 += 16;
        }
    }
}

/// [`pv_h`] for heads `0..g` of `o` in blocks of up to three.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma,f16c")]
unsafe fn pv_all(
    p: *const f32,
    vals: impl Fn(usize, usize) -> __m512 + Copy,
    n: usize,
    alpha: &[f32],
    o: *mut f32,
    hd: usize,
) {
    let g = alpha.len();
    let mut h = 0;
    // SAFETY: heads h..h + H exist; forwarded contract otherwise.
    unsafe {
        while h < g {
            let (ph, oh, al) = (p.add(h * CHUNK), o.add(h * hd), &alpha[h..]);
            match g - h {
                1 => pv_h::<1, 4>(ph, vals, n, al, oh, hd),
                2 => pv_h::<2, 4>(ph, vals, n, al, oh, hd),
                _ => pv_h::<3, 4>(ph, vals, n, al, oh, hd),
            }
            h += (g - h).min(3);
        }
    }
}

impl Kern for Avx512 {
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn scores(q: &[f32], k: &[f16], offs: &[usize], hd: usize, scale: f32, s: &mut [f32]) {
        let (g, n) = (q.len() / hd, offs.len());
        debug_assert!(hd.is_multiple_of(16) && s.len() >= g * CHUNK && n <= CHUNK);
        let (qp, kp, sp) = (q.as_ptr(), k.as_ptr(), s.as_mut_ptr());
        // SAFETY: the caller guarantees the key rows at `offs`; missing keys of a short
        // chunk read key 0 (not stored).
        unsafe {
            let rows: [*const f16; CHUNK] =
                std::array::from_fn(|j| kp.add(offs[if j < n { j } else { 0 }]));
            let pair = move |i: usize, c: usize| {
                load8x2(rows[2 * i].add(8 * c), rows[2 * i + 1].add(8 * c))
            };
            if g <= 3 || hd > STAGE_HD {
                scores_all(qp, g, pair, n, hd, scale, sp);
                return;
            }
            // More heads than one block of three: widen the chunk's keys once.
            let nc = hd / 8;
            let mut stage =
                [const { std::mem::MaybeUninit::<__m512>::uninit() }; STAGE_PAIRS * STAGE_HD / 8];
            for i in 0..STAGE_PAIRS {
                for c in 0..nc {
                    stage[i * nc + c].write(pair(i, c));
                }
            }
            let st = stage.as_ptr().cast::<__m512>();
            let staged = move |i: usize, c: usize| *st.add(i * nc + c);
            scores_all(qp, g, staged, n, hd, scale, sp);
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn max(s: &[f32]) -> f32 {
        debug_assert!(s.len() >= CHUNK && CHUNK == 16);
        // SAFETY: s holds CHUNK = 16 values.
        unsafe { _mm512_reduce_max_ps(_mm512_loadu_ps(s.as_ptr())) }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn exp_sum(s: &mut [f32], lo: usize, n: usize, max: f32) -> f32 {
        debug_assert!(lo <= n && n <= CHUNK && s.len() >= CHUNK && CHUNK == 16);
        // Lanes lo <= j < n.
        let keep: __mmask16 = (((1u32 << n) - 1) & !((1u32 << lo) - 1)) as __mmask16;
        // SAFETY: s holds CHUNK = 16 values.
        unsafe {
            let x = _mm512_loadu_ps(s.as_ptr());
            let e = _mm512_maskz_mov_ps(keep, exp16(_mm512_sub_ps(x, _mm512_set1_ps(max))));
            _mm512_storeu_ps(s.as_mut_ptr(), e);
            chunk_sum(&*s.as_ptr().cast::<[f32; CHUNK]>())
        }
    }

    /// Sixteen heads at a time (when there are eight or more), on their scores
    /// transposed to one vector per key (lane `h`: head `h`): the maxes are vertical
    /// maxima, each key's weights one `exp16` for all heads, the sums vertical adds in
    /// key order (what `chunk_sum` does per head), and the weights are transposed back.
    /// Lane for lane what `softmax_per_head` does, with no dependent chain per head.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn softmax(
        s: &mut [f32],
        lo: usize,
        n: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        let g = m.len();
        debug_assert!(lo <= n && n <= CHUNK && s.len() >= g * CHUNK && l.len() == g);
        if g < 8 {
            // A decode's few heads: the vectors would be mostly empty.
            // SAFETY: forwarded contract.
            return unsafe { softmax_per_head::<Self>(s, lo, n, m, l, alpha) };
        }
        let neg_inf = _mm512_set1_ps(f32::NEG_INFINITY);
        for h0 in (0..g).step_by(16) {
            let k = (g - h0).min(16);
            let lanes: __mmask16 = ((1u32 << k) - 1) as __mmask16;
            // SAFETY: heads h0..h0 + k exist (only they are loaded and stored), each
            // with CHUNK scores.
            unsafe {
                let sp = s.as_mut_ptr().add(h0 * CHUNK);
                let mut t = [neg_inf; 16];
                for (h, row) in t.iter_mut().enumerate().take(k) {
                    *row = _mm512_loadu_ps(sp.add(h * CHUNK));
                }
                transpose16(&mut t);
                let cmax = t[1..].iter().fold(t[0], |a, &x| _mm512_max_ps(a, x));
                let m_old = _mm512_mask_loadu_ps(neg_inf, lanes, m.as_ptr().add(h0));
                let m_new = _mm512_max_ps(m_old, cmax);
                let first = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(m_old, neg_inf);
                let al = _mm512_maskz_mov_ps(!first, exp16(_mm512_sub_ps(m_old, m_new)));
                // Masked keys weigh +0, which `chunk_sum` adds as well.
                let mut sums = _mm512_setzero_ps();
                for (j, x) in t.iter_mut().enumerate() {
                    *x = if (lo..n).contains(&j) {
                        exp16(_mm512_sub_ps(*x, m_new))
                    } else {
                        _mm512_setzero_ps()
                    };
                    sums = _mm512_add_ps(sums, *x);
                }
                transpose16(&mut t);
                for (h, row) in t.iter().enumerate().take(k) {
                    _mm512_storeu_ps(sp.add(h * CHUNK), *row);
                }
                let l_old = _mm512_maskz_loadu_ps(lanes, l.as_ptr().add(h0));
                let l_new = _mm512_add_ps(_mm512_mul_ps(l_old, al), sums);
                _mm512_mask_storeu_ps(l.as_mut_ptr().add(h0), lanes, l_new);
                _mm512_mask_storeu_ps(m.as_mut_ptr().add(h0), lanes, m_new);
                _mm512_mask_storeu_ps(alpha.as_mut_ptr().add(h0), lanes, al);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma,f16c")]
    unsafe fn pv(p: &[f32], v: &[f16], offs: &[usize], alpha: &[f32], o: &mut [f32]) {
        let (g, n) = (alpha.len(), offs.len());
        let hd = o.len() / g;
        debug_assert!(hd.is_multiple_of(16) && p.len() >= g * CHUNK && n <= CHUNK);
        let (pp, vp, op) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr());
        // SAFETY: the caller guarantees the value rows at `offs`.
        unsafe {
            let direct = move |j: usize, c: usize| load16(vp.add(*offs.get_unchecked(j) + c));
            if g <= 3 || hd > STAGE_HD {
                pv_all(pp, direct, n, alpha, op, hd);
                return;
            }
            // More heads than one block of three: widen the chunk's values once.
            let mut stage =
                [const { std::mem::MaybeUninit::<__m512>::uninit() }; CHUNK * STAGE_HD / 16];
            let per = hd / 16;
            for j in 0..n {
                for c in 0..per {
                    stage[j * per + c].write(direct(j, 16 * c));
                }
            }
            let st = stage.as_ptr().cast::<__m512>();
            let staged = move |j: usize, c: usize| *st.add(j * per + c / 16);
            pv_all(pp, staged, n, alpha, op, hd);
        }
    }
}
