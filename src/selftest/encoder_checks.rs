//! The encoder kernels (`kernels/encoder.cu`) against the CPU encoder's arithmetic:
//! the f16-weight tensor-core GEMM with each epilogue, LayerNorm over the residual add,
//! the embedding sum + LayerNorm, attention within each input of a packed batch (one
//! input longer than a key chunk), and CLS / mean pooling with L2 normalisation.
//!
//! Bounds: GEMM `1.2e-5 * sum |x_j w_j| + 1e-6` against an f64 product of the same
//! f16-rounded inputs; LayerNorm, embeddings, attention `1e-4 * (1 + |ref|)`; pooling
//! `1e-5 * (1 + |ref|)`.

use half::f16;

use super::measure::Worst;
use super::{Ctx, Rows};
use crate::device::kernels::DeviceExt;
use crate::device::kernels::ops::{
    self, DevEmbeddings, DevLayerNorm, DevLinear, DevSeqs, Epilogue, RowPool,
};
use crate::model::encoder::attention::packed_attention;
use crate::model::encoder::config::Activation;
use crate::model::encoder::ops::{LayerNorm, activate};
use crate::model::gguf_writer::signed_units;

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
}

fn round16(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
}

fn gemm(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    let mut shapes = vec![(1usize, 8usize, 16usize), (37, 70, 48), (130, 200, 100)];
    if ctx.large {
        shapes.push((512, 1024, 1024));
    }
    let acts = [
        Epilogue::None,
        Epilogue::GeluErf,
        Epilogue::GeluTanh,
        Epilogue::Tanh,
    ];
    for (si, (m, n, k)) in shapes.into_iter().enumerate() {
        let salt = 10 * si as u64;
        let x = signed_units(m * k, ctx.seed(salt + 1));
        let w = signed_units(n * k, ctx.seed(salt + 2));
        let b = signed_units(n, ctx.seed(salt + 3));
        let lin = DevLinear::upload(dev, &w, &b, n, k).map_err(s)?;
        let xd = dev.upload(&x).map_err(s)?;
        let (xr, wr) = (round16(&x), round16(&w));
        for act in acts {
            let mut y = dev.upload(&vec![f32::NAN; m * n]).map_err(s)?;
            ops::gemm_f16w(dev, &xd, k, m, &lin, act, &mut y, n).map_err(s)?;
            let got = dev.download(&y).map_err(s)?;
            for r in 0..m {
                for c in 0..n {
                    let (mut sum, mut mag) = (b[c] as f64, b[c].abs() as f64);
                    for j in 0..k {
                        let p = xr[r * k + j] as f64 * wr[c * k + j] as f64;
                        sum += p;
                        mag += p.abs();
                    }
                    let mut want = [sum as f32];
                    match act {
                        Epilogue::GeluErf => activate(&mut want, Activation::GeluErf),
                        Epilogue::GeluTanh => activate(&mut want, Activation::GeluTanh),
                        Epilogue::Relu => activate(&mut want, Activation::Relu),
                        Epilogue::Tanh => want[0] = want[0].tanh(),
                        Epilogue::None => {}
                    }
                    acc.add(
                        got[r * n + c] as f64,
                        want[0] as f64,
                        1.2e-5 * mag + 1e-6,
                        || format!("{m}x{n}x{k} {act:?} [{r},{c}]"),
                    );
                }
            }
        }
    }
    Ok(acc)
}

fn layer_norm(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    for (rows, width) in [(9usize, 300usize), (2, 1024), (5, 33)] {
        let (w, b) = (
            signed_units(width, ctx.seed(31)),
            signed_units(width, ctx.seed(32)),
        );
        let x = signed_units(rows * width, ctx.seed(33));
        let res = signed_units(rows * width, ctx.seed(34));
        let ln = DevLayerNorm::upload(dev, &w, &b, 1e-12).map_err(s)?;
        let mut xd = dev.upload(&x).map_err(s)?;
        let rd = dev.upload(&res).map_err(s)?;
        ops::layer_norm_residual(dev, &mut xd, Some(&rd), &ln, rows).map_err(s)?;
        let mut want = x.clone();
        LayerNorm::new(w, b, 1e-12).apply_residual(&mut want, &res);
        for (i, (g, r)) in dev.download(&xd).map_err(s)?.iter().zip(&want).enumerate() {
            acc.add(*g as f64, *r as f64, 1e-4 * (1.0 + r.abs() as f64), || {
                format!("{rows}x{width} [{i}]")
            });
        }
    }
    Ok(acc)
}

