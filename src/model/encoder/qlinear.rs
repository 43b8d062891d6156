//! Reduced-precision linear layers of the encoder, quantized once at load:
//!
//! - **int8**: weights per output channel (`w[k, c] ~ sw[c] * qw[k, c]`, `qw` in
//!   -127..=127) times activations quantized per row at run time (`x[r, k] ~ sa[r] *
//!   qa[r, k]`), integer dot products (`vpdpbusd`), one f32 scale per output:
//!   `y = (sa[r] * sw[c]) * dot(qa, qw) + b[c]`. `vpdpbusd` multiplies unsigned by
//!   signed bytes, so activations are stored as `qa + 128` and each output's
//!   accumulator starts at `-128 * sum_k qw[k, c]`, which cancels the offset exactly.
//! - **int16**: weights per output channel to +-[`W16_MAX`] (12 bits) and activations
//!   per row to +-[`A16_MAX`] (14 bits), both held as int16 (`vpmaddwd` on AVX2). Each
//!   block of [`K_BLOCK`] inputs is an exact integer dot product (the ranges are chosen
//!   so it cannot leave i32); the blocks' sums are added in f32, then `y = (sa[r] *
//!   sw[c]) * sum + b[c]`. Per-row 8-bit activations lose the channels that sit beside
//!   the outlier channels of BERT-style hidden states, and 8-bit weights cost a 0.2-0.5
//!   logit error on the fixture cross-encoders; 14 and 12 bits keep both.
//! - **bf16**: weights and activations rounded to bfloat16 (nearest even), products
//!   summed in f32 (`vdpbf16ps`).
//!
//! Weights are packed in panels of [`NR`] outputs: for int8 each step of 4 inputs is
//! 256 contiguous bytes (4 blocks of 16 outputs x 4 inputs); for int16 and bf16 each
//! step of 2 inputs is 4 blocks of 16 outputs x 2 values. A kernel computes a tile of
//! [`MR`] rows x [`NR`] outputs; rows are split over the rayon pool in tasks of at most
//! [`ROWS_PER_TASK`] (fewer in a small batch, so every thread gets work).
//!
//! Invariants: quantizing activations is the same scalar code for every kernel, and
//! a tile's int8 result is computed in exact integer arithmetic followed by the same
//! two f32 operations, so every int8 kernel is bit-identical to [`Kernel::Int8Scalar`]
//! and every int16 kernel to [`Kernel::Int16Scalar`];
//! bf16 kernels match [`Kernel::Bf16Scalar`] up to f32 summation order. A row's output
//! depends only on that row.

use half::bf16;
use rayon::prelude::*;

use crate::device::cpu::isa::CpuFeatures;

/// Outputs per panel (4 blocks of 16).
pub const NR: usize = 64;
/// Rows per tile.
pub const MR: usize = 6;
/// Most rows per parallel task (a multiple of [`MR`]).
pub const ROWS_PER_TASK: usize = 8 * MR;
/// Largest int16-format weight magnitude (12 bits).
pub const W16_MAX: i32 = 2047;
/// Largest int16-format activation magnitude (14 bits).
pub const A16_MAX: i32 = 16383;
/// Inputs per exact integer block of the int16 format (a multiple of 2).
pub const K_BLOCK: usize = 64;
const _: () = assert!(K_BLOCK as i64 * W16_MAX as i64 * A16_MAX as i64 <= i32::MAX as i64);

/// Which tile kernel a reduced-precision layer runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable int8 (the reference).
    Int8Scalar,
    /// 512-bit `vpdpbusd` (AVX-512 F/BW/VL + VNNI).
    Int8Avx512Vnni,
    /// 256-bit `vpdpbusd` (AVX2 + AVX-VNNI).
    Int8AvxVnni,
    /// Portable int16 weights and activations (the reference).
    Int16Scalar,
    /// AVX2 `vpmaddwd` (12-bit weights, 14-bit activations, both int16).
    Int16Avx2,
    /// 512-bit `vpdpwssd` (AVX-512 F/BW/VL + VNNI), same format.
    Int16Avx512Vnni,
    /// Portable bf16 (the reference).
    Bf16Scalar,
    /// `vdpbf16ps` (AVX-512 F/BW/VL + BF16).
    Bf16Avx512,
    /// AMX `tdpbf16ps` on 16-row tiles (AMX-BF16 granted, plus AVX-512 BF16 for
    /// layers whose input width is not a multiple of 32).
    Bf16Amx,
}

