//! The devices the kernel and model tests check: the kernel emulator
//! (`ferrite::device::emulator`, built once under `target/emu-kernels/`), and the GPU too
//! when built with `--features cuda` on a machine that has one (opened once).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use ferrite::device::kernels::Device;

/// The emulated device.
pub use ferrite::device::emulator::EmuDevice as Emu;

/// The process-wide emulator, built under the target directory.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn emulator() -> Arc<Emu> {
    let cache = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/emu-kernels");
    Emu::shared_in(&cache).unwrap_or_else(|e| panic!("the kernel emulator: {e}"))
}

/// The devices to check: the emulator, and the GPU when there is one.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn devices() -> &'static [Arc<dyn Device>] {
    static DEVICES: OnceLock<Vec<Arc<dyn Device>>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let emu: Arc<dyn Device> = emulator();
        #[allow(unused_mut)]
        let mut v = vec![emu];
        #[cfg(feature = "cuda")]
        match ferrite::device::cuda::CudaDevice::open(0) {
            Ok(gpu) => {
                eprintln!("also checking on {}", gpu.name());
                v.push(Arc::new(gpu));
            }
            Err(e) => eprintln!("no GPU ({e}); emulator only"),
        }
        v
    })
}
