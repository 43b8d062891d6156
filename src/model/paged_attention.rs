//! The paged KV cache storage and CPU attention over it.
//!
//! Layout of each layer's K and V: `[slot][kv_head][head_dim]` in f16 (half the memory
//! of f32, and the cache type llama.cpp uses by default), where
//! `slot = block * block_size + offset`. Writes go through a slot mapping, reads through
//! block tables. Each query token attends to positions `0..=pos` of its own sequence,
//! whatever else is in the batch and however its prompt was chunked, so results are
//! batch-invariant.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::device::cpu::attention::{self, AttnScratch, KvHead, ScoreRule};

/// K/V storage for every layer.
pub struct PagedKvCache {
    block_size: usize,
    num_blocks: usize,
    n_kv_head: usize,
    head_dim: usize,
    k: Vec<Vec<f16>>,
    v: Vec<Vec<f16>>,
}

/// One sequence's part of a flat batch, as attention needs it.
#[derive(Debug, Clone)]
pub struct SeqSpan {
    /// Row of the sequence's first token in the flat batch.
    pub offset: usize,
    /// Tokens of this sequence in the batch.
    pub len: usize,
    /// Position of the first of those tokens.
    pub start_pos: usize,
    /// The sequence's block table.
    pub block_table: Vec<u32>,
}

/// Rows of `width` values that are one part of a wider matrix: row `i` is
/// `data[i * stride + offset..][..width]` (e.g. K inside a fused Q|K|V projection).
#[derive(Debug, Clone, Copy)]
pub struct Strided<'a> {
    /// The whole matrix, row-major.
    pub data: &'a [f32],
    /// Values per row of `data`.
    pub stride: usize,
    /// First column of the part.
    pub offset: usize,
}

impl<'a> Strided<'a> {
    /// Rows of `width` values with nothing between them.
    pub fn dense(data: &'a [f32], width: usize) -> Self {
        Self {
            data,
            stride: width,
            offset: 0,
        }
    }

    /// Row `i`, `width` values.
    pub fn row(&self, i: usize, width: usize) -> &'a [f32] {
        &self.data[i * self.stride + self.offset..][..width]
    }
}

