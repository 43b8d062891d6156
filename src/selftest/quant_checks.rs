//! The quantized matmul kernels (matrix-vector for up to [`MATVEC_MAX_ROWS`] rows, the
//! tiled matmul above it, the strided write into a wider row) and the dequantizing row
//! gather (the embedding lookup) of every weight format, against the dequantized weight
//! in f64 on the CPU.
//!
//! Bounds: matmul outputs `|got - want| <= 1e-4 * sum_j |x_j w_j| + 1e-6` (f32 sums in
//! another order over exactly the same dequantized weights); dequantized rows exact.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device as CandleDevice, Tensor};

use super::measure::{CheckResult, Worst};
use super::{Ctx, Rows, guarded};
use crate::device::cpu::{CpuQMatrix, QKind};
use crate::device::kernels::DeviceExt;
use crate::device::kernels::ops::{self, MATVEC_MAX_ROWS, QWeight};
use crate::model::gguf_writer::signed_units;

/// Every weight format the device kernels read.
pub use crate::device::cpu::WEIGHT_DTYPES as DTYPES;

/// A random quantized `(n, k)` weight: kind, raw blocks, dequantized values.
pub fn weight(
    n: usize,
    k: usize,
    dtype: GgmlDType,
    seed: u64,
) -> Result<(QKind, Vec<u8>, Vec<f32>), String> {
    let e = |e: candle_core::Error| format!("quantizing a {n}x{k} {dtype:?} weight: {e}");
    let t = Tensor::from_vec(signed_units(n * k, seed), (n, k), &CandleDevice::Cpu).map_err(e)?;
    let qt = QTensor::quantize(&t, dtype).map_err(e)?;
    let cpu = CpuQMatrix::from_qtensor(&qt).map_err(|e| format!("{e:#}"))?;
    let raw = qt.data().map_err(e)?.to_vec();
    Ok((cpu.kind(), raw, cpu.dequantize()))
}

/// Short name of a format (`q4_k`).
pub fn format_name(dtype: GgmlDType) -> String {
    let s = format!("{dtype:?}").to_ascii_lowercase();
    s.strip_suffix('k')
        .filter(|p| p.starts_with('q'))
        .map(|p| format!("{p}_k"))
        .unwrap_or(s)
}

/// Weight shapes `(n, k)` for a format: ragged row counts, one and several blocks per
/// row, and on a GPU a layer-sized one.
fn shapes(dtype: GgmlDType, large: bool) -> Vec<(usize, usize)> {
    let mut v = if dtype.block_size() == 256 {
        vec![(13, 256), (70, 512)]
    } else {
        vec![(13, 64), (70, 160)]
    };
    if large {
        v.push((1027, 4096));
    }
    v
}

/// Compares `y` (`m x n`, row stride `ldy`, from column `col`) with `x · wᵀ`.
fn compare(w: &mut Worst, x: &[f32], wf: &[f32], y: &[f32], (m, n, k): (usize, usize, usize)) {
    for i in 0..m {
        let xr = &x[i * k..][..k];
        for j in 0..n {
            let wr = &wf[j * k..][..k];
            let (mut want, mut mag) = (0f64, 0f64);
            for (&a, &b) in xr.iter().zip(wr) {
                let p = a as f64 * b as f64;
                want += p;
                mag += p.abs();
            }
            w.add(y[i * n + j] as f64, want, 1e-4 * mag + 1e-6, || {
                format!("{n}x{k} m={m} y[{i}][{j}]")
            });
        }
    }
}

/// Matvec and matmul of one format over its shapes.
fn matmuls(ctx: &Ctx, dtype: GgmlDType, di: u64) -> Result<(Worst, Worst, String), String> {
    let dev = ctx.dev;
    let (mut vec_w, mut mat_w) = (Worst::default(), Worst::default());
    let mut desc = Vec::new();
    for (si, &(n, k)) in shapes(dtype, ctx.large).iter().enumerate() {
        let (kind, raw, wf) = weight(n, k, dtype, ctx.seed(di * 16 + si as u64))?;
        let w = QWeight::upload(dev, kind, n, k, &raw).map_err(|e| e.to_string())?;
        let ms: &[usize] = if n * k > 1 << 20 {
            &[1, 8, 9, 64]
        } else {
            &[1, 3, 8, 9, 33]
        };
        desc.push(format!("{n}x{k} m={ms:?}"));
        for &m in ms {
            let x = signed_units(m * k, ctx.seed(1000 + m as u64));
            let xd = dev.upload(&x).map_err(|e| e.to_string())?;
            let mut yd = dev
                .upload(&vec![f32::NAN; m * n])
                .map_err(|e| e.to_string())?;
            ops::qmatmul(dev, &w, &xd, m, &mut yd).map_err(|e| e.to_string())?;
            let y = dev.download(&yd).map_err(|e| e.to_string())?;
            let acc = if m <= MATVEC_MAX_ROWS {
                &mut vec_w
            } else {
                &mut mat_w
            };
            compare(acc, &x, &wf, &y, (m, n, k));
        }
    }
    Ok((vec_w, mat_w, desc.join(", ")))
}

