//! Quantization of f32 activation rows to 8-bit blocks of 32, as ggml's
//! `quantize_row_q8_1` / `quantize_row_q8_0` do it (scalar reference versions).

use half::f16;

/// Values per quantization block.
pub(crate) const QK: usize = 32;

/// A batch of activation rows quantized to blocks of 32 `i8` with one scale each.
pub(crate) struct QActs {
    /// Blocks per row (`k / 32`).
    pub nb: usize,
    /// Quantized values, `m * k`, row-major.
    pub qs: Vec<i8>,
    /// Per-block scale `d` (rounded through f16, as ggml stores it), `m * nb`.
    pub d: Vec<f32>,
    /// Per-block `d * sum(q)` (rounded through f16), `m * nb`; the Q4_1 offset term.
    pub s: Vec<f32>,
}

impl QActs {
    /// Quantizes `m` rows of `k` values (`k` a multiple of 32).
    pub fn quantize(x: &[f32], m: usize, k: usize) -> Self {
        assert_eq!(x.len(), m * k, "activation length");
        assert!(k.is_multiple_of(QK), "k must be a multiple of 32");
        let nb = k / QK;
        let mut qs = vec![0i8; m * k];
        let mut d = vec![0f32; m * nb];
        let mut s = vec![0f32; m * nb];
        for (bi, (xb, qb)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let id = if scale != 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * id).round() as i8;
                sum += i32::from(*q);
            }
            d[bi] = f16::from_f32(scale).to_f32();
            s[bi] = f16::from_f32(sum as f32 * scale).to_f32();
        }
        Self { nb, qs, d, s }
    }

    /// The quantized values of block `b` of row `row`.
    #[inline(always)]
    pub fn block(&self, row: usize, b: usize) -> &[i8] {
        let at = (row * self.nb + b) * QK;
        &self.qs[at..at + QK]
    }
}
