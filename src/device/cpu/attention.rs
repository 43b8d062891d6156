//! Causal attention of one query row's heads over one K/V head of the paged f16 cache,
//! with an online (streaming) softmax over chunks of [`CHUNK`] keys.
//!
//! The driver ([`drive`]) is written once and instantiated over a [`Kern`]: the
//! portable [`Scalar`] one, the AVX2 + FMA + F16C one in `x86_attention` and the
//! AVX-512 one in `x86_attention_zmm` ([`AttnKernel`] picks). The scalar kernel
//! emulates the SIMD ones' eight f32 lanes, fused multiply-adds, horizontal sums and
//! polynomial `exp`, so all give bit-identical results.
//!
//! Invariants: a query's result depends only on its own values, the number of keys it
//! sees (`ctx`) and those keys: chunks are aligned to positions (`0, CHUNK, 2 CHUNK,
//! ...`), never to the batch, so results are batch-invariant and independent of how a
//! prompt was chunked. No heap allocation happens per call; [`AttnScratch`] is reused.

use half::f16;

use super::isa::Isa;
use super::math::{exp_scalar, hsum8};

/// Keys per softmax chunk.
pub const CHUNK: usize = 16;

/// One K/V head of one sequence in the paged cache (layout `[slot][kv_head][head_dim]`).
#[derive(Debug, Clone, Copy)]
pub struct KvHead<'a> {
    /// All keys of the layer.
    pub k: &'a [f16],
    /// All values of the layer.
    pub v: &'a [f16],
    /// The sequence's block table.
    pub block_table: &'a [u32],
    /// Slots per block.
    pub block_size: usize,
    /// f16 values per slot (`n_kv_head * head_dim`).
    pub slot_stride: usize,
    /// Offset of this head within a slot (`kv_head * head_dim`).
    pub head_offset: usize,
}

/// How raw scores `q·k` become softmax inputs, and which keys a query sees.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoreRule {
    /// Multiplier of `q·k`.
    pub scale: f32,
    /// `c · tanh(s / c)` after scaling (Gemma 2); `None`: no cap.
    pub softcap: Option<f32>,
    /// `Some(w)`: only the last `w` positions (the query's own included) are seen.
    pub window: Option<usize>,
}

impl ScoreRule {
    /// Scaled scores over every earlier position.
    pub fn plain(scale: f32) -> Self {
        Self {
            scale,
            softcap: None,
            window: None,
        }
    }

    /// The first position a query at context length `ctx` sees.
    pub fn first_key(&self, ctx: usize) -> usize {
        self.window.map_or(0, |w| ctx.saturating_sub(w))
    }
}

/// Per-thread working memory of [`attend`]: the chunk's scores and, per head, the
/// running max, sum and rescale factor.
#[derive(Debug, Clone, Default)]
pub struct AttnScratch {
    s: Vec<f32>,
    m: Vec<f32>,
    l: Vec<f32>,
    alpha: Vec<f32>,
}

impl AttnScratch {
    /// Scratch for heads of width `head_dim` in groups of up to `group` query heads.
    pub fn new(group: usize) -> Self {
        let mut s = Self::default();
        s.reserve(group);
        s
    }

    fn reserve(&mut self, group: usize) {
        if self.m.len() < group {
            self.s.resize(group * CHUNK, 0.0);
            self.m.resize(group, 0.0);
            self.l.resize(group, 0.0);
            self.alpha.resize(group, 0.0);
        }
    }
}

/// The attention kernel families; all give bit-identical results.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttnKernel {
    /// Portable Rust (the reference).
    Scalar,
    /// AVX2 + FMA + F16C on 256-bit vectors (head widths a multiple of 8).
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// AVX-512 F: two keys per vector for scores, 16-column output strips (head widths
    /// a multiple of 16; others take the AVX2 kernel).
    #[cfg(target_arch = "x86_64")]
    Avx512,
}

impl AttnKernel {
    /// Every kernel this CPU runs under `FERRITE_ISA`, fastest first (scalar last).
    pub fn available() -> Vec<Self> {
        [
            #[cfg(target_arch = "x86_64")]
            Self::Avx512,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2,
            Self::Scalar,
        ]
        .into_iter()
        .filter(|k| k.runs_here())
        .collect()
    }

