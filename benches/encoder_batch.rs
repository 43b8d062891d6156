//! Cost of one encoder batch on the default encoder (all-MiniLM-L6-v2, or
//! `FERRITE_BENCH_ENCODER=DIR`) in every precision this CPU runs fast (f32, int16 on
//! AVX2 / AVX-512 VNNI, and int8 / bf16 where VNNI / AVX512_BF16 exist): packed batches
//! of 1, 4 and 16 inputs of 128 tokens, timed whole, plus the largest layer shape alone
//! (candle's f32 matmul and the encoder's own linear layer in each precision), to show
//! how much of a batch is GEMM. Each case reports the minimum over `--reps` runs
//! (shared machine), after the instruction peaks of `common/int8_peak.rs` (f32 FMA and
//! int16 `vpmaddwd` among them). Threads: the rayon pool (`RAYON_NUM_THREADS`).
//!
//! `cargo bench --bench encoder_batch [-- --reps N] [--only TEXT]` (`--only int16`: just
//! the precisions whose description holds TEXT).

use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use ferrite::device::cpu::isa::CpuFeatures;
use ferrite::model::encoder::Encoder;
use ferrite::model::encoder::bert::PackedBatch;
use ferrite::model::encoder::ops::Dense;
use ferrite::model::encoder::precision::LinearPlan;
use ferrite::model::encoder::qlinear::Kernel;
use ferrite::model::source::DefaultEncoder;

#[path = "common/int8_peak.rs"]
mod int8_peak;

const INPUT_TOKENS: usize = 128;

fn min_time(reps: usize, mut f: impl FnMut()) -> Duration {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .expect("reps >= 1")
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let reps = args
        .iter()
        .position(|a| a == "--reps")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(5usize);
    let dir = match std::env::var("FERRITE_BENCH_ENCODER") {
        Ok(d) => d.into(),
        Err(_) => DefaultEncoder::ensure(std::path::Path::new("models"))?,
    };
    let features = CpuFeatures::get();
    println!("cpu features: {}", features.summary());
    println!("peak probe (G(FL)OP/s, 2 ops per product):");
    for p in int8_peak::probe() {
        println!(
            "  {:<34} 1 thread {:>7.1}   all threads {:>7.1}",
            p.name, p.one, p.all
        );
    }
    let mut plans = vec![LinearPlan::F32];
    plans.extend(Kernel::best_int8(features).map(LinearPlan::Quantized));
    plans.extend(Kernel::best_int16(features).map(LinearPlan::Quantized));
    plans.extend(Kernel::best_bf16(features).map(LinearPlan::Quantized));
    // `--only TEXT`: just the precisions whose description holds TEXT (for profiling).
    if let Some(only) = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1))
    {
        plans.retain(|p| p.describe().contains(only.as_str()));
    }
    let mut cfg = None;
    for &plan in &plans {
        let enc = Encoder::load_with(&dir, None, plan)?.encoder;
        let c = enc.config().clone();
        let per_token_flops =
            (c.layers * 2 * (4 * c.hidden * c.hidden + 2 * c.hidden * c.intermediate)) as f64;
        println!(
            "encoder {} ({} layers, hidden {}, ffn {}), linear layers {}, {reps} reps, min time",
            dir.display(),
            c.layers,
            c.hidden,
            c.intermediate,
            plan.describe()
        );
        for inputs in [1usize, 4, 16] {
            let mut batch = PackedBatch::default();
            for i in 0..inputs {
                let ids: Vec<u32> = (0..INPUT_TOKENS)
                    .map(|t| (100 + (i * 131 + t * 7919) % (c.vocab - 200)) as u32)
                    .collect();
                batch.push(&ids, &vec![0; INPUT_TOKENS]);
            }
            let t = min_time(reps, || {
                enc.run(&batch).expect("batch runs");
            });
            let tokens = inputs * INPUT_TOKENS;
            println!(
                "  batch {inputs:>2} x {INPUT_TOKENS} tokens: {:>8.1} ms  {:>6.3} ms/token  {:>6.1} G(FL)OP/s (linear layers only)",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() * 1e3 / tokens as f64,
                per_token_flops * tokens as f64 / t.as_secs_f64() / 1e9
            );
        }
        cfg = Some(c);
    }
    let cfg = cfg.expect("--only matched no precision");
    let rows = 16 * INPUT_TOKENS;
    let x = Tensor::randn(0f32, 1.0, (rows, cfg.hidden), &Device::Cpu)?;
    let w = Tensor::randn(0f32, 1.0, (cfg.hidden, cfg.intermediate), &Device::Cpu)?;
    let t = min_time(reps, || {
        x.matmul(&w).expect("matmul");
    });
    let flops = 2.0 * (rows * cfg.hidden * cfg.intermediate) as f64;
    println!(
        "candle f32 matmul [{rows}, {}] x [{}, {}]: {:.1} ms, {:.1} GFLOP/s",
        cfg.hidden,
        cfg.hidden,
        cfg.intermediate,
        t.as_secs_f64() * 1e3,
        flops / t.as_secs_f64() / 1e9
    );
    // The same layer shape through the encoder's own linear layers, per plan.
    let (xs, ws) = (
        x.flatten_all()?.to_vec1::<f32>()?,
        w.flatten_all()?.to_vec1::<f32>()?,
    );
    for plan in plans {
        let layer = Dense::new(
            ws.clone(),
            vec![0.0; cfg.intermediate],
            cfg.hidden,
            cfg.intermediate,
        )
        .with_plan(plan);
        let t = min_time(reps, || {
            std::hint::black_box(layer.forward(&xs));
        });
        println!(
            "encoder linear {} [{rows}, {}] x [{}, {}]: {:.1} ms, {:.1} G(FL)OP/s",
            plan.describe(),
            cfg.hidden,
            cfg.hidden,
            cfg.intermediate,
            t.as_secs_f64() * 1e3,
            flops / t.as_secs_f64() / 1e9
        );
    }
    Ok(())
}
