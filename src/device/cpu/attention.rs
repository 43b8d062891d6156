//! Causal attention of one query row's heads (or of several rows of one sequence at
//! consecutive positions, [`attend_rows`]) over one K/V head of the paged f16 cache,
//! with an online (streaming) softmax over chunks of [`CHUNK`] keys.
//!
//! The driver ([`drive`]) is written once and instantiated over a [`Kern`]: the
//! portable [`Scalar`] one, the AVX2 + FMA + F16C one in `x86_attention` and the
//! AVX-512 one in `x86_attention_zmm` ([`AttnKernel`] picks). The scalar kernel
//! emulates the SIMD ones' eight f32 lanes, fused multiply-adds, horizontal sums and
//! polynomial `exp` and the order in which they add a chunk's weights
//! ([`chunk_sum`]: key by key, as one head per lane does), so all give bit-identical
//! results.
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
    attend_rows_with(kernel, q, ctx, 1, kv, hd, rule, out, scratch);
}

/// Query rows of one sequence at consecutive positions a prefill should hand to
/// [`attend_rows`] together for `group` query heads per K/V head: enough that each
/// chunk of keys serves about 32 heads (SmolLM2's 3 per K/V head: 10 rows; a 512-token
/// chunk after 512, attention 122 -> 104-110 ms against 5 rows on Zen 5; 21 rows
/// measured no better, as the rows' own tail chunks grow).
pub fn rows_per_pass(group: usize) -> usize {
    (32 / group.max(1)).clamp(1, 16)
}

/// Attention of `rows` query rows of one sequence at consecutive positions over one
/// K/V head: `q` and `out` are `[rows, group, head_dim]`, row `r` sees `ctx0 + r`
/// positions (its own included). Equal, bitwise, to [`attend`] row by row; faster,
/// because the chunks of keys all rows see are read once for all their heads.
///
/// Panics as [`attend`] does, or if `q` is not `rows` rows.
#[allow(clippy::too_many_arguments)]
pub fn attend_rows(
    q: &[f32],
    ctx0: usize,
    rows: usize,
    kv: &KvHead<'_>,
    head_dim: usize,
    rule: ScoreRule,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    let kernel = AttnKernel::detect();
    attend_rows_with(kernel, q, ctx0, rows, kv, head_dim, rule, out, scratch);
}

/// [`attend_rows`] with `kernel` (as [`attend_with`]).
#[allow(clippy::too_many_arguments)]
pub fn attend_rows_with(
    kernel: AttnKernel,
    q: &[f32],
    ctx0: usize,
    rows: usize,
    kv: &KvHead<'_>,
    hd: usize,
    rule: ScoreRule,
    out: &mut [f32],
    scratch: &mut AttnScratch,
) {
    assert!(hd > 0 && q.len().is_multiple_of(hd) && out.len() == q.len());
    assert!(rows > 0 && ctx0 > 0 && (q.len() / hd).is_multiple_of(rows));
    assert!(kv.head_offset + hd <= kv.slot_stride);
    let ctx = ctx0 + rows - 1;
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
            super::x86_attention_zmm::attend(q, ctx0, rows, kv, hd, rule, out, scratch)
        },
        // SAFETY: as above, every x86 kernel listed implies AVX2, FMA and F16C.
        #[cfg(target_arch = "x86_64")]
        AttnKernel::Avx2 | AttnKernel::Avx512 if hd.is_multiple_of(8) => unsafe {
            super::x86_attention::attend(q, ctx0, rows, kv, hd, rule, out, scratch)
        },
        _ => drive::<Scalar>(q, ctx0, rows, kv, hd, rule, out, scratch),
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
    /// `s[j] = exp(s[j] - max)` for `lo <= j < n` and `s[j] = 0` for `j < lo` (keys
    /// a window masks); returns the sum of those weights as [`chunk_sum`] adds them.
    /// `s` holds [`CHUNK`] values; those from `n` on may be overwritten.
    unsafe fn exp_sum(s: &mut [f32], lo: usize, n: usize, max: f32) -> f32;
    /// `o_h = o_h * alpha[h] + sum_j p[h * CHUNK + j] * value j`, `o` being `[g, hd]`.
    unsafe fn pv(p: &[f32], v: &[f16], offs: &[usize], alpha: &[f32], o: &mut [f32]);

    /// The running softmax update of every head for one chunk: from the scores `s`
    /// (`[g, CHUNK]`, unused slots `-inf`) the new max `m`, the rescale factor `alpha`
    /// of what came before (0 for a head's first chunk), the weights in place of the
    /// scores ([`Self::exp_sum`], keys before `lo` weighing 0) and the sum `l`. Kernels
    /// may do many heads at once but must compute each head exactly so.
    #[inline(always)]
    unsafe fn softmax(
        s: &mut [f32],
        lo: usize,
        n: usize,
        m: &mut [f32],
        l: &mut [f32],
        alpha: &mut [f32],
    ) {
        // SAFETY: forwarded contract.
        unsafe { softmax_per_head::<Self>(s, lo, n, m, l, alpha) }
    }
}

