//! Tests of the attention driver and kernels: the scalar kernel against an f64
//! reference, every SIMD kernel bitwise against it, rows together against rows alone.

use super::*;
use crate::device::cpu::same_bits;
use crate::model::gguf_writer::signed_units;

/// Softmax attention in f64 over contiguous keys, the plain reference.
fn reference(q: &[f32], k: &[f32], v: &[f32], hd: usize, scale: f32) -> Vec<f32> {
    let ctx = k.len() / hd;
    let mut out = Vec::new();
    for qh in q.chunks(hd) {
        let s: Vec<f64> = (0..ctx)
            .map(|j| {
                let kj = &k[j * hd..(j + 1) * hd];
                qh.iter()
                    .zip(kj)
                    .map(|(a, b)| *a as f64 * *b as f64)
                    .sum::<f64>()
                    * scale as f64
            })
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for d in 0..hd {
            let o: f64 = (0..ctx).map(|j| e[j] * v[j * hd + d] as f64).sum();
            out.push((o / sum) as f32);
        }
    }
    out
}

/// A random paged cache of `slots` slots with `n_kv` heads of width `hd`.
fn cache(slots: usize, n_kv: usize, hd: usize, seed: u64) -> (Vec<f16>, Vec<f16>) {
    let f = |s| {
        signed_units(slots * n_kv * hd, s)
            .iter()
            .map(|&x| f16::from_f32(2.0 * x))
            .collect::<Vec<_>>()
    };
    (f(seed), f(seed + 1))
}

/// The scalar kernel against the f64 reference on several head widths, group sizes,
/// block sizes and context lengths (ragged chunks), and every SIMD kernel this CPU
/// has equal to it bitwise.
#[test]
fn matches_reference_and_simd_equals_scalar() {
    for &(hd, group, bs, n_kv) in &[
        (64, 3, 16, 3),
        (128, 1, 16, 2),
        (8, 4, 5, 1),
        (12, 2, 7, 2),
        (80, 5, 16, 1),
        (32, 2, 3, 2),
        (32, 8, 16, 1),
        (16, 20, 4, 1),
    ] {
        let blocks = 40;
        let (k, v) = cache(blocks * bs, n_kv, hd, hd as u64);
        // A scrambled block table.
        let table: Vec<u32> = (0..blocks as u32)
            .map(|i| (i * 17 + 3) % blocks as u32)
            .collect();
        for ctx in [1, 15, 16, 17, 100, 33 * 5] {
            if ctx > blocks * bs {
                continue;
            }
            let kvh = n_kv - 1;
            let kv = KvHead {
                k: &k,
                v: &v,
                block_table: &table,
                block_size: bs,
                slot_stride: n_kv * hd,
                head_offset: kvh * hd,
            };
            let gather = |src: &[f16]| -> Vec<f32> {
                (0..ctx)
                    .flat_map(|p| {
                        let slot = table[p / bs] as usize * bs + p % bs;
                        let at = slot * n_kv * hd + kvh * hd;
                        src[at..at + hd]
                            .iter()
                            .map(|x| x.to_f32())
                            .collect::<Vec<_>>()
                    })
                    .collect()
            };
            let q: Vec<f32> = signed_units(group * hd, ctx as u64)
                .iter()
                .map(|x| 3.0 * x)
                .collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let want = reference(&q, &gather(&k), &gather(&v), hd, scale);
            let mut sc = AttnScratch::new(group);
            let (mut fast, mut slow) = (vec![0f32; q.len()], vec![0f32; q.len()]);
            let rule = ScoreRule::plain(scale);
            attend_scalar(&q, ctx, &kv, hd, rule, &mut slow, &mut sc);
            for (i, (&f, &w)) in slow.iter().zip(&want).enumerate() {
                assert!((f - w).abs() < 2e-5, "hd {hd} ctx {ctx} [{i}]: {f} vs {w}");
            }
            // Plain, soft-capped and sliding-window scores (a window that starts
            // inside a chunk masks its first keys).
            let capped = ScoreRule {
                softcap: Some(2.5),
                ..rule
            };
            let windowed = ScoreRule {
                window: Some(21),
                ..rule
            };
            for r in [rule, capped, windowed] {
                attend_scalar(&q, ctx, &kv, hd, r, &mut slow, &mut sc);
                for kernel in AttnKernel::available() {
                    attend_with(kernel, &q, ctx, &kv, hd, r, &mut fast, &mut sc);
                    assert!(
                        same_bits(&fast, &slow),
                        "{kernel:?} {r:?} hd {hd} group {group} ctx {ctx}: != scalar"
                    );
                }
            }
        }
    }
}