fn embeddings(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    let (width, vocab, npos, ntypes) = (96usize, 50usize, 16usize, 2usize);
    let word = signed_units(vocab * width, ctx.seed(41));
    let pos = signed_units(npos * width, ctx.seed(42));
    let typ = signed_units(ntypes * width, ctx.seed(43));
    let (w, b) = (
        signed_units(width, ctx.seed(44)),
        signed_units(width, ctx.seed(45)),
    );
    let ln = DevLayerNorm::upload(dev, &w, &b, 1e-5).map_err(s)?;
    let emb = DevEmbeddings::upload(dev, &word, &pos, &typ, ln).map_err(s)?;
    let ids = [3i32, 49, 0, 7, 21];
    let types = [0i32, 1, 1, 0, 1];
    let positions = [0i32, 1, 2, 15, 4];
    let idd = dev.upload_index(&ids).map_err(s)?;
    let td = dev.upload_index(&types).map_err(s)?;
    let pd = dev.upload_index(&positions).map_err(s)?;
    let mut out = dev.upload(&vec![f32::NAN; ids.len() * width]).map_err(s)?;
    ops::embed_layer_norm(dev, &emb, &idd, &td, &pd, &mut out).map_err(s)?;
    let (word, pos, typ) = (round16(&word), round16(&pos), round16(&typ));
    let mut want = Vec::new();
    for r in 0..ids.len() {
        let (a, p, t) = (ids[r] as usize, positions[r] as usize, types[r] as usize);
        want.extend(
            (0..width).map(|i| word[a * width + i] + pos[p * width + i] + typ[t * width + i]),
        );
    }
    LayerNorm::new(w, b, 1e-5).apply(&mut want);
    for (i, (g, r)) in dev.download(&out).map_err(s)?.iter().zip(&want).enumerate() {
        acc.add(*g as f64, *r as f64, 1e-4 * (1.0 + r.abs() as f64), || {
            format!("[{i}]")
        });
    }
    Ok(acc)
}

fn attention(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    for (heads, hd, lens) in [
        (1usize, 24usize, vec![5usize, 1, 17, 530]),
        (3, 24, vec![5, 1, 17]),
        (2, 64, vec![40, 3]),
    ] {
        let hidden = heads * hd;
        let total: usize = lens.iter().sum();
        let qkv = signed_units(total * 3 * hidden, ctx.seed(51 + hd as u64));
        let offsets: Vec<usize> = lens
            .iter()
            .scan(0, |a, &l| {
                *a += l;
                Some(*a - l)
            })
            .collect();
        let want = packed_attention(&qkv, &offsets, &lens, heads, hd);
        let mut seqs = DevSeqs::default();
        seqs.refill(dev, &lens).map_err(s)?;
        let qd = dev.upload(&qkv).map_err(s)?;
        let mut out = dev.upload(&vec![f32::NAN; total * hidden]).map_err(s)?;
        ops::encoder_attention(dev, &qd, &seqs, heads, hd, &mut out).map_err(s)?;
        for (i, (g, r)) in dev.download(&out).map_err(s)?.iter().zip(&want).enumerate() {
            acc.add(*g as f64, *r as f64, 1e-4 * (1.0 + r.abs() as f64), || {
                format!("{heads}x{hd} lens {lens:?} [{i}]")
            });
        }
    }
    Ok(acc)
}

fn pooling(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let mut acc = Worst::default();
    let (width, lens) = (40usize, [3usize, 1, 6]);
    let total: usize = lens.iter().sum();
    let x = signed_units(total * width, ctx.seed(61));
    let mut seqs = DevSeqs::default();
    seqs.refill(dev, &lens).map_err(s)?;
    let xd = dev.upload(&x).map_err(s)?;
    for (pool, normalize) in [(RowPool::First, false), (RowPool::Mean, true)] {
        let mut out = dev.upload(&vec![f32::NAN; lens.len() * width]).map_err(s)?;
        ops::pool_rows(dev, &xd, &seqs, width, pool, normalize, &mut out).map_err(s)?;
        let got = dev.download(&out).map_err(s)?;
        let mut at = 0;
        for (q, &l) in lens.iter().enumerate() {
            let mut want: Vec<f32> = (0..width)
                .map(|i| match pool {
                    RowPool::First => x[at * width + i],
                    RowPool::Mean => (at..at + l).map(|r| x[r * width + i]).sum::<f32>() / l as f32,
                })
                .collect();
            if normalize {
                let n = want.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
                want.iter_mut().for_each(|v| *v /= n);
            }
            for (i, (g, r)) in got[q * width..(q + 1) * width]
                .iter()
                .zip(&want)
                .enumerate()
            {
                acc.add(*g as f64, *r as f64, 1e-5 * (1.0 + r.abs() as f64), || {
                    format!("{pool:?} input {q} [{i}]")
                });
            }
            at += l;
        }
    }
    Ok(acc)
}

/// Every row of this module's checks.
pub fn run(ctx: &Ctx, out: &mut Rows) {
    type Check = fn(&Ctx) -> Result<Worst, String>;
    let checks: [(&str, &str, Check); 5] = [
        (
            "gemm_f16w",
            "1x8x16, 37x70x48, 130x200x100 (+512x1024x1024 on a GPU); none, gelu, gelu_tanh, tanh",
            gemm,
        ),
        ("layer_norm_residual", "9x300, 2x1024, 5x33", layer_norm),
        (
            "embed_layer_norm",
            "5 rows of 96; vocab 50, 16 positions, 2 types",
            embeddings,
        ),
        (
            "encoder_attention",
            "1 head x 24, lens 5,1,17,530; 3 x 24, lens 5,1,17; 2 x 64, lens 40,3",
            attention,
        ),
        ("pool_rows", "lens 3,1,6 of 40; cls, mean + L2", pooling),
    ];
    for (name, shapes, f) in checks {
        out.record(name, shapes, || f(ctx));
    }
}
