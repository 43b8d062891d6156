//! Writing decoded blocks into [`Panels`], one panel (8 weight rows) at a time through
//! a [`PanelMut`]: the panel's own slices of the packed values, scales and offsets, so
//! panels can be filled from several threads at once ([`Panels::panels_mut`]).
//!
//! Invariant: a `PanelMut` addresses exactly panel `g`'s bytes with the same indices
//! [`Panels`] reads them by (`repack` documents the byte order); lanes past the matrix's
//! last row are never written and stay zero.

use half::f16;
use rayon::prelude::*;

use super::acts::QK;
use super::panels::{Panels, Scales};
use super::qmatmul::QKind;
use super::repack::{Layout, PANEL, QK_K, Sub32};

mod fast;
#[cfg(test)]
mod tests;

/// One panel's scales or offsets, as the panel's slice of a [`Scales`].
enum ScalesMut<'a> {
    F32(&'a mut [f32]),
    F16(&'a mut [f16]),
    /// K-quant factors: `q` per value, `sup` per super-block and lane.
    Sub {
        q: &'a mut [i8],
        sup: &'a mut [f16],
    },
}

impl ScalesMut<'_> {
    /// Sets value `at` (lane `i` of block `b`) to `x`, or for the K-quants to the
    /// factor `factor` times the super-block scale `s`.
    fn set(&mut self, at: usize, b: usize, i: usize, x: f32, factor: i8, s: f32) {
        match self {
            ScalesMut::F32(v) => v[at] = x,
            ScalesMut::F16(v) => v[at] = f16::from_f32(x),
            ScalesMut::Sub { q, sup } => {
                q[at] = factor;
                sup[(b * QK / QK_K) * PANEL + i] = f16::from_f32(s);
            }
        }
    }
}

/// Splits `s` into `groups` per-panel slices of `per` values (and, for K-quant factors,
/// `sup_per` super-block scales).
fn split(s: &mut Scales, groups: usize, per: usize, sup_per: usize) -> Vec<ScalesMut<'_>> {
    fn chunks<T>(v: &mut [T], groups: usize, per: usize) -> Vec<&mut [T]> {
        if per == 0 {
            return (0..groups).map(|_| <&mut [T]>::default()).collect();
        }
        v.chunks_mut(per).collect()
    }
    match s {
        Scales::F32(v) => chunks(v, groups, per)
            .into_iter()
            .map(ScalesMut::F32)
            .collect(),
        Scales::F16(v) => chunks(v, groups, per)
            .into_iter()
            .map(ScalesMut::F16)
            .collect(),
        Scales::Sub { q, sup, .. } => chunks(q, groups, per)
            .into_iter()
            .zip(chunks(sup, groups, sup_per))
            .map(|(q, sup)| ScalesMut::Sub { q, sup })
            .collect(),
    }
}

/// Panel `g`'s storage, writable on its own.
pub(crate) struct PanelMut<'a> {
    layout: Layout,
    nb: usize,
    n_off: usize,
    qs: &'a mut [u8],
    d: ScalesMut<'a>,
    m: ScalesMut<'a>,
}

impl Panels {
    /// The panels of `rows` (`n` rows of `k` values of `kind`, each exactly
    /// `kind.row_bytes(k)` bytes), filled in parallel; `fast` takes the straight paths
    /// of `fast` where they apply (off only to test them against the general one).
    pub(crate) fn build(kind: QKind, n: usize, k: usize, rows: &[&[u8]], fast: bool) -> Self {
        assert!(rows.len() == n && rows.iter().all(|r| r.len() == kind.row_bytes(k)));
        let n_off = kind.sums().per_block();
        let mut p = Panels::new(kind.layout(), n, k / QK, kind.kquant(), n_off);
        p.panels_mut()
            .into_par_iter()
            .with_min_len(4)
            .enumerate()
            .for_each(|(g, mut panel)| {
                let rows = rows.iter().skip(g * PANEL).take(PANEL);
                for (i, row) in rows.enumerate() {
                    panel.put_row(kind, i, row, fast);
                }
            });
        p.compact();
        p
    }