/// [`Kern::softmax`] one head at a time, with the kernel's `max` and `exp_sum`.
///
/// # Safety
/// As [`Kern::softmax`]: `s` holds [`CHUNK`] scores per head of `m`.
#[inline(always)]
pub(super) unsafe fn softmax_per_head<K: Kern + ?Sized>(
    s: &mut [f32],
    lo: usize,
    n: usize,
    m: &mut [f32],
    l: &mut [f32],
    alpha: &mut [f32],
) {
    for (h, sh) in s.chunks_exact_mut(CHUNK).enumerate().take(m.len()) {
        // SAFETY: sh holds CHUNK values.
        let cmax = unsafe { K::max(sh) };
        let m_old = m[h];
        let m_new = m_old.max(cmax);
        alpha[h] = if m_old == f32::NEG_INFINITY {
            0.0
        } else {
            exp_scalar(m_old - m_new)
        };
        // SAFETY: sh holds CHUNK values.
        let sum = unsafe { K::exp_sum(sh, lo, n, m_new) };
        l[h] = l[h] * alpha[h] + sum;
        m[h] = m_new;
    }
}

/// Running softmax state of the heads one [`drive`] call computes: per head the
/// running max `m`, sum `l` and the last chunk's rescale factor `alpha`, and the
/// chunk's scores `s` (`[heads, CHUNK]`).
struct Heads<'s> {
    s: &'s mut [f32],
    m: &'s mut [f32],
    l: &'s mut [f32],
    alpha: &'s mut [f32],
}

impl Heads<'_> {
    /// The state of heads `h0..h1`.
    fn range(&mut self, h0: usize, h1: usize) -> Heads<'_> {
        Heads {
            s: &mut self.s[h0 * CHUNK..h1 * CHUNK],
            m: &mut self.m[h0..h1],
            l: &mut self.l[h0..h1],
            alpha: &mut self.alpha[h0..h1],
        }
    }
}

