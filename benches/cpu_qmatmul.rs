//! Micro benchmark of `ferrite::device::cpu::CpuQMatrix::matmul` against candle's
//! `QMatMul::forward` on SmolLM2-135M's matrix shapes: ns per activation row and
//! GFLOP/s at m = 1, 8, 32 and 64 rows.
//!
//! Run with `cargo bench --bench cpu_qmatmul`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ferrite::device::cpu::CpuQMatrix;
use ferrite::model::gguf_writer::signed_units as rand_vec;

/// Mean seconds per call of `f`, over at least ~0.3 s after a warm-up.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let budget = Duration::from_millis(300);
    let start = Instant::now();
    let mut iters = 0u32;
    while start.elapsed() < budget || iters < 3 {
        f();
        iters += 1;
    }
    start.elapsed().as_secs_f64() / f64::from(iters)
}

fn main() -> candle_core::Result<()> {
    let shapes = [
        (576, 576, GgmlDType::Q4_1),
        (1536, 576, GgmlDType::Q4_1),
        (576, 1536, GgmlDType::Q4_1),
        (49152, 576, GgmlDType::Q8_0),
    ];
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "{:<18} {:>4} {:>12} {:>10} {:>12} {:>10} {:>8}",
        "shape (n x k)", "m", "ours ns/row", "ours GF/s", "candle ns/row", "candle GF/s", "speedup"
    );
    for (n, k, dtype) in shapes {
        let w = Tensor::from_vec(rand_vec(n * k, 1), (n, k), &Device::Cpu)?;
        let qt = QTensor::quantize(&w, dtype)?;
        let ours = CpuQMatrix::from_qtensor(&qt).expect("supported dtype");
        let candle = QMatMul::from_qtensor(qt)?;
        for m in [1, 8, 32, 64] {
            let x = rand_vec(m * k, 2);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
            let t_ours = time(|| {
                black_box(ours.matmul(black_box(&x), m));
            });
            let t_candle = time(|| {
                black_box(candle.forward(black_box(&xt)).unwrap());
            });
            let flops = 2.0 * (m * n * k) as f64;
            println!(
                "{:<18} {:>4} {:>12.0} {:>10.1} {:>12.0} {:>10.1} {:>7.2}x",
                format!("{n}x{k} {dtype:?}"),
                m,
                t_ours * 1e9 / m as f64,
                flops / t_ours / 1e9,
                t_candle * 1e9 / m as f64,
                flops / t_candle / 1e9,
                t_candle / t_ours
            );
        }
    }
    Ok(())
}
