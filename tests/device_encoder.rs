//! The encoder on the device (`kernels/encoder.cu`, `model::encoder::device`) against
//! the CPU encoder, on the kernel emulator (and on a GPU too when built with `--features
//! cuda` on a machine that has one; see `gpu_kernels/emu.rs`).
//!
//! Kernels, per output: `gemm_f16w` |got - ref| <= 1e-5 * sum |x_j w_j| + 1e-6 against
//! an f64 product of the same f16-rounded inputs (only the f32 summation order
//! differs); LayerNorm, embeddings, attention and pooling 1e-4 absolute on outputs of
//! size ~1 (f32 in another order, `expf`; the embedding tables are f16 on the device,
//! so that reference rounds them too).
//!
//! Whole models (the synthetic BERT / XLM-R fixtures of `tests/fixtures/encoders`,
//! device f16 weights vs the CPU's f32): embeddings cosine >= 0.9999 and max abs error
//! <= 5e-3 per (unit-norm) component (2.7e-3 observed on the emulator); rerank logits within 2e-2 + 2e-2 |logit| with the
//! same order; classifier and NER logits within 3e-2 * (1 + max |logit|) of the row.
//! These bounds are what f16 weights give on these small random models (observed
//! errors are reported by the assertions' messages when they fail).

#[path = "gpu_kernels/emu.rs"]
mod emu;

#[path = "common/encoder_fixtures.rs"]
mod encoder_fixtures;

use std::sync::Arc;

use ferrite::device::kernels::ops::{self, DevLayerNorm, DevLinear, DevSeqs, Epilogue, RowPool};
use ferrite::device::kernels::{Device, DeviceError, DeviceExt};
use ferrite::model::encoder::Encoder;
use ferrite::model::encoder::attention::packed_attention;
use ferrite::model::encoder::bert::PackedBatch;
use ferrite::model::encoder::config::{Activation, Pooling, Task};
use ferrite::model::encoder::device::weight_bytes;
use ferrite::model::encoder::ops::{LayerNorm, activate};
use ferrite::model::gguf_writer::signed_units as data; // values in [-1, 1) from a seed
use half::f16;

use encoder_fixtures::{cosine, fixtures};

fn devices() -> &'static [Arc<dyn Device>] {
    emu::devices()
}

fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

