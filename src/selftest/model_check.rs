//! The whole decoder on the device against the CPU decoder: a tiny synthetic model
//! (random weights, written to a scratch file) loaded by both, the same batched steps
//! (a chunked prefill beside a whole one, then decodes of both sequences), logits
//! compared row by row, both continuing with the CPU's greedy choice.
//!
//! Bound: `|device - cpu| <= 3%` of the row's largest |logit| (+1e-3): the CPU multiplies
//! against activations quantized to 8 bits per block (as llama.cpp does), the device in
//! f32, so rows differ by 1-2%; a wrong index or format anywhere moves logits by the
//! whole scale.

use std::sync::Arc;

use anyhow::{Context, Result, ensure};
use candle_core::quantized::GgmlDType;

use super::measure::Worst;
use super::{Ctx, Rows};
use crate::device::kernels::Device;
use crate::model::device_decoder::{DeviceDecoder, DeviceKvCache};
use crate::model::gguf_writer::SyntheticModel;
use crate::model::loader::{load_gguf, load_gguf_with};
use crate::model::paged_attention::PagedKvCache;
use crate::model::step_batch::{HandSeq, step};
use crate::scratch::ScratchDir;

const BLOCK: usize = 16;

/// The models checked: a Q4_K_M mix (Q4_K matrices, Q6_K output and "more bits"
/// layers) and plain Q8_0.
fn models() -> Vec<(&'static str, SyntheticModel)> {
    vec![
        (
            "q4_k_m",
            SyntheticModel {
                output_dtype: GgmlDType::Q6K,
                more_bits_dtype: Some(GgmlDType::Q6K),
                ..SyntheticModel::tiny(GgmlDType::Q4K)
            },
        ),
        ("q8_0", SyntheticModel::tiny(GgmlDType::Q8_0)),
    ]
}

fn compare(dev: Arc<dyn Device>, model: &SyntheticModel, seed: u64) -> Result<Worst> {
    let dir = ScratchDir::new("selftest")?;
    let path = dir.join("model.gguf");
    SyntheticModel {
        seed,
        ..model.clone()
    }
    .write(&path)?;
    let cpu = load_gguf(&path).context("loading on the CPU")?;
    let mut gpu = load_gguf_with(&path, |src| DeviceDecoder::load(dev.clone(), src))
        .context("loading on the device")?
        .llama;
    let cfg = cpu.llama.config().clone();
    let num_blocks = 8;
    let mut cpu_cache =
        PagedKvCache::new(cfg.n_layer, num_blocks, BLOCK, cfg.n_kv_head, cfg.head_dim);
    let mut dev_cache = DeviceKvCache::new(dev.as_ref(), &cfg, num_blocks, BLOCK)?;
    let vocab = cfg.vocab_size as u32;
    let prompt = |n: usize, salt: u32| (0..n as u32).map(|i| (i * 37 + salt) % vocab).collect();
    let mut seqs = vec![
        HandSeq {
            tokens: prompt(18, 5),
            computed: 0,
            blocks: vec![6, 1, 4],
        },
        HandSeq {
            tokens: prompt(5, 11),
            computed: 0,
            blocks: vec![2, 0, 5],
        },
    ];
    // A chunk of sequence 0 beside all of sequence 1; the rest of 0 beside a decode;
    // then decodes of both.
    let mut plan = vec![vec![10, 5], vec![8, 1]];
    plan.extend(std::iter::repeat_n(vec![1, 1], 5));
    let mut acc = Worst::default();
    for (n, take) in plan.iter().enumerate() {
        let input = step(&seqs, take, BLOCK)?;
        let want = cpu.llama.forward(&input, &mut cpu_cache)?;
        let got = gpu.forward(&input, &mut dev_cache)?;
        ensure!(
            got.len() == want.len(),
            "step {n}: {} rows of logits, want {}",
            got.len(),
            want.len()
        );
        let mut row = 0;
        for (i, s) in seqs.iter_mut().enumerate() {
            s.computed += take[i];
            if s.computed < s.tokens.len() {
                continue;
            }
            let (g, w) = (&got[row], &want[row]);
            row += 1;
            let scale = w.iter().fold(0f32, |a, &v| a.max(v.abs())) as f64;
            for (j, (a, b)) in g.iter().zip(w).enumerate() {
                acc.add(*a as f64, *b as f64, 0.03 * scale + 1e-3, || {
                    format!("step {n} seq {i} logit {j}")
                });
            }
            s.tokens
                .push(crate::device::cpu::rowops::argmax_scalar(w) as u32);
        }
    }
    Ok(acc)
}

/// Every row of this module's checks.
pub fn run(ctx: &Ctx, out: &mut Rows) {
    for (tag, model) in models() {
        let name = format!("decoder {tag}");
        let shapes = format!(
            "{} layers, {} wide, {}/{} heads, vocab {}; 7 steps",
            model.n_layer, model.n_embd, model.n_head, model.n_kv_head, model.vocab_size
        );
        out.record(&name, &shapes, || {
            compare(ctx.arc.clone(), &model, ctx.seed(0xD0)).map_err(|e| format!("{e:#}"))
        });
    }
}
