//! Weight matmuls of the decoder: our batched CPU kernels for the formats they cover
//! (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, F16, BF16; rows a whole
//! number of the format's blocks), candle's `QMatMul` for the rest (F32, ...).
//!
//! Projections that read the same input (Q, K and V; FFN gate and up) are fused into
//! one matrix when they share a format, so a step quantizes the input once and runs
//! one parallel region instead of three; the result is split back into the parts.
//! Each output element is computed exactly as it would be unfused.

use std::sync::Arc;

use anyhow::{Result, bail};
use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};

use crate::device::cpu::{CpuQMatrix, QKind};
use crate::model::weights::RawTensor;

/// One weight matmul.
pub(super) enum Linear {
    Ours(CpuQMatrix),
    Candle(QMatMul),
}

impl Linear {
    pub(super) fn from_arc(t: Arc<QTensor>) -> Result<Self> {
        if ours(&t).is_some() {
            Ok(Linear::Ours(CpuQMatrix::from_qtensor(&t)?))
        } else {
            Ok(Linear::Candle(QMatMul::from_arc(t)?))
        }
    }

    /// Output features.
    pub(super) fn n(&self) -> usize {
        match self {
            Linear::Ours(w) => w.n(),
            Linear::Candle(w) => match w {
                QMatMul::QTensor(t) => t.shape().dims()[0],
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.dims()[0],
            },
        }
    }

    /// `x · Wᵀ` for `m` rows of `x`, as `[m, n]`.
    pub(super) fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Linear::Ours(w) => Ok(w.matmul(x, m)),
            Linear::Candle(w) => {
                let x = Tensor::from_slice(x, (m, x.len() / m.max(1)), &Device::Cpu)?;
                Ok(w.forward(&x)?.flatten_all()?.to_vec1::<f32>()?)
            }
        }
    }
}

/// The kernel format for `t` if our kernels take it: a 2-D tensor in a covered format
/// whose rows are whole blocks.
fn ours(t: &QTensor) -> Option<QKind> {
    let (_, k) = t.shape().dims2().ok()?;
    QKind::from_ggml(t.dtype()).filter(|kind| kind.fits(k))
}

/// Several projections of the same input: one fused matrix, or separate ones.
pub(super) enum Projections {
    /// One matrix whose output columns are the parts' side by side.
    Fused(Box<Linear>),
    /// Formats differ (or the kernels do not cover them): one matmul each.
    Split(Vec<Linear>),
}

impl Projections {
    /// Fuses `(n, k)` weights `ts` when they share a format our kernels cover.
    pub(super) fn new(ts: Vec<QTensor>) -> Result<Self> {
        let Some(first) = ts.first() else {
            bail!("no projections to fuse");
        };
        let kind = ours(first);
        let k = first.shape().dims2()?.1;
        let same = ts
            .iter()
            .all(|t| t.dtype() == first.dtype() && t.shape().dims2().is_ok_and(|(_, tk)| tk == k));
        match kind {
            Some(kind) if same && ts.len() > 1 => {
                let mut widths = Vec::with_capacity(ts.len());
                let mut raw = Vec::new();
                for t in &ts {
                    widths.push(t.shape().dims2()?.0);
                    raw.extend_from_slice(&t.data()?);
                }
                let n = widths.iter().sum();
                let w = CpuQMatrix::from_raw(kind, n, k, &raw)?;
                Ok(Projections::Fused(Box::new(Linear::Ours(w))))
            }
            _ => Ok(Projections::Split(
                ts.into_iter()
                    .map(|t| Linear::from_arc(Arc::new(t)))
                    .collect::<Result<_>>()?,
            )),
        }
    }

    /// [`Self::new`] from the bytes in the file: repacked straight from them (fused when
    /// they share a format our kernels cover), else copied into candle tensors.
    pub(super) fn from_raw(parts: &[RawTensor<'_>]) -> Result<Self> {
        let Some(first) = parts.first() else {
            bail!("no projections to fuse");
        };
        let k = first.dims2()?.1;
        let kind = QKind::from_ggml(first.dtype).filter(|kind| kind.fits(k));
        let same = parts
            .iter()
            .all(|p| p.dtype == first.dtype && p.dims2().is_ok_and(|(_, pk)| pk == k));
        match kind {
            Some(kind) if same => {
                let data: Vec<&[u8]> = parts.iter().map(|p| p.data).collect();
                let w = Linear::Ours(CpuQMatrix::from_parts(kind, k, &data)?);
                Ok(if parts.len() > 1 {
                    Projections::Fused(Box::new(w))
                } else {
                    Projections::Split(vec![w])
                })
            }
            _ => Self::new(
                parts
                    .iter()
                    .map(RawTensor::to_qtensor)
                    .collect::<Result<_>>()?,
            ),
        }
    }

    /// All projections of the `m` rows of `x`, side by side: `[m, sum of widths]`
    /// (part `i` of row `r` at columns `widths[..i].sum()..`).
    pub(super) fn forward(&self, x: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Projections::Fused(l) => l.forward(x, m),
            Projections::Split(ls) => {
                let parts = ls
                    .iter()
                    .map(|l| l.forward(x, m))
                    .collect::<Result<Vec<_>>>()?;
                let total: usize = ls.iter().map(Linear::n).sum();
                let mut all = Vec::with_capacity(m * total);
                for r in 0..m {
                    for (part, l) in parts.iter().zip(ls) {
                        all.extend_from_slice(&part[r * l.n()..(r + 1) * l.n()]);
                    }
                }
                Ok(all)
            }
        }
    }
}