impl Kernel {
    /// The fastest int8 kernel `f` allows, if any is faster than f32.
    pub fn best_int8(f: &CpuFeatures) -> Option<Kernel> {
        if f.avx512_base() && f.avx512vnni {
            Some(Kernel::Int8Avx512Vnni)
        } else if f.avx2 && f.avxvnni {
            Some(Kernel::Int8AvxVnni)
        } else {
            None
        }
    }

    /// The fastest int16 kernel `f` allows, if any.
    pub fn best_int16(f: &CpuFeatures) -> Option<Kernel> {
        if f.avx512_base() && f.avx512vnni {
            Some(Kernel::Int16Avx512Vnni)
        } else {
            f.avx2.then_some(Kernel::Int16Avx2)
        }
    }

    /// The fastest bf16 kernel `f` allows, if any is faster than f32.
    pub fn best_bf16(f: &CpuFeatures) -> Option<Kernel> {
        if !(f.avx512_base() && f.avx512bf16) {
            None
        } else if f.amx_bf16 {
            Some(Kernel::Bf16Amx)
        } else {
            Some(Kernel::Bf16Avx512)
        }
    }

    /// Every kernel `f` can run (the scalar ones always).
    pub fn available(f: &CpuFeatures) -> Vec<Kernel> {
        let mut v = vec![Kernel::Int8Scalar, Kernel::Int16Scalar, Kernel::Bf16Scalar];
        if f.avx512_base() && f.avx512vnni {
            v.push(Kernel::Int8Avx512Vnni);
        }
        if f.avx2 && f.avxvnni {
            v.push(Kernel::Int8AvxVnni);
        }
        if f.avx2 {
            v.push(Kernel::Int16Avx2);
        }
        if f.avx512_base() && f.avx512vnni {
            v.push(Kernel::Int16Avx512Vnni);
        }
        if f.avx512_base() && f.avx512bf16 {
            v.push(Kernel::Bf16Avx512);
            if f.amx_bf16 {
                v.push(Kernel::Bf16Amx);
            }
        }
        v
    }

    /// Whether it runs int8 weights against per-row int8 activations (the format that
    /// misses the accuracy gate).
    pub fn is_int8(self) -> bool {
        self.format() == Format::Int8
    }

    /// The weight and activation format it runs.
    pub fn format(self) -> Format {
        match self {
            Kernel::Int8Scalar | Kernel::Int8Avx512Vnni | Kernel::Int8AvxVnni => Format::Int8,
            Kernel::Int16Scalar | Kernel::Int16Avx2 | Kernel::Int16Avx512Vnni => Format::Int16,
            Kernel::Bf16Scalar | Kernel::Bf16Avx512 | Kernel::Bf16Amx => Format::Bf16,
        }
    }

    /// The portable kernel of the same format (the reference the others are held to).
    pub fn reference(self) -> Kernel {
        match self.format() {
            Format::Int8 => Kernel::Int8Scalar,
            Format::Int16 => Kernel::Int16Scalar,
            Format::Bf16 => Kernel::Bf16Scalar,
        }
    }

    /// Whether its results are bit-identical to its reference's (the integer formats;
    /// bf16 kernels sum in another order).
    pub fn bit_identical_to_reference(self) -> bool {
        self.format() != Format::Bf16
    }
}

/// How a reduced-precision layer stores weights and activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Per-channel int8 weights, per-row int8 activations.
    Int8,
    /// Per-channel 12-bit weights, per-row 14-bit activations, both int16.
    Int16,
    /// bf16 weights and activations.
    Bf16,
}

