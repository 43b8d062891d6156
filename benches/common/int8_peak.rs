//! A tiny int8 peak probe for `cpu_qmatmul`: how many 8-bit multiply-adds per second
//! this CPU retires with each dot-product instruction the matmul paths can use, on one
//! thread and on every rayon thread at once. Each probe runs 12 independent
//! accumulators (more than latency x throughput of any of these instructions, and
//! with the two inputs within the 16 registers VEX code has) over a register-resident
//! loop, so nothing but the instruction's throughput limits it. The AMX probe runs
//! four independent full-tile `tdpbssd` (16 x 16 outputs x 64 bytes) per round.
//! Counted as 2 ops (multiply, add) per product, as GEMM GOPS are. Two more probes
//! give the encoder's references: int16 `vpmaddwd` (its int16 layers) and f32 FMA
//! (its f32 GEMM).

#![allow(dead_code)]

use std::time::Instant;

use rayon::prelude::*;

/// One instruction's measured peak.
pub struct Peak {
    /// The instruction, as the table prints it.
    pub name: &'static str,
    /// GOPS on one thread.
    pub one: f64,
    /// GOPS on all rayon threads together.
    pub all: f64,
}

/// Iterations of the 12-instruction loop per timing (a multiple of 32).
const ITERS: u64 = 4_000_000;

/// Independent accumulators of each probe.
const ACCS: usize = 12;

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::ACCS;

    /// Products per loop iteration of a probe over `lanes` 32-bit lanes of `per`
    /// products each (4 for 8-bit dot products, 2 for int16, 1 for f32 FMA).
    pub fn products(lanes: u64, per: u64) -> u64 {
        ACCS as u64 * lanes * per
    }

    macro_rules! probe {
        ($name:ident, $feat:literal, $ty:ty, $zero:expr, $set:expr, |$a:ident, $u:ident, $s:ident| $step:expr) => {
            /// Runs the probe loop `iters` times; returns a value that depends on it.
            ///
            /// # Safety
            /// The CPU must have the named features.
            #[target_feature(enable = $feat)]
            pub unsafe fn $name(iters: u64) -> i64 {
                let $u: $ty = $set(0x0101_0101);
                let $s: $ty = $set(0x0203_0405);
                let mut acc: [$ty; ACCS] = [$zero; ACCS];
                for _ in 0..iters / 32 {
                    for _ in 0..32 {
                        for $a in acc.iter_mut() {
                            *$a = $step;
                        }
                    }
                    // Keeps the loop from being folded away (once per 32 rounds, so the
                    // stores do not limit it).
                    acc = std::hint::black_box(acc);
                }
                let mut out = [0i32; ACCS];
                // SAFETY: reading the first 32-bit lane of each accumulator (its bits).
                for (o, a) in out.iter_mut().zip(&acc) {
                    *o = unsafe { std::ptr::from_ref(a).cast::<i32>().read_unaligned() };
                }
                out.iter().map(|&v| i64::from(v)).sum()
            }
        };
    }

    probe!(
        avx2_maddubs,
        "avx2",
        __m256i,
        _mm256_setzero_si256(),
        _mm256_set1_epi32,
        // The accumulator is the signed input too, so the products are not invariant.
        |a, u, _s| _mm256_add_epi32(
            *a,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, *a), _mm256_set1_epi16(1))
        )
    );
    probe!(
        avx2_maddwd,
        "avx2",
        __m256i,
        _mm256_setzero_si256(),
        _mm256_set1_epi32,
        |a, u, _s| _mm256_add_epi32(*a, _mm256_madd_epi16(u, *a))
    );
    probe!(
        fma_ps,
        "avx2,fma",
        __m256,
        _mm256_setzero_ps(),
        |v: i32| _mm256_set1_ps(v as f32 * 1e-9),
        |a, u, s| _mm256_fmadd_ps(*a, u, s)
    );
    probe!(
        avxvnni_ymm,
        "avx2,avxvnni",
        __m256i,
        _mm256_setzero_si256(),
        _mm256_set1_epi32,
        |a, u, s| _mm256_dpbusd_avx_epi32(*a, u, s)
    );
    probe!(
        avx512vnni_ymm,
        "avx2,avx512f,avx512vl,avx512vnni",
        __m256i,
        _mm256_setzero_si256(),
        _mm256_set1_epi32,
        |a, u, s| _mm256_dpbusd_epi32(*a, u, s)
    );
    /// Runs `iters` rounds of four independent full-tile `tdpbssd` (16 x 16 x 64 8-bit
    /// products each) on `tmm0`-`tmm3` from the same operands in `tmm4` / `tmm5`;
    /// returns a value that depends on them.
    ///
    /// # Safety
    /// The CPU must have AMX-INT8 and the OS must have granted this process the tile
    /// state (`CpuFeatures::amx_int8`).
    pub unsafe fn amx_tdpbssd(iters: u64) -> i64 {
        use std::arch::asm;
        let mut cfg = [0u8; 64];
        cfg[0] = 1;
        for t in 0..6 {
            cfg[16 + 2 * t] = 64;
            cfg[48 + t] = 16;
        }
        let ones = [1i8; 1024];
        let mut out = [0i32; 256];
        // SAFETY: the caller guarantees AMX; the loads read `ones` (16 rows of 64
        // bytes), the store writes `out`; the tiles are released before returning.
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
            asm!(
                "tileloadd tmm4, [{p} + {s} * 1]",
                "tileloadd tmm5, [{p} + {s} * 1]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                p = in(reg) ones.as_ptr(),
                s = in(reg) 64usize,
                options(nostack, readonly)
            );
            for _ in 0..iters {
                asm!(
                    "tdpbssd tmm0, tmm4, tmm5",
                    "tdpbssd tmm1, tmm4, tmm5",
                    "tdpbssd tmm2, tmm4, tmm5",
                    "tdpbssd tmm3, tmm4, tmm5",
                    options(nostack, nomem)
                );
            }
            asm!(
                "tilestored [{p} + {s} * 1], tmm0",
                "tilerelease",
                p = in(reg) out.as_mut_ptr(),
                s = in(reg) 64usize,
                options(nostack)
            );
        }
        i64::from(out[0])
    }

    probe!(
        avx512vnni_zmm,
        "avx512f,avx512vnni",
        __m512i,
        _mm512_setzero_si512(),
        _mm512_set1_epi32,
        |a, u, s| _mm512_dpbusd_epi32(*a, u, s)
    );
    probe!(
        avx512vnni_int16_zmm,
        "avx512f,avx512vnni",
        __m512i,
        _mm512_setzero_si512(),
        _mm512_set1_epi32,
        |a, u, s| _mm512_dpwssd_epi32(*a, u, s)
    );
    probe!(
        avx512bf16_zmm,
        "avx512f,avx512bf16",
        __m512,
        _mm512_setzero_ps(),
        // bf16 pairs near 1.0 (the integer probes' patterns would be denormal here).
        |v: i32| _mm512_castsi512_ps(_mm512_set1_epi32(0x3f80_3f80 | (v & 0x000f_000f))),
        // SAFETY: `__m512bh` and `__m512` are the same 64 bytes of plain bits.
        |a, u, s| unsafe {
            _mm512_dpbf16_ps(
                *a,
                std::mem::transmute::<__m512, __m512bh>(u),
                std::mem::transmute::<__m512, __m512bh>(s),
            )
        }
    );
}