    /// Every panel's storage, in panel order, for filling them independently.
    pub(crate) fn panels_mut(&mut self) -> Vec<PanelMut<'_>> {
        let (layout, nb, n_off) = (self.layout, self.nb, self.n_off);
        let qs_per = nb * layout.qs_bytes();
        let groups = self.qs.len() / qs_per;
        let sup_per = (nb * QK / QK_K) * PANEL;
        let d = split(&mut self.d, groups, nb * layout.n_scales(), sup_per);
        let m = split(&mut self.m, groups, nb * n_off * PANEL, sup_per);
        self.qs
            .chunks_mut(qs_per)
            .zip(d)
            .zip(m)
            .map(|((qs, d), m)| PanelMut {
                layout,
                nb,
                n_off,
                qs,
                d,
                m,
            })
            .collect()
    }
}

impl PanelMut<'_> {
    /// Stores lane `i`'s whole row (`row`: its blocks as stored).
    fn put_row(&mut self, kind: QKind, i: usize, row: &[u8], fast: bool) {
        if kind.is_float() {
            return self.put_floats(i, row);
        }
        let (len, bytes) = kind.block();
        let per = len / QK;
        let mut subs = [Sub32::default(); QK_K / QK];
        for (bi, blk) in row.chunks_exact(bytes).enumerate() {
            let done = fast
                && match kind {
                    QKind::Q4K => self.put_q4k(i, bi, blk),
                    QKind::Q6K => self.put_q6k(i, bi, blk),
                    _ => false,
                };
            if !done {
                kind.decode(blk, &mut subs[..per]);
                for (s, sub) in subs[..per].iter().enumerate() {
                    self.put(i, bi * per + s, sub);
                }
            }
        }
    }

    /// Stores a float row (its `nb * 32` little-endian 16-bit values) in lane `i`.
    fn put_floats(&mut self, i: usize, row: &[u8]) {
        let k = self.nb * QK;
        for (t, v) in row.chunks_exact(2).enumerate().take(k) {
            self.qs[(t * PANEL + i) * 2..][..2].copy_from_slice(v);
        }
    }

    /// Stores decoded block `b` of lane `i`'s row.
    fn put(&mut self, i: usize, b: usize, sub: &Sub32) {
        for h in 0..self.n_off {
            let at = (b * self.n_off + h) * PANEL + i;
            self.m.set(at, b, i, sub.m[h], sub.mn[h], sub.msup);
        }
        let qb = self.layout.qs_bytes();
        let qs = &mut self.qs[b * qb..][..qb];
        let ds = b * self.layout.n_scales();
        match self.layout {
            Layout::F16 | Layout::BF16 => unreachable!("float rows are stored by put_floats"),
            Layout::U4 => {
                for p in 0..4 {
                    let out = &mut qs[32 * p + 4 * i..][..4];
                    for (t, o) in out.iter_mut().enumerate() {
                        let (lo, hi) = (sub.q[4 * p + t] as u8, sub.q[16 + 4 * p + t] as u8);
                        *o = lo | (hi << 4);
                    }
                }
                self.d.set(ds + i, b, i, sub.d[0], sub.sc[0], sub.dsup);
            }
            Layout::I8 | Layout::I8Halves => {
                for u in 0..8 {
                    let out = &mut qs[32 * u + 4 * i..][..4];
                    for (t, o) in out.iter_mut().enumerate() {
                        *o = sub.q[4 * u + t] as u8;
                    }
                }
                self.d.set(ds + i, b, i, sub.d[0], sub.sc[0], sub.dsup);
                if self.layout == Layout::I8Halves {
                    self.d
                        .set(ds + PANEL + i, b, i, sub.d[1], sub.sc[1], sub.dsup);
                }
            }
        }
    }
}