/// A linear layer's weights in a reduced precision, with its bias.
pub struct QLinear {
    kernel: Kernel,
    /// Packed weights: int8 bytes, int16 values or bf16 bit patterns, by `kernel`.
    packed: Packed,
    /// Per-output scale (int8, int16; padded to `np`).
    w_scale: Vec<f32>,
    /// Per-output `-128 * sum_k qw[k, c]` (int8; padded to `np`).
    comp: Vec<i32>,
    /// Bias padded to `np`.
    bias: Vec<f32>,
    k: usize,
    kp: usize,
    n: usize,
    np: usize,
}

enum Packed {
    I8(Vec<i8>),
    I16(Vec<i16>),
    Bf16(Vec<u16>),
}

/// One tile's inputs: `MR` activation rows, one weight panel, where to write.
pub(super) struct Tile<'a> {
    /// int8: `MR` rows of `kp` bytes (`qa + 128`).
    pub a8: &'a [u8],
    /// bf16: `MR` rows of `kp` bf16 bit patterns.
    pub a16: &'a [u16],
    /// int16: `MR` rows of `kp` values.
    pub ai16: &'a [i16],
    /// Per-row activation scales (int8, int16), `MR` of them.
    pub a_scale: &'a [f32],
    /// The panel's int8 weights (`kp * NR`).
    pub w8: &'a [i8],
    /// The panel's int16 weights (`kp * NR`).
    pub wi16: &'a [i16],
    /// The panel's bf16 weights (`kp * NR`).
    pub w16: &'a [u16],
    /// The panel's output scales, compensations and biases (`NR` each).
    pub w_scale: &'a [f32],
    pub comp: &'a [i32],
    pub bias: &'a [f32],
    /// Padded input width (a multiple of 4).
    pub kp: usize,
    /// Rows and outputs to write (at most `MR` and `NR`).
    pub rows: usize,
    pub cols: usize,
    /// Output row stride.
    pub stride: usize,
}

impl QLinear {
    /// Quantizes a weight stored `[k, n]` row-major (as `ops::Dense` keeps it) for
    /// `kernel`, with its bias.
    pub fn new(w: &[f32], bias: &[f32], k: usize, n: usize, kernel: Kernel) -> Self {
        assert_eq!(w.len(), k * n, "weight shape");
        assert_eq!(bias.len(), n, "bias shape");
        let kp = k.div_ceil(4) * 4;
        let np = n.div_ceil(NR) * NR;
        let mut padded_bias = bias.to_vec();
        padded_bias.resize(np, 0.0);
        let mut q = Self {
            kernel,
            packed: Packed::I8(Vec::new()),
            w_scale: vec![0.0; np],
            comp: vec![0; np],
            bias: padded_bias,
            k,
            kp,
            n,
            np,
        };
        match kernel.format() {
            Format::Int8 => {
                let mut packed = vec![0i8; kp * np];
                let sums =
                    q.quantize_channels(w, 127, |kk, c, v| packed[at(kp, kk, c, 4)] = v as i8);
                q.comp = sums.iter().map(|s| -128 * s).collect();
                q.packed = Packed::I8(packed);
            }
            Format::Int16 => {
                let mut packed = vec![0i16; kp * np];
                q.quantize_channels(w, W16_MAX, |kk, c, v| packed[at(kp, kk, c, 2)] = v as i16);
                q.packed = Packed::I16(packed);
            }
            Format::Bf16 => q.pack_bf16(w),
        }
        q
    }

    /// Symmetric per-output quantization of `w` `[k, n]` to `-qmax..=qmax`: sets the
    /// output scales, hands each quantized weight to `put(kk, c, q)`, returns each
    /// output's sum of quantized weights (padded to `np`).
    fn quantize_channels(
        &mut self,
        w: &[f32],
        qmax: i32,
        mut put: impl FnMut(usize, usize, i32),
    ) -> Vec<i32> {
        let (k, n) = (self.k, self.n);
        let qm = qmax as f32;
        let mut sums = vec![0i32; self.np];
        for c in 0..n {
            let amax = (0..k).map(|kk| w[kk * n + c].abs()).fold(0.0f32, f32::max);
            let inv = if amax > 0.0 { qm / amax } else { 0.0 };
            self.w_scale[c] = amax / qm;
            for kk in 0..k {
                let v = (w[kk * n + c] * inv).round().clamp(-qm, qm) as i32;
                sums[c] += v;
                put(kk, c, v);
            }
        }
        sums
    }

