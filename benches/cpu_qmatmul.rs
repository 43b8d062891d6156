//! Micro benchmark of `ferrite::device::cpu::CpuQMatrix::matmul` against candle's
//! `QMatMul::forward`, per format, on SmolLM2-135M's matrix shapes (Q4_0, Q4_1, Q8_0)
//! and, for every format the kernels read (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K,
//! Q4_K, Q5_K, Q6_K, F16, BF16), Llama-3-8B / Mistral-7B's attention (4096 x 4096) and
//! FFN-down (4096 x 14336) shapes: ms per call, ns per activation row and GFLOP/s at
//! m = 1, 8, 32 and 64 rows. Each time is the fastest of many calls (the machine may be
//! shared); `RAYON_NUM_THREADS=1` gives single-core figures.
//!
//! Prefill-sized batches (m = 128, 256, 512) run for the 7B and SmolLM2 shapes (without candle,
//! whose matmul is not the comparison there): GOPS (2 ops per 8-bit product) beside
//! the machine's int8 peak, measured first by a probe of each dot-product instruction
//! (`common/int8_peak.rs`), and the share of that peak the matmul's path reaches.
//!
//! Run with `cargo bench --bench cpu_qmatmul [-- FILTER] [--ours-only] [--path NAME]`;
//! FILTER (e.g. `Q4K` or `4096x14336`) keeps the rows whose label contains it;
//! `--ours-only` skips candle (half the time); `--path amx-int8|avx512-vnni|avx-vnni|avx2|scalar`
//! runs that matmul path instead of the fastest (`FERRITE_ISA` caps it too).

use std::hint::black_box;
use std::time::{Duration, Instant};

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use ferrite::device::cpu::{CpuQMatrix, MatmulPath};
use ferrite::model::gguf_writer::signed_units as rand_vec;

#[path = "common/int8_peak.rs"]
mod int8_peak;

/// The peak the path's instruction reaches on all threads (GOPS), if probed.
fn path_peak(path: MatmulPath, peaks: &[int8_peak::Peak]) -> Option<f64> {
    let name = match path {
        MatmulPath::Scalar => return None,
        #[cfg(target_arch = "x86_64")]
        MatmulPath::Avx2 => "avx2 vpmaddubsw+vpmaddwd ymm",
        #[cfg(target_arch = "x86_64")]
        MatmulPath::AvxVnni => "avx-vnni vpdpbusd ymm",
        #[cfg(target_arch = "x86_64")]
        MatmulPath::Avx512Vnni => "avx512-vnni vpdpbusd zmm",
        #[cfg(target_arch = "x86_64")]
        MatmulPath::AmxInt8 => "amx-int8 tdpbssd tile",
    };
    peaks.iter().find(|p| p.name == name).map(|p| p.all)
}

/// Seconds per call of `f`: the fastest single call over at least ~250 ms (and 5
/// calls) after a warm-up call. On a shared machine the fastest call is the one that
/// was not preempted, so it is the most repeatable figure.
fn time(mut f: impl FnMut()) -> f64 {
    f();
    let budget = Duration::from_millis(250);
    let start = Instant::now();
    let mut best = f64::INFINITY;
    let mut iters = 0u32;
    while start.elapsed() < budget || iters < 5 {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed().as_secs_f64());
        iters += 1;
    }
    best
}

fn main() -> candle_core::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // The first argument that is neither a flag nor the value of `--path`.
    let filter = (0..args.len())
        .find(|&i| !args[i].starts_with('-') && (i == 0 || args[i - 1] != "--path"))
        .map(|i| &args[i]);
    let with_candle = !args.iter().any(|a| a == "--ours-only");
    let path = match args.iter().position(|a| a == "--path") {
        Some(i) => {
            let want = args.get(i + 1).map(String::as_str).unwrap_or("");
            *MatmulPath::available()
                .iter()
                .find(|p| p.name() == want)
                .unwrap_or_else(|| panic!("--path {want}: not a path this CPU has"))
        }
        None => MatmulPath::detect(),
    };
    println!("int8 peak probe (GOPS, 2 ops per 8-bit product):");
    let peaks = int8_peak::probe();
    for p in &peaks {
        println!(
            "  {:<30} 1 thread {:>7.1}   all threads {:>7.1}",
            p.name, p.one, p.all
        );
    }
    let peak = path_peak(path, &peaks);
    println!("matmul path: {}", path.name());
    let mut shapes = vec![
        (576, 576, GgmlDType::Q4_1),
        (1536, 576, GgmlDType::Q4_1),
        (576, 1536, GgmlDType::Q4_1),
        (49152, 576, GgmlDType::Q8_0),
        (1536, 576, GgmlDType::Q4_0),
    ];
    for dtype in ferrite::device::cpu::WEIGHT_DTYPES {
        shapes.extend([(4096, 4096, dtype), (4096, 14336, dtype)]);
    }
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "{:<18} {:>4} {:>9} {:>12} {:>10} {:>7} {:>12} {:>10} {:>8}",
        "shape (n x k)",
        "m",
        "ours ms",
        "ours ns/row",
        "ours GOPS",
        "% peak",
        "candle ns/row",
        "candle GF/s",
        "speedup"
    );
    for (n, k, dtype) in shapes {
        let label = format!("{n}x{k} {dtype:?}");
        if filter.as_ref().is_some_and(|f| !label.contains(f.as_str())) {
            continue;
        }
        let w = Tensor::from_vec(rand_vec(n * k, 1), (n, k), &Device::Cpu)?;
        let qt = QTensor::quantize(&w, dtype)?;
        let ours = CpuQMatrix::from_qtensor(&qt).expect("supported dtype");
        let candle = if with_candle {
            Some(QMatMul::from_qtensor(qt)?)
        } else {
            None
        };
        // Prefill-sized batches for the 7B shapes and the small model's (its prefill
        // chunks are 512 rows too).
        let big = (n >= 4096 || k < 4096) && !dtype_is_float(dtype);
        let ms: &[usize] = if big {
            &[1, 8, 32, 64, 128, 256, 512]
        } else {
            &[1, 8, 32, 64]
        };
        for &m in ms {
            let x = rand_vec(m * k, 2);
            let xt = Tensor::from_vec(x.clone(), (m, k), &Device::Cpu)?;
            let t_ours = time(|| {
                black_box(ours.matmul_on(black_box(&x), m, path));
            });
            let t_candle = candle.as_ref().filter(|_| m <= 64).map_or(f64::NAN, |c| {
                time(|| {
                    black_box(c.forward(black_box(&xt)).unwrap());
                })
            });
            let flops = 2.0 * (m * n * k) as f64;
            let gops = flops / t_ours / 1e9;
            let share = peak.map_or(String::from("-"), |p| format!("{:.0}%", 100.0 * gops / p));
            println!(
                "{:<18} {:>4} {:>9.3} {:>12.0} {:>10.1} {:>7} {:>12.0} {:>10.1} {:>7.2}x",
                label,
                m,
                t_ours * 1e3,
                t_ours * 1e9 / m as f64,
                gops,
                share,
                t_candle * 1e9 / m as f64,
                flops / t_candle / 1e9,
                t_candle / t_ours
            );
        }
    }
    Ok(())
}

fn dtype_is_float(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::F16 | GgmlDType::BF16)
}
