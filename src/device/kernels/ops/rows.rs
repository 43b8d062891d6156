//! Row-wise kernels: RMSNorm with the residual add, rotary (adjacent or half-split
//! pairs, whole or partial heads), SiLU and GELU gating, row gather and greedy argmax.

use super::{Result, check, int, ptr};
use crate::device::kernels::buffer::{DevBuf, DevIndex, Device, DeviceExt, KernelArg, LaunchDims};
use crate::model::rope::RopeTable;
use crate::model::spec::RopeStyle;

/// RMSNorm of `rows` rows of `x` (width `w.len()`) into `out`, after `x += delta` when
/// `delta` is given (the residual add, written back into `x`).
pub fn rms_norm_residual(
    dev: &dyn Device,
    x: &mut DevBuf<f32>,
    delta: Option<&DevBuf<f32>>,
    w: &DevBuf<f32>,
    out: &mut DevBuf<f32>,
    rows: usize,
    eps: f32,
) -> Result<()> {
    const OP: &str = "rms_norm_residual";
    let width = w.len();
    let need = rows * width;
    check(width > 0, OP, || "empty weight".into())?;
    check(x.len() >= need && out.len() >= need, OP, || {
        format!(
            "x and out need {rows} x {width} floats, have {} and {}",
            x.len(),
            out.len()
        )
    })?;
    if let Some(d) = delta {
        check(d.len() >= need, OP, || {
            format!("delta needs {need} floats, has {}", d.len())
        })?;
    }
    if rows == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        KernelArg::Ptr(delta.map_or(0, |d| d.ptr())),
        ptr(w),
        ptr(out),
        int(width, OP, "width")?,
        KernelArg::F32(eps),
    ];
    // SAFETY: every buffer holds rows x width floats.
    unsafe {
        dev.launch(
            "rms_norm_residual",
            LaunchDims::linear(rows as u32, 256),
            &args,
        )
    }
}

/// The rotary tables on the device, with how they pair values.
#[derive(Debug)]
pub struct DevRope {
    cos: DevBuf<f32>,
    sin: DevBuf<f32>,
    half: usize,
    max_positions: usize,
    style: RopeStyle,
}

impl DevRope {
    /// Uploads the CPU path's table.
    pub fn upload(dev: &dyn Device, table: &RopeTable) -> Result<Self> {
        let (cos, sin) = table.tables();
        Ok(Self {
            half: table.n_rot() / 2,
            max_positions: table.max_positions(),
            style: table.style(),
            cos: dev.upload(cos)?,
            sin: dev.upload(sin)?,
        })
    }

    /// Positions the table covers.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }
}

/// Where rotary applies: `n_heads` heads of `head_dim` from column `offset` of rows
/// `stride` floats apart.
#[derive(Debug, Clone, Copy)]
pub struct HeadColumns {
    /// Floats per row.
    pub stride: usize,
    /// First column of the first head.
    pub offset: usize,
    /// Heads.
    pub n_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

/// Rotates the heads at `cols` of `rows` rows of `x`, row `r` by position `pos[r]`: the
/// first `n_rot` values of each head, paired as the table's style says (as
/// `RopeTable::apply_strided`).
pub fn rotary(
    dev: &dyn Device,
    x: &mut DevBuf<f32>,
    rope: &DevRope,
    pos: &DevIndex,
    rows: usize,
    cols: HeadColumns,
) -> Result<()> {
    const OP: &str = "rotary";
    let HeadColumns {
        stride,
        offset,
        n_heads,
        head_dim,
    } = cols;
    check(rope.half > 0 && 2 * rope.half <= head_dim, OP, || {
        format!("head_dim {head_dim}, table rotates {}", 2 * rope.half)
    })?;
    check(offset + n_heads * head_dim <= stride, OP, || {
        format!(
            "heads end at column {}, rows are {stride} wide",
            offset + n_heads * head_dim
        )
    })?;
    check(x.len() >= rows * stride && pos.len() >= rows, OP, || {
        format!(
            "{rows} rows of {stride}: x has {}, positions {}",
            x.len(),
            pos.len()
        )
    })?;
    check(
        pos.min() >= 0 && (pos.max() as usize) < rope.max_positions,
        OP,
        || {
            format!(
                "positions must be in 0..{}, got {}..={}",
                rope.max_positions,
                pos.min(),
                pos.max()
            )
        },
    )?;
    let pairs = rows * n_heads * rope.half;
    if pairs == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        ptr(&rope.cos),
        ptr(&rope.sin),
        ptr(pos.buf()),
        int(rows, OP, "rows")?,
        int(stride, OP, "stride")?,
        int(offset, OP, "offset")?,
        int(n_heads, OP, "heads")?,
        int(head_dim, OP, "head_dim")?,
        int(rope.half, OP, "n_rot / 2")?,
        KernelArg::I32(i32::from(rope.style == RopeStyle::Halves)),
    ];
    // SAFETY: columns and positions bounded above; 2 * half <= head_dim.
    unsafe { dev.launch("rotary", LaunchDims::cover(pairs, 256), &args) }
}

