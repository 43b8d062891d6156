//! The CPU kernels on every instruction-set path this machine has, against their
//! portable scalar twins and an f64 reference: the decoder's quantized matmul of every
//! weight format, RMSNorm, SiLU gating, argmax and paged attention (AVX2 + FMA + F16C
//! where present), and the encoder's reduced-precision linear layers (int8 VNNI, bf16
//! AVX-512 kernels where present).
//!
//! Bounds: SIMD vs scalar bit-identical (bound 0) for the decoder kernels and the int8
//! encoder kernels; bf16 encoder kernels `1e-4 * sum |x w| + 1e-5` of the scalar bf16
//! (another f32 summation order); the quantized matmul against the f64 product of the
//! dequantized weight `0.02 * max |ref| + 1e-3` per product (activations quantized to
//! 8 bits per block, as llama.cpp does).

use candle_core::quantized::GgmlDType;
use half::f16;

use super::measure::{CheckResult, Worst};
use super::quant_checks::{DTYPES, format_name};
use super::{Rows, Seeds, guarded};
use crate::device::cpu::attention::{self, AttnKernel, AttnScratch, KvHead, ScoreRule};
use crate::device::cpu::isa::{CpuFeatures, Isa, MatmulPath};
use crate::device::cpu::{CpuQMatrix, rowops};
use crate::model::encoder::qlinear::{Kernel, QLinear};
use crate::model::gguf_writer::signed_units;

/// The LLM kernels' path on this machine, for the table.
pub fn path_name() -> &'static str {
    match Isa::detect() {
        Isa::Scalar => "scalar",
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => "avx2",
    }
}

/// The quantized matmul's integer dot-product path on this machine, for the table.
pub fn matmul_path_name() -> &'static str {
    MatmulPath::detect().name()
}

fn bitwise(acc: &mut Worst, fast: &[f32], slow: &[f32], at: impl Fn(usize) -> String) {
    for (i, (a, b)) in fast.iter().zip(slow).enumerate() {
        let same = a.to_bits() == b.to_bits();
        let (g, w) = (*a as f64, *b as f64);
        acc.add(if same { w } else { g }, w, 0.0, || at(i));
    }
}

/// Every SIMD path of the quantized matmul (bitwise against scalar), and the detected
/// one against the f64 product.
fn qmatmul(ctx: &Seeds, dtype: GgmlDType, di: u64) -> Result<(Vec<Worst>, Worst), String> {
    let shapes: &[(usize, usize)] = if dtype.block_size() == 256 {
        &[(37, 256), (130, 512)]
    } else {
        &[(37, 64), (130, 576)]
    };
    let paths = simd_paths();
    let mut simd: Vec<Worst> = paths.iter().map(|_| Worst::default()).collect();
    let mut reference = Worst::default();
    for (si, &(n, k)) in shapes.iter().enumerate() {
        let (kind, raw, wf) =
            super::quant_checks::weight(n, k, dtype, ctx.seed(di * 8 + si as u64))?;
        let w = CpuQMatrix::from_raw(kind, n, k, &raw).map_err(|e| format!("{e:#}"))?;
        for m in [1, 4, 5, 33] {
            let x = signed_units(m * k, ctx.seed(300 + m as u64));
            let slow = w.matmul_scalar(&x, m);
            for (acc, &path) in simd.iter_mut().zip(&paths) {
                let fast = w.matmul_on(&x, m, path);
                bitwise(acc, &fast, &slow, |i| format!("{n}x{k} m={m} [{i}]"));
            }
            let fast = w.matmul(&x, m);
            let mut want = vec![0f64; m * n];
            for i in 0..m {
                for j in 0..n {
                    let (xr, wr) = (&x[i * k..][..k], &wf[j * k..][..k]);
                    want[i * n + j] = xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                }
            }
            let scale = want.iter().fold(0f64, |a, v| a.max(v.abs()));
            for (i, (g, r)) in fast.iter().zip(&want).enumerate() {
                reference.add(*g as f64, *r, 0.02 * scale + 1e-3, || {
                    format!("{n}x{k} m={m} [{i}]")
                });
            }
        }
    }
    Ok((simd, reference))
}

