//! Quantized weights on the device and the products with them: GEMV for few activation
//! rows, tiled GEMM for many, and row lookup (embeddings).

use super::{Result, check, int, ptr};
use crate::device::cpu::QKind;
use crate::device::kernels::buffer::{DevBuf, DevIndex, Device, DeviceExt, KernelArg, LaunchDims};

/// Activation rows up to which `qmatmul` uses the GEMV kernel.
pub const MATVEC_MAX_ROWS: usize = 8;

/// A GGML-quantized weight matrix on the device: `n` rows (outputs) of `k` weights,
/// blocks exactly as in the GGUF file.
#[derive(Debug)]
pub struct QWeight {
    kind: QKind,
    n: usize,
    k: usize,
    data: DevBuf<u8>,
}

fn suffix(kind: QKind) -> &'static str {
    match kind {
        QKind::Q4_0 => "q4_0",
        QKind::Q4_1 => "q4_1",
        QKind::Q5_0 => "q5_0",
        QKind::Q5_1 => "q5_1",
        QKind::Q8_0 => "q8_0",
        QKind::Q2K => "q2_k",
        QKind::Q3K => "q3_k",
        QKind::Q4K => "q4_k",
        QKind::Q5K => "q5_k",
        QKind::Q6K => "q6_k",
        QKind::F16 => "f16",
        QKind::BF16 => "bf16",
    }
}

impl QWeight {
    /// Uploads `raw` (the tensor's bytes, rows of `k` weights) as an `n` x `k` matrix.
    pub fn upload(dev: &dyn Device, kind: QKind, n: usize, k: usize, raw: &[u8]) -> Result<Self> {
        let (block_len, _) = kind.block();
        check(kind.fits(k), "qweight", || {
            format!("k = {k} must be a positive multiple of {block_len} for {kind:?}")
        })?;
        let want = n * kind.row_bytes(k);
        check(raw.len() == want, "qweight", || {
            format!("{n} x {k} {kind:?} takes {want} bytes, got {}", raw.len())
        })?;
        Ok(Self {
            kind,
            n,
            k,
            data: dev.upload(raw)?,
        })
    }

    /// Bytes of the whole matrix.
    pub fn bytes(&self) -> usize {
        self.n * self.row_bytes()
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> usize {
        self.kind.row_bytes(self.k)
    }

    /// Output features.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input features.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The encoding.
    pub fn kind(&self) -> QKind {
        self.kind
    }
}

/// `y[m][n] = x[m][k] · W[n][k]`: the GEMV kernel up to [`MATVEC_MAX_ROWS`] rows, the
/// tiled kernel beyond.
pub fn qmatmul(
    dev: &dyn Device,
    w: &QWeight,
    x: &DevBuf<f32>,
    m: usize,
    y: &mut DevBuf<f32>,
) -> Result<()> {
    qmatmul_into(dev, w, x, m, y, 0, w.n)
}

/// [`qmatmul`] writing row `r` of the product at `y[r * ldy + col ..][..n]`: one part
/// of a wider row (projections of one input side by side).
pub fn qmatmul_into(
    dev: &dyn Device,
    w: &QWeight,
    x: &DevBuf<f32>,
    m: usize,
    y: &mut DevBuf<f32>,
    col: usize,
    ldy: usize,
) -> Result<()> {
    const OP: &str = "qmatmul";
    let (n, k) = (w.n, w.k);
    check(m > 0, OP, || "no activation rows".into())?;
    check(x.len() >= m * k, OP, || {
        format!("x needs {m} x {k} = {} floats, has {}", m * k, x.len())
    })?;
    check(col + n <= ldy, OP, || {
        format!("columns {col}..{} do not fit rows of {ldy}", col + n)
    })?;
    let need = (m - 1) * ldy + col + n;
    check(y.len() >= need, OP, || {
        format!("y needs {m} rows of {ldy} ({need} floats), has {}", y.len())
    })?;
    let args = [
        ptr(&w.data),
        ptr(x),
        KernelArg::Ptr(y.ptr_at(col)),
        int(n, OP, "n")?,
        int(k, OP, "k")?,
        int(m, OP, "m")?,
        int(w.row_bytes(), OP, "row bytes")?,
        int(ldy, OP, "ldy")?,
    ];
    let f = suffix(w.kind);
    if m <= MATVEC_MAX_ROWS {
        // One warp per weight row, 8 warps a block.
        let dims = LaunchDims::cover(n * 32, 256);
        // SAFETY: sizes checked above match the kernel's reads and writes.
        unsafe { dev.launch(&format!("qmatvec_{f}"), dims, &args) }
    } else {
        let dims = LaunchDims {
            grid: [n.div_ceil(64) as u32, m.div_ceil(32) as u32, 1],
            block: [256, 1, 1],
        };
        check(dims.grid[1] <= 65_535, OP, || {
            format!("m = {m} rows is too many")
        })?;
        // SAFETY: as above.
        unsafe { dev.launch(&format!("qmatmul_{f}"), dims, &args) }
    }
}

/// `out[i] = W[ids[i]]` in f32 (embedding lookup).
pub fn dequant_rows(
    dev: &dyn Device,
    w: &QWeight,
    ids: &DevIndex,
    out: &mut DevBuf<f32>,
) -> Result<()> {
    const OP: &str = "dequant_rows";
    let rows = ids.len();
    check(
        ids.min() >= 0 && (ids.max() as i64) < w.n as i64,
        OP,
        || {
            format!(
                "row ids must be in 0..{}, got {}..={}",
                w.n,
                ids.min(),
                ids.max()
            )
        },
    )?;
    check(out.len() >= rows * w.k, OP, || {
        format!("out needs {rows} x {} floats, has {}", w.k, out.len())
    })?;
    if rows == 0 {
        return Ok(());
    }
    let args = [
        ptr(&w.data),
        ptr(ids.buf()),
        ptr(out),
        int(w.k, OP, "k")?,
        int(rows, OP, "rows")?,
        int(w.row_bytes(), OP, "row bytes")?,
    ];
    let dims = LaunchDims::cover(rows * (w.k / 32), 256);
    // SAFETY: ids bounded by n, out sized above.
    unsafe { dev.launch(&format!("dequant_rows_{}", suffix(w.kind)), dims, &args) }
}
