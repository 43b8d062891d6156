//! GPU step benchmark (issue 5) on a Mistral-7B-shaped Q4_K_M GGUF (32 layers, 4096
//! wide, 32 / 8 heads, 14336 FFN, 32000 vocab; random weights from our own generator,
//! written once to `$FERRITE_BENCH_GGUF` or `target/bench-models/
//! mistral-7b-q4km-synthetic.gguf`, the file `load_7b` uses).
//!
//! `cargo bench --features cuda --bench gpu_decode` on a machine with a GPU. Reports:
//! - the device-to-device copy bandwidth (1 GiB copies), the roofline's denominator;
//! - for 1, 8, 32, 64 and 128 sequences of 512 prompt tokens: prefill time, then 256
//!   decode steps of every sequence at once: step time p50 / p99 and output tok/s;
//! - at batch 1, the fraction of the bandwidth roofline: (weight bytes + K/V bytes read
//!   per token at the mean context) / bandwidth, over the measured step time.
//!
//! Steps include what the engine's steps include (uploading the batch, downloading the
//! logits of every sampling row); sampling itself is left out. Without `--features
//! cuda` or without a GPU it says so and exits 0.

mod common;

#[cfg(not(feature = "cuda"))]
fn main() {
    eprintln!("gpu_decode: build with --features cuda and run on a machine with a GPU");
}

#[cfg(feature = "cuda")]
fn main() -> anyhow::Result<()> {
    cuda_bench::run()
}

#[cfg(feature = "cuda")]
mod cuda_bench {
    use std::sync::Arc;
    use std::time::Instant;

    use anyhow::Result;
    use ferrite::device::cuda::CudaDevice;
    use ferrite::device::kernels::Device;
    use ferrite::model::device_decoder::{DeviceDecoder, DeviceKvCache};
    use ferrite::model::gguf_writer::SyntheticModel;
    use ferrite::model::loader::load_gguf_with;
    use ferrite::model::paged_attention::SeqSpan;
    use ferrite::model::transformer::BatchInput;

    const BLOCK: usize = 16;
    const PROMPT: usize = 512;
    const OUTPUT: usize = 256;
    const PREFILL_CHUNK: usize = 2048;

    fn percentile(sorted: &[f64], p: f64) -> f64 {
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    }

    struct Seq {
        blocks: Vec<u32>,
        len: usize,
    }

    /// A batch of `take[i]` tokens of each sequence from its current length.
    fn batch(seqs: &[Seq], take: &[usize], vocab: usize) -> BatchInput {
        let mut b = BatchInput::default();
        for (i, (s, &n)) in seqs.iter().zip(take).enumerate() {
            if n == 0 {
                continue;
            }
            let offset = b.tokens.len();
            for p in s.len..s.len + n {
                b.tokens.push(((p * 7919 + i * 104_729) % vocab) as u32);
                b.positions.push(p);
                b.slots
                    .push(s.blocks[p / BLOCK] as usize * BLOCK + p % BLOCK);
            }
            b.spans.push(SeqSpan {
                offset,
                len: n,
                start_pos: s.len,
                block_table: s.blocks.clone(),
            });
            b.logits_rows.push(b.tokens.len() - 1);
        }
        b
    }

    pub fn run() -> Result<()> {
        let gpu = match CudaDevice::open(0) {
            Ok(g) => Arc::new(g),
            Err(e) => {
                eprintln!("gpu_decode: no GPU ({e}); nothing to measure");
                return Ok(());
            }
        };
        println!("device: {}", gpu.name());
        let bw = gpu.copy_bandwidth(1 << 30, 10)?;
        println!(
            "device-to-device copy: {:.0} GB/s of traffic (read + write)",
            bw / 1e9
        );
        let path = crate::common::bench_7b_path();
        if !path.exists() {
            let t = Instant::now();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            SyntheticModel::mistral_7b_q4k().write(&path)?;
            println!(
                "generated {} in {:.0} s",
                path.display(),
                t.elapsed().as_secs_f64()
            );
        }
        let dev: Arc<dyn Device> = gpu.clone();
        let t = Instant::now();
        let mut loaded = load_gguf_with(&path, |src| DeviceDecoder::load(dev.clone(), src))?;
        println!("loaded onto the GPU in {:.1} s", t.elapsed().as_secs_f64());
        let model = &mut loaded.llama;
        let cfg = model.config().clone();
        let weight_bytes = model.weight_bytes();
        let kv_width = cfg.n_kv_head * cfg.head_dim;
        model.reserve(PREFILL_CHUNK)?;
        println!("| seqs | prefill s | step p50 ms | step p99 ms | output tok/s | roofline |");
        println!("|---|---|---|---|---|---|");
        for n in [1usize, 8, 32, 64, 128] {
            let per_seq = (PROMPT + OUTPUT).div_ceil(BLOCK);
            let mut cache = DeviceKvCache::new(dev.as_ref(), &cfg, n * per_seq, BLOCK)?;
            let mut seqs: Vec<Seq> = (0..n)
                .map(|i| Seq {
                    blocks: (0..per_seq as u32)
                        .map(|b| (i * per_seq) as u32 + b)
                        .collect(),
                    len: 0,
                })
                .collect();
            let t = Instant::now();
            // Prefill in steps of up to PREFILL_CHUNK tokens, whole prompts per step.
            let mut next = 0;
            while next < n {
                let per_step = (PREFILL_CHUNK / PROMPT).max(1);
                let take: Vec<usize> = (0..n)
                    .map(|i| {
                        if i >= next && i < next + per_step {
                            PROMPT
                        } else {
                            0
                        }
                    })
                    .collect();
                model.forward(&batch(&seqs, &take, cfg.vocab_size), &mut cache)?;
                for (s, &k) in seqs.iter_mut().zip(&take) {
                    s.len += k;
                }
                next += per_step;
            }
            gpu.synchronize()?;
            let prefill = t.elapsed().as_secs_f64();
            let mut steps = Vec::with_capacity(OUTPUT);
            for _ in 0..OUTPUT {
                let input = batch(&seqs, &vec![1; n], cfg.vocab_size);
                let t = Instant::now();
                model.forward(&input, &mut cache)?;
                steps.push(t.elapsed().as_secs_f64());
                for s in &mut seqs {
                    s.len += 1;
                }
            }
            let total: f64 = steps.iter().sum();
            let mean = total / steps.len() as f64;
            steps.sort_by(f64::total_cmp);
            let roofline = if n == 1 {
                let ctx = PROMPT + OUTPUT / 2;
                let kv_bytes = cfg.n_layer * ctx * kv_width * 2 * 2;
                // Memory traffic of one token over the traffic rate a copy reaches.
                let ideal = (weight_bytes + kv_bytes) as f64 / bw;
                format!("{:.0}% ({:.2} ms ideal)", 100.0 * ideal / mean, ideal * 1e3)
            } else {
                "-".into()
            };
            println!(
                "| {n} | {prefill:.2} | {:.2} | {:.2} | {:.0} | {roofline} |",
                percentile(&steps, 0.5) * 1e3,
                percentile(&steps, 0.99) * 1e3,
                n as f64 * OUTPUT as f64 / total,
            );
        }
        Ok(())
    }
}
