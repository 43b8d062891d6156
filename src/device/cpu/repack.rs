//! Decoding GGML weight blocks (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K,
//! Q6_K) into blocks of 32 small integers with their scales ([`Sub32`]), and the panel
//! layouts they are interleaved into (`panels` stores them).
//!
//! Every integer format becomes one of three panel layouts, with exactly ggml's
//! dequantized values (`w = d * q + m`, the products `d * sc` and `dmin * m` of the
//! K-quants taken in f32 as ggml takes them):
//! - [`Layout::U4`]: `q` in `0..16`, a scale `d` and an offset `m` per 32 values
//!   (Q4_0 with `m = -8 d`, Q4_1, Q4_K).
//! - [`Layout::I8`]: `q` 8-bit with one scale per 32 values: signed (Q8_0, Q5_0 as
//!   `q - 16`), or in `0..32` with an offset per 32 (Q5_1, Q5_K).
//! - [`Layout::I8Halves`]: `q` in `-32..32` with a scale per 16 values (Q6_K, Q3_K), or
//!   in `0..4` with a scale and an offset per 16 (Q2_K).
//!
//! F16 and BF16 weights keep their 16-bit values ([`Layout::F16`], [`Layout::BF16`]):
//! 8 rows' value `t` side by side, 16 bytes, so one load and convert gives the 8 lanes.
//!
//! Panel byte order, for panel `g` (weight rows `8g..8g + 8`) and block `b`: the AVX2
//! kernels load 32 bytes holding 4 consecutive values of each of the 8 rows (row `i`
//! in bytes `4i..4i + 4`), so one `maddubs` against a broadcast group of 4 activations
//! gives 8 rows' partial dot products side by side. U4 packs two such groups per byte
//! (group `p` in the low nibbles, group `p + 4` in the high ones): 128 bytes per block;
//! I8 stores the 8 groups in order: 256 bytes per block. Rows past `n` are zero.

use half::f16;

use super::acts::QK;

/// Values per K-quant super-block.
pub(crate) const QK_K: usize = 256;
/// Weight rows per panel.
pub(crate) const PANEL: usize = 8;

/// The panel layout a format is repacked into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// 4-bit unsigned values, scale and offset per 32.
    U4,
    /// Signed 8-bit values, one scale per 32.
    I8,
    /// Signed values in `-32..32`, one scale per 16.
    I8Halves,
    /// IEEE half-precision values.
    F16,
    /// bfloat16 values.
    BF16,
}

impl Layout {
    /// Packed bytes per (panel, block).
    pub(crate) fn qs_bytes(self) -> usize {
        match self {
            Layout::U4 => PANEL * QK / 2,
            Layout::I8 | Layout::I8Halves => PANEL * QK,
            Layout::F16 | Layout::BF16 => 2 * PANEL * QK,
        }
    }

    /// Scales per (panel, block): 8, or 16 for two halves (half-major); none for floats.
    pub(crate) fn n_scales(self) -> usize {
        match self {
            Layout::I8Halves => 2 * PANEL,
            Layout::U4 | Layout::I8 => PANEL,
            Layout::F16 | Layout::BF16 => 0,
        }
    }

    /// Whether the values are 16-bit floats (no scales, f32 activations).
    pub(crate) fn is_float(self) -> bool {
        matches!(self, Layout::F16 | Layout::BF16)
    }
}

/// 32 decoded weights of one row: `w[t] = d[t / 16] * q[t] + m[t / 16]` (formats with
/// one scale or offset per 32 repeat it in both halves).
///
/// For the K-quants the factors are kept too: `d[h] = dsup * sc[h]` and
/// `m[h] = -(msup * mn[h])` (f32 products, as ggml forms them), `dsup`/`msup` being the
/// super-block's f16 scales and `sc`/`mn` the small integer sub-block scales.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sub32 {
    pub q: [i8; QK],
    pub d: [f32; 2],
    pub m: [f32; 2],
    pub sc: [i8; 2],
    pub mn: [i8; 2],
    pub dsup: f32,
    pub msup: f32,
}

