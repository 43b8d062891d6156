//! Reading the decoder's weights from GGUF straight onto a device, blocks as stored.
//! Projections of one input (Q, K, V; gate, up) become one fused matrix when they share
//! a format, else separate matrices that write side by side into one output row.

use anyhow::{Context, Result, bail};
use candle_core::quantized::QTensor;

use crate::device::cpu::QKind;
use crate::device::kernels::ops::{self, QWeight};
use crate::device::kernels::{DevBuf, Device, DeviceExt};

/// A 2-D quantized matrix on the device, in one of the formats the kernels read.
pub(super) fn matrix(dev: &dyn Device, name: &str, t: &QTensor) -> Result<QWeight> {
    let Some(kind) = QKind::from_ggml(t.dtype()) else {
        bail!(
            "{name} is {:?}; the GPU path reads Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, \
             Q4_K, Q5_K, Q6_K, F16 and BF16 weights",
            t.dtype()
        );
    };
    let (n, k) = t
        .shape()
        .dims2()
        .with_context(|| format!("{name} is not 2-D"))?;
    Ok(QWeight::upload(dev, kind, n, k, &t.data()?)?)
}

/// Projections of one input, written side by side: `[m, sum of widths]`.
pub(super) struct DevProjections {
    parts: Vec<QWeight>,
    widths: Vec<usize>,
}

impl DevProjections {
    /// Fuses `(name, tensor)` pairs into one matrix when they share format and `k`.
    pub(super) fn new(dev: &dyn Device, ts: &[(String, QTensor)]) -> Result<Self> {
        let widths = ts
            .iter()
            .map(|(n, t)| {
                Ok(t.shape()
                    .dims2()
                    .with_context(|| format!("{n} is not 2-D"))?
                    .0)
            })
            .collect::<Result<Vec<_>>>()?;
        let first = &ts.first().context("no projections")?.1;
        let k = first.shape().dims2()?.1;
        let same = ts
            .iter()
            .all(|(_, t)| t.dtype() == first.dtype() && t.shape().dims2().is_ok_and(|d| d.1 == k));
        let parts = if let Some(kind) = QKind::from_ggml(first.dtype()).filter(|_| same) {
            let mut raw = Vec::new();
            for (_, t) in ts {
                raw.extend_from_slice(&t.data()?);
            }
            vec![QWeight::upload(dev, kind, widths.iter().sum(), k, &raw)?]
        } else {
            ts.iter()
                .map(|(n, t)| matrix(dev, n, t))
                .collect::<Result<_>>()?
        };
        Ok(Self { parts, widths })
    }

    /// Bytes of the matrices.
    pub(super) fn bytes(&self) -> usize {
        self.parts.iter().map(QWeight::bytes).sum()
    }

    /// All parts of `m` rows of `x` into `y`, rows `sum(widths)` wide.
    pub(super) fn forward(
        &self,
        dev: &dyn Device,
        x: &DevBuf<f32>,
        m: usize,
        y: &mut DevBuf<f32>,
    ) -> Result<()> {
        let ldy: usize = self.widths.iter().sum();
        let mut col = 0;
        for w in &self.parts {
            ops::qmatmul_into(dev, w, x, m, y, col, ldy)?;
            col += w.n();
        }
        Ok(())
    }
}

/// Builds device weights for `model::weights::load_weights`: projections as stored
/// (fused where formats match), vectors as f32, the embedding table as a matrix.
pub(super) struct DevSink<'a>(pub &'a dyn Device);

impl crate::model::weights::WeightSink for DevSink<'_> {
    type Matrix = DevProjections;
    type Vector = DevBuf<f32>;
    type Embedding = QWeight;

    fn matrix(&self, parts: Vec<(String, QTensor)>) -> Result<DevProjections> {
        DevProjections::new(self.0, &parts)
    }

    fn vector(&self, _: &str, values: Vec<f32>) -> Result<DevBuf<f32>> {
        Ok(self.0.upload(&values)?)
    }

    fn embedding(&self, table: QTensor) -> Result<QWeight> {
        matrix(self.0, "token_embd.weight", &table)
    }
}
