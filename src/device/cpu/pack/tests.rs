//! The straight Q4_K / Q6_K repacking writes the very bytes of the general
//! decode-then-put path, on random blocks (every bit pattern of values and scales).

use half::f16;

use crate::device::cpu::panels::{Panels, Scales};
use crate::device::cpu::qmatmul::QKind;

/// `len` pseudo-random bytes (SplitMix64).
fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut s = seed;
    (0..len)
        .map(|_| {
            s = s.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            (z ^ (z >> 31)) as u8
        })
        .collect()
}

/// Random blocks of `kind` whose f16 fields (at `halves` within a block) are finite.
fn blocks(kind: QKind, n: usize, k: usize, halves: &[usize], seed: u64) -> Vec<u8> {
    let mut raw = bytes(n * kind.row_bytes(k), seed);
    let size = kind.block().1;
    for (b, blk) in raw.chunks_exact_mut(size).enumerate() {
        for (h, &at) in halves.iter().enumerate() {
            let v = f16::from_f32(((b * 7 + h * 3) % 29) as f32 / 64.0 - 0.2);
            blk[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
    }
    raw
}

fn scale_bits(s: &Scales) -> (Vec<u32>, Vec<u16>) {
    match s {
        Scales::F32(v) => (v.iter().map(|x| x.to_bits()).collect(), vec![]),
        Scales::F16(v) => (v.iter().map(|x| u32::from(x.to_bits())).collect(), vec![]),
        Scales::Sub { q, sup, .. } => (
            q.iter().map(|&x| x as u8 as u32).collect(),
            sup.iter().map(|x| x.to_bits()).collect(),
        ),
    }
}

fn same(kind: QKind, halves: &[usize]) {
    for (seed, (n, k)) in [(37, 256), (8, 512), (130, 768), (1, 256)]
        .into_iter()
        .enumerate()
    {
        let raw = blocks(kind, n, k, halves, seed as u64);
        let rows: Vec<&[u8]> = raw.chunks_exact(kind.row_bytes(k)).collect();
        let fast = Panels::build(kind, n, k, &rows, true);
        let general = Panels::build(kind, n, k, &rows, false);
        assert!(fast.qs == general.qs, "{kind:?} ({n}, {k}): values differ");
        assert_eq!(
            scale_bits(&fast.d),
            scale_bits(&general.d),
            "{kind:?} scales"
        );
        assert_eq!(
            scale_bits(&fast.m),
            scale_bits(&general.m),
            "{kind:?} offsets"
        );
        assert!(!scale_bits(&fast.d).1.is_empty(), "K-quant factors kept");
    }
}

#[test]
fn q4k_straight_repack_matches_the_general_one() {
    same(QKind::Q4K, &[0, 2]);
}

#[test]
fn q6k_straight_repack_matches_the_general_one() {
    same(QKind::Q6K, &[208]);
}