#[test]
fn gemm_f16w_matches_f64_product_at_edges_and_every_epilogue() {
    let acts = [
        (Epilogue::None, None),
        (Epilogue::GeluErf, Some(Activation::GeluErf)),
        (Epilogue::GeluTanh, Some(Activation::GeluTanh)),
        (Epilogue::Relu, Some(Activation::Relu)),
        (Epilogue::Tanh, None),
    ];
    for dev in devices() {
        let d = dev.as_ref();
        for (si, &(m, n, k)) in [(1usize, 8usize, 16usize), (37, 70, 48), (130, 200, 100)]
            .iter()
            .enumerate()
        {
            let x = data(m * k, 1 + si as u64);
            let w = data(n * k, 10 + si as u64);
            let b = data(n, 20 + si as u64);
            let lin = DevLinear::upload(d, &w, &b, n, k).unwrap();
            // x rows padded to k + 3 to exercise the stride.
            let ldx = k + 3;
            let mut xs = vec![0.0f32; m * ldx];
            for r in 0..m {
                xs[r * ldx..r * ldx + k].copy_from_slice(&x[r * k..(r + 1) * k]);
            }
            let xd = d.upload(&xs).unwrap();
            let (xr, wr) = (round16(&x), round16(&w));
            for (act, cpu_act) in acts {
                let mut y = d.alloc::<f32>(m * n).unwrap();
                ops::gemm_f16w(d, &xd, ldx, m, &lin, act, &mut y, n).unwrap();
                let got = d.download(&y).unwrap();
                for r in 0..m {
                    for c in 0..n {
                        let (mut s, mut mag) = (b[c] as f64, b[c].abs() as f64);
                        for j in 0..k {
                            let p = xr[r * k + j] as f64 * wr[c * k + j] as f64;
                            s += p;
                            mag += p.abs();
                        }
                        let mut want = [s as f32];
                        match (act, cpu_act) {
                            (_, Some(a)) => activate(&mut want, a),
                            (Epilogue::Tanh, _) => want[0] = want[0].tanh(),
                            _ => {}
                        }
                        let g = got[r * n + c];
                        // Activations are 1-Lipschitz (GELU ~1.13): the bound carries over.
                        let bound = 1.2e-5 * mag + 1e-6;
                        assert!(
                            (g - want[0]).abs() as f64 <= bound,
                            "{} {act:?} m{m} n{n} k{k} [{r},{c}]: {g} vs {}",
                            d.name(),
                            want[0]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn layer_norm_residual_matches_cpu() {
    for dev in devices() {
        let d = dev.as_ref();
        let (rows, width) = (9, 300);
        let (w, b) = (data(width, 3), data(width, 4));
        let x = data(rows * width, 5);
        let res = data(rows * width, 6);
        let ln = DevLayerNorm::upload(d, &w, &b, 1e-12).unwrap();
        let mut xd = d.upload(&x).unwrap();
        let rd = d.upload(&res).unwrap();
        ops::layer_norm_residual(d, &mut xd, Some(&rd), &ln, rows).unwrap();
        let mut want = x.clone();
        LayerNorm::new(w.clone(), b.clone(), 1e-12).apply_residual(&mut want, &res);
        for (g, w) in d.download(&xd).unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{}: {g} vs {w}", d.name());
        }
    }
}

#[test]
fn attention_stays_within_each_input_as_the_cpu_path() {
    for dev in devices() {
        let d = dev.as_ref();
        let (heads, hd) = (3, 24);
        // One input longer than a key chunk (512) to cover the online softmax.
        let lens = [5usize, 1, 17, 530];
        let hidden = heads * hd;
        let total: usize = lens.iter().sum();
        let qkv: Vec<f32> = data(total * 3 * hidden, 7)
            .iter()
            .map(|v| 2.0 * v)
            .collect();
        let offsets: Vec<usize> = lens
            .iter()
            .scan(0, |a, &l| {
                *a += l;
                Some(*a - l)
            })
            .collect();
        let want = packed_attention(&qkv, &offsets, &lens, heads, hd);
        let mut seqs = DevSeqs::default();
        seqs.refill(d, &lens).unwrap();
        let qd = d.upload(&qkv).unwrap();
        let mut out = d.alloc::<f32>(total * hidden).unwrap();
        ops::encoder_attention(d, &qd, &seqs, heads, hd, &mut out).unwrap();
        for (i, (g, w)) in d.download(&out).unwrap().iter().zip(&want).enumerate() {
            assert!((g - w).abs() < 1e-4, "{} [{i}]: {g} vs {w}", d.name());
        }
    }
}

#[test]
fn pooling_and_embeddings_match_references() {
    for dev in devices() {
        let d = dev.as_ref();
        let (width, lens) = (40usize, [3usize, 1, 6]);
        let total: usize = lens.iter().sum();
        let x = data(total * width, 8);
        let mut seqs = DevSeqs::default();
        seqs.refill(d, &lens).unwrap();
        let xd = d.upload(&x).unwrap();
        let mut out = d.alloc::<f32>(lens.len() * width).unwrap();
        for (pool, normalize) in [(RowPool::First, false), (RowPool::Mean, true)] {
            ops::pool_rows(d, &xd, &seqs, width, pool, normalize, &mut out).unwrap();
            let got = d.download(&out).unwrap();
            let mut at = 0;
            for (s, &l) in lens.iter().enumerate() {
                let mut want: Vec<f32> = (0..width)
                    .map(|i| match pool {
                        RowPool::First => x[at * width + i],
                        RowPool::Mean => {
                            (at..at + l).map(|r| x[r * width + i]).sum::<f32>() / l as f32
                        }
                    })
                    .collect();
                if normalize {
                    let n = want.iter().map(|v| v * v).sum::<f32>().sqrt();
                    want.iter_mut().for_each(|v| *v /= n);
                }
                for (g, w) in got[s * width..(s + 1) * width].iter().zip(&want) {
                    assert!((g - w).abs() < 1e-5, "{} {pool:?}: {g} vs {w}", d.name());
                }
                at += l;
            }
        }
        // Embeddings: word + position + type rows (f16 tables), then LayerNorm.
        let (vocab, npos, ntypes) = (11, 8, 2);
        let (word, pos, typ) = (
            data(vocab * width, 9),
            data(npos * width, 10),
            data(ntypes * width, 11),
        );
        let (w, b) = (data(width, 12), data(width, 13));
        let ln = DevLayerNorm::upload(d, &w, &b, 1e-5).unwrap();
        let emb = ops::DevEmbeddings::upload(d, &word, &pos, &typ, ln).unwrap();
        let ids = [3i32, 10, 0, 7];
        let types = [0i32, 1, 1, 0];
        let positions = [0i32, 1, 2, 7];
        let (idd, td, pd) = (
            d.upload_index(&ids).unwrap(),
            d.upload_index(&types).unwrap(),
            d.upload_index(&positions).unwrap(),
        );
        let mut out = d.alloc::<f32>(ids.len() * width).unwrap();
        ops::embed_layer_norm(d, &emb, &idd, &td, &pd, &mut out).unwrap();
        let (word, pos, typ) = (round16(&word), round16(&pos), round16(&typ));
        let mut want = Vec::new();
        for r in 0..ids.len() {
            let (a, p, t) = (ids[r] as usize, positions[r] as usize, types[r] as usize);
            want.extend(
                (0..width).map(|i| word[a * width + i] + pos[p * width + i] + typ[t * width + i]),
            );
        }
        LayerNorm::new(w, b, 1e-5).apply(&mut want);
        for (g, w) in d.download(&out).unwrap().iter().zip(&want) {
            assert!((g - w).abs() < 1e-4, "{} embeddings: {g} vs {w}", d.name());
        }
        // Out-of-table ids are refused before any launch.
        let bad = d.upload_index(&[3, 11, 0, 7]).unwrap();
        let err = ops::embed_layer_norm(d, &emb, &bad, &td, &pd, &mut out).unwrap_err();
        assert!(matches!(err, DeviceError::Shape { .. }), "{err}");
        assert!(err.to_string().contains("0..11"), "{err}");
    }
}

/// A batch of random inputs of `lens` for a model of `vocab` ids and `types` types.
fn batch(lens: &[usize], vocab: usize, types: usize, seed: u64) -> PackedBatch {
    let mut b = PackedBatch::default();
    for (i, &l) in lens.iter().enumerate() {
        let r = data(2 * l, seed + i as u64);
        let ids: Vec<u32> = r[..l]
            .iter()
            .map(|v| ((v + 1.0) / 2.0 * (vocab - 1) as f32) as u32)
            .collect();
        let ty: Vec<u32> = (0..l).map(|j| u32::from(types > 1 && j >= l / 2)).collect();
        b.push(&ids, &ty);
    }
    b
}

/// The CPU and device outputs of fixture `dir` (task forced when given) on one batch.
fn both(dir: &str, task: Option<Task>, dev: &Arc<dyn Device>) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let path = fixtures().join(dir);
    let cpu = Encoder::load_as(&path, task).expect("loads on the CPU");
    let gpu = Encoder::load_on_device(&path, task, dev.clone()).expect("loads on the device");
    assert!(cpu.encoder.on_device().is_none());
    let on = gpu.encoder.on_device().expect("a device encoder");
    assert_eq!(
        on.weight_bytes(),
        weight_bytes(gpu.encoder.config()),
        "{dir}: weight estimate"
    );
    let cfg = cpu.encoder.config();
    let b = batch(&[7, 1, 30, 12, 64], cfg.vocab, cfg.type_vocab, 40);
    let want = cpu.encoder.run(&b).expect("CPU runs");
    let got = gpu.encoder.run(&b).expect("device runs");
    assert_eq!(got.len(), want.len());
    (got, want)
}

#[test]
fn device_embeddings_match_the_cpu_encoder() {
    for dev in devices() {
        for dir in ["bert_cross_encoder", "xlmr_cross_encoder"] {
            for pooling in [Pooling::Mean, Pooling::Cls] {
                let (got, want) = both(dir, Some(Task::Embedding(pooling)), dev);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let c = cosine(g, w);
                    let err = g
                        .iter()
                        .zip(w)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0, f32::max);
                    assert!(
                        c >= 0.9999 && err <= 5e-3,
                        "{} {dir} {pooling:?} input {i}: cosine {c}, max error {err}",
                        dev.name()
                    );
                }
            }
        }
    }
}

#[test]
fn device_rerank_scores_match_the_cpu_encoder_in_value_and_order() {
    for dev in devices() {
        for dir in ["bert_cross_encoder", "xlmr_cross_encoder"] {
            let (got, want) = both(dir, None, dev);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), 1);
                assert!(
                    (g[0] - w[0]).abs() <= 2e-2 + 2e-2 * w[0].abs(),
                    "{} {dir} input {i}: {} vs {}",
                    dev.name(),
                    g[0],
                    w[0]
                );
            }
            let order = |v: &[Vec<f32>]| {
                let mut idx: Vec<usize> = (0..v.len()).collect();
                idx.sort_by(|&a, &b| v[b][0].total_cmp(&v[a][0]));
                idx
            };
            assert_eq!(
                order(&got),
                order(&want),
                "{} {dir}: rerank order",
                dev.name()
            );
        }
    }
}