    /// Whether this CPU (under `FERRITE_ISA`) has what the kernel needs.
    pub fn runs_here(self) -> bool {
        match self {
            Self::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => Isa::detect() == Isa::Avx2,
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => {
                Isa::detect() == Isa::Avx2 && super::isa::CpuFeatures::get().avx512_base()
            }
        }
    }

    /// The fastest kernel this CPU runs (probed once).
    pub fn detect() -> Self {
        static BEST: std::sync::OnceLock<AttnKernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| Self::available()[0])
    }

    /// Short name for logs and the self-test table.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scalar => "scalar",
            #[cfg(target_arch = "x86_64")]
            Self::Avx2 => "avx2",
            #[cfg(target_arch = "x86_64")]
            Self::Avx512 => "avx512",
        }
    }
}

/// Attention of `group = q.len() / head_dim` query heads (`q`, `[group, head_dim]`,
/// already rotated) over positions `rule.first_key(ctx)..ctx` of `kv`, scored by
/// `rule`, written to `out` (same shape as `q`), with the fastest kernel the CPU has.
///
/// Panics if the shapes disagree or the block table is too short for `ctx`.
pub fn attend(
    q: &[f32],
    ctx: usize,
    kv: &KvHead<'_>,
    head_dim: usize,
    rule: ScoreRule,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    attend_with(
        AttnKernel::detect(),
        q,
        ctx,
        kv,
        head_dim,
        rule,
        out,
        scratch,
    );
}

/// [`attend`] with the portable scalar kernel (the reference for the SIMD ones).
pub fn attend_scalar(
    q: &[f32],
    ctx: usize,
    kv: &KvHead<'_>,
    head_dim: usize,
    rule: ScoreRule,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    attend_with(AttnKernel::Scalar, q, ctx, kv, head_dim, rule, out, scratch);
}

/// [`attend`] with `kernel`, which must run here ([`AttnKernel::runs_here`]; panics
/// otherwise); a head width the kernel cannot take falls back to the next one.
#[allow(clippy::too_many_arguments)]
pub fn attend_with(
    kernel: AttnKernel,
    q: &[f32],
    ctx: usize,
    kv: &KvHead<'_>,
    hd: usize,
    rule: ScoreRule,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    assert!(hd > 0 && q.len().is_multiple_of(hd) && out.len() == q.len());
    assert!(kv.head_offset + hd <= kv.slot_stride);
    let need_blocks = ctx.div_ceil(kv.block_size.max(1));
    assert!(kv.block_size > 0 && kv.block_table.len() >= need_blocks);
    let slots = kv.k.len().min(kv.v.len()) / kv.slot_stride.max(1);
    assert!(
        kv.block_table[..need_blocks]
            .iter()
            .all(|&b| (b as usize + 1) * kv.block_size <= slots),
        "block table points outside the cache"
    );
    scratch.reserve(q.len() / hd);
    assert!(
        kernel.runs_here(),
        "attention kernel {kernel:?} is not available on this CPU"
    );
    match kernel {
        // SAFETY: `available` lists Avx512 only on a CPU with AVX-512 F/BW/VL, AVX2,
        // FMA and F16C; the shapes and every slot the block table names were checked
        // above.
        #[cfg(target_arch = "x86_64")]
        AttnKernel::Avx512 if hd.is_multiple_of(16) => unsafe {
            super::x86_attention_zmm::attend(q, ctx, kv, hd, rule, out, scratch)
        },
        // SAFETY: as above, every x86 kernel listed implies AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        AttnKernel::Avx2 | AttnKernel::Avx512 if hd.is_multiple_of(8) => unsafe {
            super::x86_attention::attend(q, ctx, kv, hd, rule, out, scratch)
        },
        _ => drive::<Scalar>(q, ctx, kv, hd, rule, out, scratch),
    }
}