    fn pack_bf16(&mut self, w: &[f32]) {
        let (k, n) = (self.k, self.n);
        let mut packed = vec![0u16; self.kp * self.np];
        for kk in 0..k {
            for c in 0..n {
                packed[at(self.kp, kk, c, 2)] = bf16::from_f32(w[kk * n + c]).to_bits();
            }
        }
        self.packed = Packed::Bf16(packed);
    }

    /// The kernel this layer runs.
    pub fn kernel(&self) -> Kernel {
        self.kernel
    }

    /// Output width.
    pub fn out(&self) -> usize {
        self.n
    }

    /// `x` `[rows, k]` -> `[rows, n]`, bias added, with this layer's kernel.
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        self.forward_with(x, self.kernel)
    }

    /// Like `forward` with another kernel of the same weight format (the tests run
    /// every kernel the machine has on one packing). Panics if `kernel` is of the
    /// other format or needs a feature this CPU lacks.
    pub fn forward_with(&self, x: &[f32], kernel: Kernel) -> Vec<f32> {
        assert_eq!(kernel.format(), self.kernel.format(), "weight format");
        assert!(
            Kernel::available(CpuFeatures::hardware()).contains(&kernel),
            "{kernel:?} needs a feature this CPU lacks"
        );
        let rows = x.len() / self.k.max(1);
        let mut y = vec![0.0f32; rows * self.n];
        if rows == 0 {
            return y;
        }
        #[cfg(target_arch = "x86_64")]
        if kernel == Kernel::Bf16Amx {
            if self.kp.is_multiple_of(super::amx::K_STEP) {
                self.forward_amx(x, rows, &mut y);
                return y;
            }
            return self.forward_with(x, Kernel::Bf16Avx512);
        }
        let padded_rows = rows.div_ceil(MR) * MR;
        let (k, kp) = (self.k, self.kp);
        let mut acts = Acts::default();
        match kernel.format() {
            Format::Int8 => (acts.a8, acts.scale) = quantize_rows(x, k, kp, padded_rows),
            Format::Int16 => (acts.ai16, acts.scale) = quantize_rows_i16(x, k, kp, padded_rows),
            Format::Bf16 => acts.a16 = bf16_rows(x, k, kp, padded_rows),
        }
        let n = self.n;
        let per_task = rows_per_task(rows);
        y.par_chunks_mut(per_task * n)
            .enumerate()
            .for_each(|(task, chunk)| {
                let r0 = task * per_task;
                let task_rows = chunk.len() / n;
                for p in 0..self.np / NR {
                    for t in (0..task_rows).step_by(MR) {
                        let r = r0 + t;
                        let tile = self.tile(&acts, r, p, (task_rows - t).min(MR));
                        let out = &mut chunk[t * n + p * NR..];
                        run_tile(kernel, &tile, out);
                    }
                }
            });
        y
    }

    /// [`Self::forward_with`] on AMX: tasks of 32 rows, each 16-row tile against every
    /// panel (`amx::panel_rows`).
    #[cfg(target_arch = "x86_64")]
    fn forward_amx(&self, x: &[f32], rows: usize, y: &mut [f32]) {
        use super::amx::ROWS;
        let Packed::Bf16(w) = &self.packed else {
            unreachable!("AMX runs bf16 weights")
        };
        let a16 = bf16_rows(x, self.k, self.kp, rows.div_ceil(ROWS) * ROWS);
        let n = self.n;
        y.par_chunks_mut(2 * ROWS * n)
            .enumerate()
            .for_each(|(task, chunk)| {
                let task_rows = chunk.len() / n;
                for t in (0..task_rows).step_by(ROWS) {
                    let r0 = task * 2 * ROWS + t;
                    let tile_rows = (task_rows - t).min(ROWS);
                    // SAFETY: `forward_with` checked that the CPU has the kernel (AMX
                    // granted and proven); `a16` holds whole 16-row tiles, `kp` is a
                    // multiple of 32 (checked by the caller), `w` and `bias` hold every
                    // padded panel, and `chunk` from row t holds `tile_rows` rows of n.
                    unsafe {
                        super::amx::panel_rows(
                            &a16,
                            r0,
                            self.kp,
                            w,
                            &self.bias,
                            n,
                            tile_rows,
                            &mut chunk[t * n..],
                            n,
                        )
                    };
                }
            });
    }

    fn tile<'a>(&'a self, acts: &'a Acts, r: usize, p: usize, rows: usize) -> Tile<'a> {
        let kp = self.kp;
        let panel = p * kp * NR..(p + 1) * kp * NR;
        let (mut w8, mut wi16, mut w16): (&[i8], &[i16], &[u16]) = (&[], &[], &[]);
        match &self.packed {
            Packed::I8(v) => w8 = &v[panel],
            Packed::I16(v) => wi16 = &v[panel],
            Packed::Bf16(v) => w16 = &v[panel],
        }
        let cols = (self.n - p * NR).min(NR);
        let lanes = p * NR..(p + 1) * NR;
        Tile {
            a8: acts.a8.get(r * kp..(r + MR) * kp).unwrap_or(&[]),
            a16: acts.a16.get(r * kp..(r + MR) * kp).unwrap_or(&[]),
            ai16: acts.ai16.get(r * kp..(r + MR) * kp).unwrap_or(&[]),
            a_scale: acts.scale.get(r..r + MR).unwrap_or(&[]),
            w8,
            wi16,
            w16,
            w_scale: &self.w_scale[lanes.clone()],
            comp: &self.comp[lanes.clone()],
            bias: &self.bias[lanes],
            kp,
            rows,
            cols,
            stride: self.n,
        }
    }
}

