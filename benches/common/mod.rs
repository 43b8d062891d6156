//! What several benchmarks share.

use std::path::PathBuf;

/// The Mistral-7B-shaped Q4_K_M synthetic GGUF the 7B benchmarks use:
/// `$FERRITE_BENCH_GGUF`, or `target/bench-models/mistral-7b-q4km-synthetic.gguf`.
#[allow(dead_code)] // gpu_decode uses it only when built with --features cuda
pub fn bench_7b_path() -> PathBuf {
    std::env::var_os("FERRITE_BENCH_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench-models/mistral-7b-q4km-synthetic.gguf")
        })
}
