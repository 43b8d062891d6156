//! Bidirectional multi-head attention over a packed batch: each input attends to all
//! of its own tokens and to nothing else, so no padding or mask is needed.
//!
//! Invariant: the output row of token `t` depends only on the rows of the input that
//! holds `t` (batch composition never changes a result).

use rayon::prelude::*;

use super::ops::{View, gemm_into};
use crate::device::cpu::rowops::softmax_rows;

/// Attention for every input of a packed batch.
///
/// `qkv` is `[tokens, 3 * hidden]` row-major (queries, then keys, then values, each
/// split into `heads` heads of `head_dim`); `offsets`/`lens` locate each input's
/// rows. Returns `[tokens, hidden]`.
pub fn packed_attention(
    qkv: &[f32],
    offsets: &[usize],
    lens: &[usize],
    heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let hidden = heads * head_dim;
    let tokens: usize = lens.iter().sum();
    debug_assert_eq!(qkv.len(), tokens * 3 * hidden);
    let tasks: Vec<(usize, usize, usize)> = offsets
        .iter()
        .zip(lens)
        .flat_map(|(&o, &l)| (0..heads).map(move |h| (o, l, h)))
        .collect();
    let parts: Vec<Vec<f32>> = tasks
        .par_iter()
        .map(|&(offset, len, head)| one_head(qkv, offset, len, head, heads, head_dim))
        .collect();
    let mut out = vec![0.0f32; tokens * hidden];
    for (&(offset, len, head), part) in tasks.iter().zip(parts) {
        for r in 0..len {
            let dst = (offset + r) * hidden + head * head_dim;
            out[dst..dst + head_dim].copy_from_slice(&part[r * head_dim..(r + 1) * head_dim]);
        }
    }
    out
}

/// One head of one input: `[len, head_dim]`. Scores and the weighted sum of values
/// are two small matrix products read straight out of `qkv` through strides.
fn one_head(
    qkv: &[f32],
    offset: usize,
    len: usize,
    head: usize,
    heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let hidden = heads * head_dim;
    let stride = 3 * hidden;
    let at = |part: usize| offset * stride + part * hidden + head * head_dim;
    let scale = 1.0 / (head_dim as f32).sqrt();
    // scores[i, j] = scale * q_i . k_j: keys read as a [head_dim, len] matrix.
    let mut scores = vec![0.0f32; len * len];
    let q = View {
        data: &qkv[at(0)..],
        stride,
    };
    gemm_into(
        &mut scores,
        q,
        len,
        head_dim,
        &qkv[at(1)..],
        1,
        stride,
        len,
        scale,
        1,
    );
    softmax_rows(&mut scores, len);
    // out = probabilities [len, len] @ values [len, head_dim].
    let mut out = vec![0.0f32; len * head_dim];
    let p = View {
        data: &scores,
        stride: len,
    };
    gemm_into(
        &mut out,
        p,
        len,
        len,
        &qkv[at(2)..],
        stride,
        1,
        head_dim,
        1.0,
        1,
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain per-input attention, one input at a time.
    fn reference(qkv: &[f32], len: usize, heads: usize, hd: usize) -> Vec<f32> {
        let hidden = heads * hd;
        let mut out = vec![0.0; len * hidden];
        for h in 0..heads {
            for i in 0..len {
                let q = &qkv[i * 3 * hidden + h * hd..][..hd];
                let s: Vec<f64> = (0..len)
                    .map(|j| {
                        let k = &qkv[j * 3 * hidden + hidden + h * hd..][..hd];
                        q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum::<f64>()
                            / (hd as f64).sqrt()
                    })
                    .collect();
                let m = s.iter().cloned().fold(f64::MIN, f64::max);
                let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                for d in 0..hd {
                    out[i * hidden + h * hd + d] = (0..len)
                        .map(|j| {
                            (s[j] - m).exp() / z
                                * qkv[j * 3 * hidden + 2 * hidden + h * hd + d] as f64
                        })
                        .sum::<f64>() as f32;
                }
            }
        }
        out
    }

    #[test]
    fn packed_inputs_match_each_input_alone() {
        let (heads, hd) = (3, 8);
        let lens = [5usize, 1, 12];
        let hidden = heads * hd;
        let total: usize = lens.iter().sum();
        let qkv: Vec<f32> = (0..total * 3 * hidden)
            .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
            .collect();
        let offsets = [0, 5, 6];
        let out = packed_attention(&qkv, &offsets, &lens, heads, hd);
        for (&o, &l) in offsets.iter().zip(&lens) {
            let alone = reference(&qkv[o * 3 * hidden..(o + l) * 3 * hidden], l, heads, hd);
            for (a, b) in out[o * hidden..(o + l) * hidden].iter().zip(&alone) {
                assert!((a - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
    }
}
