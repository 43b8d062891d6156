//! Storage of a repacked weight matrix: panels of 8 rows in one of the `repack`
//! layouts, with their scales (and, for formats with offsets, offsets) in the most
//! compact exact encoding ([`Scales`]). `pack` fills them, panel by panel.

use half::f16;

use super::acts::QK;
use super::repack::{Layout, PANEL, QK_K, Sub32};

/// Scale encodings, as the kernels' const parameter.
pub(crate) mod enc {
    /// f32 values.
    pub const F32: u8 = 0;
    /// f16 values.
    pub const F16: u8 = 1;
    /// `sup * q`: an i8 per value and an f16 per super-block and lane.
    pub const SUB: u8 = 2;
    /// `-(sup * q)`.
    pub const SUB_NEG: u8 = 3;
}

/// Scales or offsets of the panels, `n` per (panel, block) in lane order.
/// - `F16` when every value is exactly an f16 (Q4_0, Q4_1, Q8_0: a fifth less memory
///   traffic than f32),
/// - `Sub` for the K-quants: ggml's own factors, an integer sub-block scale per value
///   and the super-block's f16 scale per lane (value `±sup * q`, the f32 product ggml
///   forms), so Q4_K panels take 4.6 bits per weight and Q6_K 8.6,
/// - `F32` otherwise.
pub(crate) enum Scales {
    F32(Vec<f32>),
    F16(Vec<f16>),
    Sub {
        q: Vec<i8>,
        sup: Vec<f16>,
        neg: bool,
        /// Values per (panel, block).
        per: usize,
        /// Blocks per row.
        nb: usize,
    },
}

impl Scales {
    /// The kernels' encoding code ([`enc`]).
    pub(crate) fn code(&self) -> u8 {
        match self {
            Scales::F32(_) => enc::F32,
            Scales::F16(_) => enc::F16,
            Scales::Sub { neg: false, .. } => enc::SUB,
            Scales::Sub { neg: true, .. } => enc::SUB_NEG,
        }
    }

    /// Number of values.
    pub(crate) fn len(&self) -> usize {
        match self {
            Scales::F32(v) => v.len(),
            Scales::F16(v) => v.len(),
            Scales::Sub { q, .. } => q.len(),
        }
    }

    /// Index into `sup` of lane 0 of value `i`'s super-block.
    fn sup_index(i: usize, per: usize, nb: usize) -> usize {
        let (pb, lane) = (i / per, i % PANEL);
        let (g, b) = (pb / nb, pb % nb);
        (g * (nb * QK / QK_K) + b * QK / QK_K) * PANEL + lane
    }

    /// Value `i`.
    pub(crate) fn get(&self, i: usize) -> f32 {
        match self {
            Scales::F32(v) => v[i],
            Scales::F16(v) => v[i].to_f32(),
            Scales::Sub {
                q,
                sup,
                neg,
                per,
                nb,
            } => {
                let v = sup[Self::sup_index(i, *per, *nb)].to_f32() * f32::from(q[i]);
                if *neg { -v } else { v }
            }
        }
    }

    /// `(values, super-block scales)` base addresses for the kernels: f32, f16 or i8
    /// values as [`Self::code`] says; the second is only meaningful for `Sub`.
    pub(crate) fn ptrs(&self) -> (*const u8, *const u8) {
        match self {
            Scales::F32(v) => (v.as_ptr().cast(), std::ptr::null()),
            Scales::F16(v) => (v.as_ptr().cast(), std::ptr::null()),
            Scales::Sub { q, sup, .. } => (q.as_ptr().cast(), sup.as_ptr().cast()),
        }
    }

    /// Number of super-block scales (0 unless `Sub`).
    pub(crate) fn sup_len(&self) -> usize {
        match self {
            Scales::Sub { sup, .. } => sup.len(),
            _ => 0,
        }
    }

    /// Bytes held.
    pub(crate) fn bytes(&self) -> usize {
        match self {
            Scales::F32(v) => 4 * v.len(),
            Scales::F16(v) => 2 * v.len(),
            Scales::Sub { q, sup, .. } => q.len() + 2 * sup.len(),
        }
    }
}

/// Panels of one weight matrix, filled panel by panel (`pack`) from decoded blocks.
pub(crate) struct Panels {
    pub layout: Layout,
    pub nb: usize,
    pub qs: Vec<u8>,
    /// Scales: `layout.n_scales()` per (panel, block).
    pub d: Scales,
    /// Offsets per (panel lane, block): 0, 1 (per 32 values) or 2 (per 16).
    pub n_off: usize,
    /// Offsets `m`: `n_off * PANEL` per (panel, block), half-major.
    pub m: Scales,
}

