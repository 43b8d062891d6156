//! Which instruction set the CPU kernels use, chosen at run time (no `target-cpu`
//! needed): AVX2 + FMA + F16C where the CPU has all three, portable scalar code
//! elsewhere. The scalar kernels are bit-identical references for the SIMD ones.

/// The kernel family to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 with AVX2, FMA and F16C.
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Isa {
    /// The best family this CPU supports (the feature checks are cached by `std`).
    #[inline]
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
        {
            return Isa::Avx2;
        }
        Isa::Scalar
    }
}