fn rows(ctx: &Seeds) -> Result<Worst, String> {
    let mut acc = Worst::default();
    for width in [576, 4096, 33] {
        let x = signed_units(3 * width, ctx.seed(40));
        let w = signed_units(width, ctx.seed(41));
        let (mut fast, mut slow) = (vec![0f32; x.len()], vec![0f32; x.len()]);
        rowops::rms_norm(&x, &w, 1e-5, &mut fast);
        rowops::rms_norm_scalar(&x, &w, 1e-5, &mut slow);
        bitwise(&mut acc, &fast, &slow, |i| {
            format!("rms_norm {width} [{i}]")
        });
        let g: Vec<f32> = x.iter().map(|v| v * 8.0).collect();
        rowops::silu_mul(&g, &w.repeat(3), &mut fast);
        rowops::silu_mul_scalar(&g, &w.repeat(3), &mut slow);
        bitwise(&mut acc, &fast, &slow, |i| format!("silu {width} [{i}]"));
        let mut logits = x.clone();
        logits[width / 2] = f32::NAN;
        let (a, b) = (rowops::argmax(&logits), rowops::argmax_scalar(&logits));
        acc.exact(a as f64, b as f64, || format!("argmax {width}"));
    }
    Ok(acc)
}

fn attend(ctx: &Seeds, kernel: AttnKernel) -> Result<Worst, String> {
    let mut acc = Worst::default();
    for (group, hd, n_kv, ctx_len) in [(4, 64, 2, 37usize), (1, 128, 8, 300), (3, 80, 1, 16)] {
        let (bs, blocks) = (16, ctx_len.div_ceil(16));
        let stride = n_kv * hd;
        let slots = (2 * blocks + 1) * bs;
        let to16 = |v: Vec<f32>| v.into_iter().map(f16::from_f32).collect::<Vec<_>>();
        let k = to16(signed_units(slots * stride, ctx.seed(50)));
        let v = to16(signed_units(slots * stride, ctx.seed(51)));
        let table: Vec<u32> = (0..blocks as u32).map(|b| 2 * b + 1).collect();
        let q = signed_units(group * hd, ctx.seed(52));
        let head = KvHead {
            k: &k,
            v: &v,
            block_table: &table,
            block_size: bs,
            slot_stride: stride,
            head_offset: (n_kv - 1) * hd,
        };
        let rule = ScoreRule::plain(1.0 / (hd as f32).sqrt());
        let mut scratch = AttnScratch::new(group);
        let (mut fast, mut slow) = (vec![0f32; q.len()], vec![0f32; q.len()]);
        attention::attend_with(
            kernel,
            &q,
            ctx_len,
            &head,
            hd,
            rule,
            &mut fast,
            &mut scratch,
        );
        attention::attend_scalar(&q, ctx_len, &head, hd, rule, &mut slow, &mut scratch);
        bitwise(&mut acc, &fast, &slow, |i| {
            format!("{group}x{hd} ctx {ctx_len} [{i}]")
        });
        // A prefill's rows together (the staged many-head path) against each row
        // alone on the scalar kernel.
        let rows = attention::rows_per_pass(group);
        let w = group * hd;
        let qs = signed_units(rows * w, ctx.seed(53));
        let ctx0 = ctx_len + 1 - rows.min(ctx_len);
        let mut fast = vec![0f32; qs.len()];
        attention::attend_rows_with(
            kernel,
            &qs,
            ctx0,
            rows,
            &head,
            hd,
            rule,
            &mut fast,
            &mut scratch,
        );
        let mut slow = vec![0f32; qs.len()];
        for (r, (qr, o)) in qs.chunks(w).zip(slow.chunks_mut(w)).enumerate() {
            attention::attend_scalar(qr, ctx0 + r, &head, hd, rule, o, &mut scratch);
        }
        bitwise(&mut acc, &fast, &slow, |i| {
            format!("{group}x{hd} {rows} rows from ctx {ctx0} [{i}]")
        });
    }
    Ok(acc)
}

