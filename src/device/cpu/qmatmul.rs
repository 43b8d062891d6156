//! The quantized weight matrix and the batched, parallel matmul driver.

use anyhow::{Result, bail};
use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;
use rayon::prelude::*;

use super::acts::{QActs, QK};

/// Weight encodings the kernels handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QKind {
    /// Blocks of 32 4-bit values with f16 scale `d` and offset `m`: `w = d*q + m`.
    Q4_1,
    /// Blocks of 32 `i8` values with f16 scale `d`: `w = d*q`.
    Q8_0,
}

impl QKind {
    /// The kind for a GGML dtype, if the kernels support it.
    pub fn from_ggml(dtype: GgmlDType) -> Option<Self> {
        match dtype {
            GgmlDType::Q4_1 => Some(QKind::Q4_1),
            GgmlDType::Q8_0 => Some(QKind::Q8_0),
            _ => None,
        }
    }

    /// Bytes of packed values per block.
    pub(crate) fn qs_bytes(self) -> usize {
        match self {
            QKind::Q4_1 => 16,
            QKind::Q8_0 => 32,
        }
    }

    /// f16 scalars (`d`, and `m` for Q4_1) per block.
    fn n_scalars(self) -> usize {
        match self {
            QKind::Q4_1 => 2,
            QKind::Q8_0 => 1,
        }
    }
}

/// One quantized weight matrix of `n` rows (output features) by `k` columns (input
/// features), unpacked from GGML blocks into scales (as f32, exact) and packed values.
#[derive(Debug, Clone)]
pub struct CpuQMatrix {
    pub(crate) kind: QKind,
    pub(crate) n: usize,
    pub(crate) k: usize,
    /// Per block: `d` (and `m` for Q4_1), `n * nb * n_scalars`.
    pub(crate) scales: Vec<f32>,
    /// Per block: the packed values, `n * nb * qs_bytes`.
    pub(crate) qs: Vec<u8>,
}

/// Multiply-adds below which a matmul runs on the calling thread alone.
const PAR_MIN_WORK: usize = 1 << 18;
/// Multiply-adds each parallel task should get at least.
const TASK_MIN_WORK: usize = 1 << 17;
/// Weight rows per cache panel.
const PANEL_ROWS: usize = 64;
/// Activation rows per cache group (a multiple of the SIMD tile).
const GROUP_ROWS: usize = 16;

impl CpuQMatrix {
    /// Builds the matrix from a 2-D Q4_1 or Q8_0 tensor of shape `(n, k)`.
    pub fn from_qtensor(qt: &QTensor) -> Result<Self> {
        let Some(kind) = QKind::from_ggml(qt.dtype()) else {
            bail!("CpuQMatrix: unsupported dtype {:?}", qt.dtype());
        };
        let (n, k) = qt.shape().dims2()?;
        Self::from_raw(kind, n, k, &qt.data()?)
    }

    /// Builds the matrix from raw GGML blocks (`n` rows of `k / 32` blocks each).
    pub fn from_raw(kind: QKind, n: usize, k: usize, raw: &[u8]) -> Result<Self> {
        if !k.is_multiple_of(QK) {
            bail!("CpuQMatrix: k = {k} is not a multiple of {QK}");
        }
        let (ns, qb) = (kind.n_scalars(), kind.qs_bytes());
        let block = 2 * ns + qb;
        let blocks = n * (k / QK);
        if raw.len() != blocks * block {
            bail!(
                "CpuQMatrix: {} bytes for {blocks} blocks of {block}",
                raw.len()
            );
        }
        let mut scales = Vec::with_capacity(blocks * ns);
        let mut qs = Vec::with_capacity(blocks * qb);
        for b in raw.chunks_exact(block) {
            for h in b[..2 * ns].chunks_exact(2) {
                scales.push(f16::from_le_bytes([h[0], h[1]]).to_f32());
            }
            qs.extend_from_slice(&b[2 * ns..]);
        }
        Ok(Self {
            kind,
            n,
            k,
            scales,
            qs,
        })
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

    /// `x · Wᵀ` for `m` rows `x` (`[m, k]`, row-major), returned as `[m, n]`; uses AVX2
    /// where the CPU has it.
    pub fn matmul(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, Backend::detect())
    }

    /// [`Self::matmul`] with the portable scalar kernel (the reference for the SIMD one).
    pub fn matmul_scalar(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.matmul_with(x, m, Backend::Scalar)
    }

    fn matmul_with(&self, x: &[f32], m: usize, backend: Backend) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "x must be [m, k]");
        if m == 0 || self.n == 0 {
            return Vec::new();
        }
        let acts = QActs::quantize(x, m, self.k);
        let work = m * self.n * self.k;
        if work < PAR_MIN_WORK || rayon::current_num_threads() == 1 {
            return self.columns(backend, &acts, 0, self.n, m);
        }
        let min_cols = TASK_MIN_WORK.div_ceil(m * self.k);
        let even = self.n.div_ceil(4 * rayon::current_num_threads());
        let cw = min_cols.max(even).max(1);
        let starts: Vec<usize> = (0..self.n).step_by(cw).collect();
        let parts: Vec<Vec<f32>> = starts
            .par_iter()
            .map(|&j0| self.columns(backend, &acts, j0, (j0 + cw).min(self.n), m))
            .collect();
        let mut out = vec![0f32; m * self.n];
        for (&j0, part) in starts.iter().zip(&parts) {
            let w = part.len() / m;
            for (dst, src) in out.chunks_exact_mut(self.n).zip(part.chunks_exact(w)) {
                dst[j0..j0 + w].copy_from_slice(src);
            }
        }
        out
    }

    /// Output columns `j0..j1` for all `m` rows, as `[m, j1 - j0]`. Cache-blocked: a
    /// panel of weight rows against a group of activation rows at a time.
    fn columns(&self, backend: Backend, acts: &QActs, j0: usize, j1: usize, m: usize) -> Vec<f32> {
        let cw = j1 - j0;
        let mut out = vec![0f32; m * cw];
        let mut tmp = [0f32; GROUP_ROWS];
        for p0 in (j0..j1).step_by(PANEL_ROWS) {
            let p1 = (p0 + PANEL_ROWS).min(j1);
            for g0 in (0..m).step_by(GROUP_ROWS) {
                let g = (m - g0).min(GROUP_ROWS);
                for j in p0..p1 {
                    backend.row_dots(self, j, acts, g0, &mut tmp[..g]);
                    for (r, &v) in tmp[..g].iter().enumerate() {
                        out[(g0 + r) * cw + j - j0] = v;
                    }
                }
            }
        }
        out
    }
}

/// Which kernel computes the dot products.
#[derive(Debug, Clone, Copy)]
enum Backend {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Backend {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            return Backend::Avx2;
        }
        Backend::Scalar
    }

    /// Dot products of weight row `j` with activation rows `r0..r0 + out.len()`.
    fn row_dots(self, w: &CpuQMatrix, j: usize, a: &QActs, r0: usize, out: &mut [f32]) {
        assert!(j < w.n && a.nb * QK == w.k && a.qs.len() >= (r0 + out.len()) * w.k);
        match self {
            Backend::Scalar => super::scalar::row_dots(w, j, a, r0, out),
            // SAFETY: `detect` chose this backend only on a CPU with AVX2 and FMA, and
            // the lengths were checked above.
            #[cfg(target_arch = "x86_64")]
            Backend::Avx2 => unsafe { super::x86::row_dots(w, j, a, r0, out) },
        }
    }
}