/// The shared driver over `rows` query rows of one sequence at consecutive positions
/// (`q` is `[rows, group, hd]`; row `r` sees `ctx0 + r` keys): per chunk of keys,
/// every head's scores, then its running max, sum and output (flash-attention style).
///
/// Chunks that every row sees in full (and, under a sliding window, only where no row
/// masks a key) go through the kernel for all rows' heads at once, so each key and
/// value is read and widened once for `rows * group` heads; the rest per row. A head's
/// arithmetic does not depend on which heads it shares a chunk with, so results equal
/// one row at a time, bitwise. Chunks stay aligned to positions when a window skips
/// the first keys (those before `first` in the first chunk are masked), and the
/// soft-cap is applied by the same scalar code for every kernel, so SIMD and scalar
/// results stay identical.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
pub(super) fn drive<K: Kern>(
    q: &[f32],
    ctx0: usize,
    rows: usize,
    kv: &KvHead<'_>,
    hd: usize,
    rule: ScoreRule,
    out: &mut [f32],
    sc: &mut AttnScratch,
) {
    let heads = q.len() / hd;
    let group = heads / rows;
    out.fill(0.0);
    let mut st = Heads {
        s: &mut sc.s[..heads * CHUNK],
        m: &mut sc.m[..heads],
        l: &mut sc.l[..heads],
        alpha: &mut sc.alpha[..heads],
    };
    st.m.fill(f32::NEG_INFINITY);
    st.l.fill(0.0);
    let joint_end = if rows > 1 && rule.first_key(ctx0 + rows - 1) == 0 {
        ctx0 - ctx0 % CHUNK
    } else {
        0
    };
    for c0 in (0..joint_end).step_by(CHUNK) {
        chunk::<K>(
            q,
            kv,
            hd,
            c0,
            CHUNK,
            0,
            rule.softcap,
            rule.scale,
            &mut st,
            out,
        );
    }
    let w = group * hd;
    for r in 0..rows {
        let ctx = ctx0 + r;
        let first = rule.first_key(ctx);
        let (qr, or) = (&q[r * w..(r + 1) * w], &mut out[r * w..(r + 1) * w]);
        let mut sr = st.range(r * group, (r + 1) * group);
        for c0 in (joint_end.max(first - first % CHUNK)..ctx).step_by(CHUNK) {
            let n = CHUNK.min(ctx - c0);
            chunk::<K>(
                qr,
                kv,
                hd,
                c0,
                n,
                first,
                rule.softcap,
                rule.scale,
                &mut sr,
                or,
            );
        }
    }
    for (h, o) in out.chunks_exact_mut(hd).enumerate() {
        let inv = 1.0 / st.l[h];
        for x in o {
            *x *= inv;
        }
    }
}

/// One chunk of `n` keys from position `c0` for every head of `q` (`[heads, hd]`):
/// scores, soft-cap and window mask (keys before `first`), the running softmax update
/// and the P·V accumulation into `out`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn chunk<K: Kern>(
    q: &[f32],
    kv: &KvHead<'_>,
    hd: usize,
    c0: usize,
    n: usize,
    first: usize,
    softcap: Option<f32>,
    scale: f32,
    st: &mut Heads<'_>,
    out: &mut [f32],
) {
    let mut offs = [0usize; CHUNK];
    let (mut blk, mut off) = (c0 / kv.block_size, c0 % kv.block_size);
    for o in &mut offs[..n] {
        let slot = kv.block_table[blk] as usize * kv.block_size + off;
        *o = slot * kv.slot_stride + kv.head_offset;
        off += 1;
        if off == kv.block_size {
            (blk, off) = (blk + 1, 0);
        }
    }
    let s = &mut *st.s;
    if n < CHUNK {
        for sh in s.chunks_exact_mut(CHUNK) {
            sh[n..].fill(f32::NEG_INFINITY);
        }
    }
    // SAFETY: every offset names a checked slot of the cache; s is [heads, CHUNK].
    unsafe { K::scores(q, kv.k, &offs[..n], hd, scale, s) };
    post_scores(s, n, c0, first, softcap);
    // Masked keys weigh exactly nothing (the polynomial exp of -inf is tiny, not zero).
    let lo = first.saturating_sub(c0).min(n);
    // SAFETY: s is [heads, CHUNK], the state has one value per head.
    unsafe { K::softmax(s, lo, n, st.m, st.l, st.alpha) };
    // SAFETY: as above; out is [heads, hd].
    unsafe { K::pv(s, kv.v, &offs[..n], st.alpha, out) };
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

    unsafe fn exp_sum(s: &mut [f32], lo: usize, n: usize, max: f32) -> f32 {
        let mut e = [0f32; CHUNK];
        for (j, v) in s[..n].iter_mut().enumerate() {
            *v = if j < lo { 0.0 } else { exp_scalar(*v - max) };
            e[j] = *v;
        }
        chunk_sum(&e)
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

/// The sum of a chunk's [`CHUNK`] weights as every kernel adds them: in key order,
/// one at a time (masked keys weigh +0, which adds nothing). The kernels that update
/// many heads at once keep this order with one head per lane.
pub(super) fn chunk_sum(e: &[f32; CHUNK]) -> f32 {
    e.iter().fold(0.0, |s, &x| s + x)
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
#[path = "attention_tests.rs"]
mod tests;
