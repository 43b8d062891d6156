//! The CUDA backend (built with `--features cuda`): finding a usable GPU, compiling the
//! kernels of `kernels/*.cu` with NVRTC for its compute capability (cached on disk), and
//! [`CudaDevice`], the [`Device`](super::kernels::Device) the kernel wrappers run on.
//!
//! Everything CUDA is loaded at run time (cudarc's dynamic loading): a machine without
//! the driver or NVRTC gets an error value saying which library is missing, never a
//! panic, so `--device auto` can fall back to the CPU.

mod device;
pub mod nvrtc;
pub mod probe;

pub use device::CudaDevice;
pub use probe::{GpuInfo, driver_version, probe};