/// One encoder kernel against its scalar reference.
fn encoder(ctx: &Seeds, kernel: Kernel) -> Result<Worst, String> {
    let reference = kernel.reference();
    let mut acc = Worst::default();
    for (rows, k, n) in [(1, 384, 64), (7, 1024, 130), (50, 256, 1536)] {
        let w = signed_units(k * n, ctx.seed(60));
        let bias = signed_units(n, ctx.seed(61));
        let x = signed_units(rows * k, ctx.seed(62));
        let layer = QLinear::new(&w, &bias, k, n, reference);
        let (fast, slow) = (layer.forward_with(&x, kernel), layer.forward(&x));
        if kernel.bit_identical_to_reference() {
            bitwise(&mut acc, &fast, &slow, |i| format!("{rows}x{k}x{n} [{i}]"));
            continue;
        }
        for (i, (g, r)) in fast.iter().zip(&slow).enumerate() {
            let (row, col) = (i / n, i % n);
            let mag: f64 = (0..k)
                .map(|j| (x[row * k + j] as f64 * w[j * n + col] as f64).abs())
                .sum();
            acc.add(*g as f64, *r as f64, 1e-4 * mag + 1e-5, || {
                format!("{rows}x{k}x{n} [{i}]")
            });
        }
    }
    Ok(acc)
}

/// The quantized matmul's paths this machine has besides the scalar reference.
fn simd_paths() -> Vec<MatmulPath> {
    let mut paths = MatmulPath::available();
    paths.retain(|&p| p != MatmulPath::Scalar);
    paths
}

/// Every row of this module's checks.
pub fn run(ctx: &Seeds, out: &mut Rows) {
    let path = path_name();
    for (di, dtype) in DTYPES.into_iter().enumerate() {
        let f = format_name(dtype);
        let shapes = "37 and 130 rows, 1-2 blocks of k; m = 1, 4, 5, 33";
        let mut names: Vec<String> = simd_paths()
            .iter()
            .map(|p| format!("cpu qmatmul {f} {} = scalar", p.name()))
            .collect();
        names.push(format!("cpu qmatmul {f} vs f64"));
        if !names.iter().any(|n| out.wants(n)) {
            continue;
        }
        let t = std::time::Instant::now();
        match guarded(|| qmatmul(ctx, dtype, di as u64)) {
            Ok((simd, reference)) => {
                let ms = t.elapsed().as_secs_f64() * 1e3;
                let all = simd.into_iter().chain([reference]);
                for (w, name) in all.zip(&names) {
                    let name: &str = name;
                    let mut row = w.finish(name, shapes);
                    row.elapsed_ms = ms;
                    out.push(row);
                }
            }
            Err(e) => out.push(CheckResult::failed(&format!("cpu qmatmul {f}"), shapes, e)),
        }
    }
    let shapes = "3 rows of 576, 4096, 33";
    let name = format!("cpu rms_norm/silu/argmax {path} = scalar");
    out.record(&name, shapes, || rows(ctx));
    let shapes = "4x64 ctx 37, 1x128 ctx 300, 3x80 ctx 16; rows together";
    let kernels = AttnKernel::available();
    // Every SIMD kernel against scalar (a scalar-only CPU checks scalar against itself).
    for &kernel in kernels
        .iter()
        .filter(|&&k| k != AttnKernel::Scalar || kernels.len() == 1)
    {
        let name = format!("cpu attention {} = scalar", kernel.name());
        out.record(&name, shapes, || attend(ctx, kernel));
    }
    for kernel in Kernel::available(CpuFeatures::hardware()) {
        if kernel == kernel.reference() {
            continue;
        }
        let name = format!("cpu encoder linear {kernel:?}");
        let shapes = "1x384x64, 7x1024x130, 50x256x1536";
        out.record(&name, shapes, || encoder(ctx, kernel));
    }
}
