//! Memory bandwidth, the roofline's denominator: bytes read plus bytes written per
//! second by large copies (device-to-device `cuMemcpyDtoD` on a GPU; a parallel host
//! copy on the CPU), the best of a few timed rounds after a warm-up.

use std::time::Instant;

use anyhow::Result;
use rayon::prelude::*;

use crate::selftest::SelftestDevice;

/// Copy traffic in bytes per second on `device`, with copies of `bytes`.
pub fn copy_bandwidth(device: &SelftestDevice, bytes: usize) -> Result<f64> {
    #[cfg(feature = "cuda")]
    if let Some(gpu) = device.cuda() {
        let mut best = 0f64;
        for _ in 0..3 {
            best = best.max(gpu.copy_bandwidth(bytes, 10)?);
        }
        return Ok(best);
    }
    let _ = device;
    Ok(host_bandwidth(bytes))
}

/// A parallel host copy of `bytes` bytes, best of 5 rounds.
fn host_bandwidth(bytes: usize) -> f64 {
    let src: Vec<u8> = (0..bytes).map(|i| i as u8).collect();
    let mut dst = vec![0u8; bytes];
    let chunk = (bytes / rayon::current_num_threads().max(1)).max(1 << 16);
    let mut copy = || {
        dst.par_chunks_mut(chunk)
            .zip(src.par_chunks(chunk))
            .for_each(|(d, s)| d.copy_from_slice(s));
    };
    copy();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        copy();
        best = best.max(2.0 * bytes as f64 / t.elapsed().as_secs_f64());
    }
    std::hint::black_box(&dst);
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_copy_moves_bytes_at_a_plausible_rate() {
        let bw = host_bandwidth(1 << 22);
        assert!(bw > 1e8 && bw.is_finite(), "{bw}");
    }
}
