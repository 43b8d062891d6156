//! Quantization of f32 activation rows to 8-bit blocks of 32, as ggml's x86 kernels for
//! `quantize_row_q8_1` / `quantize_row_q8_0` do it (round half to even), with AVX2
//! where the CPU has it and a bit-identical portable version.

use half::f16;

use super::isa::Isa;

/// Values per quantization block.
pub(crate) const QK: usize = 32;

/// How the per-block sums `d * sum(q)` (the offset term of 4-bit weights) are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sums {
    /// Not needed (signed 8-bit weights).
    None,
    /// Rounded through f16, as ggml's `block_q8_1` stores them (Q4_1).
    F16,
    /// Exact f32 (Q4_0, Q4_K, Q5_K, whose offsets ggml applies in integers or f32).
    F32,
    /// Exact f32 per 16 values, two per block (Q2_K's offsets per 16).
    F32Halves,
}

impl Sums {
    /// Sums kept per block.
    pub(crate) fn per_block(self) -> usize {
        match self {
            Sums::None => 0,
            Sums::F16 | Sums::F32 => 1,
            Sums::F32Halves => 2,
        }
    }
}

/// A batch of activation rows quantized to blocks of 32 `i8` with one scale each.
pub(crate) struct QActs {
    /// Blocks per row (`k / 32`).
    pub nb: usize,
    /// Quantized values, `m * k`, row-major; each in `-127..=127`.
    pub qs: Vec<i8>,
    /// Per-block scale `d` (rounded through f16, as ggml stores it), `m * nb`.
    pub d: Vec<f32>,
    /// Per-block `d * sum(q)` as [`Sums`] says: `m * nb * sums.per_block()` (two per
    /// block, halves in order, for [`Sums::F32Halves`]).
    pub s: Vec<f32>,
    /// Exact `sum(q)` of each half block (16 values), `m * nb * 2`: what the 512-bit
    /// kernels take back after multiplying 8-bit weights biased by 128.
    pub isum: Vec<i32>,
    /// The same values for AMX tile loads, empty unless [`Self::tile`] filled it: for
    /// tiles of `rows` rows, rows `rows * t..rows * (t + 1)` block `b` as `rows` x 32
    /// contiguous bytes at `(t * nb + b) * rows * 32`, for every whole tile (rows of a
    /// last partial tile are left out).
    pub tiled: Vec<i8>,
}

impl QActs {
    /// Quantizes `m` rows of `k` values (`k` a multiple of 32), on the detected ISA.
    #[cfg(test)]
    pub fn quantize(x: &[f32], m: usize, k: usize, sums: Sums) -> Self {
        Self::quantize_with(Isa::detect(), x, m, k, sums)
    }

    /// [`Self::quantize`] with the chosen kernel. Prefill-sized batches are split
    /// into row ranges quantized in parallel (each block's result depends only on its
    /// own values, so the split changes nothing).
    pub(crate) fn quantize_with(isa: Isa, x: &[f32], m: usize, k: usize, sums: Sums) -> Self {
        assert_eq!(x.len(), m * k, "activation length");
        assert!(k.is_multiple_of(QK), "k must be a multiple of 32");
        let nb = k / QK;
        let per = sums.per_block();
        let mut qs = vec![0i8; m * k];
        let mut d = vec![0f32; m * nb];
        let mut s = vec![0f32; m * nb * per];
        let mut isum = vec![0i32; m * nb * 2];
        let threads = rayon::current_num_threads();
        if m * k < PAR_MIN_VALUES || threads == 1 || m < 2 {
            quantize_rows(isa, x, &mut qs, &mut d, &mut s, &mut isum, sums);
        } else {
            use rayon::prelude::*;
            // Row ranges of about a quarter of a thread's share each.
            let rows = m.div_ceil(4 * threads);
            let mut parts = Vec::with_capacity(m.div_ceil(rows));
            let (mut xr, mut qr, mut dr) = (x, &mut qs[..], &mut d[..]);
            let (mut sr, mut ir) = (&mut s[..], &mut isum[..]);
            for r0 in (0..m).step_by(rows) {
                let n = rows.min(m - r0);
                let (xa, xb) = xr.split_at(n * k);
                let (qa, qb) = std::mem::take(&mut qr).split_at_mut(n * k);
                let (da, db) = std::mem::take(&mut dr).split_at_mut(n * nb);
                let (sa, sb) = std::mem::take(&mut sr).split_at_mut(n * nb * per);
                let (ia, ib) = std::mem::take(&mut ir).split_at_mut(n * nb * 2);
                parts.push((xa, qa, da, sa, ia));
                (xr, qr, dr, sr, ir) = (xb, qb, db, sb, ib);
            }
            parts
                .into_par_iter()
                .for_each(|(x, qs, d, s, isum)| quantize_rows(isa, x, qs, d, s, isum, sums));
        }
        Self {
            nb,
            qs,
            d,
            s,
            isum,
            tiled: Vec::new(),
        }
    }

