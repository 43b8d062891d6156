//! Which instruction set the CPU kernels use, chosen at run time (no `target-cpu`
//! needed), probed once per process.
//!
//! [`CpuFeatures::get`] is the one detection: AVX2, FMA, F16C, AVX-512 F/BW/VL/VNNI/BF16,
//! AVX-VNNI and AMX, each only where the CPU advertises it (CPUID) *and* the OS saves
//! its register state. `std::is_x86_feature_detected!` already requires the OS bits
//! (XCR0 bits 1-2 for AVX, bits 5-7 for AVX-512) before reporting an AVX or AVX-512
//! feature; we read XCR0 ourselves as well (`os_avx`, `os_avx512`) so a kernel can
//! never be picked on a kernel-disabled state, whatever `std` does. AMX additionally
//! needs Linux to grant the tile data state to the process
//! (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`): without a successful request
//! the first tile instruction raises SIGILL even where CPUID advertises AMX, so
//! `amx` is true only after the kernel said yes *and* tile instructions ran in a forked
//! child (a VM may grant the permission without enabling the tiles). The encoder's
//! bf16 layers use AMX-BF16 where `amx_bf16` holds, the LLM's quantized matmul
//! AMX-INT8 where `amx_int8` does.
//!
//! `FERRITE_ISA` caps the level for testing and for machines whose detection lies:
//! `scalar`, `avx2` (AVX2 + FMA + F16C), `avxvnni` (plus AVX-VNNI), `avx512` (plus every
//! AVX-512 extension found) or `native` (everything found, the default). A cap never
//! adds a feature the CPU lacks. [`Isa`] is the family of the LLM kernels (AVX2 or
//! scalar) and [`MatmulPath`] the integer dot product of their quantized matmul
//! (AMX-INT8, AVX-512 VNNI, AVX-VNNI, AVX2 or scalar); the scalar kernels are bit-identical
//! references for the SIMD ones.

use std::sync::OnceLock;

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
    /// The best family this CPU supports under `FERRITE_ISA` (probed once).
    #[inline]
    pub(crate) fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if CpuFeatures::get().avx2_fma_f16c() {
            return Isa::Avx2;
        }
        Isa::Scalar
    }
}

/// The integer dot-product path of the quantized matmul, chosen at run time: the
/// 8-bit products of each block are summed exactly in 32-bit lanes on every path, so
/// all paths give bit-identical results (the scalar one is the reference).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulPath {
    /// Portable Rust.
    Scalar,
    /// AVX2 `vpmaddubsw` + `vpmaddwd` (16 ymm registers, tiles of 4 rows).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-VNNI: VEX `vpdpbusd` (16 ymm registers, tiles of 4 rows).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    /// AVX-512 VNNI: 512-bit `vpdpbusd` over two panels at once (a lone last panel on
    /// 256-bit vectors), 32 registers, tiles of 8 rows.
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
    /// AMX-INT8: 16 activation rows x two panels per tile product (`tdpbsud` /
    /// `tdpbssd`) where a group has 16 rows, the AVX-512 VNNI kernels for the rest.
    #[cfg(target_arch = "x86_64")]
    AmxInt8,
}

impl MatmulPath {
    /// The fastest path this CPU supports under `FERRITE_ISA` (probed once).
    pub fn detect() -> Self {
        Self::available()[0]
    }

    /// Every path this CPU supports under `FERRITE_ISA`, fastest first (scalar last).
    pub fn available() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut paths = vec![];
        #[cfg(target_arch = "x86_64")]
        {
            let f = CpuFeatures::get();
            if f.avx2_fma_f16c() {
                if f.avx512_base() && f.avx512vnni && f.amx_int8 {
                    paths.push(Self::AmxInt8);
                }
                if f.avx512_base() && f.avx512vnni {
                    paths.push(Self::Avx512Vnni);
                }
                if f.avxvnni {
                    paths.push(Self::AvxVnni);
                }
                paths.push(Self::Avx2);
            }
        }
        paths.push(Self::Scalar);
        paths
    }

    /// The family of the path's other kernels (activation quantization, float weights).
    pub(crate) fn isa(self) -> Isa {
        match self {
            Self::Scalar => Isa::Scalar,
            #[cfg(target_arch = "x86_64")]
            _ => Isa::Avx2,
        }
    }

    /// Activation rows per register tile of the integer kernels (for AMX, of its
    /// AVX-512 VNNI tiles; its tile products take 16).
    pub(crate) fn tile_rows(self) -> usize {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni | Self::AmxInt8 => 8,
            _ => 4,
        }
    }

    /// Whether the path multiplies two adjacent panels at once (16 outputs per
    /// 512-bit register).
    pub(crate) fn pairs_panels(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        if matches!(self, Self::Avx512Vnni | Self::AmxInt8) {
            return true;
        }
        false
    }

    /// The path's name, as logs and the self-test print it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Self::AvxVnni => "avx-vnni",
            #[cfg(target_arch = "x86_64")]
            Self::Avx512Vnni => "avx512-vnni",
            #[cfg(target_arch = "x86_64")]
            Self::AmxInt8 => "amx-int8",
        }
    }
}

