//! CPU compute kernels of our own, for the work candle's CPU backend does poorly.
//!
//! [`CpuQMatrix`] multiplies a batch of f32 activation rows by a GGML-quantized weight
//! matrix (Q4_1 or Q8_0), reading each weight block once per tile of activation rows so
//! the per-row cost falls as the batch grows. Results are batch-invariant: each output
//! element's arithmetic is the same whatever the batch size or the row's position in it.

mod acts;
mod qmatmul;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

#[cfg(test)]
mod tests;

pub use qmatmul::{CpuQMatrix, QKind};
