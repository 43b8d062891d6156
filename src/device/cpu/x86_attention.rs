//! The AVX2 + FMA + F16C attention kernel: f16 keys and values widened with
//! `vcvtph2ps` straight from the cache, each read once for all query heads of the
//! group; eight-lane FMA dot products over four keys at a time; a vector polynomial
//! `exp`; outputs accumulated in registers. `attention::Scalar` reproduces every
//! operation, so results match it bitwise.

use std::arch::x86_64::*;

use half::f16;

use super::attention::{
    AttnScratch, CHUNK, Kern, KvHead, ScoreRule, chunk_sum, drive, softmax_per_head,
};
use super::x86_math::{exp8, hsum};

/// Attention of `rows` query rows' heads; see `attention::attend_rows`.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C; `hd` must be a multiple of 8 and the
/// arguments must satisfy the checks of `attention::attend_rows_with`.
#[target_feature(enable = "avx2,fma,f16c")]
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
    drive::<Avx2>(q, ctx0, rows, kv, hd, rule, out, sc);
}

struct Avx2;

/// Eight f16 values at `p` as f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn load8(p: *const f16) -> __m256 {
    // SAFETY: the caller guarantees 8 values at p.
    unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p.cast())) }
}

/// The horizontal sums of four accumulators (`hsum` of each, in its order of
/// additions) as one vector, by a transposing reduction: halves, then pairs, then the
/// last two, of all four at once.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn reduce4(a: &[__m256; 4]) -> __m128 {
    // [x.lo + x.hi | y.lo + y.hi]: lanes i + i + 4 of two keys.
    let halves = |x: __m256, y: __m256| {
        _mm256_add_ps(
            _mm256_permute2f128_ps::<0x20>(x, y),
            _mm256_permute2f128_ps::<0x31>(x, y),
        )
    };
    let (ab, cd) = (halves(a[0], a[1]), halves(a[2], a[3]));
    // Per 128-bit lane (key a or b with key c or d): (s0 + s2, s1 + s3) of both.
    let z = _mm256_add_ps(
        _mm256_shuffle_ps::<0x44>(ab, cd),
        _mm256_shuffle_ps::<0xEE>(ab, cd),
    );
    // The last two: [a, c, a, c | b, d, b, d].
    let t = _mm256_add_ps(
        _mm256_shuffle_ps::<0x88>(z, z),
        _mm256_shuffle_ps::<0xDD>(z, z),
    );
    _mm_unpacklo_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
}

/// `Kern::exp_sum`'s weights of one head's chunk, stored in place.
///
/// # Safety
/// `s` holds [`CHUNK`] values; `lo <= n <= CHUNK`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn exp_weights(s: &mut [f32], lo: usize, n: usize, max: f32) {
    debug_assert!(lo <= n && n <= CHUNK && s.len() >= CHUNK && CHUNK == 16);
    let m = _mm256_set1_ps(max);
    let (lo_v, n_v) = (_mm256_set1_epi32(lo as i32), _mm256_set1_epi32(n as i32));
    let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let sp = s.as_mut_ptr();
    let half = |at: usize| {
        // SAFETY: at + 8 <= CHUNK values of s.
        unsafe {
            let p = sp.add(at);
            let j = _mm256_add_epi32(idx, _mm256_set1_epi32(at as i32));
            // lo <= j < n
            let keep = _mm256_andnot_si256(_mm256_cmpgt_epi32(lo_v, j), _mm256_cmpgt_epi32(n_v, j));
            let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p), m));
            let e = _mm256_and_ps(e, _mm256_castsi256_ps(keep));
            _mm256_storeu_ps(p, e);
        }
    };
    half(0);
    half(8);
}

