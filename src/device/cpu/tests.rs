//! Tests of the CPU quantized matmul against an f32 reference, scalar vs SIMD, and
//! batch invariance.

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};

use super::{CpuQMatrix, QKind};
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

const SHAPES: [(usize, usize); 4] = [(37, 64), (130, 576), (576, 160), (1027, 256)];
const DTYPES: [GgmlDType; 2] = [GgmlDType::Q4_1, GgmlDType::Q8_0];

/// Within activation-quantization error of the f32 reference on the dequantized weight:
/// max abs error <= 0.02 * max|ref| + 1e-3.
#[test]
fn matches_f32_reference() {
    for dtype in DTYPES {
        for (si, &(n, k)) in SHAPES.iter().enumerate() {
            let (w, deq) = weight(n, k, dtype, si as u64 + 1);
            for m in [1, 3, 8, 33] {
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

/// The SIMD kernels reproduce the scalar ones bitwise.
#[test]
fn simd_equals_scalar_bitwise() {
    for dtype in DTYPES {
        for (si, &(n, k)) in SHAPES.iter().enumerate() {
            let (w, _) = weight(n, k, dtype, si as u64 + 7);
            for m in [1, 3, 8, 33] {
                let x = rand_vec(m * k, 200 + m as u64);
                let (fast, slow) = (w.matmul(&x, m), w.matmul_scalar(&x, m));
                let same = fast
                    .iter()
                    .zip(&slow)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{dtype:?} n={n} k={k} m={m}: SIMD != scalar");
            }
        }
    }
}

/// Row i of a 33-row product equals the product of row i alone, bitwise.
#[test]
fn batch_invariant() {
    for dtype in DTYPES {
        // 2048 x 576 is large enough to take the parallel path at m = 33.
        for (si, &(n, k)) in SHAPES.iter().chain(&[(2048, 576)]).enumerate() {
            let (w, _) = weight(n, k, dtype, si as u64 + 13);
            let m = 33;
            let x = rand_vec(m * k, 300);
            let all = w.matmul(&x, m);
            for i in 0..m {
                let one = w.matmul(&x[i * k..(i + 1) * k], 1);
                let row = &all[i * n..(i + 1) * n];
                let same = row
                    .iter()
                    .zip(&one)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{dtype:?} n={n} k={k}: row {i} depends on the batch");
            }
        }
    }
}

#[test]
fn rejects_bad_input() {
    assert!(CpuQMatrix::from_raw(QKind::Q4_1, 2, 48, &[0; 40]).is_err());
    assert!(CpuQMatrix::from_raw(QKind::Q4_1, 2, 32, &[0; 39]).is_err());
    let t = Tensor::zeros((4, 32), candle_core::DType::F32, &Device::Cpu).unwrap();
    let qt = QTensor::quantize(&t, GgmlDType::Q4_0).unwrap();
    assert!(CpuQMatrix::from_qtensor(&qt).is_err());
    let w = CpuQMatrix::from_raw(QKind::Q8_0, 2, 32, &[0; 68]).unwrap();
    assert_eq!(w.matmul(&[1.0; 32], 1), vec![0.0, 0.0]);
}
