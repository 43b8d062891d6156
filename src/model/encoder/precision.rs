//! `--encoder-precision`: which arithmetic the encoder's linear layers run, resolved
//! once at load against the CPU's features (`device::cpu::isa`).
//!
//! `f32` is the exact path (the `gemm` crate). `int8`, `int16` and `bf16` quantize the
//! weights at load (`qlinear.rs`); attention, LayerNorm, activations and the classifier
//! heads stay f32. `auto` picks the fastest precision that meets the accuracy gates of
//! `tests/encoder_precision.rs` (embedding cosine >= 0.999 to f32, cross-encoder
//! rankings kept): bf16 where AVX512_BF16 exists (worst cosine 0.99998); else `int16`
//! (12-bit weights, 14-bit activations) with 512-bit `vpdpwssd` where AVX-512 VNNI
//! exists, or with `vpmaddwd` on AVX2 CPUs without AVX-512 (whose f32 GEMM runs on
//! 256-bit vectors); else f32. int8 is faster still at large batches but misses the gate
//! (worst cosine 0.9916 with per-row dynamic activations), so it is only used when asked
//! for.
//!
//! Invariant: a resolved precision only names a kernel the CPU can run; asking for
//! `int8` or `bf16` on a CPU without a fast kernel for it is an error at load, not a
//! slow fallback.

use std::fmt;
use std::str::FromStr;

use anyhow::{Result, bail};

use super::qlinear::Kernel;
use crate::device::cpu::isa::CpuFeatures;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EncoderPrecision {
    /// The fastest precision that meets the accuracy gates on this CPU.
    #[default]
    Auto,
    /// int8 weights and activations (VNNI).
    Int8,
    /// 12-bit weights, 14-bit activations in int16 (AVX2 `vpmaddwd`).
    Int16,
    /// bf16 weights and activations (AVX512_BF16).
    Bf16,
    /// Today's exact f32 path.
    F32,
}

impl FromStr for EncoderPrecision {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "int8" => Ok(Self::Int8),
            "int16" => Ok(Self::Int16),
            "bf16" => Ok(Self::Bf16),
            "f32" => Ok(Self::F32),
            other => Err(format!(
                "unknown encoder precision {other:?} (auto|int8|int16|bf16|f32)"
            )),
        }
    }
}

impl fmt::Display for EncoderPrecision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Int8 => "int8",
            Self::Int16 => "int16",
            Self::Bf16 => "bf16",
            Self::F32 => "f32",
        })
    }
}

/// How the linear layers run: f32 GEMM, or a reduced-precision kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearPlan {
    /// The `gemm` crate in f32.
    F32,
    /// Quantized at load, run by this kernel.
    Quantized(Kernel),
}

impl LinearPlan {
    /// Resolves `precision` against `features`.
    pub fn resolve(precision: EncoderPrecision, features: &CpuFeatures) -> Result<Self> {
        let int8 = Kernel::best_int8(features);
        let bf16 = Kernel::best_bf16(features);
        let int16 = Kernel::best_int16(features);
        // Where f32 GEMM has 512-bit FMAs, 256-bit `vpmaddwd` is no faster than it;
        // 512-bit `vpdpwssd` does twice its products per instruction.
        let auto_int16 = int16.filter(|&k| k == Kernel::Int16Avx512Vnni || !features.avx512f);
        Ok(match precision {
            EncoderPrecision::F32 => Self::F32,
            EncoderPrecision::Auto => bf16.or(auto_int16).map_or(Self::F32, Self::Quantized),
            EncoderPrecision::Int8 => match int8 {
                Some(k) => Self::Quantized(k),
                None => bail!(
                    "--encoder-precision int8 needs AVX-512 VNNI or AVX-VNNI; this CPU ({}) has neither: use auto or f32",
                    features.summary()
                ),
            },
            EncoderPrecision::Int16 => match int16 {
                Some(k) => Self::Quantized(k),
                None => bail!(
                    "--encoder-precision int16 needs AVX2; this CPU ({}) lacks it: use auto or f32",
                    features.summary()
                ),
            },
            EncoderPrecision::Bf16 => match bf16 {
                Some(k) => Self::Quantized(k),
                None => bail!(
                    "--encoder-precision bf16 needs AVX-512 BF16; this CPU ({}) lacks it: use auto or f32",
                    features.summary()
                ),
            },
        })
    }

