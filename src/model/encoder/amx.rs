//! The encoder's bf16 linear layers on AMX (`tdpbf16ps`), where the CPU has AMX-BF16
//! and the OS granted this process the tile state (`CpuFeatures::amx_bf16`, which
//! proves it by running tile instructions in a child process first).
//!
//! A call computes 16 activation rows x one 64-output panel: four 16 x 16 f32
//! accumulator tiles (`tmm0`-`tmm3`), the activations' 16 x 32 bf16 tile (`tmm4`) and
//! the weights' 16 (pairs of k) x 16 tiles alternating in `tmm5` / `tmm6`, read
//! straight from `QLinear`'s bf16 packing (its rows of k pairs, 16 lanes of pairs per
//! 64 bytes, are AMX's B layout, 256 bytes apart). Rust has no stable AMX intrinsics,
//! so the instructions are inline assembly on fixed tile registers; the tile state is
//! configured and released within [`panel_rows`], so nothing outside sees it.
//!
//! Invariant: only called where `kp % 32 == 0` and the activation buffer holds 16
//! rows from `r0`; results are f32 sums of exact bf16 products in another order than
//! the other bf16 kernels (within the same tolerance of the scalar reference).

use std::arch::asm;

/// Activation rows per tile.
pub const ROWS: usize = 16;
/// Inputs per activation tile (bf16 values).
pub const K_STEP: usize = 32;
/// Outputs per panel (the packing's `NR`).
const PANEL: usize = 64;

/// The 64-byte tile configuration: palette 1, `tmm0`-`tmm6` of 16 rows x 64 bytes.
fn config() -> [u8; 64] {
    let mut cfg = [0u8; 64];
    cfg[0] = 1;
    for t in 0..7 {
        cfg[16 + 2 * t] = 64;
        cfg[48 + t] = 16;
    }
    cfg
}

/// `out[r][c] = sum_k a[r0 + r][k] w[k][c] + bias[c]` for `rows` (at most 16) rows and
/// `cols` (at most 64) outputs of every panel `p` in `panels`, `out` rows `stride`
/// apart (panel `p` at column `64 p`).
///
/// # Safety
/// The CPU must have AMX-TILE and AMX-BF16 and the OS must have granted the tile
/// state; `a` must hold 16 rows of `kp` values from row `r0` (`kp % 32 == 0`); `w`
/// must hold every panel of `kp * 64` values; `bias` `64` per panel; `out` every
/// element written.
#[allow(clippy::too_many_arguments)]
pub unsafe fn panel_rows(
    a: &[u16],
    r0: usize,
    kp: usize,
    w: &[u16],
    bias: &[f32],
    n: usize,
    rows: usize,
    out: &mut [f32],
    stride: usize,
) {
    debug_assert!(kp.is_multiple_of(K_STEP) && rows <= ROWS);
    assert!(a.len() >= (r0 + ROWS) * kp);
    let panels = n.div_ceil(PANEL);
    assert!(w.len() >= panels * kp * PANEL && bias.len() >= panels * PANEL);
    assert!(rows == 0 || out.len() >= (rows - 1) * stride + n);
    let cfg = config();
    let mut c = [0f32; ROWS * PANEL];
    let a_stride = kp * 2;
    let b_stride = 2 * PANEL * 2;
    // SAFETY: the caller guarantees the CPU and OS support; every tile load reads 16
    // rows of 64 bytes inside `a` (rows r0..r0 + 16, columns k..k + 32) or inside
    // panel p of `w` (k pairs k/2..k/2 + 16, lanes 16 g..16 g + 16), and the stores
    // write `c` (16 rows of 256 bytes); the tile state is released before returning.
    unsafe {
        asm!("ldtilecfg [{}]", in(reg) cfg.as_ptr(), options(nostack, readonly));
        for p in 0..panels {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
            let wp = w.as_ptr().add(p * kp * PANEL);
            for k in (0..kp).step_by(K_STEP) {
                let at = a.as_ptr().add(r0 * kp + k);
                let b = wp.add(k / 2 * 2 * PANEL);
                asm!(
                    "tileloadd tmm4, [{a} + {sa} * 1]",
                    "tileloadd tmm5, [{b0} + {sb} * 1]",
                    "tdpbf16ps tmm0, tmm4, tmm5",
                    "tileloadd tmm6, [{b1} + {sb} * 1]",
                    "tdpbf16ps tmm1, tmm4, tmm6",
                    "tileloadd tmm5, [{b2} + {sb} * 1]",
                    "tdpbf16ps tmm2, tmm4, tmm5",
                    "tileloadd tmm6, [{b3} + {sb} * 1]",
                    "tdpbf16ps tmm3, tmm4, tmm6",
                    a = in(reg) at,
                    sa = in(reg) a_stride,
                    b0 = in(reg) b,
                    b1 = in(reg) b.add(32),
                    b2 = in(reg) b.add(64),
                    b3 = in(reg) b.add(96),
                    sb = in(reg) b_stride,
                    options(nostack, readonly)
                );
            }
            let cp = c.as_mut_ptr();
            asm!(
                "tilestored [{c0} + {sc} * 1], tmm0",
                "tilestored [{c1} + {sc} * 1], tmm1",
                "tilestored [{c2} + {sc} * 1], tmm2",
                "tilestored [{c3} + {sc} * 1], tmm3",
                c0 = in(reg) cp,
                c1 = in(reg) cp.add(16),
                c2 = in(reg) cp.add(32),
                c3 = in(reg) cp.add(48),
                sc = in(reg) PANEL * 4,
                options(nostack)
            );
            let cols = (n - p * PANEL).min(PANEL);
            for r in 0..rows {
                let dst = &mut out[r * stride + p * PANEL..][..cols];
                let src = &c[r * PANEL..][..cols];
                for ((d, s), b) in dst.iter_mut().zip(src).zip(&bias[p * PANEL..]) {
                    *d = s + b;
                }
            }
        }
        asm!("tilerelease", options(nostack, nomem));
    }
}
