//! Portable kernels, the reference for the SIMD ones. The AVX2 matmul kernels keep one
//! output row per f32 lane, so each output here is the same exact integer block sums
//! (or, for float weights, the same products) folded in with the same fused
//! multiply-adds, in the same order: results match bitwise.

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
            if p.n_off > 0 {
                let mut accm = 0f32;
                for b in 0..nb {
                    for h in 0..p.n_off {
                        let m = p.m.get(p.m_index(g * nb + b, h) + i);
                        accm = m.mul_add(a.s[(row * nb + b) * p.n_off + h], accm);
                    }
                }
                acc += accm;
            }
            *oi = acc;
        }
    }
}

/// Panel `g` of a float layout against f32 activation rows `r0..r0 + out.len()` of `x`
/// (rows of `k`): per row two chains of fused multiply-adds over even and odd `t`,
/// summed at the end, as the AVX2 kernel does.
pub(super) fn float_tile(p: &Panels, g: usize, x: &[f32], r0: usize, out: &mut [[f32; PANEL]]) {
    let k = p.nb * QK;
    for (row, o) in (r0..).zip(out.iter_mut()) {
        let xr = &x[row * k..(row + 1) * k];
        for (i, oi) in o.iter_mut().enumerate() {
            let (mut a0, mut a1) = (0f32, 0f32);
            for t in (0..k).step_by(2) {
                a0 = xr[t].mul_add(p.get_float(g * PANEL + i, t), a0);
                a1 = xr[t + 1].mul_add(p.get_float(g * PANEL + i, t + 1), a1);
            }
            *oi = a0 + a1;
        }
    }
}