fn h(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

/// Splits 16 bytes of nibbles into 32 values: low nibbles first, then high ones.
fn nibbles(qs: &[u8], q: &mut [i8; QK]) {
    for (i, &b) in qs[..16].iter().enumerate() {
        q[i] = (b & 0xF) as i8;
        q[i + 16] = (b >> 4) as i8;
    }
}

/// Decodes one Q4_0 block (18 bytes).
pub(crate) fn q4_0(b: &[u8], out: &mut [Sub32]) {
    let d = h(b, 0);
    nibbles(&b[2..18], &mut out[0].q);
    out[0].d = [d; 2];
    out[0].m = [-8.0 * d; 2];
}

/// Decodes one Q4_1 block (20 bytes).
pub(crate) fn q4_1(b: &[u8], out: &mut [Sub32]) {
    nibbles(&b[4..20], &mut out[0].q);
    out[0].d = [h(b, 0); 2];
    out[0].m = [h(b, 2); 2];
}

/// The 32 5-bit values of a Q5_0/Q5_1 block: nibbles `qs`, fifth bits `qh` (value `j`
/// in bit `j`), minus `bias`.
fn five_bits(qs: &[u8], qh: &[u8], bias: i8, q: &mut [i8; QK]) {
    let qh = u32::from_le_bytes([qh[0], qh[1], qh[2], qh[3]]);
    nibbles(qs, q);
    for (t, v) in q.iter_mut().enumerate() {
        *v = (*v | (((qh >> t) & 1) << 4) as i8) - bias;
    }
}

/// Decodes one Q5_0 block (22 bytes: `d qh[4] qs[16]`) as `q - 16` in `-16..16`.
pub(crate) fn q5_0(b: &[u8], out: &mut [Sub32]) {
    five_bits(&b[6..22], &b[2..6], 16, &mut out[0].q);
    out[0].d = [h(b, 0); 2];
    out[0].m = [0.0; 2];
}

/// Decodes one Q5_1 block (24 bytes: `d m qh[4] qs[16]`), `q` in `0..32`.
pub(crate) fn q5_1(b: &[u8], out: &mut [Sub32]) {
    five_bits(&b[8..24], &b[4..8], 0, &mut out[0].q);
    out[0].d = [h(b, 0); 2];
    out[0].m = [h(b, 2); 2];
}

/// Decodes one Q8_0 block (34 bytes).
pub(crate) fn q8_0(b: &[u8], out: &mut [Sub32]) {
    for (q, &v) in out[0].q.iter_mut().zip(&b[2..34]) {
        *q = v as i8;
    }
    out[0].d = [h(b, 0); 2];
    out[0].m = [0.0; 2];
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's
/// `get_scale_min_k4`).
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Decodes one Q4_K super-block (144 bytes) into 8 sub-blocks.
pub(crate) fn q4_k(b: &[u8], out: &mut [Sub32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let (scales, qs) = (&b[4..16], &b[16..144]);
    for (j, sub) in out[..8].iter_mut().enumerate() {
        let (sc, mn) = scale_min_k4(j, scales);
        let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = 4 * (j % 2);
        for (q, &byte) in sub.q.iter_mut().zip(chunk) {
            *q = ((byte >> shift) & 0xF) as i8;
        }
        sub.d = [d * f32::from(sc); 2];
        sub.m = [-(dmin * f32::from(mn)); 2];
        (sub.sc, sub.mn, sub.dsup, sub.msup) = ([sc as i8; 2], [mn as i8; 2], d, dmin);
    }
}

/// Decodes one Q5_K super-block (176 bytes: `d dmin scales[12] qh[32] qs[128]`) into 8
/// sub-blocks, `q` in `0..32`.
pub(crate) fn q5_k(b: &[u8], out: &mut [Sub32]) {
    let (d, dmin) = (h(b, 0), h(b, 2));
    let (scales, qh, qs) = (&b[4..16], &b[16..48], &b[48..176]);
    for (j, sub) in out[..8].iter_mut().enumerate() {
        let (sc, mn) = scale_min_k4(j, scales);
        let chunk = &qs[32 * (j / 2)..32 * (j / 2) + 32];
        let shift = 4 * (j % 2);
        for ((q, &byte), &hb) in sub.q.iter_mut().zip(chunk).zip(qh) {
            *q = (((byte >> shift) & 0xF) | (((hb >> j) & 1) << 4)) as i8;
        }
        sub.d = [d * f32::from(sc); 2];
        sub.m = [-(dmin * f32::from(mn)); 2];
        (sub.sc, sub.mn, sub.dsup, sub.msup) = ([sc as i8; 2], [mn as i8; 2], d, dmin);
    }
}

/// Decodes one Q2_K super-block (84 bytes: `scales[16] qs[64] d dmin`) into 8
/// sub-blocks of two 16-value halves, each with a 4-bit scale and min: `q` in `0..4`.
pub(crate) fn q2_k(b: &[u8], out: &mut [Sub32]) {
    let (scales, qs) = (&b[..16], &b[16..80]);
    let (d, dmin) = (h(b, 80), h(b, 82));
    for (s, sub) in out[..8].iter_mut().enumerate() {
        let (n, j) = (s / 4, s % 4);
        for (t, q) in sub.q.iter_mut().enumerate() {
            *q = ((qs[32 * n + t] >> (2 * j)) & 3) as i8;
        }
        for hf in 0..2 {
            let byte = scales[2 * s + hf];
            let (sc, mn) = (byte & 0xF, byte >> 4);
            sub.d[hf] = d * f32::from(sc);
            sub.m[hf] = -(dmin * f32::from(mn));
            (sub.sc[hf], sub.mn[hf]) = (sc as i8, mn as i8);
        }
        (sub.dsup, sub.msup) = (d, dmin);
    }
}

/// Q3_K's 6-bit scale `i` (0..16), stored as `sc - 32`: low nibbles in bytes 0..8,
/// high bit pairs in bytes 8..12.
fn q3k_scale(s: &[u8], i: usize) -> i8 {
    let low = if i < 8 { s[i] & 0xF } else { s[i - 8] >> 4 };
    let high = (s[8 + i % 4] >> (2 * (i / 4))) & 3;
    (low | (high << 4)) as i8 - 32
}

/// Decodes one Q3_K super-block (110 bytes: `hmask[32] qs[64] scales[12] d`) into 8
/// sub-blocks of two 16-value halves: `q` in `-4..4`, a signed 6-bit scale per half.
pub(crate) fn q3_k(b: &[u8], out: &mut [Sub32]) {
    let (hmask, qs, scales) = (&b[..32], &b[32..96], &b[96..108]);
    let d = h(b, 108);
    for (s, sub) in out[..8].iter_mut().enumerate() {
        let (n, j) = (s / 4, s % 4);
        for (t, q) in sub.q.iter_mut().enumerate() {
            let low = ((qs[32 * n + t] >> (2 * j)) & 3) as i8;
            let high = hmask[t] & (1 << (4 * n + j)) != 0;
            *q = if high { low } else { low - 4 };
        }
        for hf in 0..2 {
            let sc = q3k_scale(scales, 2 * s + hf);
            sub.d[hf] = d * f32::from(sc);
            sub.sc[hf] = sc;
        }
        (sub.m, sub.dsup) = ([0.0; 2], d);
    }
}

/// Decodes one Q6_K super-block (210 bytes: `ql[128] qh[64] scales[16] d`) into 8
/// sub-blocks of two 16-value halves.
pub(crate) fn q6_k(b: &[u8], out: &mut [Sub32]) {
    let (ql, qh, sc) = (&b[..128], &b[128..192], &b[192..208]);
    let d = h(b, 208);
    let mut q = [0i8; QK_K];
    for half in 0..2 {
        let (ql, qh) = (&ql[64 * half..], &qh[32 * half..]);
        let y = &mut q[128 * half..];
        for l in 0..32 {
            let hb = qh[l];
            y[l] = ((ql[l] & 0xF) | ((hb & 3) << 4)) as i8 - 32;
            y[l + 32] = ((ql[l + 32] & 0xF) | (((hb >> 2) & 3) << 4)) as i8 - 32;
            y[l + 64] = ((ql[l] >> 4) | (((hb >> 4) & 3) << 4)) as i8 - 32;
            y[l + 96] = ((ql[l + 32] >> 4) | (((hb >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    for (j, sub) in out[..8].iter_mut().enumerate() {
        sub.q.copy_from_slice(&q[32 * j..32 * j + 32]);
        let s = |i: usize| d * f32::from(sc[i] as i8);
        sub.d = [s(2 * j), s(2 * j + 1)];
        sub.m = [0.0; 2];
        sub.sc = [sc[2 * j] as i8, sc[2 * j + 1] as i8];
        sub.dsup = d;
    }
}