/// Rows per parallel task for a batch of `rows`: [`ROWS_PER_TASK`], or fewer (a
/// multiple of [`MR`]) so that there are about four tasks per rayon thread.
fn rows_per_task(rows: usize) -> usize {
    let tasks = 4 * rayon::current_num_threads();
    (rows.div_ceil(tasks).div_ceil(MR) * MR).clamp(MR, ROWS_PER_TASK)
}

/// Index of weight `(kk, c)` in a packed buffer of padded input width `kp` with `per`
/// values per 16-lane group (4 for int8, 2 for int16 and bf16).
fn at(kp: usize, kk: usize, c: usize, per: usize) -> usize {
    let (panel, lane) = (c / NR, c % NR);
    panel * kp * NR + (kk / per) * NR * per + lane * per + kk % per
}

/// A batch's activations in the format of the kernel that runs it (the other fields
/// stay empty).
#[derive(Default)]
struct Acts {
    a8: Vec<u8>,
    ai16: Vec<i16>,
    a16: Vec<u16>,
    scale: Vec<f32>,
}

/// Runs one tile, writing `rows x cols` outputs into `out` (row stride `tile.stride`).
fn run_tile(kernel: Kernel, tile: &Tile<'_>, out: &mut [f32]) {
    assert!(
        out.len() >= (tile.rows - 1) * tile.stride + tile.cols,
        "output tile"
    );
    match kernel {
        Kernel::Int8Scalar => int8_tile_scalar(tile, out),
        Kernel::Int16Scalar => int16_tile_scalar(tile, out),
        Kernel::Bf16Scalar => bf16_tile_scalar(tile, out),
        // SAFETY (all five): `forward_with` checked the CPU has the kernel's
        // features; the tile's slices are full (MR rows of kp, one panel) and `out`
        // holds every element the kernel stores (asserted above).
        #[cfg(target_arch = "x86_64")]
        Kernel::Int8Avx512Vnni => unsafe { super::qkernels::int8_tile_avx512(tile, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Int8AvxVnni => unsafe { super::qkernels::int8_tile_avxvnni(tile, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Int16Avx2 => unsafe { super::qkernels::int16_tile_avx2(tile, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Int16Avx512Vnni => unsafe { super::qkernels::int16_tile_avx512(tile, out) },
        #[cfg(target_arch = "x86_64")]
        Kernel::Bf16Avx512 => unsafe { super::qkernels::bf16_tile_avx512(tile, out) },
        Kernel::Bf16Amx => unreachable!("AMX layers run whole tiles (forward_amx)"),
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no x86 kernels off x86-64"),
    }
}

/// Per-row symmetric int8 quantization of `x` `[rows, k]`: `(qa + 128)` bytes, rows
/// padded to `kp` (value 128, i.e. zero) and to `padded_rows` rows, and each row's
/// scale.
pub fn quantize_rows(x: &[f32], k: usize, kp: usize, padded_rows: usize) -> (Vec<u8>, Vec<f32>) {
    quantize_rows_as(x, k, kp, padded_rows, 127, |v| (v + 128) as u8)
}

/// Per-row symmetric quantization of `x` `[rows, k]` to +-[`A16_MAX`] (int16), padded
/// like [`quantize_rows`] (with zeros), and each row's scale.
pub fn quantize_rows_i16(
    x: &[f32],
    k: usize,
    kp: usize,
    padded_rows: usize,
) -> (Vec<i16>, Vec<f32>) {
    quantize_rows_as(x, k, kp, padded_rows, A16_MAX, |v| v as i16)
}

/// Per-row symmetric quantization of `x` `[rows, k]` to integers in `-qmax..=qmax`,
/// each stored as `enc(q)`; rows padded to `kp` and to `padded_rows` with `enc(0)`.
fn quantize_rows_as<T: Copy + Send + Sync>(
    x: &[f32],
    k: usize,
    kp: usize,
    padded_rows: usize,
    qmax: i32,
    enc: impl Fn(i32) -> T + Sync,
) -> (Vec<T>, Vec<f32>) {
    let mut q = vec![enc(0); padded_rows * kp];
    let mut scale = vec![0.0f32; padded_rows];
    let qmax = qmax as f32;
    q.par_chunks_mut(ROWS_PER_TASK * kp)
        .zip(scale.par_chunks_mut(ROWS_PER_TASK))
        .zip(x.par_chunks(ROWS_PER_TASK * k))
        .for_each(|((qc, sc), xc)| {
            for ((qr, s), xr) in qc.chunks_exact_mut(kp).zip(sc).zip(xc.chunks_exact(k)) {
                let amax = xr.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let inv = if amax > 0.0 { qmax / amax } else { 0.0 };
                *s = amax / qmax;
                for (d, &v) in qr.iter_mut().zip(xr) {
                    // Ties to even: one `vroundps` per 8 values where `round` is a call.
                    *d = enc((v * inv).round_ties_even().clamp(-qmax, qmax) as i32);
                }
            }
        });
    (q, scale)
}

/// `x` `[rows, k]` as bf16 bit patterns (nearest even), padded like `quantize_rows`.
pub fn bf16_rows(x: &[f32], k: usize, kp: usize, padded_rows: usize) -> Vec<u16> {
    let mut q = vec![0u16; padded_rows * kp];
    q.par_chunks_mut(ROWS_PER_TASK * kp)
        .zip(x.par_chunks(ROWS_PER_TASK * k))
        .for_each(|(qc, xc)| {
            for (qr, xr) in qc.chunks_exact_mut(kp).zip(xc.chunks_exact(k)) {
                for (d, &v) in qr.iter_mut().zip(xr) {
                    *d = bf16::from_f32(v).to_bits();
                }
            }
        });
    q
}

/// The int8 reference: exact integer dot products, then `(sa * sw) * acc + b`.
fn int8_tile_scalar(t: &Tile<'_>, out: &mut [f32]) {
    for r in 0..t.rows {
        let a = &t.a8[r * t.kp..(r + 1) * t.kp];
        for c in 0..t.cols {
            let mut acc = t.comp[c];
            for (k4, av) in a.chunks_exact(4).enumerate() {
                let w = &t.w8[k4 * NR * 4 + c * 4..][..4];
                acc += (0..4).map(|i| av[i] as i32 * w[i] as i32).sum::<i32>();
            }
            out[r * t.stride + c] = acc as f32 * (t.a_scale[r] * t.w_scale[c]) + t.bias[c];
        }
    }
}

/// The int16 reference: an exact integer dot product per block of [`K_BLOCK`] inputs
/// (pairs of products, as `vpmaddwd` forms them), the blocks summed in f32 in order,
/// then `(sa * sw) * sum + b`.
fn int16_tile_scalar(t: &Tile<'_>, out: &mut [f32]) {
    for r in 0..t.rows {
        let a = &t.ai16[r * t.kp..(r + 1) * t.kp];
        for c in 0..t.cols {
            let mut sum = 0.0f32;
            for (b, block) in a.chunks(K_BLOCK).enumerate() {
                let mut acc = 0i32;
                for (i, av) in block.chunks_exact(2).enumerate() {
                    let k2 = b * K_BLOCK / 2 + i;
                    let w = &t.wi16[k2 * NR * 2 + c * 2..][..2];
                    acc += av[0] as i32 * w[0] as i32 + av[1] as i32 * w[1] as i32;
                }
                sum += acc as f32;
            }
            out[r * t.stride + c] = sum * (t.a_scale[r] * t.w_scale[c]) + t.bias[c];
        }
    }
}

/// The bf16 reference: each pair of products added to the f32 sum, odd one first
/// (the order `vdpbf16ps` documents).
fn bf16_tile_scalar(t: &Tile<'_>, out: &mut [f32]) {
    let f = |b: u16| f32::from_bits((b as u32) << 16);
    for r in 0..t.rows {
        let a = &t.a16[r * t.kp..(r + 1) * t.kp];
        for c in 0..t.cols {
            let mut acc = 0.0f32;
            for (k2, av) in a.chunks_exact(2).enumerate() {
                let w = &t.w16[k2 * NR * 2 + c * 2..][..2];
                acc += f(av[1]) * f(w[1]);
                acc += f(av[0]) * f(w[0]);
            }
            out[r * t.stride + c] = acc + t.bias[c];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::model::gguf_writer::signed_units as data;

    fn f32_ref(x: &[f32], w: &[f32], b: &[f32], k: usize, n: usize) -> Vec<f32> {
        let rows = x.len() / k;
        let mut y = vec![0.0f32; rows * n];
        for r in 0..rows {
            for c in 0..n {
                y[r * n + c] = b[c] + (0..k).map(|i| x[r * k + i] * w[i * n + c]).sum::<f32>();
            }
        }
        y
    }

    /// Input, weight and bias of test case `i`.
    fn case(i: usize, rows: usize, k: usize, n: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        (
            data(rows * k, i as u64),
            data(k * n, 10 + i as u64),
            data(n, 20),
        )
    }

    fn max_diff(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    /// Shapes with ragged rows (not a multiple of MR or ROWS_PER_TASK), ragged outputs
    /// (not a multiple of 16 or NR), ragged inputs (not a multiple of 4) and a ragged
    /// last int16 block (k = 129, 384 + 36).
    const SHAPES: [(usize, usize, usize); 5] = [
        (1, 8, 16),
        (7, 30, 70),
        (53, 384, 200),
        (100, 129, 64),
        (9, 420, 33),
    ];

    #[test]
    fn every_integer_kernel_here_is_bit_identical_to_its_scalar_reference() {
        let have = Kernel::available(CpuFeatures::hardware());
        // Bounds on the error against f32 (int16 is 16x finer than int8).
        for (reference, bound) in [(Kernel::Int8Scalar, 0.02), (Kernel::Int16Scalar, 0.002)] {
            for (i, &(rows, k, n)) in SHAPES.iter().enumerate() {
                let (x, w, b) = case(i, rows, k, n);
                let q = QLinear::new(&w, &b, k, n, reference);
                let want = q.forward_with(&x, reference);
                let err = max_diff(&want, &f32_ref(&x, &w, &b, k, n));
                assert!(
                    err < bound * (k as f32).sqrt(),
                    "{reference:?} {rows}x{k}x{n}: error {err}"
                );
                for &kernel in have.iter().filter(|k| k.format() == reference.format()) {
                    assert_eq!(
                        q.forward_with(&x, kernel),
                        want,
                        "{kernel:?} {rows}x{k}x{n}"
                    );
                }
            }
        }
    }

    #[test]
    fn int16_activations_keep_the_channels_beside_an_outlier() {
        // One input channel 50x the others (as in BERT hidden states): per-row int8
        // activations leave the small channels a few levels, int16 keeps them.
        let (rows, k, n) = (4, 384, 64);
        let mut x = data(rows * k, 7);
        for r in 0..rows {
            x[r * k + 17] = 50.0;
        }
        let (w, b) = (data(k * n, 8), vec![0.0; n]);
        let exact = f32_ref(&x, &w, &b, k, n);
        let err = |kernel| max_diff(&QLinear::new(&w, &b, k, n, kernel).forward(&x), &exact);
        let (e8, e16) = (err(Kernel::Int8Scalar), err(Kernel::Int16Scalar));
        assert!(e16 * 3.0 < e8, "int16 {e16} vs int8 {e8}");
    }

    #[test]
    fn int16_blocks_stay_exact_at_the_largest_values() {
        // Every activation and weight at its limit, same sign and opposite signs: each
        // block's integer sum is at the edge of i32 and must not wrap.
        let (k, n) = (1536, 16);
        let have = Kernel::available(CpuFeatures::hardware());
        for sign in [1.0f32, -1.0] {
            let x = vec![1.0f32; k];
            let w = vec![sign; k * n];
            let q = QLinear::new(&w, &vec![0.0; n], k, n, Kernel::Int16Scalar);
            for &kernel in have.iter().filter(|k| k.format() == Format::Int16) {
                let y = q.forward_with(&x, kernel);
                let want = sign * k as f32;
                assert!(
                    y.iter().all(|&v| (v - want).abs() < 1e-4 * k as f32),
                    "{kernel:?}: {y:?}"
                );
            }
        }
    }

    #[test]
    fn every_bf16_kernel_here_matches_the_scalar_reference() {
        let have = Kernel::available(CpuFeatures::hardware());
        for (i, &(rows, k, n)) in SHAPES.iter().enumerate() {
            let (x, w, b) = case(i, rows, k, n);
            let q = QLinear::new(&w, &b, k, n, Kernel::Bf16Scalar);
            let want = q.forward_with(&x, Kernel::Bf16Scalar);
            let err = max_diff(&want, &f32_ref(&x, &w, &b, k, n));
            assert!(
                err < 0.01 * (k as f32).sqrt(),
                "{rows}x{k}x{n}: bf16 error {err}"
            );
            for &kernel in have.iter().filter(|k| k.format() == Format::Bf16) {
                let got = q.forward_with(&x, kernel);
                for (g, w) in got.iter().zip(&want) {
                    assert!(
                        (g - w).abs() <= 1e-5 * (1.0 + w.abs()) * k as f32,
                        "{kernel:?}: {g} vs {w}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_its_batch() {
        let (k, n) = (96, 80);
        let (x, w, b) = (data(40 * k, 1), data(k * n, 2), data(n, 3));
        for &kernel in &Kernel::available(CpuFeatures::hardware()) {
            let q = QLinear::new(&w, &b, k, n, kernel);
            let all = q.forward(&x);
            let one = q.forward(&x[13 * k..14 * k]);
            assert_eq!(&all[13 * n..14 * n], &one[..], "{kernel:?}");
        }
    }

    #[test]
    fn zero_rows_and_zero_inputs_are_handled() {
        let q = QLinear::new(&[0.0; 32 * 16], &[1.0; 16], 32, 16, Kernel::Int8Scalar);
        assert!(q.forward(&[]).is_empty());
        // An all-zero row quantizes with scale 0 and gives the bias.
        assert_eq!(q.forward(&[0.0; 32]), vec![1.0; 16]);
    }
}
