//! The GPU kernels of `kernels/*.cu` as the rest of the program sees them: their
//! sources (embedded in the binary, [`sources`]), a small device interface
//! ([`Device`]: allocate, copy, launch a kernel by name) and safe wrappers ([`ops`]) that
//! check every shape, size and index range on the host before a launch, so no kernel
//! reads or writes outside its buffers.
//!
//! [`Device`] has two implementations: the CUDA device (`device::cuda`, built with
//! `--features cuda`), and the host emulator (`device::emulator`: the tests and
//! `ferrite selftest --device emulator`), which compiles the same sources with
//! `kernels/emu/cuda_emu.hpp`. So the wrappers and the kernels' arithmetic are tested on
//! machines without a GPU as well, against the CPU path as the reference.

pub mod buffer;
pub mod ops;
pub mod sources;

pub use buffer::{DevBuf, DevIndex, Device, DeviceError, DeviceExt, Elem, KernelArg, LaunchDims};