/// Transposes the 8 x 8 matrix whose rows are `r` in place (`r[j]` lane `i` becomes
/// what `r[i]` lane `j` was): pairs of rows interleaved, pairs of pairs, then the
/// 128-bit halves (24 shuffles).
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(r: &mut [__m256; 8]) {
    let t: [__m256; 8] = std::array::from_fn(|i| {
        let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // u[4g + c], 128-bit half L: element 4L + c of rows 4g..4g + 4.
    let mut u = [_mm256_setzero_ps(); 8];
    for g in 0..2 {
        let (x0, x1, y0, y1) = (t[4 * g], t[4 * g + 1], t[4 * g + 2], t[4 * g + 3]);
        u[4 * g] = _mm256_shuffle_ps::<0x44>(x0, y0);
        u[4 * g + 1] = _mm256_shuffle_ps::<0xEE>(x0, y0);
        u[4 * g + 2] = _mm256_shuffle_ps::<0x44>(x1, y1);
        u[4 * g + 3] = _mm256_shuffle_ps::<0xEE>(x1, y1);
    }
    for c in 0..4 {
        r[c] = _mm256_permute2f128_ps::<0x20>(u[c], u[4 + c]);
        r[4 + c] = _mm256_permute2f128_ps::<0x31>(u[c], u[4 + c]);
    }
}

/// Scores of `H` heads (`q`, `[H, hd]`) against the keys at `offs`; `s` is `[H, CHUNK]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn scores_h<const H: usize>(
    q: *const f32,
    k: *const f16,
    offs: &[usize],
    hd: usize,
    scale: f32,
    s: *mut f32,
) {
    let n = offs.len();
    let mut j = 0;
    // SAFETY (all accesses): q holds H rows of hd, key rows hold hd values at their
    // offsets, s holds H rows of CHUNK >= n (caller contract).
    unsafe {
        while j + 4 <= n {
            let kp: [*const f16; 4] = std::array::from_fn(|i| k.add(offs[j + i]));
            let mut acc = [[_mm256_setzero_ps(); 4]; H];
            for c in (0..hd).step_by(8) {
                let qv: [__m256; H] = std::array::from_fn(|h| _mm256_loadu_ps(q.add(h * hd + c)));
                for i in 0..4 {
                    let kv = load8(kp[i].add(c));
                    for h in 0..H {
                        acc[h][i] = _mm256_fmadd_ps(qv[h], kv, acc[h][i]);
                    }
                }
            }
            for (h, row) in acc.iter().enumerate() {
                let sc = _mm_mul_ps(reduce4(row), _mm_set1_ps(scale));
                _mm_storeu_ps(s.add(h * CHUNK + j), sc);
            }
            j += 4;
        }
        while j < n {
            let kp = k.add(offs[j]);
            let mut acc = [_mm256_setzero_ps(); H];
            for c in (0..hd).step_by(8) {
                let kv = load8(kp.add(c));
                for (h, a) in acc.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(_mm256_loadu_ps(q.add(h * hd + c)), kv, *a);
                }
            }
            for (h, a) in acc.iter().enumerate() {
                *s.add(h * CHUNK + j) = hsum(*a) * scale;
            }
            j += 1;
        }
    }
}

/// `o_h = o_h * alpha[h] + sum_j p[h * CHUNK + j] * value j` for `H` heads, over
/// columns `c0..c0 + 8 W` (accumulators in registers across all keys).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pv_hw<const H: usize, const W: usize>(
    p: *const f32,
    v: *const f16,
    offs: &[usize],
    alpha: &[f32],
    o: *mut f32,
    hd: usize,
    c0: usize,
) {
    // SAFETY (all accesses): as in `scores_h`; c0 + 8 W <= hd; o is [H, hd].
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); W]; H];
        for (h, a) in acc.iter_mut().enumerate() {
            let al = _mm256_set1_ps(alpha[h]);
            for (w, x) in a.iter_mut().enumerate() {
                *x = _mm256_mul_ps(_mm256_loadu_ps(o.add(h * hd + c0 + 8 * w)), al);
            }
        }
        for (j, &at) in offs.iter().enumerate() {
            let vv: [__m256; W] = std::array::from_fn(|w| load8(v.add(at + c0 + 8 * w)));
            for (h, a) in acc.iter_mut().enumerate() {
                let pj = _mm256_set1_ps(*p.add(h * CHUNK + j));
                for (x, vw) in a.iter_mut().zip(&vv) {
                    *x = _mm256_fmadd_ps(pj, *vw, *x);
                }
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (w, x) in a.iter().enumerate() {
                _mm256_storeu_ps(o.add(h * hd + c0 + 8 * w), *x);
            }
        }
    }
}

/// [`pv_hw`] over all columns: `W`-vector strips, then single vectors.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pv_h<const H: usize, const W: usize>(
    p: *const f32,
    v: *const f16,
    offs: &[usize],
    alpha: &[f32],
    o: *mut f32,
    hd: usize,
) {
    let mut c0 = 0;
    // SAFETY: forwarded contract; every strip lies within hd.
    unsafe {
        while c0 + 8 * W <= hd {
            pv_hw::<H, W>(p, v, offs, alpha, o, hd, c0);
            c0 += 8 * W;
        }
        while c0 < hd {
            pv_hw::<H, 1>(p, v, offs, alpha, o, hd, c0);
            c0 += 8;
        }
    }
}

