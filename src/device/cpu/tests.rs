//! Tests of the CPU quantized matmul against an f32 reference, scalar vs SIMD, and
//! batch invariance.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::{CpuQMatrix, QKind, same_bits};
use crate::model::gguf_writer::signed_units as rand_vec;

/// A random quantized `(n, k)` weight and its dequantized f32 values.
fn weight(n: usize, k: usize, dtype: GgmlDType, seed: u64) -> (CpuQMatrix, Vec<f32>) {
    let t = Tensor::from_vec(rand_vec(n * k, seed), (n, k), &Device::Cpu).unwrap();
    let qt = QTensor::quantize(&t, dtype).unwrap();
    let deq = qt.dequantize(&Device::Cpu).unwrap();
    let deq = deq.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    (CpuQMatrix::from_qtensor(&qt).unwrap(), deq)
}

fn reference(w: &[f32], x: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
    let mut out = vec![0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let (xr, wr) = (&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k]);
            out[i * n + j] = xr.iter().zip(wr).map(|(a, b)| a * b).sum();
        }
    }
    out
}

/// Shapes `(n, k)` with ragged panels (n not a multiple of 8) and several block counts.
const SHAPES: [(usize, usize); 4] = [(37, 64), (130, 576), (576, 160), (1027, 256)];
/// The same for the K-quants, whose k is a multiple of 256.
const SHAPES_K: [(usize, usize); 4] = [(37, 256), (130, 512), (9, 768), (1027, 256)];
/// Every format the kernels read.
use super::WEIGHT_DTYPES as DTYPES;
/// Activation row counts: single rows, partial and whole tiles, several cache groups.
const MS: [usize; 7] = [1, 3, 4, 5, 33, 64, 65];

fn shapes(dtype: GgmlDType) -> &'static [(usize, usize)] {
    if dtype.block_size() == 256 {
        &SHAPES_K
    } else {
        &SHAPES
    }
}

/// The repacked panels hold exactly ggml's (candle's) dequantized values (`==`: Q4_0's
/// `d * q - 8 d` gives +0 where ggml's `(q - 8) * d` gives -0).
#[test]
fn repacked_weights_dequantize_exactly() {
    for dtype in DTYPES {
        for (si, &(n, k)) in shapes(dtype).iter().enumerate() {
            let (w, deq) = weight(n, k, dtype, si as u64 + 50);
            let ours = w.dequantize();
            let bad = ours.iter().zip(&deq).position(|(a, b)| a != b);
            assert!(
                bad.is_none(),
                "{dtype:?} n={n} k={k}: repacked value {bad:?} differs"
            );
        }
    }
}

/// Within activation-quantization error of the f32 reference on the dequantized weight:
/// max abs error <= 0.02 * max|ref| + 1e-3.
#[test]
fn matches_f32_reference() {
    for dtype in DTYPES {
        for (si, &(n, k)) in shapes(dtype).iter().enumerate() {
            let (w, deq) = weight(n, k, dtype, si as u64 + 1);
            for m in MS {
                let x = rand_vec(m * k, 100 + m as u64);
                let got = w.matmul(&x, m);
                let want = reference(&deq, &x, m, n, k);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let err = got
                    .iter()
                    .zip(&want)
                    .fold(0f32, |a, (g, r)| a.max((g - r).abs()));
                assert!(
                    err <= 0.02 * scale + 1e-3,
                    "{dtype:?} n={n} k={k} m={m}: max err {err}, max |ref| {scale}"
                );
            }
        }
    }
}

