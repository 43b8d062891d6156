//! The CUDA kernels (`kernels/*.cu`) through their safe wrappers
//! (`device::kernels::ops`), against the CPU path on random inputs of several shapes.
//!
//! Every check runs on the host emulator (`gpu_kernels/emu.rs`: the same sources built
//! with the host C++ compiler), so the kernels' indexing and arithmetic are tested on
//! every machine; built with `--features cuda` on a machine with a GPU, every check runs
//! on the GPU too. Tolerances, per output: quantized matmuls |gpu - ref| <= 1e-4 * sum
//! |x_j w_j| + 1e-6 (f32 sums in another order over exactly the same dequantized
//! weights); RMSNorm (whole rows and heads), SiLU, GELU, rotary, soft-cap 1e-5
//! relative + 1e-6; bias and scale exact; attention 2e-4 absolute on
//! outputs of size ~1 (same f16 cache values, another summation order, `expf`);
//! argmax and dequantization exact.

#[path = "gpu_kernels/emu.rs"]
mod emu;

use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device as CandleDevice, Tensor};
use ferrite::device::cpu::attention::ScoreRule;
use ferrite::device::cpu::{CpuQMatrix, QKind, rowops};
use ferrite::device::kernels::ops::{
    self, AttnBatch, DevKvLayer, DevRope, HeadColumns, KvColumns, QWeight,
};
use ferrite::device::kernels::{Device, DeviceError, DeviceExt};
use ferrite::model::gguf_writer::signed_units;
use ferrite::model::ops::{gelu_gate_up, silu_gate_up};
use ferrite::model::paged_attention::{HeadShape, PagedKvCache, SeqSpan, Strided};
use ferrite::model::rope::RopeTable;
use ferrite::model::spec::{RopeSpec, RopeStyle};

/// The devices to check (see `emu::devices`).
fn devices() -> Vec<&'static dyn Device> {
    emu::devices().iter().map(|d| d.as_ref()).collect()
}

/// Every weight format the device kernels read.
use ferrite::device::cpu::WEIGHT_DTYPES as DTYPES;

/// A random quantized `(n, k)` weight: kind, raw blocks, dequantized values.
fn weight(n: usize, k: usize, dtype: GgmlDType, seed: u64) -> (QKind, Vec<u8>, Vec<f32>) {
    let t = Tensor::from_vec(signed_units(n * k, seed), (n, k), &CandleDevice::Cpu).unwrap();
    let qt = QTensor::quantize(&t, dtype).unwrap();
    let cpu = CpuQMatrix::from_qtensor(&qt).unwrap();
    (cpu.kind(), qt.data().unwrap().to_vec(), cpu.dequantize())
}

fn close(got: f32, want: f64, bound: f64) -> bool {
    (got as f64 - want).abs() <= bound
}