/// Dequantized rows (ids with repeats, first and last row) are exact.
fn dequant(ctx: &Ctx, dtype: GgmlDType, di: u64) -> Result<Worst, String> {
    let dev = ctx.dev;
    let (n, k) = (9, 512);
    let (kind, raw, wf) = weight(n, k, dtype, ctx.seed(500 + di))?;
    let w = QWeight::upload(dev, kind, n, k, &raw).map_err(|e| e.to_string())?;
    let ids = [0, 8, 3, 3, 5];
    let idx = dev.upload_index(&ids).map_err(|e| e.to_string())?;
    let mut out = dev
        .upload(&vec![f32::NAN; ids.len() * k])
        .map_err(|e| e.to_string())?;
    ops::dequant_rows(dev, &w, &idx, &mut out).map_err(|e| e.to_string())?;
    let got = dev.download(&out).map_err(|e| e.to_string())?;
    let mut acc = Worst::default();
    for (i, &id) in ids.iter().enumerate() {
        for c in 0..k {
            let want = wf[id as usize * k + c] as f64;
            acc.exact(got[i * k + c] as f64, want, || format!("row {id} col {c}"));
        }
    }
    Ok(acc)
}

/// Two projections written side by side into one wider row; the rest of the row intact.
fn strided(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let (n, k, ldy, col) = (13, 64, 40, 20);
    let (kind, raw, wf) = weight(n, k, GgmlDType::Q8_0, ctx.seed(900))?;
    let w = QWeight::upload(dev, kind, n, k, &raw).map_err(|e| e.to_string())?;
    let mut acc = Worst::default();
    for m in [2, 11] {
        let x = signed_units(m * k, ctx.seed(901 + m as u64));
        let xd = dev.upload(&x).map_err(|e| e.to_string())?;
        let mut wide = dev
            .upload(&vec![7.5f32; m * ldy])
            .map_err(|e| e.to_string())?;
        ops::qmatmul_into(dev, &w, &xd, m, &mut wide, col, ldy).map_err(|e| e.to_string())?;
        let b = dev.download(&wide).map_err(|e| e.to_string())?;
        let mut y = Vec::with_capacity(m * n);
        for r in 0..m {
            let row = &b[r * ldy..][..ldy];
            y.extend_from_slice(&row[col..col + n]);
            for (c, &v) in row.iter().enumerate() {
                if c < col || c >= col + n {
                    acc.exact(v as f64, 7.5, || {
                        format!("m={m} row {r} col {c} overwritten")
                    });
                }
            }
        }
        compare(&mut acc, &x, &wf, &y, (m, n, k));
    }
    Ok(acc)
}

/// The matvec and matmul rows of one format (one run feeds both).
fn matmul_rows(ctx: &Ctx, dtype: GgmlDType, di: u64, out: &mut Rows) {
    let f = format_name(dtype);
    let names = [format!("qmatvec {f}"), format!("qmatmul {f}")];
    if !names.iter().any(|n| out.wants(n)) {
        return;
    }
    let t = std::time::Instant::now();
    match guarded(|| matmuls(ctx, dtype, di)) {
        Ok((v, m, desc)) => {
            // One timing for both rows (they share weights and inputs).
            let ms = t.elapsed().as_secs_f64() * 1e3;
            for (w, name) in [v, m].into_iter().zip(&names) {
                let mut row = w.finish(name, &desc);
                row.elapsed_ms = ms;
                out.push(row);
            }
        }
        Err(e) => {
            out.push(CheckResult::failed(&names[0], "-", e.clone()));
            out.push(CheckResult::failed(&names[1], "-", e));
        }
    }
}

/// Every row of this module's checks.
pub fn run(ctx: &Ctx, out: &mut Rows) {
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let di = di as u64;
        matmul_rows(ctx, dtype, di, out);
        let name = format!("dequant_rows {}", format_name(dtype));
        out.record(&name, "9x512, ids [0,8,3,3,5]", || dequant(ctx, dtype, di));
    }
    let (name, shapes) = ("qmatmul_into q8_0", "13x64 into rows of 40 at 20, m=[2,11]");
    out.record(name, shapes, || strided(ctx));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_names() {
        assert_eq!(format_name(GgmlDType::Q4K), "q4_k");
        assert_eq!(format_name(GgmlDType::Q4_0), "q4_0");
        assert_eq!(format_name(GgmlDType::BF16), "bf16");
    }
}