/// The highest level `FERRITE_ISA` lets the kernels use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum IsaCap {
    /// Portable code only.
    Scalar,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX2 level plus AVX-VNNI (256-bit `vpdpbusd`).
    AvxVnni,
    /// Every AVX and AVX-512 extension found, no AMX.
    Avx512,
    /// Everything found (the default).
    #[default]
    Native,
}

impl IsaCap {
    /// Parses a `FERRITE_ISA` value.
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "scalar" | "none" | "portable" => Self::Scalar,
            "avx2" => Self::Avx2,
            "avxvnni" | "avx-vnni" | "avx_vnni" => Self::AvxVnni,
            "avx512" | "avx-512" => Self::Avx512,
            "native" | "" => Self::Native,
            _ => return None,
        })
    }
}

/// What this CPU and OS let the kernels run (after the `FERRITE_ISA` cap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuFeatures {
    /// AVX2.
    pub avx2: bool,
    /// FMA3.
    pub fma: bool,
    /// F16C (half-precision conversions).
    pub f16c: bool,
    /// AVX-512 Foundation.
    pub avx512f: bool,
    /// AVX-512 byte and word instructions.
    pub avx512bw: bool,
    /// AVX-512 on 128/256-bit vectors.
    pub avx512vl: bool,
    /// AVX-512 VNNI (512-bit `vpdpbusd`).
    pub avx512vnni: bool,
    /// AVX-512 BF16 (`vdpbf16ps`, `vcvtne2ps2bf16`).
    pub avx512bf16: bool,
    /// AVX-VNNI (VEX-encoded 256-bit `vpdpbusd`).
    pub avxvnni: bool,
    /// CPUID advertises AMX-TILE (with AMX-INT8 or AMX-BF16).
    pub amx_advertised: bool,
    /// AMX usable: advertised, OS tile state enabled, the process was granted the
    /// tile data permission, and tile instructions ran in a child process.
    pub amx: bool,
    /// AMX-BF16 (`tdpbf16ps`) usable: `amx` and CPUID advertises it.
    pub amx_bf16: bool,
    /// AMX-INT8 (`tdpbssd`, `tdpbsud`, ...) usable: `amx` and CPUID advertises it.
    pub amx_int8: bool,
    /// The cap these features were filtered by.
    pub cap: IsaCap,
}

