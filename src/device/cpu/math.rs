//! Scalar math shared by the portable kernels, written to reproduce the AVX2 kernels
//! (`x86_math`) bit for bit: a polynomial `exp` and the eight-lane horizontal sum.

/// Clamp bounds of the `exp` argument: the result stays a finite normal or subnormal.
pub(crate) const EXP_LO: f32 = -87.3;
pub(crate) const EXP_HI: f32 = 88.3;
pub(crate) const LOG2E: f32 = std::f32::consts::LOG2_E;
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;
/// Cephes `expf` polynomial coefficients, highest degree first.
pub(crate) const EXP_P: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// `e^x` to about 2 ulp (Cephes' range reduction and polynomial), exactly as the AVX2
/// kernel computes each lane.
pub(crate) fn exp_scalar(x: f32) -> f32 {
    let x = EXP_LO.max(x.min(EXP_HI));
    let n = (x * LOG2E).round_ties_even();
    let r = n.mul_add(-LN2_HI, x);
    let r = n.mul_add(-LN2_LO, r);
    let mut p = EXP_P[0];
    for &c in &EXP_P[1..] {
        p = p.mul_add(r, c);
    }
    let y = p.mul_add(r * r, r) + 1.0;
    y * f32::from_bits(((n as i32 + 127) as u32) << 23)
}

/// The AVX2 kernels' horizontal sum order: halves, then pairs, then the last two.
pub(crate) fn hsum8(v: &[f32; 8]) -> f32 {
    let s = [v[0] + v[4], v[1] + v[5], v[2] + v[6], v[3] + v[7]];
    (s[0] + s[2]) + (s[1] + s[3])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_close_to_std() {
        for i in -1990..=2000 {
            let x = i as f32 * 0.0437;
            let (got, want) = (exp_scalar(x), x.exp());
            assert!(
                ((got - want) / want).abs() < 3e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert!(exp_scalar(-1000.0) < 1e-37 && exp_scalar(-1000.0) >= 0.0);
        assert!(exp_scalar(1000.0).is_finite());
    }
}
