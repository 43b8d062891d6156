//! The quantized weight matrix and the batched, parallel matmul driver.

use anyhow::{Result, bail};
use candle_core::quantized::{GgmlDType, QTensor};
use rayon::prelude::*;

use super::acts::{QActs, QK, Sums};
use super::isa::{Isa, MatmulPath};
use super::panels::Panels;
use super::repack::{self, Layout, PANEL, QK_K, Sub32};

/// Weight encodings the kernels handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// Blocks of 32 4-bit values with an f16 scale: `w = d * (q - 8)`.
    Q4_0,
    /// Blocks of 32 4-bit values with f16 scale `d` and offset `m`: `w = d*q + m`.
    Q4_1,
    /// Blocks of 32 5-bit values with an f16 scale: `w = d * (q - 16)`.
    Q5_0,
    /// Blocks of 32 5-bit values with f16 scale `d` and offset `m`: `w = d*q + m`.
    Q5_1,
    /// Blocks of 32 `i8` values with f16 scale `d`: `w = d*q`.
    Q8_0,
    /// Super-blocks of 256: 2-bit values, 4-bit scales and mins per 16.
    Q2K,
    /// Super-blocks of 256: 3-bit values, signed 6-bit scales per 16.
    Q3K,
    /// Super-blocks of 256: 4-bit values, 6-bit scales and mins per 32.
    Q4K,
    /// Super-blocks of 256: 5-bit values, 6-bit scales and mins per 32.
    Q5K,
    /// Super-blocks of 256: 6-bit values, 8-bit scales per 16.
    Q6K,
    /// IEEE half-precision values (f32 activations, no quantization).
    F16,
    /// bfloat16 values (f32 activations, no quantization).
    BF16,
}

impl QKind {
    /// The kind for a GGML dtype, if the kernels support it.
    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        Some(match dtype {
            GgmlDType::Q4_0 => QKind::Q4_0,
            GgmlDType::Q4_1 => QKind::Q4_1,
            GgmlDType::Q5_0 => QKind::Q5_0,
            GgmlDType::Q5_1 => QKind::Q5_1,
            GgmlDType::Q8_0 => QKind::Q8_0,
            GgmlDType::Q2K => QKind::Q2K,
            GgmlDType::Q3K => QKind::Q3K,
            GgmlDType::Q4K => QKind::Q4K,
            GgmlDType::Q5K => QKind::Q5K,
            GgmlDType::Q6K => QKind::Q6K,
            GgmlDType::F16 => QKind::F16,
            GgmlDType::BF16 => QKind::BF16,
            _ => return None,
        })
    }

    /// `(values, bytes)` of one block: a GGML block, or for the float formats (whose
    /// GGML block is one value) the 32 values the kernels take at a time. Rows must be
    /// a whole number of blocks.
    pub fn block(self) -> (usize, usize) {
        match self {
            QKind::Q4_0 => (QK, 18),
            QKind::Q4_1 => (QK, 20),
            QKind::Q5_0 => (QK, 22),
            QKind::Q5_1 => (QK, 24),
            QKind::Q8_0 => (QK, 34),
            QKind::Q2K => (QK_K, 84),
            QKind::Q3K => (QK_K, 110),
            QKind::Q4K => (QK_K, 144),
            QKind::Q5K => (QK_K, 176),
            QKind::Q6K => (QK_K, 210),
            QKind::F16 | QKind::BF16 => (QK, 64),
        }
    }

    /// Whether the values are 16-bit floats.
    pub fn is_float(self) -> bool {
        matches!(self, QKind::F16 | QKind::BF16)
    }

    /// Whether `k` weights per row can be held: a positive multiple of the block.
    pub fn fits(self, k: usize) -> bool {
        k > 0 && k.is_multiple_of(self.block().0)
    }

    /// Bytes of one row of `k` weights (`k` a multiple of the block length).
    pub fn row_bytes(self, k: usize) -> usize {
        let (len, bytes) = self.block();
        k / len * bytes
    }

    pub(crate) fn layout(self) -> Layout {
        match self {
            QKind::Q4_0 | QKind::Q4_1 | QKind::Q4K => Layout::U4,
            QKind::Q8_0 | QKind::Q5_0 | QKind::Q5_1 | QKind::Q5K => Layout::I8,
            QKind::Q6K | QKind::Q3K | QKind::Q2K => Layout::I8Halves,
            QKind::F16 => Layout::F16,
            QKind::BF16 => Layout::BF16,
        }
    }

    /// Whether the scales are the K-quants' factors (super-block scale times a small
    /// integer per sub-block).
    pub(crate) fn kquant(self) -> bool {
        matches!(
            self,
            QKind::Q2K | QKind::Q3K | QKind::Q4K | QKind::Q5K | QKind::Q6K
        )
    }

    /// How activation block sums are kept (one per offset): as ggml's Q8_1 does for
    /// Q4_1 and Q5_1 (f16).
    pub(crate) fn sums(self) -> Sums {
        match self {
            QKind::Q4_1 | QKind::Q5_1 => Sums::F16,
            QKind::Q4_0 | QKind::Q4K | QKind::Q5K => Sums::F32,
            QKind::Q2K => Sums::F32Halves,
            QKind::Q8_0 | QKind::Q5_0 | QKind::Q3K | QKind::Q6K => Sums::None,
            QKind::F16 | QKind::BF16 => Sums::None,
        }
    }

    pub(crate) fn decode(self, raw: &[u8], out: &mut [Sub32]) {
        match self {
            QKind::Q4_0 => repack::q4_0(raw, out),
            QKind::Q4_1 => repack::q4_1(raw, out),
            QKind::Q5_0 => repack::q5_0(raw, out),
            QKind::Q5_1 => repack::q5_1(raw, out),
            QKind::Q8_0 => repack::q8_0(raw, out),
            QKind::Q2K => repack::q2_k(raw, out),
            QKind::Q3K => repack::q3_k(raw, out),
            QKind::Q4K => repack::q4_k(raw, out),
            QKind::Q5K => repack::q5_k(raw, out),
            QKind::Q6K => repack::q6_k(raw, out),
            QKind::F16 | QKind::BF16 => unreachable!("float rows are not decoded"),
        }
    }
}