impl CpuFeatures {
    /// This process's features, probed on first use under `FERRITE_ISA` (an unknown
    /// value is logged and ignored).
    pub fn get() -> &'static CpuFeatures {
        static FEATURES: OnceLock<CpuFeatures> = OnceLock::new();
        FEATURES.get_or_init(|| {
            let cap = match std::env::var("FERRITE_ISA") {
                Ok(v) => IsaCap::parse(&v).unwrap_or_else(|| {
                    tracing::warn!(value = %v, "FERRITE_ISA is not scalar|avx2|avxvnni|avx512|native; ignored");
                    IsaCap::Native
                }),
                Err(_) => IsaCap::Native,
            };
            Self::hardware().capped(cap)
        })
    }

    /// Everything the CPU and OS offer, ignoring `FERRITE_ISA` (probed once): what the
    /// tests may run side by side.
    pub fn hardware() -> &'static CpuFeatures {
        static HARDWARE: OnceLock<CpuFeatures> = OnceLock::new();
        HARDWARE.get_or_init(Self::probe)
    }

    /// Probes the CPU and OS now, uncapped (AMX permission is requested here).
    pub fn probe() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            x86_probe()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Self::default()
        }
    }

    /// These features limited to `cap`.
    pub fn capped(self, cap: IsaCap) -> Self {
        let mut f = self;
        f.cap = cap;
        if cap < IsaCap::Native {
            f.amx = false;
            f.amx_bf16 = false;
            f.amx_int8 = false;
        }
        if cap < IsaCap::Avx512 {
            f.avx512f = false;
            f.avx512bw = false;
            f.avx512vl = false;
            f.avx512vnni = false;
            f.avx512bf16 = false;
        }
        if cap < IsaCap::AvxVnni {
            f.avxvnni = false;
        }
        if cap < IsaCap::Avx2 {
            f.avx2 = false;
            f.fma = false;
            f.f16c = false;
        }
        f
    }

    /// The AVX2 kernel family's requirements.
    pub fn avx2_fma_f16c(&self) -> bool {
        self.avx2 && self.fma && self.f16c
    }

    /// The AVX-512 base the encoder's 512-bit kernels need (F + BW + VL).
    pub fn avx512_base(&self) -> bool {
        self.avx512f && self.avx512bw && self.avx512vl
    }

    /// The found features as one space-separated list (for the startup log).
    pub fn summary(&self) -> String {
        let names = [
            (self.avx2, "avx2"),
            (self.fma, "fma"),
            (self.f16c, "f16c"),
            (self.avx512f, "avx512f"),
            (self.avx512bw, "avx512bw"),
            (self.avx512vl, "avx512vl"),
            (self.avx512vnni, "avx512vnni"),
            (self.avx512bf16, "avx512bf16"),
            (self.avxvnni, "avxvnni"),
            (self.amx, "amx"),
            (self.amx_bf16, "amx-bf16"),
            (self.amx_int8, "amx-int8"),
        ];
        let found: Vec<&str> = names
            .iter()
            .filter(|(on, _)| *on)
            .map(|(_, n)| *n)
            .collect();
        if found.is_empty() {
            "none (portable code)".to_string()
        } else {
            found.join(" ")
        }
    }
}

/// XCR0: which register states the OS saves (0 where XGETBV is not enabled).
#[cfg(target_arch = "x86_64")]
fn xcr0() -> u64 {
    use std::arch::x86_64::{__cpuid, _xgetbv};
    // CPUID.1:ECX bit 27 (OSXSAVE): the OS enabled XGETBV.
    let leaf1 = __cpuid(1);
    if leaf1.ecx & (1 << 27) == 0 {
        return 0;
    }
    #[target_feature(enable = "xsave")]
    unsafe fn read() -> u64 {
        // SAFETY: OSXSAVE is set, so XGETBV with ECX = 0 is allowed.
        unsafe { _xgetbv(0) }
    }
    // SAFETY: OSXSAVE implies the CPU has XSAVE (XGETBV).
    unsafe { read() }
}

#[cfg(target_arch = "x86_64")]
fn x86_probe() -> CpuFeatures {
    use std::arch::x86_64::__cpuid_count;
    let xcr0 = xcr0();
    // SSE, AVX (YMM) state; then opmask, ZMM0-15 upper halves, ZMM16-31.
    let os_avx = xcr0 & 0b110 == 0b110;
    let os_avx512 = os_avx && xcr0 & 0b1110_0000 == 0b1110_0000;
    // XTILECFG (bit 17) and XTILEDATA (bit 18).
    let os_amx = xcr0 & (0b11 << 17) == (0b11 << 17);
    let avx = |on: bool| on && os_avx;
    let avx512 = |on: bool| on && os_avx512;
    // Leaf 7 reads as zeros on a CPU without it.
    let leaf7 = __cpuid_count(7, 0);
    let amx_advertised =
        leaf7.edx & (1 << 24) != 0 && (leaf7.edx & (1 << 25) != 0 || leaf7.edx & (1 << 22) != 0);
    let amx = amx_advertised && os_amx && request_amx_permission() && tiles_run();
    CpuFeatures {
        avx2: avx(std::is_x86_feature_detected!("avx2")),
        fma: avx(std::is_x86_feature_detected!("fma")),
        f16c: avx(std::is_x86_feature_detected!("f16c")),
        avx512f: avx512(std::is_x86_feature_detected!("avx512f")),
        avx512bw: avx512(std::is_x86_feature_detected!("avx512bw")),
        avx512vl: avx512(std::is_x86_feature_detected!("avx512vl")),
        avx512vnni: avx512(std::is_x86_feature_detected!("avx512vnni")),
        avx512bf16: avx512(std::is_x86_feature_detected!("avx512bf16")),
        avxvnni: avx(std::is_x86_feature_detected!("avxvnni")),
        amx_advertised,
        amx,
        amx_bf16: amx && leaf7.edx & (1 << 22) != 0,
        amx_int8: amx && leaf7.edx & (1 << 25) != 0,
        cap: IsaCap::Native,
    }
}

