//! The row kernels against the CPU path: RMSNorm with and without the residual add,
//! rotary on fused QKV rows (V columns untouched), SiLU gating, greedy argmax (ties,
//! NaN, all -inf rows) and the f32 row gather.
//!
//! Bounds: RMSNorm, SiLU, rotary `1e-5 * |ref| + 1e-6`; the residual stream, argmax and
//! gathered rows exact.

use super::measure::Worst;
use super::{Ctx, Rows};
use crate::device::cpu::rowops;
use crate::device::kernels::DeviceExt;
use crate::device::kernels::ops::{self, DevRope, HeadColumns};
use crate::model::gguf_writer::signed_units;
use crate::model::ops::silu_gate_up;
use crate::model::rope::RopeTable;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn rms_norm(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    for (rows, width) in [(5, 576), (3, 100), (1, 4096), (7, 33)] {
        let x = signed_units(rows * width, ctx.seed(1));
        let delta = signed_units(rows * width, ctx.seed(2));
        let w = signed_units(width, ctx.seed(3));
        let sum: Vec<f32> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
        for with_delta in [false, true] {
            let mut xd = dev.upload(&x).map_err(s)?;
            let dd = dev.upload(&delta).map_err(s)?;
            let wd = dev.upload(&w).map_err(s)?;
            let mut out = dev.upload(&vec![f32::NAN; rows * width]).map_err(s)?;
            let d = with_delta.then_some(&dd);
            ops::rms_norm_residual(dev, &mut xd, d, &wd, &mut out, rows, 1e-5).map_err(s)?;
            let input = if with_delta { &sum } else { &x };
            for (i, (g, r)) in dev.download(&xd).map_err(s)?.iter().zip(input).enumerate() {
                acc.exact(*g as f64, *r as f64, || format!("residual [{i}]"));
            }
            let mut want = vec![0f32; rows * width];
            rowops::rms_norm_scalar(input, &w, 1e-5, &mut want);
            for (i, (g, r)) in dev.download(&out).map_err(s)?.iter().zip(&want).enumerate() {
                let bound = 1e-5 * r.abs() as f64 + 1e-6;
                acc.add(*g as f64, *r as f64, bound, || {
                    format!("{rows}x{width} delta={with_delta} [{i}]")
                });
            }
        }
    }
    Ok(acc)
}

fn rotary(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    for (hd, nq, nk) in [(64, 9, 3), (128, 4, 1), (80, 2, 2)] {
        let stride = (nq + 2 * nk) * hd;
        let table = RopeTable::plain(hd, 512, 10_000.0);
        let rope = DevRope::upload(dev, &table).map_err(s)?;
        let positions = [0usize, 1, 17, 300, 511, 42];
        let rows = positions.len();
        let x = signed_units(rows * stride, ctx.seed(6 + hd as u64));
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let mut xd = dev.upload(&x).map_err(s)?;
        let cols = HeadColumns {
            stride,
            offset: 0,
            n_heads: nq + nk,
            head_dim: hd,
        };
        let idx = dev.upload_index(&pos).map_err(s)?;
        ops::rotary(dev, &mut xd, &rope, &idx, rows, cols).map_err(s)?;
        let mut want = x.clone();
        table.apply_strided(&mut want, stride, 0, &positions, nq + nk, hd);
        for (i, (g, r)) in dev.download(&xd).map_err(s)?.iter().zip(&want).enumerate() {
            // V columns must come back exactly as they were (the reference leaves them).
            let bound = if i % stride >= (nq + nk) * hd {
                0.0
            } else {
                1e-5 * r.abs() as f64 + 1e-6
            };
            acc.add(*g as f64, *r as f64, bound, || format!("hd {hd} [{i}]"));
        }
    }
    Ok(acc)
}

fn silu(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    for (rows, ff) in [(4, 1536), (3, 100), (1, 14336)] {
        let gu: Vec<f32> = signed_units(rows * 2 * ff, ctx.seed(8))
            .iter()
            .map(|v| v * 8.0)
            .collect();
        let mut out = dev.upload(&vec![f32::NAN; rows * ff]).map_err(s)?;
        ops::silu_gate_up(dev, &dev.upload(&gu).map_err(s)?, &mut out, rows, ff).map_err(s)?;
        let want = silu_gate_up(&gu, ff);
        for (i, (g, r)) in dev.download(&out).map_err(s)?.iter().zip(&want).enumerate() {
            let bound = 1e-5 * r.abs() as f64 + 1e-6;
            acc.add(*g as f64, *r as f64, bound, || format!("{rows}x{ff} [{i}]"));
        }
    }
    Ok(acc)
}

fn argmax(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    for width in [1000, 32000, 7] {
        let mut rows: Vec<Vec<f32>> = (0..5)
            .map(|r| signed_units(width, ctx.seed(60 + r)))
            .collect();
        rows[1][width - 1] = 5.0;
        rows[1][width / 3] = 5.0; // tie: the lower index wins
        rows[2][0] = f32::NAN;
        rows[2][width - 2] = 9.0;
        rows[3] = vec![f32::NEG_INFINITY; width];
        let flat: Vec<f32> = rows.concat();
        let mut out = dev.upload(&vec![-7i32; rows.len()]).map_err(s)?;
        let logits = dev.upload(&flat).map_err(s)?;
        ops::argmax_rows(dev, &logits, rows.len(), width, &mut out).map_err(s)?;
        let got = dev.download(&out).map_err(s)?;
        for (r, (g, row)) in got.iter().zip(&rows).enumerate() {
            let want = rowops::argmax_scalar(row) as f64;
            acc.exact(*g as f64, want, || format!("width {width} row {r}"));
        }
    }
    Ok(acc)
}

fn gather(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let (src_rows, width) = (11, 4096 + 3);
    let src = signed_units(src_rows * width, ctx.seed(70));
    let ids = [10, 0, 4, 4, 7];
    let sd = dev.upload(&src).map_err(s)?;
    let idx = dev.upload_index(&ids).map_err(s)?;
    let mut out = dev.upload(&vec![f32::NAN; ids.len() * width]).map_err(s)?;
    ops::gather_rows(dev, &sd, src_rows, &idx, width, &mut out).map_err(s)?;
    let got = dev.download(&out).map_err(s)?;
    let mut acc = Worst::default();
    for (i, &id) in ids.iter().enumerate() {
        for c in 0..width {
            let want = src[id as usize * width + c] as f64;
            acc.exact(got[i * width + c] as f64, want, || {
                format!("row {id} col {c}")
            });
        }
    }
    Ok(acc)
}

/// Every row of this module's checks.
pub fn run(ctx: &Ctx, out: &mut Rows) {
    type Check = fn(&Ctx) -> Result<Worst, String>;
    let checks: [(&str, &str, Check); 5] = [
        (
            "rms_norm_residual",
            "5x576, 3x100, 1x4096, 7x33; with and without delta",
            rms_norm,
        ),
        (
            "rotary",
            "hd 64 9q+3kv, hd 128 4q+1kv, hd 80 2q+2kv; 6 positions up to 511",
            rotary,
        ),
        ("silu_gate_up", "4x1536, 3x100, 1x14336", silu),
        (
            "argmax_rows",
            "5 rows of 1000, 32000, 7; ties, NaN, -inf rows",
            argmax,
        ),
        ("gather_rows", "5 of 11 rows of 4099", gather),
    ];
    for (name, shapes, f) in checks {
        out.record(name, shapes, || f(ctx));
    }
}