/// The activations a matmul reads: quantized for the integer formats, as given for
/// the float ones.
pub(crate) enum Acts<'a> {
    Quant(QActs),
    Float(&'a [f32]),
}

/// One quantized weight matrix of `n` rows (output features) by `k` columns (input
/// features), repacked into panels of 8 rows (see `repack`).
pub struct CpuQMatrix {
    pub(crate) kind: QKind,
    pub(crate) n: usize,
    pub(crate) k: usize,
    pub(crate) p: Panels,
}

impl std::fmt::Debug for CpuQMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CpuQMatrix")
            .field("kind", &self.kind)
            .field("n", &self.n)
            .field("k", &self.k)
            .finish_non_exhaustive()
    }
}

/// The `[m, n]` output shared by the parallel tasks, each writing its own columns.
struct Out {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: tasks write disjoint columns through the pointer (see `CpuQMatrix::panels`).
unsafe impl Sync for Out {}

/// Multiply-adds below which a matmul runs on the calling thread alone.
const PAR_MIN_WORK: usize = 1 << 18;
/// Multiply-adds each parallel task should get at least.
const TASK_MIN_WORK: usize = 1 << 17;
/// Activation rows per cache group (their quantized values stay in L2), at most.
const GROUP_ROWS: usize = 64;
/// Activation rows per cache group: up to [`GROUP_ROWS`], fewer (a multiple of 16,
/// every tile size's multiple) where a group's quantized values would pass 256 KiB, so
/// a 7B FFN-down's 14336-wide rows go 16 at a time (measured 5-10 % faster there).
fn group_rows(k: usize) -> usize {
    ((256 << 10) / k.max(1) / 16 * 16).clamp(16, GROUP_ROWS)
}
/// Activation rows per cache group on the AMX path: as many 16-row tiles as keep the
/// group's quantized values within about 1 MiB of L2 (64 to 256 rows), so each pair
/// of panels is unpacked into its tile strip once for as many rows as fit.
#[cfg(target_arch = "x86_64")]
fn amx_group_rows(k: usize) -> usize {
    ((1 << 20) / k.max(1) / 16 * 16).clamp(GROUP_ROWS, 256)
}
/// Activation rows per tile of the float kernels and the portable integer one.
pub(crate) const TILE: usize = 4;
/// The most rows any path's tile has ([`MatmulPath::tile_rows`], AMX's 16).
const MAX_TILE: usize = 16;

impl CpuQMatrix {
    /// Builds the matrix from a 2-D tensor of shape `(n, k)` in a supported format.
    pub fn from_qtensor(qt: &QTensor) -> Result<Self> {
        let Some(kind) = QKind::from_ggml(qt.dtype()) else {
            bail!("CpuQMatrix: unsupported dtype {:?}", qt.dtype());
        };
        let (n, k) = qt.shape().dims2()?;
        Self::from_raw(kind, n, k, &qt.data()?)
    }