/// The per-chunk operations a kernel provides, over all `g = q.len() / hd` query heads
/// of the group at once (each key and value row is read once for all of them). Key `j`
/// of the chunk is `k[offs[j]..][..hd]` (value: `v[offs[j]..][..hd]`), `j < offs.len()
/// <= CHUNK`; scores and probabilities are `[g, CHUNK]`. Callers guarantee the bounds
/// (checked by `attend_with`); x86 implementations need AVX2, FMA and F16C.
pub(super) trait Kern {
    /// `s[h * CHUNK + j] = dot(q_h, key j) * scale`.
    unsafe fn scores(q: &[f32], k: &[f16], offs: &[usize], hd: usize, scale: f32, s: &mut [f32]);
    /// The largest of the [`CHUNK`] values of `s` (exact; callers pad unused slots with
    /// `-inf`).
    unsafe fn max(s: &[f32]) -> f32;
    /// `s[j] = exp(s[j] - max)` for `j < n`; `s` holds [`CHUNK`] values.
    unsafe fn exp_shift(s: &mut [f32], n: usize, max: f32);
    /// `o_h = o_h * alpha[h] + sum_j p[h * CHUNK + j] * value j`, `o` being `[g, hd]`.
    unsafe fn pv(p: &[f32], v: &[f16], offs: &[usize], alpha: &[f32], o: &mut [f32]);
}

/// The shared driver: per chunk of keys, every head's scores, then its running max
/// `m`, sum `l` and output `o` (flash-attention style). Chunks stay aligned to
/// positions when a window skips the first keys (those before `first` in the first
/// chunk are masked), and the soft-cap is applied by the same scalar code for every
/// kernel, so SIMD and scalar results stay identical.
#[inline(always)]
pub(super) fn drive<K: Kern>(
    q: &[f32],
    ctx: usize,
    kv: &KvHead<'_>,
    hd: usize,
    rule: ScoreRule,
    out: &mut [f32],
    sc: &mut AttnScratch,
) {
    let group = q.len() / hd;
    let scale = rule.scale;
    let first = rule.first_key(ctx);
    out.fill(0.0);
    sc.m[..group].fill(f32::NEG_INFINITY);
    sc.l[..group].fill(0.0);
    let mut offs = [0usize; CHUNK];
    for c0 in (first - first % CHUNK..ctx).step_by(CHUNK) {
        let n = CHUNK.min(ctx - c0);
        let (mut blk, mut off) = (c0 / kv.block_size, c0 % kv.block_size);
        for o in &mut offs[..n] {
            let slot = kv.block_table[blk] as usize * kv.block_size + off;
            *o = slot * kv.slot_stride + kv.head_offset;
            off += 1;
            if off == kv.block_size {
                (blk, off) = (blk + 1, 0);
            }
        }
        let s = &mut sc.s[..group * CHUNK];
        if n < CHUNK {
            for sh in s.chunks_exact_mut(CHUNK) {
                sh[n..].fill(f32::NEG_INFINITY);
            }
        }
        // SAFETY: every offset names a checked slot of the cache; s is [group, CHUNK].
        unsafe { K::scores(q, kv.k, &offs[..n], hd, scale, s) };
        post_scores(s, n, c0, first, rule.softcap);
        for h in 0..group {
            let sh = &mut s[h * CHUNK..(h + 1) * CHUNK];
            // SAFETY: sh holds CHUNK values.
            let cmax = unsafe { K::max(sh) };
            let m_old = sc.m[h];
            let m_new = m_old.max(cmax);
            let alpha = if m_old == f32::NEG_INFINITY {
                0.0
            } else {
                exp_scalar(m_old - m_new)
            };
            // SAFETY: sh holds CHUNK values.
            unsafe { K::exp_shift(sh, n, m_new) };
            // Masked keys weigh exactly nothing (the polynomial exp of -inf is tiny,
            // not zero).
            sh[..first.saturating_sub(c0)].fill(0.0);
            let mut sum = 0f32;
            for &p in &sh[..n] {
                sum += p;
            }
            sc.l[h] = sc.l[h] * alpha + sum;
            sc.m[h] = m_new;
            sc.alpha[h] = alpha;
        }
        // SAFETY: as above; out is [group, hd].
        unsafe { K::pv(s, kv.v, &offs[..n], &sc.alpha[..group], out) };
    }
    for h in 0..group {
        let inv = 1.0 / sc.l[h];
        for o in &mut out[h * hd..(h + 1) * hd] {
            *o *= inv;
        }
    }
}

