//! Portable kernels, the reference for the SIMD ones: they emulate the AVX2 kernels'
//! eight f32 lanes, fused multiply-adds and horizontal sum, so results match bitwise.

use super::acts::{QActs, QK};
use super::qmatmul::{CpuQMatrix, QKind};

/// Dot products of weight row `j` with activation rows `r0..r0 + out.len()` of `a`.
pub(super) fn row_dots(w: &CpuQMatrix, j: usize, a: &QActs, r0: usize, out: &mut [f32]) {
    let nb = a.nb;
    let qb = w.kind.qs_bytes();
    let mut vals = [0i32; QK];
    for (row, o) in (r0..).zip(out.iter_mut()) {
        let mut acc = [0f32; 8];
        let mut summ = 0f32;
        for b in 0..nb {
            let blk = j * nb + b;
            let wq = &w.qs[blk * qb..(blk + 1) * qb];
            let dw = match w.kind {
                QKind::Q4_1 => {
                    for (i, &byte) in wq.iter().enumerate() {
                        vals[i] = i32::from(byte & 0xF);
                        vals[i + 16] = i32::from(byte >> 4);
                    }
                    summ += w.scales[2 * blk + 1] * a.s[row * nb + b];
                    w.scales[2 * blk]
                }
                QKind::Q8_0 => {
                    for (v, &byte) in vals.iter_mut().zip(wq) {
                        *v = i32::from(byte as i8);
                    }
                    w.scales[blk]
                }
            };
            let xq = a.block(row, b);
            let scale = dw * a.d[row * nb + b];
            for (l, lane) in acc.iter_mut().enumerate() {
                let sumi: i32 = (4 * l..4 * l + 4).map(|i| vals[i] * i32::from(xq[i])).sum();
                *lane = scale.mul_add(sumi as f32, *lane);
            }
        }
        *o = hsum8(&acc) + summ;
    }
}

/// The AVX2 kernels' horizontal sum order: halves, then pairs, then the last two.
pub(super) fn hsum8(v: &[f32; 8]) -> f32 {
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}