    /// Builds the matrix from raw GGML blocks (`n` rows of `k` values each).
    pub fn from_raw(kind: QKind, n: usize, k: usize, raw: &[u8]) -> Result<Self> {
        let bk = kind.block().0;
        if !kind.fits(k) {
            bail!("CpuQMatrix: k = {k} is not a positive multiple of {bk} for {kind:?}");
        }
        let row_bytes = kind.row_bytes(k);
        if raw.len() != n * row_bytes {
            bail!(
                "CpuQMatrix: {} bytes for {n} rows of {row_bytes} bytes ({kind:?})",
                raw.len()
            );
        }
        Ok(Self::build(kind, n, k, &[raw]))
    }

    /// Builds the matrix from `parts` of raw GGML blocks (each a whole number of rows of
    /// `k` values), stacked: the rows of `parts[0]`, then those of `parts[1]`, ... This
    /// fuses projections of one input without first copying them side by side.
    pub fn from_parts(kind: QKind, k: usize, parts: &[&[u8]]) -> Result<Self> {
        if !kind.fits(k) {
            bail!(
                "CpuQMatrix: k = {k} is not a positive multiple of {} for {kind:?}",
                kind.block().0
            );
        }
        let row_bytes = kind.row_bytes(k);
        if let Some(p) = parts.iter().find(|p| !p.len().is_multiple_of(row_bytes)) {
            bail!(
                "CpuQMatrix: {} bytes are not whole rows of {row_bytes} bytes ({kind:?})",
                p.len()
            );
        }
        let n = parts.iter().map(|p| p.len() / row_bytes).sum();
        Ok(Self::build(kind, n, k, parts))
    }

    /// Repacks the `n` rows of `parts` (checked: whole rows of `k` values), the panels
    /// in parallel.
    fn build(kind: QKind, n: usize, k: usize, parts: &[&[u8]]) -> Self {
        let row_bytes = kind.row_bytes(k);
        let rows: Vec<&[u8]> = parts
            .iter()
            .flat_map(|p| p.chunks_exact(row_bytes))
            .collect();
        debug_assert_eq!(rows.len(), n);
        let p = Panels::build(kind, n, k, &rows, true);
        Self { kind, n, k, p }
    }

    /// Output features (rows of the weight).
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features (columns of the weight).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The weight encoding.
    pub fn kind(&self) -> QKind {
        self.kind
    }

    /// Bytes of weight data held (packed values and scales).
    pub fn size_in_bytes(&self) -> usize {
        self.p.qs.len() + self.p.d.bytes() + self.p.m.bytes()
    }

    /// The weights as f32, `[n, k]` row-major: exactly ggml's dequantized values.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.n * self.k];
        for (j, row) in out.chunks_exact_mut(self.k).enumerate() {
            if self.kind.is_float() {
                for (t, v) in row.iter_mut().enumerate() {
                    *v = self.p.get_float(j, t);
                }
                continue;
            }
            for (b, vals) in row.chunks_exact_mut(QK).enumerate() {
                let s = self.p.get(j, b);
                for (t, v) in vals.iter_mut().enumerate() {
                    *v = s.d[t / 16] * f32::from(s.q[t]) + s.m[t / 16];
                }
            }
        }
        out
    }

