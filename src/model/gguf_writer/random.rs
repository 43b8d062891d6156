//! Valid random GGML blocks whose dequantized values stay within `±scale`.

use candle_core::quantized::GgmlDType;
use half::{bf16, f16};

/// Keeps generated block scales strictly inside the bound despite f16 rounding.
const MARGIN: f32 = 0.995;

/// A small, fast, deterministic generator (SplitMix64).
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `[-1, 1)`.
    pub(crate) fn signed_unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
    pub(crate) fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for c in &mut chunks {
            c.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// `len` deterministic values uniform in `[-1, 1)` from `seed` (synthetic activations
/// and weights for tests and benchmarks).
pub fn signed_units(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64(seed);
    (0..len).map(|_| rng.signed_unit()).collect()
}

fn h(x: f32) -> [u8; 2] {
    f16::from_f32(x).to_le_bytes()
}

/// Fixed bytes at the start (or, for Q2K, Q3K and Q6K, the end) of every random block:
/// the f16 scale(s) such that the block's values stay within `±scale`.
pub(crate) fn block_header(dtype: GgmlDType, scale: f32) -> Option<Vec<u8>> {
    let s = scale * MARGIN;
    let d_min = |d: f32, center: f32| -> Vec<u8> {
        let d16 = f16::from_f32(d);
        [d16.to_le_bytes(), h(d16.to_f32() * center)].concat()
    };
    Some(match dtype {
        GgmlDType::Q4_0 => h(s / 8.0).to_vec(),
        GgmlDType::Q5_0 => h(s / 16.0).to_vec(),
        GgmlDType::Q8_0 => h(s / 128.0).to_vec(),
        GgmlDType::Q4_1 => [h(2.0 * s / 15.0), h(-s)].concat(),
        GgmlDType::Q5_1 => [h(2.0 * s / 31.0), h(-s)].concat(),
        // y = d*sc*q - dmin*m with m = sc: dmin = d * (q_max / 2) centres q.
        GgmlDType::Q4K => d_min(s / (7.5 * 63.0), 7.5),
        GgmlDType::Q5K => d_min(s / (15.5 * 63.0), 15.5),
        // y = d * sc * (q - 32), sc in 1..=127.
        GgmlDType::Q6K => h(s / (32.0 * 127.0)).to_vec(),
        // y = d*sc*q - dmin*m, q in 0..4, m = sc in 1..=15: dmin = 1.5 d centres q.
        GgmlDType::Q2K => d_min(s / (1.5 * 15.0), 1.5),
        // y = d * (sc - 32) * q with sc - 32 in -32..32 and q in -4..4.
        GgmlDType::Q3K => h(s / (32.0 * 4.0)).to_vec(),
        GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => Vec::new(),
        _ => return None,
    })
}

/// Packs eight 6-bit (scale, min) pairs the way Q4K/Q5K store them in 12 bytes.
fn pack_k_scales(sc: &[u8; 8], m: &[u8; 8]) -> [u8; 12] {
    let mut q = [0u8; 12];
    for j in 0..4 {
        q[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        q[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        q[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
    }
    q
}

/// Fills `buf` (whole blocks of `dtype`) with valid random data bounded by `scale`.
pub(crate) fn fill_random(dtype: GgmlDType, rng: &mut SplitMix64, scale: f32, buf: &mut [u8]) {
    match dtype {
        GgmlDType::F32 => buf.chunks_exact_mut(4).for_each(|c| {
            c.copy_from_slice(&(rng.signed_unit() * scale).to_le_bytes());
        }),
        GgmlDType::F16 => buf.chunks_exact_mut(2).for_each(|c| {
            c.copy_from_slice(&h(rng.signed_unit() * scale * MARGIN));
        }),
        GgmlDType::BF16 => buf.chunks_exact_mut(2).for_each(|c| {
            c.copy_from_slice(&bf16::from_f32(rng.signed_unit() * scale * 0.99).to_le_bytes());
        }),
        _ => {
            rng.fill(buf);
            let header = block_header(dtype, scale).expect("validated dtype");
            for block in buf.chunks_exact_mut(dtype.type_size()) {
                match dtype {
                    GgmlDType::Q4K | GgmlDType::Q5K => {
                        // Random 6-bit sub-block scales in 1..=63, mins equal to scales.
                        let sc: [u8; 8] = std::array::from_fn(|j| 1 + block[4 + j] % 63);
                        block[4..16].copy_from_slice(&pack_k_scales(&sc, &sc));
                        block[..4].copy_from_slice(&header);
                    }
                    GgmlDType::Q6K => {
                        block[192..208].iter_mut().for_each(|b| *b = 1 + *b % 127);
                        block[208..].copy_from_slice(&header);
                    }
                    GgmlDType::Q2K => {
                        // Random 4-bit scales in 1..=15, each min equal to its scale.
                        block[..16]
                            .iter_mut()
                            .for_each(|b| *b = (1 + *b % 15) * 0x11);
                        block[80..].copy_from_slice(&header);
                    }
                    // Any 6-bit scales and 3-bit values are valid.
                    GgmlDType::Q3K => block[108..].copy_from_slice(&header),
                    _ => block[..header.len()].copy_from_slice(&header),
                }
            }
        }
    }
}