/// Soft-caps the chunk's `n` scores (per head rows of [`CHUNK`]) and masks keys before
/// `first` (the chunk starts at position `c0`).
#[inline(always)]
fn post_scores(s: &mut [f32], n: usize, c0: usize, first: usize, softcap: Option<f32>) {
    if let Some(cap) = softcap {
        let inv = 1.0 / cap;
        for sh in s.chunks_exact_mut(CHUNK) {
            for v in &mut sh[..n] {
                *v = cap * (*v * inv).tanh();
            }
        }
    }
    if first > c0 {
        for sh in s.chunks_exact_mut(CHUNK) {
            sh[..first - c0].fill(f32::NEG_INFINITY);
        }
    }
}

/// The portable kernel.
pub(super) struct Scalar;

impl Kern for Scalar {
    unsafe fn scores(q: &[f32], k: &[f16], offs: &[usize], hd: usize, scale: f32, s: &mut [f32]) {
        for (j, &at) in offs.iter().enumerate() {
            for (h, qh) in q.chunks_exact(hd).enumerate() {
                s[h * CHUNK + j] = dot_lanes(qh, &k[at..at + hd]) * scale;
            }
        }
    }

    unsafe fn max(s: &[f32]) -> f32 {
        s[..CHUNK].iter().copied().fold(f32::NEG_INFINITY, f32::max)
    }

    unsafe fn exp_shift(s: &mut [f32], n: usize, max: f32) {
        for v in &mut s[..n] {
            *v = exp_scalar(*v - max);
        }
    }

    unsafe fn pv(p: &[f32], v: &[f16], offs: &[usize], alpha: &[f32], o: &mut [f32]) {
        let hd = o.len() / alpha.len();
        for (h, oh) in o.chunks_exact_mut(hd).enumerate() {
            for (d, od) in oh.iter_mut().enumerate() {
                let mut acc = *od * alpha[h];
                for (j, &at) in offs.iter().enumerate() {
                    acc = p[h * CHUNK + j].mul_add(v[at + d].to_f32(), acc);
                }
                *od = acc;
            }
        }
    }
}

