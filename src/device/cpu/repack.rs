//! Decoding GGML weight blocks (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K) into blocks of 32 small
//! integers with their scales ([`Sub32`]), and the panel layouts they are interleaved
//! into (`panels` stores them).
//!
//! Every format becomes one of two panel layouts, with exactly ggml's dequantized
//! values (`w = d * q + m`, the products `d * sc` and `dmin * m` of the K-quants taken
//! in f32 as ggml takes them):
//! - [`Layout::U4`]: `q` in `0..16`, a scale `d` and an offset `m` per 32 values
//!   (Q4_0 with `m = -8 d`, Q4_1, Q4_K).
//! - [`Layout::I8`]: `q` signed 8-bit with one scale per 32 values (Q8_0), or
//!   [`Layout::I8Halves`]: `q` in `-32..32` with a scale per 16 values (Q6_K).
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
}

impl Layout {
    /// Packed bytes per (panel, block).
    pub(crate) fn qs_bytes(self) -> usize {
        match self {
            Layout::U4 => PANEL * QK / 2,
            Layout::I8 | Layout::I8Halves => PANEL * QK,
        }
    }

    /// Scales per (panel, block): 8, or 16 for two halves (half-major).
    pub(crate) fn n_scales(self) -> usize {
        match self {
            Layout::I8Halves => 2 * PANEL,
            Layout::U4 | Layout::I8 => PANEL,
        }
    }
}

/// 32 decoded weights of one row: `w[t] = d[t / 16] * q[t] + m`.
///
/// For the K-quants the factors are kept too: `d[h] = dsup * sc[h]` and
/// `m = -(msup * mn)` (f32 products, as ggml forms them), `dsup`/`msup` being the
/// super-block's f16 scales and `sc`/`mn` the small integer sub-block scales.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Sub32 {
    pub q: [i8; QK],
    pub d: [f32; 2],
    pub m: f32,
    pub sc: [i8; 2],
    pub mn: i8,
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
    out[0].m = -8.0 * d;
}

/// Decodes one Q4_1 block (20 bytes).
pub(crate) fn q4_1(b: &[u8], out: &mut [Sub32]) {
    nibbles(&b[4..20], &mut out[0].q);
    out[0].d = [h(b, 0); 2];
    out[0].m = h(b, 2);
}

/// Decodes one Q8_0 block (34 bytes).
pub(crate) fn q8_0(b: &[u8], out: &mut [Sub32]) {
    for (q, &v) in out[0].q.iter_mut().zip(&b[2..34]) {
        *q = v as i8;
    }
    out[0].d = [h(b, 0); 2];
    out[0].m = 0.0;
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K block (ggml's
/// `get_scale_min_k4`).
fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
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
        sub.m = -(dmin * f32::from(mn));
        (sub.sc, sub.mn, sub.dsup, sub.msup) = ([sc as i8; 2], mn as i8, d, dmin);
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
        sub.m = 0.0;
        sub.sc = [sc[2 * j] as i8, sc[2 * j + 1] as i8];
        sub.dsup = d;
    }
}