#[test]
fn quantized_matmul_matches_dequantized_reference() {
    for dev in devices() {
        for (di, dtype) in DTYPES.into_iter().enumerate() {
            let blocked = dtype.block_size() == 256;
            let shapes: &[(usize, usize)] = if blocked {
                &[(13, 256), (70, 512)]
            } else {
                &[(13, 64), (70, 160)]
            };
            for &(n, k) in shapes {
                let (kind, raw, wf) = weight(n, k, dtype, 7 + di as u64);
                let w = QWeight::upload(dev, kind, n, k, &raw).unwrap();
                for m in [1, 3, 8, 9, 33] {
                    let x = signed_units(m * k, 100 + m as u64);
                    let xd = dev.upload(&x).unwrap();
                    let mut yd = dev.alloc::<f32>(m * n).unwrap();
                    ops::qmatmul(dev, &w, &xd, m, &mut yd).unwrap();
                    let y = dev.download(&yd).unwrap();
                    for i in 0..m {
                        for j in 0..n {
                            let (xr, wr) = (&x[i * k..][..k], &wf[j * k..][..k]);
                            let want: f64 =
                                xr.iter().zip(wr).map(|(&a, &b)| a as f64 * b as f64).sum();
                            let mag: f64 = xr
                                .iter()
                                .zip(wr)
                                .map(|(&a, &b)| (a as f64 * b as f64).abs())
                                .sum();
                            let got = y[i * n + j];
                            assert!(
                                close(got, want, 1e-4 * mag + 1e-6),
                                "{}: {kind:?} {n}x{k}, m={m}, y[{i}][{j}] = {got}, want {want}",
                                dev.name()
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn dequantized_rows_are_exact() {
    for dev in devices() {
        for (di, dtype) in DTYPES.into_iter().enumerate() {
            let (n, k) = (9, 512);
            let (kind, raw, wf) = weight(n, k, dtype, 40 + di as u64);
            let w = QWeight::upload(dev, kind, n, k, &raw).unwrap();
            let ids = [0, 8, 3, 3, 5];
            let idx = dev.upload_index(&ids).unwrap();
            let mut out = dev.alloc::<f32>(ids.len() * k).unwrap();
            ops::dequant_rows(dev, &w, &idx, &mut out).unwrap();
            let got = dev.download(&out).unwrap();
            for (i, &id) in ids.iter().enumerate() {
                assert_eq!(
                    &got[i * k..][..k],
                    &wf[id as usize * k..][..k],
                    "{}: {kind:?} row {id}",
                    dev.name()
                );
            }
        }
    }
}

#[test]
fn rms_norm_with_residual_matches_cpu() {
    for dev in devices() {
        for (rows, width) in [(5, 576), (3, 100), (1, 4096)] {
            let x = signed_units(rows * width, 1);
            let delta = signed_units(rows * width, 2);
            let w = signed_units(width, 3);
            let sum: Vec<f32> = x.iter().zip(&delta).map(|(a, b)| a + b).collect();
            for with_delta in [false, true] {
                let mut xd = dev.upload(&x).unwrap();
                let dd = dev.upload(&delta).unwrap();
                let wd = dev.upload(&w).unwrap();
                let mut out = dev.alloc::<f32>(rows * width).unwrap();
                let d = with_delta.then_some(&dd);
                ops::rms_norm_residual(dev, &mut xd, d, &wd, &mut out, rows, 1e-5).unwrap();
                let input = if with_delta { &sum } else { &x };
                assert_eq!(
                    &dev.download(&xd).unwrap(),
                    input,
                    "{}: residual stream",
                    dev.name()
                );
                let mut want = vec![0f32; rows * width];
                rowops::rms_norm_scalar(input, &w, 1e-5, &mut want);
                for (i, (g, r)) in dev.download(&out).unwrap().iter().zip(&want).enumerate() {
                    assert!(
                        close(*g, *r as f64, 1e-5 * r.abs() as f64 + 1e-6),
                        "{}: rms_norm {rows}x{width} delta={with_delta} [{i}] {g} vs {r}",
                        dev.name()
                    );
                }
            }
        }
    }
}

#[test]
fn rotary_matches_cpu_on_fused_qkv_rows() {
    for dev in devices() {
        let (hd, nq, nk) = (64, 9, 3);
        let stride = (nq + 2 * nk) * hd;
        let rows = 6;
        let table = RopeTable::plain(hd, 512, 10_000.0);
        let rope = DevRope::upload(dev, &table).unwrap();
        let x = signed_units(rows * stride, 6);
        let positions = [0usize, 1, 17, 300, 511, 42];
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let mut xd = dev.upload(&x).unwrap();
        let cols = HeadColumns {
            stride,
            offset: 0,
            n_heads: nq + nk,
            head_dim: hd,
        };
        ops::rotary(
            dev,
            &mut xd,
            &rope,
            &dev.upload_index(&pos).unwrap(),
            rows,
            cols,
        )
        .unwrap();
        let mut want = x.clone();
        table.apply_strided(&mut want, stride, 0, &positions, nq + nk, hd);
        for (i, (g, r)) in dev.download(&xd).unwrap().iter().zip(&want).enumerate() {
            assert!(
                close(*g, *r as f64, 1e-5 * r.abs() as f64 + 1e-6),
                "{}: rotary [{i}] {g} vs {r}",
                dev.name()
            );
        }
        // V columns are not touched.
        let got = dev.download(&xd).unwrap();
        assert_eq!(got[(nq + nk) * hd..stride], x[(nq + nk) * hd..stride]);
        // A position past the table is refused before any launch.
        let bad = dev.upload_index(&[0, 512, 0, 0, 0, 0]).unwrap();
        let err = ops::rotary(dev, &mut xd, &rope, &bad, rows, cols).unwrap_err();
        assert!(err.to_string().contains("0..512"), "{err}");
    }
}

#[test]
fn half_split_and_partial_rotary_match_cpu() {
    for dev in devices() {
        let (hd, nq, nk, rows) = (64, 4, 2, 5);
        let stride = (nq + 2 * nk) * hd;
        let positions = [0usize, 3, 77, 255, 9];
        let pos: Vec<i32> = positions.iter().map(|&p| p as i32).collect();
        let pos_d = dev.upload_index(&pos).unwrap();
        for (style, n_rot) in [
            (RopeStyle::Halves, hd),
            (RopeStyle::Halves, hd / 2),
            (RopeStyle::Adjacent, 24),
        ] {
            let spec = RopeSpec {
                style,
                n_rot,
                base: 1_000_000.0,
                freq_scale: 1.0,
                yarn_orig_ctx: None,
                freq_factors: None,
                attn_factor: 1.0,
            };
            let table = RopeTable::new(&spec, 256);
            let rope = DevRope::upload(dev, &table).unwrap();
            let x = signed_units(rows * stride, 16);
            let mut xd = dev.upload(&x).unwrap();
            // K heads only (offset past Q), to exercise the offset too.
            let cols = HeadColumns {
                stride,
                offset: nq * hd,
                n_heads: nk,
                head_dim: hd,
            };
            ops::rotary(dev, &mut xd, &rope, &pos_d, rows, cols).unwrap();
            let mut want = x.clone();
            table.apply_strided(&mut want, stride, nq * hd, &positions, nk, hd);
            let got = dev.download(&xd).unwrap();
            for (i, (g, r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    close(*g, *r as f64, 1e-5 * r.abs() as f64 + 1e-6),
                    "{}: {style:?} n_rot {n_rot} [{i}] {g} vs {r}",
                    dev.name()
                );
            }
            // Past n_rot, and outside the K heads, nothing moves.
            for r in 0..rows {
                let head = r * stride + nq * hd;
                assert_eq!(got[head + n_rot..head + hd], x[head + n_rot..head + hd]);
                assert_eq!(got[r * stride..head], x[r * stride..head]);
            }
        }
        // A table wider than the heads is refused.
        let wide = RopeTable::plain(128, 8, 10_000.0);
        let rope = DevRope::upload(dev, &wide).unwrap();
        let mut xd = dev.upload(&vec![0f32; rows * stride]).unwrap();
        let cols = HeadColumns {
            stride,
            offset: 0,
            n_heads: 1,
            head_dim: hd,
        };
        let err = ops::rotary(dev, &mut xd, &rope, &pos_d, 1, cols).unwrap_err();
        assert!(err.to_string().contains("table rotates 128"), "{err}");
    }
}

#[test]
fn silu_gating_matches_cpu() {
    for dev in devices() {
        let (rows, ff) = (4, 1536);
        let gu: Vec<f32> = signed_units(rows * 2 * ff, 8)
            .iter()
            .map(|v| v * 8.0)
            .collect();
        let mut out = dev.alloc::<f32>(rows * ff).unwrap();
        ops::silu_gate_up(dev, &dev.upload(&gu).unwrap(), &mut out, rows, ff).unwrap();
        let want = silu_gate_up(&gu, ff);
        for (i, (g, r)) in dev.download(&out).unwrap().iter().zip(&want).enumerate() {
            assert!(
                close(*g, *r as f64, 1e-5 * r.abs() as f64 + 1e-6),
                "{}: silu [{i}] {g} vs {r}",
                dev.name()
            );
        }
    }
}

/// Spans of `(start position, tokens)`, each sequence's blocks spread over the pool.
fn spans(block_size: usize, lens: &[(usize, usize)]) -> Vec<SeqSpan> {
    let mut next_block = 3u32;
    let mut offset = 0;
    lens.iter()
        .map(|&(start, len)| {
            let blocks = (start + len).div_ceil(block_size);
            let table: Vec<u32> = (0..blocks as u32).map(|b| next_block + 2 * b).collect();
            next_block += 2 * blocks as u32 + 1;
            let s = SeqSpan {
                offset,
                len,
                start_pos: start,
                block_table: table,
            };
            offset += len;
            s
        })
        .collect()
}

/// The default rule: scores scaled by 1/√head_dim, no cap, no window.
fn plain_rule(head_dim: usize) -> ScoreRule {
    ScoreRule::plain(1.0 / (head_dim as f32).sqrt())
}

/// Attention over `lens` by `rule` against the CPU, in one pass and split over the
/// context into each of `splits` slices (`None`: the wrapper's own choice).
fn check_attention(
    dev: &dyn Device,
    lens: &[(usize, usize)],
    (n_head, n_kv_head, head_dim): (usize, usize, usize),
    rule: ScoreRule,
    splits: &[Option<usize>],
) {
    let bs = 16;
    let spans = spans(bs, lens);
    let num_blocks = spans
        .iter()
        .flat_map(|s| s.block_table.iter())
        .max()
        .unwrap()
        + 1;
    let num_blocks = num_blocks as usize;
    let kvw = n_kv_head * head_dim;
    let qw = n_head * head_dim;
    let stride = qw + 2 * kvw;
    let shape = HeadShape {
        n_head,
        n_kv_head,
        head_dim,
    };
    let mut cpu = PagedKvCache::new(1, num_blocks, bs, n_kv_head, head_dim);
    let mut gpu = DevKvLayer::alloc(dev, num_blocks, bs, kvw).unwrap();
    let mut batch = AttnBatch::upload(dev, &spans, bs).unwrap();
    // Fill every position each sequence attends to (earlier context included).
    for (si, s) in spans.iter().enumerate() {
        let ctx = s.start_pos + s.len;
        let rows = signed_units(ctx * stride, 20 + si as u64);
        let slots: Vec<usize> = (0..ctx)
            .map(|p| s.block_table[p / bs] as usize * bs + p % bs)
            .collect();
        let part = |offset| Strided {
            data: &rows,
            stride,
            offset,
        };
        cpu.write_strided(0, &slots, part(qw), part(qw + kvw));
        let slot_idx: Vec<i32> = slots.iter().map(|&s| s as i32).collect();
        let cols = KvColumns {
            stride,
            k_off: qw,
            v_off: qw + kvw,
        };
        let rows_d = dev.upload(&rows).unwrap();
        let slots_d = dev.upload_index(&slot_idx).unwrap();
        ops::kv_write(dev, &rows_d, cols, &slots_d, &mut gpu, ctx).unwrap();
    }
    let n_rows = batch.rows();
    let q = signed_units(n_rows * stride, 99);
    let mut want = vec![0f32; n_rows * qw];
    let qs = Strided {
        data: &q,
        stride,
        offset: 0,
    };
    cpu.attend_rule(0, shape, rule, &spans, qs, &mut want);
    let qd = dev.upload(&q).unwrap();
    for &split in splits {
        let mut out = dev.upload(&vec![f32::NAN; n_rows * qw]).unwrap();
        match split {
            None => {
                ops::paged_attention(dev, &qd, stride, 0, &gpu, &mut batch, shape, rule, &mut out)
            }
            Some(n) => ops::paged_attention_split(
                dev, &qd, stride, 0, &gpu, &mut batch, shape, rule, &mut out, n,
            ),
        }
        .unwrap();
        for (i, (g, r)) in dev.download(&out).unwrap().iter().zip(&want).enumerate() {
            assert!(
                close(*g, *r as f64, 2e-4),
                "{}: attention {n_head}/{n_kv_head}x{head_dim} {rule:?} splits {split:?} [{i}] (row {}) {g} vs {r}",
                dev.name(),
                i / qw
            );
        }
    }
}

#[test]
fn paged_attention_matches_cpu_for_prefill_chunks_and_decodes() {
    // A fresh prompt, a prompt chunk with earlier context, and two decodes.
    let lens = [(0, 5), (10, 7), (40, 1), (70, 1)];
    for dev in devices() {
        for shape in [(9, 3, 64), (8, 2, 128), (4, 4, 32), (4, 2, 16), (2, 1, 80)] {
            // 3 and 7 slices: some slices empty for the short rows, ragged last slices.
            let rule = plain_rule(shape.2);
            check_attention(dev, &lens, shape, rule, &[None, Some(1), Some(3), Some(7)]);
        }
    }
}

#[test]
fn long_decodes_are_split_over_the_context_and_match_cpu() {
    // Two decodes at 1500 and 700 tokens of context: the wrapper splits them.
    let lens = [(1500, 1), (700, 1)];
    for dev in devices() {
        for shape in [(9, 3, 64), (8, 2, 128)] {
            check_attention(dev, &lens, shape, plain_rule(shape.2), &[None, Some(1)]);
        }
    }
}

#[test]
fn scaled_soft_capped_and_windowed_attention_matches_cpu() {
    // Prompts longer than the window, a chunk that starts inside it, decodes far past
    // it; a custom scale and a cap that bites (scores of a few units).
    let lens = [(0, 40), (20, 13), (100, 1), (700, 1)];
    for dev in devices() {
        for shape in [(4, 2, 64), (8, 2, 128)] {
            for rule in [
                ScoreRule {
                    scale: 0.3,
                    softcap: Some(1.5),
                    window: None,
                },
                ScoreRule {
                    scale: 0.2,
                    softcap: None,
                    window: Some(24),
                },
                ScoreRule {
                    scale: 0.25,
                    softcap: Some(2.0),
                    window: Some(17),
                },
                ScoreRule {
                    scale: 0.1,
                    softcap: None,
                    window: Some(400),
                },
            ] {
                check_attention(dev, &lens, shape, rule, &[None, Some(1), Some(3)]);
            }
        }
    }
}

#[test]
fn gelu_gating_bias_scale_and_softcap_match_cpu() {
    for dev in devices() {
        let (rows, ff) = (3, 700);
        let gu: Vec<f32> = signed_units(rows * 2 * ff, 9)
            .iter()
            .map(|v| v * 6.0)
            .collect();
        let mut out = dev.alloc::<f32>(rows * ff).unwrap();
        ops::gelu_gate_up(dev, &dev.upload(&gu).unwrap(), &mut out, rows, ff).unwrap();
        let want = gelu_gate_up(&gu, ff);
        for (i, (g, r)) in dev.download(&out).unwrap().iter().zip(&want).enumerate() {
            assert!(
                close(*g, *r as f64, 1e-5 * r.abs() as f64 + 1e-6),
                "{}: gelu [{i}] {g} vs {r}",
                dev.name()
            );
        }
        // A bias over columns 5..25 of rows 30 wide; the rest untouched.
        let (stride, off, width) = (30, 5, 20);
        let x = signed_units(rows * stride, 10);
        let bias = signed_units(width, 11);
        let mut xd = dev.upload(&x).unwrap();
        ops::add_bias(dev, &mut xd, &dev.upload(&bias).unwrap(), rows, stride, off).unwrap();
        let got = dev.download(&xd).unwrap();
        for (i, (&g, &v)) in got.iter().zip(&x).enumerate() {
            let c = i % stride;
            let want = if (off..off + width).contains(&c) {
                v + bias[c - off]
            } else {
                v
            };
            assert_eq!(g, want, "{}: bias [{i}]", dev.name());
        }
        let err =
            ops::add_bias(dev, &mut xd, &dev.upload(&bias).unwrap(), rows, stride, 11).unwrap_err();
        assert!(err.to_string().contains("does not fit rows of 30"), "{err}");
        // Scale and soft-cap, as the CPU decoder computes them.
        let v: Vec<f32> = signed_units(1000, 12).iter().map(|v| v * 90.0).collect();
        let mut vd = dev.upload(&v).unwrap();
        ops::scale_values(dev, &mut vd, 999, 1.7).unwrap();
        let scaled = dev.download(&vd).unwrap();
        assert!(scaled[..999].iter().zip(&v).all(|(g, x)| *g == x * 1.7));
        assert_eq!(scaled[999], v[999], "past n untouched");
        ops::softcap_values(dev, &mut vd, 1000, 30.0).unwrap();
        for (i, (g, x)) in dev.download(&vd).unwrap().iter().zip(&scaled).enumerate() {
            let want = 30.0 * (x * (1.0 / 30.0f32)).tanh();
            assert!(
                close(*g, want as f64, 1e-5 * want.abs() as f64 + 1e-6),
                "{}: softcap [{i}] {g} vs {want}",
                dev.name()
            );
            assert!(g.abs() <= 30.0);
        }
        assert!(ops::softcap_values(dev, &mut vd, 10, 0.0).is_err());
    }
}

#[test]
fn head_rms_norm_matches_cpu_at_strided_columns() {
    for dev in devices() {
        let (rows, hd, heads, off, stride) = (5, 48, 3, 96, 300);
        let x: Vec<f32> = signed_units(rows * stride, 13)
            .iter()
            .map(|v| v * 4.0)
            .collect();
        let w = signed_units(hd, 14);
        let mut xd = dev.upload(&x).unwrap();
        let cols = HeadColumns {
            stride,
            offset: off,
            n_heads: heads,
            head_dim: hd,
        };
        ops::rms_norm_heads(dev, &mut xd, &dev.upload(&w).unwrap(), rows, cols, 1e-6).unwrap();
        let got = dev.download(&xd).unwrap();
        for r in 0..rows {
            let row = &x[r * stride..][..stride];
            for h in 0..heads {
                let at = off + h * hd;
                let mut want = vec![0f32; hd];
                rowops::rms_norm_scalar(&row[at..at + hd], &w, 1e-6, &mut want);
                for (i, want) in want.iter().enumerate() {
                    let g = got[r * stride + at + i];
                    assert!(
                        close(g, *want as f64, 1e-5 * want.abs() as f64 + 1e-6),
                        "{}: head norm row {r} head {h} [{i}] {g} vs {want}",
                        dev.name()
                    );
                }
            }
            let outside = (0..stride).filter(|c| !(off..off + heads * hd).contains(c));
            for c in outside {
                assert_eq!(got[r * stride + c], row[c], "{}: column {c}", dev.name());
            }
        }
        let bad = HeadColumns { n_heads: 5, ..cols };
        let err = ops::rms_norm_heads(dev, &mut xd, &dev.upload(&w).unwrap(), rows, bad, 1e-6)
            .unwrap_err();
        assert!(err.to_string().contains("rows are 300 wide"), "{err}");
    }
}

#[test]
fn argmax_matches_cpu_with_ties_nan_and_empty_rows() {
    for dev in devices() {
        let width = 1000;
        let mut rows: Vec<Vec<f32>> = (0..4).map(|r| signed_units(width, 60 + r)).collect();
        rows[1][700] = 5.0;
        rows[1][300] = 5.0; // tie: the lower index wins
        rows[2][10] = f32::NAN;
        rows[2][999] = 9.0;
        rows[3] = vec![f32::NEG_INFINITY; width];
        let flat: Vec<f32> = rows.concat();
        let mut out = dev.alloc::<i32>(4).unwrap();
        ops::argmax_rows(dev, &dev.upload(&flat).unwrap(), 4, width, &mut out).unwrap();
        let got = dev.download(&out).unwrap();
        let want: Vec<i32> = rows
            .iter()
            .map(|r| rowops::argmax_scalar(r) as i32)
            .collect();
        assert_eq!(got, want, "{}", dev.name());
        assert_eq!(&got[1..], &[300, 999, 0]);
    }
}

#[test]
fn wrappers_refuse_bad_shapes_before_launching() {
    for dev in devices() {
        let (kind, raw, _) = weight(8, 64, GgmlDType::Q8_0, 1);
        // Wrong byte count for the shape.
        let err = QWeight::upload(dev, kind, 9, 64, &raw).unwrap_err();
        assert!(matches!(err, DeviceError::Shape { .. }), "{err}");
        assert!(
            err.to_string().contains("takes 612 bytes, got 544"),
            "{err}"
        );
        let w = QWeight::upload(dev, kind, 8, 64, &raw).unwrap();
        let x = dev.alloc::<f32>(64).unwrap();
        let mut y = dev.alloc::<f32>(16).unwrap();
        let err = ops::qmatmul(dev, &w, &x, 2, &mut y).unwrap_err();
        assert!(
            err.to_string()
                .contains("x needs 2 x 64 = 128 floats, has 64"),
            "{err}"
        );
        // Row ids past the matrix.
        let ids = dev.upload_index(&[0, 8]).unwrap();
        let mut out = dev.alloc::<f32>(128).unwrap();
        assert!(ops::dequant_rows(dev, &w, &ids, &mut out).is_err());
        // Slots past the cache.
        let mut cache = DevKvLayer::alloc(dev, 2, 16, 64).unwrap();
        let rows = dev.alloc::<f32>(3 * 64).unwrap();
        let slots = dev.upload_index(&[31, 32]).unwrap();
        let cols = KvColumns {
            stride: 192,
            k_off: 64,
            v_off: 128,
        };
        let err = ops::kv_write(dev, &rows, cols, &slots, &mut cache, 1).unwrap_err();
        assert!(err.to_string().contains("-1..32"), "{err}");
        // Block tables naming blocks the cache does not have.
        let spans = vec![SeqSpan {
            offset: 0,
            len: 1,
            start_pos: 0,
            block_table: vec![5],
        }];
        let mut batch = AttnBatch::upload(dev, &spans, 16).unwrap();
        let shape = HeadShape {
            n_head: 2,
            n_kv_head: 2,
            head_dim: 32,
        };
        let mut o = dev.alloc::<f32>(64).unwrap();
        let rule = plain_rule(32);
        let err = ops::paged_attention(dev, &rows, 192, 0, &cache, &mut batch, shape, rule, &mut o)
            .unwrap_err();
        assert!(
            err.to_string().contains("block ids must be in 0..2"),
            "{err}"
        );
        // A span whose table does not cover its positions.
        let short = vec![SeqSpan {
            offset: 0,
            len: 20,
            start_pos: 0,
            block_table: vec![0],
        }];
        assert!(AttnBatch::upload(dev, &short, 16).is_err());
    }
}

#[test]
fn projections_write_side_by_side_into_one_row() {
    for dev in devices() {
        let (n, k, ldy, col) = (13, 64, 40, 20);
        let (kind, raw, _) = weight(n, k, GgmlDType::Q8_0, 3);
        let w = QWeight::upload(dev, kind, n, k, &raw).unwrap();
        for m in [2, 11] {
            let x = dev.upload(&signed_units(m * k, 4)).unwrap();
            let mut alone = dev.alloc::<f32>(m * n).unwrap();
            ops::qmatmul(dev, &w, &x, m, &mut alone).unwrap();
            let mut wide = dev.upload(&vec![7.5f32; m * ldy]).unwrap();
            ops::qmatmul_into(dev, &w, &x, m, &mut wide, col, ldy).unwrap();
            let (a, b) = (dev.download(&alone).unwrap(), dev.download(&wide).unwrap());
            for r in 0..m {
                let row = &b[r * ldy..][..ldy];
                assert_eq!(&row[col..col + n], &a[r * n..][..n], "{} m={m}", dev.name());
                assert!(row[..col].iter().chain(&row[col + n..]).all(|&v| v == 7.5));
            }
            let err = ops::qmatmul_into(dev, &w, &x, m, &mut wide, 30, ldy).unwrap_err();
            assert!(err.to_string().contains("do not fit rows of 40"), "{err}");
        }
    }
}