/// Several rows at once equal each row alone, bitwise, on every kernel: rows that
/// cross chunk boundaries, start inside the first chunk, and see soft-capped or
/// windowed scores (a window that masks keys of a shared chunk falls back per row).
#[test]
fn rows_together_equal_rows_alone() {
    for &(hd, group, bs, n_kv) in &[
        (64, 3, 16, 3),
        (128, 4, 16, 2),
        (16, 1, 5, 1),
        (8, 2, 7, 2),
        (32, 8, 16, 1),
    ] {
        let blocks = 40;
        let (k, v) = cache(blocks * bs, n_kv, hd, 7 + hd as u64);
        let table: Vec<u32> = (0..blocks as u32)
            .map(|i| (i * 13 + 5) % blocks as u32)
            .collect();
        let kv = KvHead {
            k: &k,
            v: &v,
            block_table: &table,
            block_size: bs,
            slot_stride: n_kv * hd,
            head_offset: 0,
        };
        let plain = ScoreRule::plain(1.0 / (hd as f32).sqrt());
        let capped = ScoreRule {
            softcap: Some(3.0),
            ..plain
        };
        let windowed = ScoreRule {
            window: Some(40),
            ..plain
        };
        let wide = ScoreRule {
            window: Some(500),
            ..plain
        };
        for (ctx0, rows) in [
            (1, 2),
            (1, 16),
            (15, 3),
            (16, 5),
            (17, 8),
            (100, 6),
            (160, 7),
        ] {
            let w = group * hd;
            let q: Vec<f32> = signed_units(rows * w, (ctx0 * rows) as u64)
                .iter()
                .map(|x| 3.0 * x)
                .collect();
            let mut sc = AttnScratch::new(group);
            for rule in [plain, capped, windowed, wide] {
                // Each row alone on the scalar kernel: what every kernel must give.
                let mut alone = vec![0f32; q.len()];
                for (r, (qr, o)) in q.chunks(w).zip(alone.chunks_mut(w)).enumerate() {
                    let kernel = AttnKernel::Scalar;
                    attend_with(kernel, qr, ctx0 + r, &kv, hd, rule, o, &mut sc);
                }
                for kernel in AttnKernel::available() {
                    let mut together = vec![0f32; q.len()];
                    attend_rows_with(
                        kernel,
                        &q,
                        ctx0,
                        rows,
                        &kv,
                        hd,
                        rule,
                        &mut together,
                        &mut sc,
                    );
                    assert!(
                        same_bits(&together, &alone),
                        "{kernel:?} {rule:?} hd {hd} group {group} ctx0 {ctx0} rows {rows}"
                    );
                }
            }
        }
    }
}

#[test]
#[should_panic(expected = "outside the cache")]
fn rejects_a_block_table_outside_the_cache() {
    let (k, v) = cache(32, 1, 8, 1);
    let kv = KvHead {
        k: &k,
        v: &v,
        block_table: &[0, 9],
        block_size: 16,
        slot_stride: 8,
        head_offset: 0,
    };
    let mut out = [0f32; 8];
    attend(
        &[0.5; 8],
        20,
        &kv,
        8,
        ScoreRule::plain(1.0),
        &mut out,
        &mut AttnScratch::new(1),
    );
}