impl Kern for Avx2 {
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scores(q: &[f32], k: &[f16], offs: &[usize], hd: usize, scale: f32, s: &mut [f32]) {
        let g = q.len() / hd;
        debug_assert!(hd.is_multiple_of(8) && s.len() >= g * CHUNK && offs.len() <= CHUNK);
        let (qp, kp, sp) = (q.as_ptr(), k.as_ptr(), s.as_mut_ptr());
        let mut h = 0;
        // SAFETY: heads h..h + H exist; the caller guarantees the key rows.
        unsafe {
            while h < g {
                let (qh, sh) = (qp.add(h * hd), sp.add(h * CHUNK));
                match g - h {
                    1 => scores_h::<1>(qh, kp, offs, hd, scale, sh),
                    2 => scores_h::<2>(qh, kp, offs, hd, scale, sh),
                    _ => scores_h::<3>(qh, kp, offs, hd, scale, sh),
                }
                h += (g - h).min(3);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn max(s: &[f32]) -> f32 {
        debug_assert!(s.len() >= CHUNK && CHUNK == 16);
        // SAFETY: s holds CHUNK = 16 values.
        unsafe {
            let m = _mm256_max_ps(
                _mm256_loadu_ps(s.as_ptr()),
                _mm256_loadu_ps(s.as_ptr().add(8)),
            );
            let m4 = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)))
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn exp_sum(s: &mut [f32], lo: usize, n: usize, max: f32) -> f32 {
        // SAFETY: s holds CHUNK values.
        unsafe {
            exp_weights(s, lo, n, max);
            chunk_sum(&*s.as_ptr().cast::<[f32; CHUNK]>())
        }
    }

    /// Eight heads at a time (when there are eight or more), on their scores
    /// transposed to one vector per key (two 8 x 8 blocks: keys 0-7 and 8-15): the
    /// maxima are vertical, each key's weights one `exp8` for eight heads, the sums
    /// vertical adds in key order (`chunk_sum`'s), the weights transposed back. Lane for
    /// lane what `softmax_per_head` does.
    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
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
            // SAFETY: forwarded contract.
            return unsafe { softmax_per_head::<Self>(s, lo, n, m, l, alpha) };
        }
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        for h0 in (0..g).step_by(8) {
            let k = (g - h0).min(8);
            // SAFETY: heads h0..h0 + k exist (only they are loaded and stored), each
            // with CHUNK = 16 scores.
            unsafe {
                let sp = s.as_mut_ptr().add(h0 * CHUNK);
                let (mut a, mut b) = ([neg_inf; 8], [neg_inf; 8]);
                for h in 0..k {
                    a[h] = _mm256_loadu_ps(sp.add(h * CHUNK));
                    b[h] = _mm256_loadu_ps(sp.add(h * CHUNK + 8));
                }
                transpose8(&mut a);
                transpose8(&mut b);
                let cmax = a[1..]
                    .iter()
                    .chain(&b)
                    .fold(a[0], |x, &y| _mm256_max_ps(x, y));
                let mut state = [[f32::NEG_INFINITY; 8], [0.0; 8]];
                state[0][..k].copy_from_slice(&m[h0..h0 + k]);
                state[1][..k].copy_from_slice(&l[h0..h0 + k]);
                let m_old = _mm256_loadu_ps(state[0].as_ptr());
                let m_new = _mm256_max_ps(m_old, cmax);
                let first = _mm256_cmp_ps::<_CMP_EQ_OQ>(m_old, neg_inf);
                let al = _mm256_andnot_ps(first, exp8(_mm256_sub_ps(m_old, m_new)));
                // Masked keys weigh +0, which `chunk_sum` adds as well.
                let mut sums = _mm256_setzero_ps();
                for (j, x) in a.iter_mut().chain(b.iter_mut()).enumerate() {
                    *x = if (lo..n).contains(&j) {
                        exp8(_mm256_sub_ps(*x, m_new))
                    } else {
                        _mm256_setzero_ps()
                    };
                    sums = _mm256_add_ps(sums, *x);
                }
                transpose8(&mut a);
                transpose8(&mut b);
                for h in 0..k {
                    _mm256_storeu_ps(sp.add(h * CHUNK), a[h]);
                    _mm256_storeu_ps(sp.add(h * CHUNK + 8), b[h]);
                }
                let l_new =
                    _mm256_add_ps(_mm256_mul_ps(_mm256_loadu_ps(state[1].as_ptr()), al), sums);
                let mut out = [[0f32; 8]; 3];
                _mm256_storeu_ps(out[0].as_mut_ptr(), m_new);
                _mm256_storeu_ps(out[1].as_mut_ptr(), l_new);
                _mm256_storeu_ps(out[2].as_mut_ptr(), al);
                m[h0..h0 + k].copy_from_slice(&out[0][..k]);
                l[h0..h0 + k].copy_from_slice(&out[1][..k]);
                alpha[h0..h0 + k].copy_from_slice(&out[2][..k]);
            }
        }
    }

    #[inline]
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn pv(p: &[f32], v: &[f16], offs: &[usize], alpha: &[f32], o: &mut [f32]) {
        let g = alpha.len();
        let hd = o.len() / g;
        debug_assert!(hd.is_multiple_of(8) && p.len() >= g * CHUNK);
        let (pp, vp, op) = (p.as_ptr(), v.as_ptr(), o.as_mut_ptr());
        let mut h = 0;
        // SAFETY: heads h..h + H exist; the caller guarantees the value rows.
        unsafe {
            while h < g {
                let (ph, oh, al) = (pp.add(h * CHUNK), op.add(h * hd), &alpha[h..]);
                match g - h {
                    1 => pv_h::<1, 8>(ph, vp, offs, al, oh, hd),
                    2 => pv_h::<2, 4>(ph, vp, offs, al, oh, hd),
                    _ => pv_h::<3, 2>(ph, vp, offs, al, oh, hd),
                }
                h += (g - h).min(3);
            }
        }
    }
}