/// GOPS of `f` (which runs `iters` iterations of `products` 8-bit products each) on
/// one thread and on all rayon threads (each running the whole loop).
fn measure(f: fn(u64) -> i64, products: u64) -> (f64, f64) {
    let ops =
        |threads: usize, secs: f64| 2.0 * (products * ITERS) as f64 * threads as f64 / secs / 1e9;
    std::hint::black_box(f(ITERS / 10));
    let best_of = |run: &dyn Fn() -> f64| (0..3).map(|_| run()).fold(f64::INFINITY, f64::min);
    let one = best_of(&|| {
        let t = Instant::now();
        std::hint::black_box(f(ITERS));
        t.elapsed().as_secs_f64()
    });
    let threads = rayon::current_num_threads();
    let all = best_of(&|| {
        let t = Instant::now();
        (0..threads).into_par_iter().for_each(|_| {
            std::hint::black_box(f(ITERS));
        });
        t.elapsed().as_secs_f64()
    });
    (ops(1, one), ops(threads, all))
}

/// Every probe this CPU can run.
pub fn probe() -> Vec<Peak> {
    #[allow(unused_mut)]
    let mut peaks = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        let f = ferrite::device::cpu::isa::CpuFeatures::get();
        type Probe = (&'static str, bool, fn(u64) -> i64, u64);
        // SAFETY (each closure): only run where the CPU has the features (the flag).
        let list: [Probe; 9] = [
            (
                "avx2 vpmaddubsw+vpmaddwd ymm",
                f.avx2,
                |n| unsafe { x86::avx2_maddubs(n) },
                x86::products(8, 4),
            ),
            (
                "avx2 vpmaddwd+vpaddd ymm (int16)",
                f.avx2,
                |n| unsafe { x86::avx2_maddwd(n) },
                x86::products(8, 2),
            ),
            (
                "fma vfmadd231ps ymm (f32)",
                f.avx2 && f.fma,
                |n| unsafe { x86::fma_ps(n) },
                x86::products(8, 1),
            ),
            (
                "avx-vnni vpdpbusd ymm",
                f.avxvnni,
                |n| unsafe { x86::avxvnni_ymm(n) },
                x86::products(8, 4),
            ),
            (
                "avx512-vnni vpdpbusd ymm",
                f.avx512_base() && f.avx512vnni,
                |n| unsafe { x86::avx512vnni_ymm(n) },
                x86::products(8, 4),
            ),
            (
                "avx512-vnni vpdpbusd zmm",
                f.avx512_base() && f.avx512vnni,
                |n| unsafe { x86::avx512vnni_zmm(n) },
                x86::products(16, 4),
            ),
            (
                "avx512-vnni vpdpwssd zmm (int16)",
                f.avx512_base() && f.avx512vnni,
                |n| unsafe { x86::avx512vnni_int16_zmm(n) },
                x86::products(16, 2),
            ),
            (
                "avx512-bf16 vdpbf16ps zmm",
                f.avx512_base() && f.avx512bf16,
                |n| unsafe { x86::avx512bf16_zmm(n) },
                x86::products(16, 2),
            ),
            // 0: the tile probe, whose round is counted below.
            (
                "amx-int8 tdpbssd tile",
                f.amx_int8,
                |n| unsafe { x86::amx_tdpbssd(n) },
                0,
            ),
        ];
        for (name, on, run, products) in list {
            if on {
                // The tile probe's round: 4 products of 16 x 16 x 64.
                let products = if products == 0 {
                    4 * 16 * 16 * 64
                } else {
                    products
                };
                let (one, all) = measure(run, products);
                peaks.push(Peak { name, one, all });
            }
        }
    }
    peaks
}
