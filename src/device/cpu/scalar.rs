//! Portable kernels, the reference for the SIMD ones. The AVX2 matmul kernels keep one
//! output row per f32 lane, so each output here is the same exact integer block sums
//! folded in with the same fused multiply-adds, in the same order: results match
//! bitwise.

use super::acts::{QActs, QK};
use super::panels::Panels;
use super::repack::{Layout, PANEL};

/// Panel `g` of `p` against activation rows `r0..r0 + out.len()` of `a`.
pub(super) fn tile(p: &Panels, g: usize, a: &QActs, r0: usize, out: &mut [[f32; PANEL]]) {
    let nb = p.nb;
    let k = nb * QK;
    for (row, o) in (r0..).zip(out.iter_mut()) {
        let x = &a.qs[row * k..(row + 1) * k];
        for (i, oi) in o.iter_mut().enumerate() {
            let mut acc = 0f32;
            for b in 0..nb {
                let w = p.get(g * PANEL + i, b);
                let xb = &x[b * QK..(b + 1) * QK];
                let dx = a.d[row * nb + b];
                let dot = |r: std::ops::Range<usize>| -> f32 {
                    r.map(|t| i32::from(w.q[t]) * i32::from(xb[t])).sum::<i32>() as f32
                };
                if p.layout == Layout::I8Halves {
                    acc = dot(0..16).mul_add(w.d[0] * dx, acc);
                    acc = dot(16..32).mul_add(w.d[1] * dx, acc);
                } else {
                    acc = dot(0..QK).mul_add(w.d[0] * dx, acc);
                }
            }
            if p.layout == Layout::U4 {
                let mut accm = 0f32;
                for b in 0..nb {
                    let m = p.m.get((g * nb + b) * PANEL + i);
                    accm = m.mul_add(a.s[row * nb + b], accm);
                }
                acc += accm;
            }
            *oi = acc;
        }
    }
}