/// Dot product as eight f32 lanes (`lane l` takes elements `l, l + 8, ...`) with fused
/// multiply-adds, reduced in the AVX2 kernels' order; past the last multiple of 8 the
/// tail is added in order.
fn dot_lanes(a: &[f32], b: &[f16]) -> f32 {
    let mut acc = [0f32; 8];
    let full = a.len() - a.len() % 8;
    for c in (0..full).step_by(8) {
        for l in 0..8 {
            acc[l] = a[c + l].mul_add(b[c + l].to_f32(), acc[l]);
        }
    }
    let mut s = hsum8(&acc);
    for i in full..a.len() {
        s = a[i].mul_add(b[i].to_f32(), s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::gguf_writer::signed_units;

    /// Softmax attention in f64 over contiguous keys, the plain reference.
    fn reference(q: &[f32], k: &[f32], v: &[f32], hd: usize, scale: f32) -> Vec<f32> {
        let ctx = k.len() / hd;
        let mut out = Vec::new();
        for qh in q.chunks(hd) {
            let s: Vec<f64> = (0..ctx)
                .map(|j| {
                    let kj = &k[j * hd..(j + 1) * hd];
                    qh.iter()
                        .zip(kj)
                        .map(|(a, b)| *a as f64 * *b as f64)
                        .sum::<f64>()
                        * scale as f64
                })
                .collect();
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
            let sum: f64 = e.iter().sum();
            for d in 0..hd {
                let o: f64 = (0..ctx).map(|j| e[j] * v[j * hd + d] as f64).sum();
                out.push((o / sum) as f32);
            }
        }
        out
    }

    /// A random paged cache of `slots` slots with `n_kv` heads of width `hd`.
    fn cache(slots: usize, n_kv: usize, hd: usize, seed: u64) -> (Vec<f16>, Vec<f16>) {
        let f = |s| {
            signed_units(slots * n_kv * hd, s)
                .iter()
                .map(|&x| f16::from_f32(2.0 * x))
                .collect::<Vec<_>>()
        };
        (f(seed), f(seed + 1))
    }

    /// The scalar kernel against the f64 reference on several head widths, group sizes,
    /// block sizes and context lengths (ragged chunks), and every SIMD kernel this CPU
    /// has equal to it bitwise.
    #[test]
    fn matches_reference_and_simd_equals_scalar() {
        for &(hd, group, bs, n_kv) in &[
            (64, 3, 16, 3),
            (128, 1, 16, 2),
            (8, 4, 5, 1),
            (12, 2, 7, 2),
            (80, 5, 16, 1),
            (32, 2, 3, 2),
        ] {
            let blocks = 40;
            let (k, v) = cache(blocks * bs, n_kv, hd, hd as u64);
            // A scrambled block table.
            let table: Vec<u32> = (0..blocks as u32)
                .map(|i| (i * 17 + 3) % blocks as u32)
                .collect();
            for ctx in [1, 15, 16, 17, 100, 33 * 5] {
                if ctx > blocks * bs {
                    continue;
                }
                let kvh = n_kv - 1;
                let kv = KvHead {
                    k: &k,
                    v: &v,
                    block_table: &table,
                    block_size: bs,
                    slot_stride: n_kv * hd,
                    head_offset: kvh * hd,
                };
                let gather = |src: &[f16]| -> Vec<f32> {
                    (0..ctx)
                        .flat_map(|p| {
                            let slot = table[p / bs] as usize * bs + p % bs;
                            let at = slot * n_kv * hd + kvh * hd;
                            src[at..at + hd]
                                .iter()
                                .map(|x| x.to_f32())
                                .collect::<Vec<_>>()
                        })
                        .collect()
                };
                let q: Vec<f32> = signed_units(group * hd, ctx as u64)
                    .iter()
                    .map(|x| 3.0 * x)
                    .collect();
                let scale = 1.0 / (hd as f32).sqrt();
                let want = reference(&q, &gather(&k), &gather(&v), hd, scale);
                let mut sc = AttnScratch::new(group);
                let (mut fast, mut slow) = (vec![0f32; q.len()], vec![0f32; q.len()]);
                let rule = ScoreRule::plain(scale);
                attend_scalar(&q, ctx, &kv, hd, rule, &mut slow, &mut sc);
                for (i, (&f, &w)) in slow.iter().zip(&want).enumerate() {
                    assert!((f - w).abs() < 2e-5, "hd {hd} ctx {ctx} [{i}]: {f} vs {w}");
                }
                // Plain, soft-capped and sliding-window scores (a window that starts
                // inside a chunk masks its first keys).
                let capped = ScoreRule {
                    softcap: Some(2.5),
                    ..rule
                };
                let windowed = ScoreRule {
                    window: Some(21),
                    ..rule
                };
                for r in [rule, capped, windowed] {
                    attend_scalar(&q, ctx, &kv, hd, r, &mut slow, &mut sc);
                    for kernel in AttnKernel::available() {
                        attend_with(kernel, &q, ctx, &kv, hd, r, &mut fast, &mut sc);
                        let same = fast
                            .iter()
                            .zip(&slow)
                            .all(|(a, b)| a.to_bits() == b.to_bits());
                        assert!(
                            same,
                            "{kernel:?} {r:?} hd {hd} group {group} ctx {ctx}: != scalar"
                        );
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "outside the cache")]
    fn rejects_a_block_table_outside_the_cache() {
        let (k, v) = cache(32, 1, 8, 1);
        let kv = KvHead {
            k: &k,
            v: &v,
            block_table: &[0, 9],
            block_size: 16,
            slot_stride: 8,
            head_offset: 0,
        };
        let mut out = [0f32; 8];
        attend(
            &[0.5; 8],
            20,
            &kv,
            8,
            ScoreRule::plain(1.0),
            &mut out,
            &mut AttnScratch::new(1),
        );
    }
}
