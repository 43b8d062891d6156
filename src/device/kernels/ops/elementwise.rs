//! In-place updates of activations: biases broadcast over rows (at strided columns),
//! per-head RMSNorm (Q/K norms), a scale (embedding multiplier) and a tanh soft-cap
//! (final logits). Semantics are the CPU decoder's (`model::transformer::layer`).

use super::rows::HeadColumns;
use super::{Result, check, int, ptr};
use crate::device::kernels::buffer::{DevBuf, Device, KernelArg, LaunchDims};

/// `x[r][offset + i] += bias[i]` for `rows` rows `stride` floats apart, `i <
/// bias.len()`.
pub fn add_bias(
    dev: &dyn Device,
    x: &mut DevBuf<f32>,
    bias: &DevBuf<f32>,
    rows: usize,
    stride: usize,
    offset: usize,
) -> Result<()> {
    const OP: &str = "add_bias";
    let width = bias.len();
    check(offset + width <= stride, OP, || {
        format!("a bias of {width} at column {offset} does not fit rows of {stride}")
    })?;
    check(x.len() >= rows * stride, OP, || {
        format!("{rows} rows of {stride}: x has {}", x.len())
    })?;
    if rows * width == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        ptr(bias),
        int(rows, OP, "rows")?,
        int(stride, OP, "stride")?,
        int(offset, OP, "offset")?,
        int(width, OP, "width")?,
    ];
    // SAFETY: every touched column is inside its row, every row inside x.
    unsafe { dev.launch(OP, LaunchDims::cover(rows * width, 256), &args) }
}

/// RMSNorm in place of each head at `cols` of `rows` rows, by the `head_dim` weights `w`
/// every head shares.
pub fn rms_norm_heads(
    dev: &dyn Device,
    x: &mut DevBuf<f32>,
    w: &DevBuf<f32>,
    rows: usize,
    cols: HeadColumns,
    eps: f32,
) -> Result<()> {
    const OP: &str = "rms_norm_heads";
    let HeadColumns {
        stride,
        offset,
        n_heads,
        head_dim,
    } = cols;
    check(head_dim > 0 && w.len() == head_dim, OP, || {
        format!("heads of {head_dim}, weight of {}", w.len())
    })?;
    check(offset + n_heads * head_dim <= stride, OP, || {
        format!(
            "heads end at column {}, rows are {stride} wide",
            offset + n_heads * head_dim
        )
    })?;
    check(x.len() >= rows * stride, OP, || {
        format!("{rows} rows of {stride}: x has {}", x.len())
    })?;
    if rows * n_heads == 0 {
        return Ok(());
    }
    let args = [
        ptr(x),
        ptr(w),
        int(stride, OP, "stride")?,
        int(offset, OP, "offset")?,
        int(head_dim, OP, "head_dim")?,
        KernelArg::F32(eps),
    ];
    let dims = LaunchDims {
        grid: [rows as u32, n_heads as u32, 1],
        block: [32, 1, 1],
    };
    // SAFETY: heads inside rows, rows inside x, w holds head_dim values.
    unsafe { dev.launch(OP, dims, &args) }
}

/// `x[i] *= s` for the first `n` values.
pub fn scale_values(dev: &dyn Device, x: &mut DevBuf<f32>, n: usize, s: f32) -> Result<()> {
    values(dev, "scale_values", x, n, s)
}

/// `x[i] = cap * tanh(x[i] / cap)` for the first `n` values (`cap > 0`).
pub fn softcap_values(dev: &dyn Device, x: &mut DevBuf<f32>, n: usize, cap: f32) -> Result<()> {
    check(cap > 0.0, "softcap_values", || {
        format!("cap {cap} must be > 0")
    })?;
    values(dev, "softcap_values", x, n, cap)
}

/// The element-wise kernel `op` with parameter `p` over `n` values of `x`.
fn values(dev: &dyn Device, op: &'static str, x: &mut DevBuf<f32>, n: usize, p: f32) -> Result<()> {
    check(x.len() >= n, op, || {
        format!("{n} values, x has {}", x.len())
    })?;
    if n == 0 {
        return Ok(());
    }
    let args = [ptr(x), int(n, op, "n")?, KernelArg::F32(p)];
    // SAFETY: n values inside x.
    unsafe { dev.launch(op, LaunchDims::cover(n, 256), &args) }
}