/// Shape of the attention heads.
#[derive(Debug, Clone, Copy)]
pub struct HeadShape {
    /// Query heads.
    pub n_head: usize,
    /// K/V heads (grouped-query attention when fewer than `n_head`).
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl PagedKvCache {
    /// Bytes one token takes across all layers (K and V).
    pub fn bytes_per_token(n_layer: usize, n_kv_head: usize, head_dim: usize) -> usize {
        2 * n_layer * n_kv_head * head_dim * std::mem::size_of::<f16>()
    }

    /// Zeroed storage for `num_blocks` blocks in each of `n_layer` layers.
    pub fn new(
        n_layer: usize,
        num_blocks: usize,
        block_size: usize,
        n_kv_head: usize,
        head_dim: usize,
    ) -> Self {
        let len = num_blocks * block_size * n_kv_head * head_dim;
        Self {
            block_size,
            num_blocks,
            n_kv_head,
            head_dim,
            k: (0..n_layer).map(|_| vec![f16::ZERO; len]).collect(),
            v: (0..n_layer).map(|_| vec![f16::ZERO; len]).collect(),
        }
    }

    /// Blocks per layer.
    pub fn num_blocks(&self) -> usize {
        self.num_blocks
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Writes rows of `k` and `v` (`[tokens, n_kv_head * head_dim]`) at `slots`.
    pub fn write(&mut self, layer: usize, slots: &[usize], k: &[f32], v: &[f32]) {
        let w = self.n_kv_head * self.head_dim;
        self.write_strided(layer, slots, Strided::dense(k, w), Strided::dense(v, w));
    }

    /// [`Self::write`] with K and V read as parts of wider rows.
    pub fn write_strided(&mut self, layer: usize, slots: &[usize], k: Strided, v: Strided) {
        let w = self.n_kv_head * self.head_dim;
        for (row, &slot) in slots.iter().enumerate() {
            let dst = slot * w..(slot + 1) * w;
            self.k[layer][dst.clone()].convert_from_f32_slice(k.row(row, w));
            self.v[layer][dst].convert_from_f32_slice(v.row(row, w));
        }
    }

    /// Causal attention of `q` (`[tokens, n_head * head_dim]`) over the cache, written
    /// to `out` (same shape). The batch's K/V must already be in the cache.
    ///
    /// Work is split over (token, K/V head) pairs for single-token sequences (decode)
    /// and over blocks of consecutive prompt tokens for longer ones (prefill): each
    /// piece computes the query heads that share one K/V head, for all of its tokens,
    /// reading every key once for all of them (SIMD kernel in
    /// `device::cpu::attention`; results do not depend on the split).
    pub fn attend(
        &self,
        layer: usize,
        shape: HeadShape,
        spans: &[SeqSpan],
        q: &[f32],
        out: &mut [f32],
    ) {
        let qw = shape.n_head * shape.head_dim;
        self.attend_strided(layer, shape, spans, Strided::dense(q, qw), out);
    }

    /// [`Self::attend`] with the queries read as parts of wider rows.
    pub fn attend_strided(
        &self,
        layer: usize,
        shape: HeadShape,
        spans: &[SeqSpan],
        q: Strided,
        out: &mut [f32],
    ) {
        let rule = ScoreRule::plain(1.0 / (shape.head_dim as f32).sqrt());
        self.attend_rule(layer, shape, rule, spans, q, out);
    }

    /// [`Self::attend_strided`] with scores made by `rule` (scale, soft-cap, sliding
    /// window).
    pub fn attend_rule(
        &self,
        layer: usize,
        shape: HeadShape,
        rule: ScoreRule,
        spans: &[SeqSpan],
        q: Strided,
        out: &mut [f32],
    ) {
        let hd = shape.head_dim;
        let qw = shape.n_head * hd;
        let group = shape.n_head / shape.n_kv_head;
        let (k, v) = (&self.k[layer], &self.v[layer]);
        let n_rows: usize = spans.iter().map(|s| s.len).sum();
        assert_eq!(out.len(), n_rows * qw, "attention output shape");
        assert!(
            q.offset + qw <= q.stride && q.data.len() >= n_rows * q.stride,
            "attention query shape"
        );
        let w = group * hd;
        let tasks = attention_tasks(spans, out, qw, w, attention::rows_per_pass(group));
        tasks.into_par_iter().for_each_init(
            || (AttnScratch::new(group), Vec::new(), Vec::new()),
            |(scratch, qbuf, obuf), t| {
                let kv = KvHead {
                    k,
                    v,
                    block_table: &t.span.block_table,
                    block_size: self.block_size,
                    slot_stride: self.n_kv_head * hd,
                    head_offset: t.kv_head * hd,
                };
                let row = t.span.offset + t.i0;
                let ctx0 = t.span.start_pos + t.i0 + 1;
                let qh = |r: usize| &q.row(row + r, qw)[t.kv_head * w..][..w];
                match t.out {
                    TaskOut::Row(o) => attention::attend(qh(0), ctx0, &kv, hd, rule, o, scratch),
                    TaskOut::Rows(outs) => {
                        // The rows' query heads side by side, and their outputs back.
                        let rows = outs.len();
                        qbuf.resize(rows * w, 0.0);
                        obuf.resize(rows * w, 0.0);
                        for (r, qr) in qbuf.chunks_exact_mut(w).enumerate() {
                            qr.copy_from_slice(qh(r));
                        }
                        attention::attend_rows(qbuf, ctx0, rows, &kv, hd, rule, obuf, scratch);
                        for (o, or) in outs.into_iter().zip(obuf.chunks_exact(w)) {
                            o.copy_from_slice(or);
                        }
                    }
                }
            },
        );
    }
}

/// One piece of [`PagedKvCache::attend_rule`]'s parallel work: the query heads of
/// K/V head `kv_head` for rows `i0..` of `span` (one row, or a block of a prompt's).
struct AttnTask<'a> {
    span: &'a SeqSpan,
    i0: usize,
    kv_head: usize,
    out: TaskOut<'a>,
}

/// Where a task writes: the `group * hd` outputs of its one row, or of each row of
/// its block.
enum TaskOut<'a> {
    Row(&'a mut [f32]),
    Rows(Vec<&'a mut [f32]>),
}

/// Splits the batch's attention into tasks over disjoint parts of `out` (`[rows,
/// qw]`, `w` outputs per K/V head and row): per K/V head, a decode row or a block of
/// up to `per_pass` prompt rows (whose keys are read once for all of them), so a few
/// sequences still spread over every core.
fn attention_tasks<'a>(
    spans: &'a [SeqSpan],
    out: &'a mut [f32],
    qw: usize,
    w: usize,
    per_pass: usize,
) -> Vec<AttnTask<'a>> {
    let n_kv = qw / w;
    let mut tasks = Vec::new();
    let mut rest = out;
    for span in spans {
        let mut i0 = 0;
        while i0 < span.len {
            let rows = per_pass.min(span.len - i0);
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(rows * qw);
            rest = tail;
            if rows == 1 {
                tasks.extend(
                    mine.chunks_exact_mut(w)
                        .enumerate()
                        .map(|(kv_head, o)| AttnTask {
                            span,
                            i0,
                            kv_head,
                            out: TaskOut::Row(o),
                        }),
                );
            } else {
                let mut per_head: Vec<Vec<&mut [f32]>> =
                    (0..n_kv).map(|_| Vec::with_capacity(rows)).collect();
                for row in mine.chunks_exact_mut(qw) {
                    for (outs, o) in per_head.iter_mut().zip(row.chunks_exact_mut(w)) {
                        outs.push(o);
                    }
                }
                tasks.extend(
                    per_head
                        .into_iter()
                        .enumerate()
                        .map(|(kv_head, outs)| AttnTask {
                            span,
                            i0,
                            kv_head,
                            out: TaskOut::Rows(outs),
                        }),
                );
            }
            i0 += rows;
        }
    }
    tasks
}