    /// `x · Wᵀ` for `m` rows `x` (`[m, k]`, row-major), returned as `[m, n]`, on the
    /// fastest path the CPU has ([`MatmulPath::detect`]).
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_on(x, m, MatmulPath::detect())
    }

    /// [`Self::matmul`] with the portable scalar kernel (the reference for the SIMD one).
    pub fn matmul_scalar(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_on(x, m, MatmulPath::Scalar)
    }

    /// [`Self::matmul`] on a chosen path, one of [`MatmulPath::available`] (the paths
    /// give bit-identical results).
    ///
    /// # Panics
    /// If the CPU lacks the path's instructions.
    pub fn matmul_on(&self, x: &[f32], m: usize, path: MatmulPath) -> Vec<f32> {
        assert!(
            MatmulPath::available().contains(&path),
            "{} kernels are not available on this CPU",
            path.name()
        );
        assert_eq!(x.len(), m * self.k, "x must be [m, k]");
        if m == 0 || self.n == 0 {
            return Vec::new();
        }
        let acts = if self.kind.is_float() {
            Acts::Float(x)
        } else {
            let mut q = QActs::quantize_with(path.isa(), x, m, self.k, self.kind.sums());
            #[cfg(target_arch = "x86_64")]
            if path == MatmulPath::AmxInt8 && m >= super::amx_int::ROWS {
                q.tile(super::amx_int::ROWS);
            }
            Acts::Quant(q)
        };
        let mut out: Vec<f32> = Vec::with_capacity(m * self.n);
        let dst = Out {
            ptr: out.spare_capacity_mut().as_mut_ptr().cast(),
            n: self.n,
        };
        let panels = self.n.div_ceil(PANEL);
        let work = m * self.n * self.k;
        if work < PAR_MIN_WORK || rayon::current_num_threads() == 1 {
            // SAFETY: `dst` holds m * n values and this call writes all of them.
            unsafe { self.panels(path, &acts, 0, panels, m, &dst) };
        } else {
            // Tasks take whole units (pairs of panels where the path pairs them, so no
            // task ends on a lone panel), up to four per thread, their sizes spread
            // evenly (`t * units / tasks`), so halves of the range weigh the same.
            let unit = if path.pairs_panels() && matches!(acts, Acts::Quant(_)) {
                2
            } else {
                1
            };
            let units = panels.div_ceil(unit);
            let threads = rayon::current_num_threads();
            let min_units = TASK_MIN_WORK.div_ceil(m * self.k * PANEL * unit);
            // A whole number of tasks per thread.
            let tasks = (4 * threads)
                .min(units.div_ceil(min_units.max(1)).next_multiple_of(threads))
                .min(units);
            (0..tasks).into_par_iter().for_each(|t| {
                let g0 = t * units / tasks * unit;
                let g1 = ((t + 1) * units / tasks * unit).min(panels);
                // SAFETY: tasks cover disjoint panel ranges, so they write disjoint
                // columns of `dst`; together they write every value.
                unsafe { self.panels(path, &acts, g0, g1, m, &dst) };
            });
        }
        // SAFETY: every one of the m * n values was written above.
        unsafe { out.set_len(m * self.n) };
        out
    }

    /// Output columns of panels `g0..g1` for all `m` rows, written into `dst`.
    /// Cache-blocked: a group of activation rows against each panel in turn; on the
    /// AMX path each pair of panels is unpacked once per group into a tile strip and
    /// the group's 16-row tiles go through the tile unit, the rest through AVX-512.
    ///
    /// # Safety
    /// `dst` must hold `m` rows of `self.n` values, and no other thread may access its
    /// columns `g0 * PANEL..g1 * PANEL` meanwhile.
    unsafe fn panels(
        &self,
        path: MatmulPath,
        acts: &Acts,
        g0: usize,
        g1: usize,
        m: usize,
        dst: &Out,
    ) {
        assert!(g1 * PANEL < self.n + PANEL && dst.n == self.n);
        let rows_per_tile = match acts {
            Acts::Quant(_) => path.tile_rows(),
            Acts::Float(_) => TILE,
        };
        // Two panels at a time where the path has a 512-bit pair kernel.
        let step = if path.pairs_panels() && matches!(acts, Acts::Quant(_)) {
            2
        } else {
            1
        };
        #[cfg(target_arch = "x86_64")]
        let mut amx = self.amx_state(path, acts, m);
        #[cfg(target_arch = "x86_64")]
        let group = if amx.is_some() {
            amx_group_rows(self.k)
        } else {
            group_rows(self.k)
        };
        #[cfg(not(target_arch = "x86_64"))]
        let group = group_rows(self.k);
        let mut tiles = [[[0f32; PANEL]; MAX_TILE]; 2];
        for r0 in (0..m).step_by(group) {
            let r1 = (r0 + group).min(m);
            for g in (g0..g1).step_by(step) {
                let pair = step == 2 && g + 1 < g1;
                let mut r = r0;
                #[cfg(target_arch = "x86_64")]
                if let (Some((t, strip)), Acts::Quant(a), true) = (&mut amx, acts, pair) {
                    const ROWS: usize = super::amx_int::ROWS;
                    if r1 - r0 >= ROWS {
                        // SAFETY: the AMX path is only taken where the CPU has it
                        // (`amx_state`); panels g and g + 1 exist (`pair`).
                        unsafe { strip.fill(&self.p, g) };
                    }
                    while r + ROWS <= r1 {
                        assert!(a.qs.len() >= (r + ROWS) * self.k);
                        let [t0, t1] = &mut tiles;
                        let (o0, o1) = (&mut t0[..ROWS], &mut t1[..ROWS]);
                        // SAFETY: as above; the strip holds panels g and g + 1, rows
                        // r..r + 16 exist (asserted), `t` is this thread's tiles.
                        unsafe { super::amx_int::pair(t, strip, &self.p, a, r, [o0, o1]) };
                        // SAFETY: caller contract.
                        unsafe { self.store(&tiles, pair, g, r, ROWS, dst) };
                        r += ROWS;
                    }
                }
                while r < r1 {
                    let rows = if r + rows_per_tile <= r1 {
                        rows_per_tile
                    } else {
                        1
                    };
                    let [t0, t1] = &mut tiles;
                    if pair {
                        self.pair_tile(path, g, acts, r, &mut t0[..rows], &mut t1[..rows]);
                    } else {
                        self.tile(path, g, acts, r, &mut t0[..rows]);
                    }
                    // SAFETY: caller contract.
                    unsafe { self.store(&tiles, pair, g, r, rows, dst) };
                    r += rows;
                }
            }
        }
    }

    /// The tile configuration and weight strip of one task on the AMX path (`None` on
    /// every other path, for float weights, and below one 16-row tile).
    #[cfg(target_arch = "x86_64")]
    fn amx_state(
        &self,
        path: MatmulPath,
        acts: &Acts,
        m: usize,
    ) -> Option<(super::amx_int::Tiles, super::amx_int::Strip)> {
        if path != MatmulPath::AmxInt8
            || !matches!(acts, Acts::Quant(_))
            || m < super::amx_int::ROWS
        {
            return None;
        }
        // SAFETY: `matmul_on` checked that the CPU has the path, so AMX-INT8 runs in
        // this process.
        let tiles = unsafe { super::amx_int::Tiles::configure(self.p.layout) };
        Some((tiles, super::amx_int::Strip::new(self.p.nb)))
    }

    /// Copies the first `rows` rows of panel `g`'s tile (and panel `g + 1`'s if `pair`)
    /// to output rows `r..r + rows` of `dst`.
    ///
    /// # Safety
    /// As [`Self::panels`], for rows `r..r + rows` (all `< m`) and panels `g`
    /// (`g + 1`).
    unsafe fn store(
        &self,
        tiles: &[[[f32; PANEL]; MAX_TILE]; 2],
        pair: bool,
        g: usize,
        r: usize,
        rows: usize,
        dst: &Out,
    ) {
        for (h, t) in tiles.iter().take(1 + usize::from(pair)).enumerate() {
            let j0 = (g + h) * PANEL;
            let cols = PANEL.min(self.n - j0);
            for (i, row) in t[..rows].iter().enumerate() {
                // SAFETY: row r + i < m, columns j0..j0 + cols < n are this task's
                // (caller contract).
                unsafe {
                    let at = dst.ptr.add((r + i) * dst.n + j0);
                    if cols == PANEL {
                        // A whole panel: one fixed-size (vector) copy, not a memcpy call.
                        at.cast::<[f32; PANEL]>().write_unaligned(*row);
                    } else {
                        std::ptr::copy_nonoverlapping(row.as_ptr(), at, cols);
                    }
                }
            }
        }
    }

    /// Panels `g` and `g + 1` against activation rows `r0..r0 + out0.len()` (1 or the
    /// path's tile rows), on a path that [`MatmulPath::pairs_panels`].
    fn pair_tile(
        &self,
        path: MatmulPath,
        g: usize,
        a: &Acts,
        r0: usize,
        out0: &mut [[f32; PANEL]],
        out1: &mut [[f32; PANEL]],
    ) {
        let Acts::Quant(a) = a else {
            unreachable!("float weights never pair panels")
        };
        assert!((g + 1) * PANEL < self.n && a.nb == self.p.nb && !self.kind.is_float());
        assert!(a.qs.len() >= (r0 + out0.len()) * self.k && out0.len() == out1.len());
        assert!(out0.len() == 1 || out0.len() == path.tile_rows());
        let per = self.kind.sums().per_block();
        assert!(per == self.p.n_off && a.s.len() == a.d.len() * per);
        match path {
            // SAFETY: `matmul_on` checked that the CPU has the path's features; both
            // panels and the activation rows exist (checked above).
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx512Vnni | MatmulPath::AmxInt8 => unsafe {
                super::x86_zmm::pair(&self.p, g, a, r0, out0, out1)
            },
            _ => unreachable!("{} does not pair panels", path.name()),
        }
    }

    /// Panel `g` against activation rows `r0..r0 + out.len()` (1 or the path's tile
    /// rows).
    fn tile(&self, path: MatmulPath, g: usize, a: &Acts, r0: usize, out: &mut [[f32; PANEL]]) {
        let a = match a {
            Acts::Quant(a) => a,
            Acts::Float(x) => return self.float_tile(path, g, x, r0, out),
        };
        assert!(g * PANEL < self.n && a.nb == self.p.nb && !self.kind.is_float());
        assert!(a.qs.len() >= (r0 + out.len()) * self.k);
        assert!(out.len() == 1 || out.len() == path.tile_rows());
        let per = self.kind.sums().per_block();
        assert!(per == self.p.n_off && a.s.len() == a.d.len() * per);
        // SAFETY (every x86 arm): `matmul_on` checked that the CPU has the path's
        // features; the panel and the activation rows exist (checked above), and the
        // row count is 1 or the path's tile.
        match path {
            MatmulPath::Scalar => super::scalar::tile(&self.p, g, a, r0, out),
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx2 => unsafe { super::x86_int::avx2::tile(&self.p, g, a, r0, out) },
            #[cfg(target_arch = "x86_64")]
            MatmulPath::AvxVnni => unsafe { super::x86_int::avxvnni::tile(&self.p, g, a, r0, out) },
            #[cfg(target_arch = "x86_64")]
            MatmulPath::Avx512Vnni | MatmulPath::AmxInt8 => unsafe {
                super::x86_int::avx512vnni::tile(&self.p, g, a, r0, out)
            },
        }
    }

    /// [`Self::tile`] for float weights and f32 activations `x`.
    fn float_tile(
        &self,
        path: MatmulPath,
        g: usize,
        x: &[f32],
        r0: usize,
        out: &mut [[f32; PANEL]],
    ) {
        assert!(g * PANEL < self.n && self.kind.is_float());
        assert!(x.len() >= (r0 + out.len()) * self.k && matches!(out.len(), 1 | TILE));
        match path.isa() {
            Isa::Scalar => super::scalar::float_tile(&self.p, g, x, r0, out),
            // SAFETY: every x86 path needs AVX2, FMA and F16C, and `matmul_on` checked
            // the CPU has the path; the panel and the activation rows exist (checked
            // above and in the kernel).
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => unsafe { super::x86::float_tile(&self.p, g, x, r0, out) },
        }
    }
}
