//! Straight repacking of the two formats that make up a Q4_K_M file, Q4_K and Q6_K:
//! each super-block goes from the file's bytes into the panel in whole-byte operations
//! (no per-value `Sub32` round trip), the super-block scales written once instead of
//! once per sub-block. The bytes written are exactly those `decode` + [`PanelMut::put`]
//! write (tested against it on random blocks).

use half::f16;

use super::{PanelMut, ScalesMut};
use crate::device::cpu::repack::{Layout, PANEL, scale_min_k4};

fn h(b: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([b[at], b[at + 1]])
}

/// `(scales, super-block scales)` of K-quant factors; `None` for other encodings.
fn sub<'s>(s: &'s mut ScalesMut<'_>) -> Option<(&'s mut [i8], &'s mut [f16])> {
    match s {
        ScalesMut::Sub { q, sup } => Some((q, sup)),
        _ => None,
    }
}

/// Copies 4-value group `u` of `vals` (one lane's 32 bytes of a block, value order) to
/// where panel lane `i` keeps it: bytes `32u + 4i..`.
fn scatter(out: &mut [u8], i: usize, vals: &[u8; 32], groups: usize) {
    for u in 0..groups {
        out[32 * u + 4 * i..][..4].copy_from_slice(&vals[4 * u..4 * u + 4]);
    }
}

impl PanelMut<'_> {
    /// Stores Q4_K super-block `sb` (144 bytes) of lane `i`'s row. Returns false (and
    /// writes nothing) unless the panel is U4 with K-quant factors.
    pub(crate) fn put_q4k(&mut self, i: usize, sb: usize, blk: &[u8]) -> bool {
        if self.layout != Layout::U4 || self.n_off != 1 {
            return false;
        }
        let (Some((dq, dsup)), Some((mq, msup))) = (sub(&mut self.d), sub(&mut self.m)) else {
            return false;
        };
        let (scales, qs) = (&blk[4..16], &blk[16..144]);
        dsup[sb * PANEL + i] = h(blk, 0);
        msup[sb * PANEL + i] = h(blk, 2);
        let qb = Layout::U4.qs_bytes();
        for c in 0..4 {
            let chunk = &qs[32 * c..32 * c + 32];
            // Sub-block 2c: the low nibbles of the chunk; 2c + 1: the high ones. Panel
            // byte v of a block holds value v (low nibble) and value v + 16 (high).
            let (mut lo, mut hi) = ([0u8; 32], [0u8; 32]);
            for v in 0..16 {
                let (a, b) = (chunk[v], chunk[16 + v]);
                lo[v] = (a & 0xF) | (b << 4);
                hi[v] = (a >> 4) | (b & 0xF0);
            }
            for (s, vals) in [(2 * c, &lo), (2 * c + 1, &hi)] {
                let b = sb * 8 + s;
                scatter(&mut self.qs[b * qb..][..qb], i, vals, 4);
                let (sc, mn) = scale_min_k4(s, scales);
                dq[b * PANEL + i] = sc as i8;
                mq[b * PANEL + i] = mn as i8;
            }
        }
        true
    }

    /// Stores Q6_K super-block `sb` (210 bytes) of lane `i`'s row. Returns false (and
    /// writes nothing) unless the panel is I8Halves with K-quant factors.
    pub(crate) fn put_q6k(&mut self, i: usize, sb: usize, blk: &[u8]) -> bool {
        if self.layout != Layout::I8Halves || self.n_off != 0 {
            return false;
        }
        let Some((dq, dsup)) = sub(&mut self.d) else {
            return false;
        };
        let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
        dsup[sb * PANEL + i] = h(blk, 208);
        let qb = Layout::I8Halves.qs_bytes();
        for s in 0..8 {
            // Sub-block s = 4 * half + j: low 4 bits from ql (the nibble j / 2 of bytes
            // 64 * half + 32 * (j % 2) ..), high 2 bits from bits 2j of qh's half.
            let (half, j) = (s / 4, s % 4);
            let ql = &ql[64 * half + 32 * (j % 2)..][..32];
            let qh = &qh[32 * half..][..32];
            let (shl, shh) = (4 * (j / 2), 2 * j);
            let mut vals = [0u8; 32];
            for t in 0..32 {
                let v = ((ql[t] >> shl) & 0xF) | (((qh[t] >> shh) & 3) << 4);
                vals[t] = v.wrapping_sub(32);
            }
            let b = sb * 8 + s;
            scatter(&mut self.qs[b * qb..][..qb], i, &vals, 8);
            dq[b * 2 * PANEL + i] = sc[2 * s] as i8;
            dq[b * 2 * PANEL + PANEL + i] = sc[2 * s + 1] as i8;
        }
        true
    }
}