    /// A short name for logs: `f32 (gemm)`, `int8 (avx512-vnni)`, ...
    pub fn describe(&self) -> &'static str {
        match self {
            Self::F32 => "f32 (gemm crate)",
            Self::Quantized(Kernel::Int8Avx512Vnni) => "int8 (avx512-vnni vpdpbusd)",
            Self::Quantized(Kernel::Int8AvxVnni) => "int8 (avx-vnni vpdpbusd)",
            Self::Quantized(Kernel::Int8Scalar) => "int8 (scalar)",
            Self::Quantized(Kernel::Int16Avx2) => "int16 (avx2 vpmaddwd)",
            Self::Quantized(Kernel::Int16Avx512Vnni) => "int16 (avx512-vnni vpdpwssd)",
            Self::Quantized(Kernel::Int16Scalar) => "int16 (scalar)",
            Self::Quantized(Kernel::Bf16Avx512) => "bf16 (avx512-bf16 vdpbf16ps)",
            Self::Quantized(Kernel::Bf16Amx) => "bf16 (amx tdpbf16ps)",
            Self::Quantized(Kernel::Bf16Scalar) => "bf16 (scalar)",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::cpu::isa::IsaCap;

    #[test]
    fn parses_and_prints() {
        for p in ["auto", "int8", "int16", "bf16", "f32"] {
            assert_eq!(p.parse::<EncoderPrecision>().unwrap().to_string(), p);
        }
        assert!("fp8".parse::<EncoderPrecision>().is_err());
    }

    #[test]
    fn portable_cpu_resolves_auto_to_f32_and_refuses_int8() {
        let f = CpuFeatures::hardware().capped(IsaCap::Scalar);
        assert_eq!(
            LinearPlan::resolve(EncoderPrecision::Auto, &f).unwrap(),
            LinearPlan::F32
        );
        let err = LinearPlan::resolve(EncoderPrecision::Int8, &f).unwrap_err();
        assert!(err.to_string().contains("VNNI"), "{err}");
        assert!(LinearPlan::resolve(EncoderPrecision::Bf16, &f).is_err());
        assert!(LinearPlan::resolve(EncoderPrecision::Int16, &f).is_err());
    }

    #[test]
    fn auto_takes_int16_where_it_beats_f32() {
        let hw = CpuFeatures::hardware();
        if !hw.avx2 {
            return;
        }
        let avx2 = hw.capped(IsaCap::Avx2);
        assert_eq!(
            LinearPlan::resolve(EncoderPrecision::Auto, &avx2).unwrap(),
            LinearPlan::Quantized(Kernel::Int16Avx2)
        );
        // 512-bit FMAs without VNNI: f32; with VNNI (no BF16): vpdpwssd.
        let mut wide = avx2;
        (wide.avx512f, wide.avx512bw, wide.avx512vl) = (true, true, true);
        assert_eq!(
            LinearPlan::resolve(EncoderPrecision::Auto, &wide).unwrap(),
            LinearPlan::F32
        );
        wide.avx512vnni = true;
        assert_eq!(
            LinearPlan::resolve(EncoderPrecision::Auto, &wide).unwrap(),
            LinearPlan::Quantized(Kernel::Int16Avx512Vnni)
        );
        wide.avx512bf16 = true;
        assert_eq!(
            LinearPlan::resolve(EncoderPrecision::Auto, &wide).unwrap(),
            LinearPlan::Quantized(Kernel::Bf16Avx512)
        );
    }

    #[test]
    fn resolved_kernels_are_runnable_here() {
        let f = CpuFeatures::hardware();
        for p in [
            EncoderPrecision::Auto,
            EncoderPrecision::Int8,
            EncoderPrecision::Int16,
            EncoderPrecision::Bf16,
        ] {
            if let Ok(LinearPlan::Quantized(k)) = LinearPlan::resolve(p, f) {
                assert!(Kernel::available(f).contains(&k), "{p}: {k:?}");
            }
        }
    }
}
