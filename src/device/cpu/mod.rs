//! CPU compute kernels of our own, for the work candle's CPU backend does poorly. Every
//! kernel picks AVX2 + FMA + F16C at run time where the CPU has them (no `target-cpu`
//! needed), the quantized matmul's integer dot products AMX-INT8 tile products, AVX-512
//! VNNI or AVX-VNNI `vpdpbusd` where present ([`MatmulPath`]), and each has a portable scalar twin that
//! gives bit-identical results (the reference the tests hold the SIMD code to).
//!
//! - [`CpuQMatrix`]: a batch of f32 activation rows times a GGML weight (Q4_0, Q4_1,
//!   Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, F16, BF16), repacked at load into
//!   panels of 8 weight rows so each f32 lane is one output and each weight block is
//!   read once per tile of 4 (AVX-512: 8, AMX: 16) activation rows: the per-row cost
//!   falls as the batch grows.
//! - [`attention`]: causal attention over the paged f16 KV cache with an online softmax,
//!   every K/V row read once for all query heads that share it.
//! - [`rowops`]: RMSNorm and SiLU gating.
//! - [`hot_workers`]: the rayon workers kept polling for the length of a model step.
//!
//! Results are batch-invariant: each output element's arithmetic is the same whatever
//! the batch size or the row's position in it.

mod acts;
#[cfg(target_arch = "x86_64")]
mod amx_int;
pub mod attention;
pub mod hot_workers;
pub mod isa;
mod math;
mod pack;
mod panels;
mod qmatmul;
mod repack;
pub mod rowops;
mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;
#[cfg(target_arch = "x86_64")]
mod x86_attention;
#[cfg(target_arch = "x86_64")]
mod x86_attention_zmm;
#[cfg(target_arch = "x86_64")]
mod x86_int;
#[cfg(target_arch = "x86_64")]
mod x86_math;
#[cfg(target_arch = "x86_64")]
mod x86_zmm;

#[cfg(test)]
mod tests;

/// Whether two f32 slices are equal bit for bit (same length, same bits per value,
/// so `-0.0 != 0.0` and NaNs compare by payload): what the SIMD paths' tests hold them
/// to against the scalar ones.
#[cfg(test)]
pub(crate) fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

pub use isa::MatmulPath;
pub use qmatmul::{CpuQMatrix, QKind};

/// Every weight format the CPU and device kernels read (the formats `QKind` names).
pub const WEIGHT_DTYPES: [candle_core::quantized::GgmlDType; 12] = {
    use candle_core::quantized::GgmlDType;
    [
        GgmlDType::Q4_0,
        GgmlDType::Q4_1,
        GgmlDType::Q5_0,
        GgmlDType::Q5_1,
        GgmlDType::Q8_0,
        GgmlDType::Q2K,
        GgmlDType::Q3K,
        GgmlDType::Q4K,
        GgmlDType::Q5K,
        GgmlDType::Q6K,
        GgmlDType::F16,
        GgmlDType::BF16,
    ]
};