/// Numerically stable softmax.
pub fn softmax_in_place(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv = 1.0 / sum;
    for v in x.iter_mut() {
        *v *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Attention computed naively over contiguous per-sequence K/V.
    fn reference(q: &[f32], k: &[f32], v: &[f32], ctx: usize, shape: HeadShape) -> Vec<f32> {
        let d = shape.head_dim;
        let group = shape.n_head / shape.n_kv_head;
        let mut out = vec![0.0; shape.n_head * d];
        for h in 0..shape.n_head {
            let kvh = h / group;
            let mut s: Vec<f32> = (0..ctx)
                .map(|j| {
                    let kj = &k[(j * shape.n_kv_head + kvh) * d..][..d];
                    q[h * d..][..d]
                        .iter()
                        .zip(kj)
                        .map(|(a, b)| a * b)
                        .sum::<f32>()
                        / (d as f32).sqrt()
                })
                .collect();
            softmax_in_place(&mut s);
            for j in 0..ctx {
                for x in 0..d {
                    out[h * d + x] += s[j] * v[(j * shape.n_kv_head + kvh) * d + x];
                }
            }
        }
        out
    }

    #[test]
    fn paged_attention_matches_contiguous_reference_with_gqa_and_scattered_blocks() {
        let shape = HeadShape {
            n_head: 4,
            n_kv_head: 2,
            head_dim: 8,
        };
        let w = shape.n_kv_head * shape.head_dim;
        let mut cache = PagedKvCache::new(1, 8, 4, 2, 8);
        let ctx = 11;
        let table = vec![5u32, 1, 6];
        let val = |i: usize| ((i * 7919) % 97) as f32 / 97.0 - 0.5;
        let k: Vec<f32> = (0..ctx * w).map(val).collect();
        let v: Vec<f32> = (0..ctx * w).map(|i| val(i + 13)).collect();
        let slots: Vec<usize> = (0..ctx)
            .map(|p| table[p / 4] as usize * 4 + p % 4)
            .collect();
        cache.write(0, &slots, &k, &v);
        // The cache stores f16: compare against the reference on the rounded values.
        let round =
            |x: &[f32]| -> Vec<f32> { x.iter().map(|&a| f16::from_f32(a).to_f32()).collect() };
        let (k, v) = (round(&k), round(&v));
        // Query the last 3 positions as one chunk.
        let qn = shape.n_head * shape.head_dim;
        let q: Vec<f32> = (0..3 * qn).map(|i| val(i + 3)).collect();
        let span = SeqSpan {
            offset: 0,
            len: 3,
            start_pos: ctx - 3,
            block_table: table,
        };
        let mut out = vec![0.0; 3 * qn];
        cache.attend(0, shape, &[span], &q, &mut out);
        for i in 0..3 {
            let want = reference(&q[i * qn..][..qn], &k, &v, ctx - 2 + i, shape);
            for (a, b) in out[i * qn..][..qn].iter().zip(&want) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