/// Every SIMD path this machine has (AVX2, AVX-VNNI, AVX-512 VNNI) reproduces the
/// scalar kernels bitwise; a path the CPU lacks is compiled but not run here.
#[test]
fn simd_equals_scalar_bitwise() {
    let paths = super::MatmulPath::available();
    eprintln!(
        "matmul paths on this CPU: {:?}",
        paths.iter().map(|p| p.name()).collect::<Vec<_>>()
    );
    for dtype in DTYPES {
        for (si, &(n, k)) in shapes(dtype).iter().enumerate() {
            let (w, _) = weight(n, k, dtype, si as u64 + 7);
            for m in MS.into_iter().chain([8, 16, 17, 24]) {
                let x = rand_vec(m * k, 200 + m as u64);
                let slow = w.matmul_scalar(&x, m);
                for &path in &paths {
                    let fast = w.matmul_on(&x, m, path);
                    assert!(
                        same_bits(&fast, &slow),
                        "{dtype:?} n={n} k={k} m={m}: {} != scalar",
                        path.name()
                    );
                }
            }
        }
    }
}

/// Row i of a 33-row product equals the product of row i alone, bitwise.
#[test]
fn batch_invariant() {
    for dtype in DTYPES {
        // 2048 x 1024 is large enough to take the parallel path at m = 33.
        for (si, &(n, k)) in shapes(dtype).iter().chain(&[(2048, 1024)]).enumerate() {
            let (w, _) = weight(n, k, dtype, si as u64 + 13);
            let m = 33;
            let x = rand_vec(m * k, 300);
            let all = w.matmul(&x, m);
            for i in 0..m {
                let one = w.matmul(&x[i * k..(i + 1) * k], 1);
                let row = &all[i * n..(i + 1) * n];
                assert!(
                    same_bits(row, &one),
                    "{dtype:?} n={n} k={k}: row {i} depends on the batch"
                );
            }
        }
    }
}

#[test]
fn rejects_bad_input() {
    assert!(CpuQMatrix::from_raw(QKind::Q4_1, 2, 48, &[0; 40]).is_err());
    assert!(CpuQMatrix::from_raw(QKind::Q4_1, 2, 32, &[0; 39]).is_err());
    let t = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let qt = QTensor::quantize(&t, GgmlDType::F32).unwrap();
    assert!(CpuQMatrix::from_qtensor(&qt).is_err());
    assert!(
        CpuQMatrix::from_raw(QKind::F16, 1, 48, &[0; 96]).is_err(),
        "k % 32"
    );
    assert!(CpuQMatrix::from_raw(QKind::Q2K, 1, 256, &[0; 83]).is_err());
    assert!(
        CpuQMatrix::from_raw(QKind::Q4K, 2, 128, &[0; 144]).is_err(),
        "k % 256"
    );
    assert!(CpuQMatrix::from_raw(QKind::Q6K, 1, 256, &[0; 209]).is_err());
    let w = CpuQMatrix::from_raw(QKind::Q8_0, 2, 32, &[0; 68]).unwrap();
    assert_eq!(w.matmul(&[1.0; 32], 1), vec![0.0, 0.0]);
}

/// The kernels compute exactly `sum_b d_w d_x (q_w · q_x) + m_w s_x` over the quantized
/// activations (per half block where scales or offsets are per 16; the plain
/// `sum x w` for float weights), up to f32 rounding (checked against the same sum in
/// f64).
#[test]
fn matches_the_quantized_sum_in_f64() {
    use super::acts::QActs;
    use super::repack::PANEL;
    for dtype in DTYPES {
        if w_is_float(dtype) {
            continue;
        }
        for (si, &(n, k)) in shapes(dtype).iter().enumerate() {
            let (w, _) = weight(n, k, dtype, si as u64 + 70);
            let m = 5;
            let x = rand_vec(m * k, 400);
            let got = w.matmul(&x, m);
            let a = QActs::quantize(&x, m, k, w.kind.sums());
            for r in 0..m {
                for j in 0..n {
                    let mut want = 0f64;
                    let mut mag = 0f64;
                    for b in 0..k / 32 {
                        let s = w.p.get(j, b);
                        let xq = &a.qs[r * k + b * 32..][..32];
                        let dx = f64::from(a.d[r * (k / 32) + b]);
                        for (t, &xt) in xq.iter().enumerate() {
                            let v = f64::from(s.d[t / 16]) * dx * f64::from(s.q[t]) * f64::from(xt);
                            want += v;
                            mag += v.abs();
                        }
                        let per = a.s.len() / a.d.len();
                        for h in 0..per {
                            let sx = a.s[(r * (k / 32) + b) * per + h];
                            let v = f64::from(s.m[h]) * f64::from(sx);
                            want += v;
                            mag += v.abs();
                        }
                    }
                    let g = f64::from(got[r * n + j]);
                    assert!(
                        (g - want).abs() <= 1e-5 * mag + 1e-6,
                        "{dtype:?} n={n} k={k} row {r} col {j} (panel lane {}): {g} vs {want}",
                        j % PANEL
                    );
                }
            }
        }
    }
}

