//! The KV cache write and paged attention against the CPU's paged cache: a fresh
//! prompt, a prompt chunk over earlier context and decodes in one flat batch, over head
//! shapes with and without GQA (head widths 16 to 128), each in one pass and split over
//! the context into slices (some empty, ragged last ones), and long decodes that the
//! wrapper splits by itself.
//!
//! Bounds: attention outputs 2e-4 absolute (same f16 cache values, another summation
//! order, `expf`; outputs are of size ~1); cache writes within one f16 rounding of the
//! value, skipped slots (-1) and untouched slots exact.

use crate::device::cpu::attention::ScoreRule;
use half::f16;

use super::measure::Worst;
use super::{Ctx, Rows};
use crate::device::kernels::DeviceExt;
use crate::device::kernels::ops::{self, AttnBatch, DevKvLayer, KvColumns};
use crate::model::gguf_writer::signed_units;
use crate::model::paged_attention::{HeadShape, PagedKvCache, SeqSpan, Strided};

fn s(e: impl std::fmt::Display) -> String {
    e.to_string()
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

/// Attention over `lens` against the CPU, once per entry of `splits` (`None`: the
/// wrapper's own choice).
fn attention(
    ctx: &Ctx,
    lens: &[(usize, usize)],
    (n_head, n_kv_head, head_dim): (usize, usize, usize),
    splits: &[Option<usize>],
    rule: Option<ScoreRule>,
    acc: &mut Worst,
) -> Result<(), String> {
    let rule = rule.unwrap_or(ScoreRule::plain(1.0 / (head_dim as f32).sqrt()));
    let dev = ctx.dev;
    let bs = 16;
    let spans = spans(bs, lens);
    let max_block = spans.iter().flat_map(|s| s.block_table.iter()).max();
    let num_blocks = max_block.map_or(1, |&b| b as usize + 1);
    let (kvw, qw) = (n_kv_head * head_dim, n_head * head_dim);
    let stride = qw + 2 * kvw;
    let shape = HeadShape {
        n_head,
        n_kv_head,
        head_dim,
    };
    let mut cpu = PagedKvCache::new(1, num_blocks, bs, n_kv_head, head_dim);
    let mut gpu = DevKvLayer::alloc(dev, num_blocks, bs, kvw).map_err(s)?;
    let mut batch = AttnBatch::upload(dev, &spans, bs).map_err(s)?;
    for (si, sp) in spans.iter().enumerate() {
        let context = sp.start_pos + sp.len;
        let rows = signed_units(context * stride, ctx.seed(20 + si as u64));
        let slots: Vec<usize> = (0..context)
            .map(|p| sp.block_table[p / bs] as usize * bs + p % bs)
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
        let rows_d = dev.upload(&rows).map_err(s)?;
        let slots_d = dev.upload_index(&slot_idx).map_err(s)?;
        ops::kv_write(dev, &rows_d, cols, &slots_d, &mut gpu, context).map_err(s)?;
    }
    let n_rows = batch.rows();
    let q = signed_units(n_rows * stride, ctx.seed(99));
    let mut want = vec![0f32; n_rows * qw];
    let qs = Strided {
        data: &q,
        stride,
        offset: 0,
    };
    cpu.attend_rule(0, shape, rule, &spans, qs, &mut want);
    let qd = dev.upload(&q).map_err(s)?;
    for &split in splits {
        let mut out = dev.upload(&vec![f32::NAN; n_rows * qw]).map_err(s)?;
        match split {
            None => {
                ops::paged_attention(dev, &qd, stride, 0, &gpu, &mut batch, shape, rule, &mut out)
            }
            Some(n) => ops::paged_attention_split(
                dev, &qd, stride, 0, &gpu, &mut batch, shape, rule, &mut out, n,
            ),
        }
        .map_err(s)?;
        for (i, (g, r)) in dev.download(&out).map_err(s)?.iter().zip(&want).enumerate() {
            acc.add(*g as f64, *r as f64, 2e-4, || {
                format!(
                    "{n_head}/{n_kv_head}x{head_dim} splits {split:?} row {}",
                    i / qw
                )
            });
        }
    }
    Ok(())
}

fn mixed(ctx: &Ctx) -> Result<Worst, String> {
    let mut acc = Worst::default();
    let lens = [(0, 5), (10, 7), (40, 1), (70, 1)];
    for shape in [(9, 3, 64), (8, 2, 128), (4, 4, 32), (4, 2, 16), (2, 1, 80)] {
        attention(ctx, &lens, shape, &[None, Some(1)], None, &mut acc)?;
    }
    // Gemma-style rule: custom scale, soft-capped scores, a sliding window.
    let gemma = ScoreRule {
        scale: 0.2,
        softcap: Some(20.0),
        window: Some(9),
    };
    attention(
        ctx,
        &lens,
        (4, 2, 32),
        &[None, Some(1)],
        Some(gemma),
        &mut acc,
    )?;
    Ok(acc)
}

fn split(ctx: &Ctx) -> Result<Worst, String> {
    let mut acc = Worst::default();
    let lens = [(0, 5), (10, 7), (40, 1), (70, 1)];
    for shape in [(9, 3, 64), (8, 2, 128), (4, 2, 16)] {
        attention(ctx, &lens, shape, &[Some(3), Some(7)], None, &mut acc)?;
    }
    // Long decodes the wrapper splits by itself, and a single forced pass over them.
    let long = [(1500, 1), (700, 1)];
    for shape in [(9, 3, 64), (8, 2, 128)] {
        attention(ctx, &long, shape, &[None, Some(1)], None, &mut acc)?;
    }
    Ok(acc)
}

fn kv_write(ctx: &Ctx) -> Result<Worst, String> {
    let dev = ctx.dev;
    let (num_blocks, bs, kvw) = (4, 16, 3 * 64 + 8);
    let stride = 64 + 2 * kvw + 5;
    let (k_off, v_off) = (64, 64 + kvw + 5);
    let slots: Vec<i32> = vec![0, 17, -1, 63, 5, -1, 40];
    let rows = slots.len();
    let data = signed_units(rows * stride, ctx.seed(30));
    let mut cache = DevKvLayer::alloc(dev, num_blocks, bs, kvw).map_err(s)?;
    let poison = vec![0x7E00u16; num_blocks * bs * kvw];
    dev.write(&mut cache.k, &poison).map_err(s)?;
    dev.write(&mut cache.v, &poison).map_err(s)?;
    let rows_d = dev.upload(&data).map_err(s)?;
    let slots_d = dev.upload_index(&slots).map_err(s)?;
    let cols = KvColumns {
        stride,
        k_off,
        v_off,
    };
    ops::kv_write(dev, &rows_d, cols, &slots_d, &mut cache, rows).map_err(s)?;
    let (k, v) = (
        dev.download(&cache.k).map_err(s)?,
        dev.download(&cache.v).map_err(s)?,
    );
    let mut acc = Worst::default();
    let mut written = vec![None; num_blocks * bs];
    for (r, &slot) in slots.iter().enumerate() {
        if slot >= 0 {
            written[slot as usize] = Some(r);
        }
    }
    for (slot, row) in written.iter().enumerate() {
        for c in 0..kvw {
            let at = slot * kvw + c;
            for (cache, off, name) in [(&k, k_off, "K"), (&v, v_off, "V")] {
                let got = f16::from_bits(cache[at]).to_f64();
                match row {
                    Some(r) => {
                        let want = data[r * stride + off + c] as f64;
                        let bound = want.abs() * f64::powi(2.0, -10) + f64::powi(2.0, -24);
                        acc.add(got, want, bound, || format!("{name} slot {slot} col {c}"));
                    }
                    None => acc.exact(cache[at] as f64, 0x7E00 as f64, || {
                        format!("{name} slot {slot} (not written) col {c}")
                    }),
                }
            }
        }
    }
    Ok(acc)
}

/// Every row of this module's checks.
pub fn run(ctx: &Ctx, out: &mut Rows) {
    type Check = fn(&Ctx) -> Result<Worst, String>;
    let checks: [(&str, &str, Check); 3] = [
        (
            "kv_write",
            "7 rows (2 skipped) into 4x16 slots of 200, K/V at odd offsets",
            kv_write,
        ),
        (
            "paged_attention",
            "prefill 5, chunk 7 at 10, decodes at 40/70; heads 9/3x64 8/2x128 4/4x32 4/2x16 2/1x80",
            mixed,
        ),
        (
            "paged_attention split-K",
            "3 and 7 slices; decodes at 1500/700 (auto split); heads 9/3x64 8/2x128 4/2x16",
            split,
        ),
    ];
    for (name, shapes, f) in checks {
        out.record(name, shapes, || f(ctx));
    }
}