/// Asks Linux for the AMX tile data state; true only if granted.
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn request_amx_permission() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes two integers and touches no
    // memory of ours; a refusal is an error return, never a signal.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

/// Whether tile instructions run in this process: a configure, a zero and a release
/// in a forked child (a CPU or VM that advertises AMX and grants the permission but
/// does not enable the tiles kills the child with SIGILL, not us).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn tiles_run() -> bool {
    // Palette 1, tmm0 of 16 rows x 64 bytes.
    let mut cfg = [0u8; 64];
    cfg[0] = 1;
    cfg[16] = 64;
    cfg[48] = 16;
    // SAFETY: the child only executes the tile instructions and `_exit`
    // (async-signal-safe), so forking a multi-threaded process is sound; the parent
    // only waits for it.
    unsafe {
        match libc::fork() {
            -1 => false,
            0 => {
                std::arch::asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
                std::arch::asm!("tilezero tmm0", "tilerelease", options(nostack, nomem));
                libc::_exit(0)
            }
            child => {
                let mut status = 0;
                libc::waitpid(child, &mut status, 0) == child
                    && libc::WIFEXITED(status)
                    && libc::WEXITSTATUS(status) == 0
            }
        }
    }
}

#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn tiles_run() -> bool {
    false
}

/// Only Linux has the permission protocol we know; elsewhere AMX stays off.
#[cfg(all(target_arch = "x86_64", not(target_os = "linux")))]
fn request_amx_permission() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_only_remove_features() {
        let all = CpuFeatures::probe();
        for cap in [
            IsaCap::Scalar,
            IsaCap::Avx2,
            IsaCap::AvxVnni,
            IsaCap::Avx512,
            IsaCap::Native,
        ] {
            let c = all.capped(cap);
            for (got, had) in [
                (c.avx2, all.avx2),
                (c.avx512f, all.avx512f),
                (c.avx512vnni, all.avx512vnni),
                (c.avx512bf16, all.avx512bf16),
                (c.avxvnni, all.avxvnni),
                (c.amx, all.amx),
            ] {
                assert!(!got || had, "{cap:?} added a feature");
            }
        }
        let s = all.capped(IsaCap::Scalar);
        assert!(!s.avx2 && !s.avx512f && !s.avxvnni && !s.amx);
        assert_eq!(s.summary(), "none (portable code)");
        let a = all.capped(IsaCap::Avx2);
        assert_eq!(a.avx2, all.avx2);
        assert!(!a.avx512f && !a.avxvnni);
    }

    #[test]
    fn parse_levels() {
        assert_eq!(IsaCap::parse("AVX2"), Some(IsaCap::Avx2));
        assert_eq!(IsaCap::parse("avx-vnni"), Some(IsaCap::AvxVnni));
        assert_eq!(IsaCap::parse("scalar"), Some(IsaCap::Scalar));
        assert_eq!(IsaCap::parse("avx512"), Some(IsaCap::Avx512));
        assert_eq!(IsaCap::parse("sse9"), None);
    }

    /// `std`'s AVX-512 detection implies the OS saves the ZMM and opmask state: the
    /// property the kernels rely on, checked against XCR0 read by us.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn std_detection_implies_os_register_state() {
        let xcr0 = xcr0();
        if std::is_x86_feature_detected!("avx2") {
            assert_eq!(xcr0 & 0b110, 0b110, "AVX reported without YMM state");
        }
        if std::is_x86_feature_detected!("avx512f") {
            assert_eq!(xcr0 & 0xe6, 0xe6, "AVX-512 reported without ZMM state");
        }
        let f = CpuFeatures::probe();
        assert_eq!(f.avx512f, std::is_x86_feature_detected!("avx512f"));
        assert!(!f.amx || f.amx_advertised);
    }
}