fn w_is_float(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::F16 | GgmlDType::BF16)
}

/// Float weights: every output is `sum_t x_t w_t` up to f32 rounding of the two FMA
/// chains (checked against f64), for every row count.
#[test]
fn float_weights_match_the_exact_sum() {
    for dtype in [GgmlDType::F16, GgmlDType::BF16] {
        for (si, &(n, k)) in SHAPES.iter().enumerate() {
            let (w, deq) = weight(n, k, dtype, si as u64 + 90);
            for m in MS {
                let x = rand_vec(m * k, 500 + m as u64);
                let got = w.matmul(&x, m);
                for r in 0..m {
                    for j in 0..n {
                        let (xr, wr) = (&x[r * k..][..k], &deq[j * k..][..k]);
                        let want: f64 = xr
                            .iter()
                            .zip(wr)
                            .map(|(&a, &b)| f64::from(a) * f64::from(b))
                            .sum();
                        let mag: f64 = xr
                            .iter()
                            .zip(wr)
                            .map(|(&a, &b)| (f64::from(a) * f64::from(b)).abs())
                            .sum();
                        let g = f64::from(got[r * n + j]);
                        assert!(
                            (g - want).abs() <= 1e-5 * mag + 1e-6,
                            "{dtype:?} n={n} k={k} m={m} [{r}][{j}]: {g} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

/// A prefill-sized batch (quantized in parallel row ranges) equals its rows quantized
/// one at a time, for every kind of sums.
#[test]
fn activation_quantization_in_parallel_equals_row_by_row() {
    use super::acts::{QActs, Sums};
    use super::isa::Isa;
    let (m, k) = (301, 256);
    let x = rand_vec(m * k, 21);
    for sums in [Sums::None, Sums::F16, Sums::F32, Sums::F32Halves] {
        let all = QActs::quantize_with(Isa::detect(), &x, m, k, sums);
        let (nb, per) = (k / 32, sums.per_block());
        for r in 0..m {
            let one = QActs::quantize_with(Isa::detect(), &x[r * k..(r + 1) * k], 1, k, sums);
            assert_eq!(all.qs[r * k..(r + 1) * k], one.qs[..], "row {r} values");
            assert_eq!(all.isum[r * nb * 2..(r + 1) * nb * 2], one.isum[..]);
            assert!(same_bits(&all.d[r * nb..(r + 1) * nb], &one.d), "row {r}");
            let s = &all.s[r * nb * per..(r + 1) * nb * per];
            assert!(same_bits(s, &one.s), "row {r} sums");
        }
    }
}

/// The SIMD activation quantizer reproduces the scalar one exactly, ties included.
#[test]
fn activation_quantization_simd_equals_scalar() {
    use super::acts::{QActs, Sums};
    use super::isa::Isa;
    let mut x = rand_vec(64 * 96, 9);
    // Exact ties: 127 * 0.5 / 127 style values, and an all-zero block.
    for (i, v) in x[..32].iter_mut().enumerate() {
        *v = (i as f32 - 15.5) / 2.0;
    }
    x[32..64].fill(0.0);
    for sums in [Sums::None, Sums::F16, Sums::F32, Sums::F32Halves] {
        let a = QActs::quantize_with(Isa::detect(), &x, 64, 96, sums);
        let b = QActs::quantize_with(Isa::Scalar, &x, 64, 96, sums);
        assert_eq!(a.qs, b.qs);
        assert!(same_bits(&a.d, &b.d));
        assert!(same_bits(&a.s, &b.s));
    }
}