/// Rows of `2 * ff` (gate | up) into rows of `ff`: `silu(gate) * up`.
pub fn silu_gate_up(
    dev: &dyn Device,
    gu: &DevBuf<f32>,
    out: &mut DevBuf<f32>,
    rows: usize,
    ff: usize,
) -> Result<()> {
    gated(dev, "silu_gate_up", gu, out, rows, ff)
}

/// Rows of `2 * ff` (gate | up) into rows of `ff`: `gelu_tanh(gate) * up` (as
/// `model::ops::gelu_gate_up`).
pub fn gelu_gate_up(
    dev: &dyn Device,
    gu: &DevBuf<f32>,
    out: &mut DevBuf<f32>,
    rows: usize,
    ff: usize,
) -> Result<()> {
    gated(dev, "gelu_gate_up", gu, out, rows, ff)
}

/// The gated activation kernel `op` over `rows` rows of `2 * ff`.
fn gated(
    dev: &dyn Device,
    op: &'static str,
    gu: &DevBuf<f32>,
    out: &mut DevBuf<f32>,
    rows: usize,
    ff: usize,
) -> Result<()> {
    check(
        gu.len() >= rows * 2 * ff && out.len() >= rows * ff,
        op,
        || {
            format!(
                "{rows} rows of ff {ff}: gate|up has {}, out {}",
                gu.len(),
                out.len()
            )
        },
    )?;
    if rows * ff == 0 {
        return Ok(());
    }
    let args = [
        ptr(gu),
        ptr(out),
        int(rows, op, "rows")?,
        int(ff, op, "ff")?,
    ];
    // SAFETY: sizes checked.
    unsafe { dev.launch(op, LaunchDims::cover(rows * ff, 256), &args) }
}

/// Index of each row's largest value (ties: lowest index; NaN never wins).
pub fn argmax_rows(
    dev: &dyn Device,
    logits: &DevBuf<f32>,
    rows: usize,
    width: usize,
    out: &mut DevBuf<i32>,
) -> Result<()> {
    const OP: &str = "argmax_rows";
    check(
        width > 0 && logits.len() >= rows * width && out.len() >= rows,
        OP,
        || {
            format!(
                "{rows} rows of {width}: logits has {}, out {}",
                logits.len(),
                out.len()
            )
        },
    )?;
    if rows == 0 {
        return Ok(());
    }
    let args = [ptr(logits), ptr(out), int(width, OP, "width")?];
    // SAFETY: sizes checked.
    unsafe { dev.launch("argmax_rows", LaunchDims::linear(rows as u32, 256), &args) }
}

/// `out[i] = src[ids[i]]` for rows of `width` floats (`src` holds `src_rows` rows).
pub fn gather_rows(
    dev: &dyn Device,
    src: &DevBuf<f32>,
    src_rows: usize,
    ids: &DevIndex,
    width: usize,
    out: &mut DevBuf<f32>,
) -> Result<()> {
    const OP: &str = "gather_rows";
    let rows = ids.len();
    check(
        src.len() >= src_rows * width && out.len() >= rows * width,
        OP,
        || {
            format!(
                "{rows} of {src_rows} rows of {width}: src has {}, out {}",
                src.len(),
                out.len()
            )
        },
    )?;
    check(
        ids.min() >= 0 && (ids.max() as i64) < src_rows as i64,
        OP,
        || {
            format!(
                "row ids must be in 0..{src_rows}, got {}..={}",
                ids.min(),
                ids.max()
            )
        },
    )?;
    if rows * width == 0 {
        return Ok(());
    }
    let args = [
        ptr(src),
        ptr(ids.buf()),
        ptr(out),
        int(width, OP, "width")?,
        int(rows, OP, "rows")?,
    ];
    // SAFETY: ids bounded by src_rows, sizes checked.
    unsafe { dev.launch("gather_rows", LaunchDims::cover(rows * width, 256), &args) }
}