#[test]
fn device_classifier_and_token_logits_match_the_cpu_encoder() {
    for dev in devices() {
        for dir in ["bert_classifier", "bert_ner", "xlmr_ner"] {
            let (got, want) = both(dir, None, dev);
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert_eq!(g.len(), w.len(), "{dir} input {i}: widths");
                let scale = 1.0 + w.iter().map(|v| v.abs()).fold(0.0, f32::max);
                let err = g
                    .iter()
                    .zip(w)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f32::max);
                assert!(
                    err <= 3e-2 * scale,
                    "{} {dir} input {i}: max error {err} against logits up to {scale}",
                    dev.name()
                );
            }
        }
    }
}

#[test]
fn device_batches_are_checked_and_passes_report_their_layers() {
    let dev = &devices()[0];
    let path = fixtures().join("bert_cross_encoder");
    let gpu = Encoder::load_on_device(&path, None, dev.clone()).expect("loads");
    let cfg = gpu.encoder.config().clone();
    let mut bad = PackedBatch::default();
    bad.push(&[1, cfg.vocab as u32], &[0, 0]);
    let err = gpu.encoder.run(&bad).unwrap_err().to_string();
    assert!(err.contains("outside the vocabulary"), "{err}");
    // A pass run layer by layer gives the same as run(), and finish refuses early.
    let b = batch(&[4, 9], cfg.vocab, cfg.type_vocab, 3);
    let mut pass = gpu.encoder.begin(&b).unwrap();
    assert!(gpu.encoder.finish(&mut pass).is_err());
    while !gpu.encoder.advance(&mut pass) {}
    let stepped = gpu.encoder.finish(&mut pass).unwrap();
    assert_eq!(stepped, gpu.encoder.run(&b).unwrap());
    assert!(
        gpu.encoder.finish(&mut pass).is_err(),
        "a pass finishes once"
    );
}