    /// Fills [`Self::tiled`] for the whole `rows`-row tiles of the batch: one
    /// contiguous tile per block (512 bytes for AMX's 16 rows), so a tile load reads
    /// consecutive cache lines instead of rows a row length apart (which, for a
    /// power-of-two length, all fall in one L1 set).
    pub(crate) fn tile(&mut self, rows: usize) {
        let k = self.nb * QK;
        let tiles = self.qs.len() / k / rows;
        self.tiled = vec![0; tiles * rows * k];
        for (t, tile) in self.tiled.chunks_exact_mut(rows * k).enumerate() {
            for (b, block) in tile.chunks_exact_mut(rows * QK).enumerate() {
                for (r, dst) in block.chunks_exact_mut(QK).enumerate() {
                    let at = (t * rows + r) * k + b * QK;
                    dst.copy_from_slice(&self.qs[at..at + QK]);
                }
            }
        }
    }
}

/// Values below which a batch is quantized on the calling thread alone.
const PAR_MIN_VALUES: usize = 1 << 16;

/// Quantizes the whole rows `x` into their blocks' values `qs`, scales `d`, sums `s`
/// (as `sums` says) and half-block integer sums `isum` (see [`QActs`]).
fn quantize_rows(
    isa: Isa,
    x: &[f32],
    qs: &mut [i8],
    d: &mut [f32],
    s: &mut [f32],
    isum: &mut [i32],
    sums: Sums,
) {
    for (bi, (xb, qb)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
        let xb: &[f32; QK] = xb.try_into().expect("block of 32");
        let qb: &mut [i8; QK] = qb.try_into().expect("block of 32");
        let (scale, sum) = match isa {
            // SAFETY: Avx2 is only detected on CPUs with AVX2 and FMA.
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { x86::block(xb, qb) },
            _ => block(xb, qb),
        };
        let d16 = f16::from_f32(scale).to_f32();
        d[bi] = d16;
        for (h, half) in qb.chunks_exact(QK / 2).enumerate() {
            isum[2 * bi + h] = half.iter().map(|&q| i32::from(q)).sum();
        }
        match sums {
            Sums::None => {}
            Sums::F16 => s[bi] = f16::from_f32(sum as f32 * scale).to_f32(),
            Sums::F32 => s[bi] = sum as f32 * d16,
            Sums::F32Halves => {
                for h in 0..2 {
                    s[2 * bi + h] = isum[2 * bi + h] as f32 * d16;
                }
            }
        }
    }
}

/// Quantizes one block: `q = round_half_even(v * 127 / amax)`; returns the scale
/// `amax / 127` and `sum(q)`.
fn block(xb: &[f32; QK], qb: &mut [i8; QK]) -> (f32, i32) {
    let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
    let scale = amax / 127.0;
    let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in qb.iter_mut().zip(xb) {
        *q = (v * id).round_ties_even() as i8;
        sum += i32::from(*q);
    }
    (scale, sum)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::QK;

    /// [`super::block`] with AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn block(xb: &[f32; QK], qb: &mut [i8; QK]) -> (f32, i32) {
        // SAFETY: xb holds 32 floats, qb 32 bytes.
        unsafe {
            let v: [__m256; 4] = std::array::from_fn(|i| _mm256_loadu_ps(xb.as_ptr().add(8 * i)));
            let sign = _mm256_set1_ps(-0.0);
            let abs = |x| _mm256_andnot_ps(sign, x);
            let mx = _mm256_max_ps(
                _mm256_max_ps(abs(v[0]), abs(v[1])),
                _mm256_max_ps(abs(v[2]), abs(v[3])),
            );
            let m4 = _mm_max_ps(_mm256_castps256_ps128(mx), _mm256_extractf128_ps(mx, 1));
            let m2 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
            let amax = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
            let scale = amax / 127.0;
            let id = _mm256_set1_ps(if scale != 0.0 { 1.0 / scale } else { 0.0 });
            let q: [__m256i; 4] = std::array::from_fn(|i| {
                _mm256_cvtps_epi32(_mm256_round_ps::<
                    { _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC },
                >(_mm256_mul_ps(v[i], id)))
            });
            let total =
                _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let t4 = _mm_add_epi32(
                _mm256_castsi256_si128(total),
                _mm256_extracti128_si256(total, 1),
            );
            let t2 = _mm_add_epi32(t4, _mm_shuffle_epi32(t4, 0b01_00_11_10));
            let sum = _mm_cvtsi128_si32(_mm_add_epi32(t2, _mm_shuffle_epi32(t2, 0b10_11_00_01)));
            // i32 -> i16 -> i8 packs interleave 128-bit lanes; the permute restores order.
            let p16a = _mm256_packs_epi32(q[0], q[1]);
            let p16b = _mm256_packs_epi32(q[2], q[3]);
            let p8 = _mm256_packs_epi16(p16a, p16b);
            let fixed = _mm256_permutevar8x32_epi32(p8, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
            _mm256_storeu_si256(qb.as_mut_ptr().cast(), fixed);
            (scale, sum)
        }
    }
}