impl Panels {
    /// Zeroed panels for `n` rows of `nb` blocks with `n_off` offsets per row and
    /// block; `kquant` keeps the K-quants' factors.
    pub(crate) fn new(layout: Layout, n: usize, nb: usize, kquant: bool, n_off: usize) -> Self {
        let blocks = n.div_ceil(PANEL) * nb;
        let m_len = blocks * PANEL * n_off;
        let make = |len: usize, per: usize, neg: bool| {
            if kquant && len > 0 {
                Scales::Sub {
                    q: vec![0; len],
                    sup: vec![f16::ZERO; (blocks * QK / QK_K) * PANEL],
                    neg,
                    per,
                    nb,
                }
            } else {
                Scales::F32(vec![0.0; len])
            }
        };
        Self {
            layout,
            nb,
            qs: huge_zeroed(blocks * layout.qs_bytes()),
            d: make(blocks * layout.n_scales(), layout.n_scales(), false),
            n_off,
            m: make(m_len, n_off.max(1) * PANEL, true),
        }
    }

    /// Index of offset `h` (0..n_off) of lane 0 for panel block `pb` (`g * nb + b`).
    pub(crate) fn m_index(&self, pb: usize, h: usize) -> usize {
        (pb * self.n_off + h) * PANEL
    }

    /// Switches f32 scales and offsets to f16 if both are exact in it (call once,
    /// after the last [`Self::put`]).
    pub(crate) fn compact(&mut self) {
        let exact = |s: &Scales| match s {
            Scales::F32(v) => v.iter().all(|&x| f16::from_f32(x).to_f32() == x),
            _ => false,
        };
        if exact(&self.d) && exact(&self.m) {
            let half = |s: &Scales| match s {
                Scales::F32(v) => Scales::F16(v.iter().map(|&x| f16::from_f32(x)).collect()),
                _ => unreachable!("checked above"),
            };
            (self.d, self.m) = (half(&self.d), half(&self.m));
        }
    }

    /// Index of lane 0 of super-block scales for panel `g`, block `b` (`Sub` only).
    pub(crate) fn sup_index(&self, g: usize, b: usize) -> usize {
        (g * (self.nb * QK / QK_K) + b * QK / QK_K) * PANEL
    }

    /// Value `t` (0..k) of row `j` of a float layout, as f32.
    pub(crate) fn get_float(&self, j: usize, t: usize) -> f32 {
        let (g, i) = (j / PANEL, j % PANEL);
        let at = (g * self.nb * QK + t) * PANEL + i;
        let bits = u16::from_le_bytes([self.qs[2 * at], self.qs[2 * at + 1]]);
        match self.layout {
            Layout::BF16 => half::bf16::from_bits(bits).to_f32(),
            _ => f16::from_bits(bits).to_f32(),
        }
    }

    /// Decoded block `b` of weight row `j` (values, scales and offsets; not the K-quant
    /// factors). Integer layouts only.
    pub(crate) fn get(&self, j: usize, b: usize) -> Sub32 {
        let (g, i) = (j / PANEL, j % PANEL);
        let pb = g * self.nb + b;
        let qs = &self.qs[pb * self.layout.qs_bytes()..][..self.layout.qs_bytes()];
        let ds = pb * self.layout.n_scales();
        let mut sub = Sub32::default();
        if self.n_off > 0 {
            for (h, m) in sub.m.iter_mut().enumerate() {
                *m = self.m.get(self.m_index(pb, h.min(self.n_off - 1)) + i);
            }
        }
        match self.layout {
            Layout::F16 | Layout::BF16 => unreachable!("float layouts have no blocks"),
            Layout::U4 => {
                for p in 0..4 {
                    for t in 0..4 {
                        let byte = qs[32 * p + 4 * i + t];
                        sub.q[4 * p + t] = (byte & 0xF) as i8;
                        sub.q[16 + 4 * p + t] = (byte >> 4) as i8;
                    }
                }
                sub.d = [self.d.get(ds + i); 2];
            }
            Layout::I8 | Layout::I8Halves => {
                for u in 0..8 {
                    for t in 0..4 {
                        sub.q[4 * u + t] = qs[32 * u + 4 * i + t] as i8;
                    }
                }
                let d1 = if self.layout == Layout::I8Halves {
                    self.d.get(ds + PANEL + i)
                } else {
                    self.d.get(ds + i)
                };
                sub.d = [self.d.get(ds + i), d1];
            }
        }
        sub
    }
}

/// `len` zero bytes, asking the kernel to back them with transparent huge pages where it
/// allows (`madvise(MADV_HUGEPAGE)` before the first write): a 7B model's panels then
/// fault in 2 MiB at a time at load, and the matmuls walk them with fewer TLB misses.
fn huge_zeroed(len: usize) -> Vec<u8> {
    const HUGE: usize = 2 << 20;
    let v = vec![0u8; len];
    let start = v.as_ptr() as usize;
    let (first, end) = (start.next_multiple_of(HUGE), (start + len) / HUGE * HUGE);
    if end > first {
        // SAFETY: `first..end` lies inside `v`'s allocation; MADV_HUGEPAGE only changes
        // how the kernel backs those pages, never their contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
    v
}
