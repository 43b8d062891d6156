//! The host emulator as a [`Device`]: builds `kernels/*.cu` with the host C++ compiler
//! and `kernels/emu/cuda_emu.hpp` into a shared library (once per source change, under
//! `target/emu-kernels/`), loads it, and runs launches through its `ferrite_emu_launch`.
//! Device memory is host memory; launches run to completion before they return.
//! [`devices`] is what the kernel and model tests check: the emulator, and the GPU too
//! when built with `--features cuda` on a machine that has one (opened once).

use std::any::Any;
use std::ffi::{CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use ferrite::device::kernels::sources::MODULES;
use ferrite::device::kernels::{Device, DeviceError, KernelArg, LaunchDims};
use sha2::{Digest, Sha256};

type LaunchFn =
    unsafe extern "C" fn(*const c_char, *const u32, *const u32, *mut *mut c_void) -> i32;

/// The emulated device.
pub struct EmuDevice {
    _lib: libloading::Library,
    launch: LaunchFn,
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The translation units: one per module (common header + module + registrations), and
/// the entry point.
fn units() -> Vec<(String, String)> {
    let mut units: Vec<(String, String)> = MODULES
        .iter()
        .map(|m| {
            let mut src = m.full_source();
            src.push('\n');
            for k in m.kernels {
                src.push_str(&format!("FERRITE_EMU_KERNEL({k})\n"));
            }
            (format!("{}.cpp", m.name), src)
        })
        .collect();
    let entry = std::fs::read_to_string(repo().join("kernels/emu/entry.cpp")).unwrap();
    units.push(("entry.cpp".into(), entry));
    units
}

fn build() -> PathBuf {
    let header = repo().join("kernels/emu/cuda_emu.hpp");
    let units = units();
    let mut h = Sha256::new();
    h.update(std::fs::read(&header).unwrap());
    for (name, src) in &units {
        h.update(name.as_bytes());
        h.update(src.as_bytes());
    }
    let tag: String = h
        .finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = repo().join("target/emu-kernels").join(&tag);
    let lib = dir.join("libferrite_emu.so");
    if lib.exists() {
        return lib;
    }
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (name, src) in &units {
        let p = dir.join(name);
        std::fs::write(&p, src).unwrap();
        files.push(p);
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let tmp = dir.join(format!("libferrite_emu.so.{}", std::process::id()));
    let out = Command::new(&cxx)
        .args([
            "-std=c++20",
            "-O2",
            "-fPIC",
            "-shared",
            "-pthread",
            "-Wall",
            "-Werror",
        ])
        .args(["-Wno-unused-parameter", "-Wno-unused-function", "-include"])
        .arg(&header)
        .args(&files)
        .arg("-o")
        .arg(&tmp)
        .output()
        .unwrap_or_else(|e| {
            panic!("running {cxx} (the kernel emulator needs a C++20 compiler): {e}")
        });
    assert!(
        out.status.success(),
        "{cxx} failed on the kernels:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&tmp, &lib).unwrap();
    lib
}

/// The devices to check: the emulator, and the GPU when there is one.
#[allow(dead_code)] // not every test binary that includes this file uses it
pub fn devices() -> &'static [Arc<dyn Device>] {
    static DEVICES: OnceLock<Vec<Arc<dyn Device>>> = OnceLock::new();
    DEVICES.get_or_init(|| {
        let emu: Arc<dyn Device> = EmuDevice::shared_arc().clone();
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

impl EmuDevice {
    /// The process-wide emulator (built on first use).
    pub fn shared_arc() -> &'static Arc<EmuDevice> {
        static DEV: OnceLock<Arc<EmuDevice>> = OnceLock::new();
        DEV.get_or_init(|| Arc::new(Self::load(&build())))
    }

    fn load(path: &Path) -> Self {
        // SAFETY: our own library; its only export is the launch entry point.
        let lib = unsafe { libloading::Library::new(path) }.expect("loading the emulator");
        // SAFETY: the signature of `ferrite_emu_launch` in kernels/emu/entry.cpp.
        let launch = unsafe { *lib.get::<LaunchFn>(b"ferrite_emu_launch\0").unwrap() };
        Self { _lib: lib, launch }
    }
}

impl Device for EmuDevice {
    fn name(&self) -> String {
        "emulator".into()
    }

    fn alloc_bytes(&self, bytes: usize) -> Result<(u64, Box<dyn Any + Send + Sync>), DeviceError> {
        let mut v = vec![0u128; bytes.div_ceil(16)];
        let ptr = v.as_mut_ptr() as u64;
        Ok((ptr, Box::new(v)))
    }

    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), DeviceError> {
        // SAFETY: the caller guarantees the destination range.
        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), dst as *mut u8, src.len()) };
        Ok(())
    }

    unsafe fn copy_from_device(&self, src: u64, dst: &mut [u8]) -> Result<(), DeviceError> {
        // SAFETY: the caller guarantees the source range.
        unsafe { std::ptr::copy_nonoverlapping(src as *const u8, dst.as_mut_ptr(), dst.len()) };
        Ok(())
    }

    unsafe fn launch(
        &self,
        kernel: &str,
        dims: LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), DeviceError> {
        let name = CString::new(kernel).unwrap();
        let mut ptrs: Vec<*mut c_void> = args.iter().map(KernelArg::as_void_ptr).collect();
        // SAFETY: the caller guarantees the arguments; the arrays outlive the call.
        let rc = unsafe {
            (self.launch)(
                name.as_ptr(),
                dims.grid.as_ptr(),
                dims.block.as_ptr(),
                ptrs.as_mut_ptr(),
            )
        };
        match rc {
            0 => Ok(()),
            -1 => Err(DeviceError::Launch {
                kernel: kernel.into(),
                detail: "no such kernel".into(),
            }),
            _ => Err(DeviceError::Launch {
                kernel: kernel.into(),
                detail: format!("block {:?} cannot be emulated", dims.block),
            }),
        }
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        Ok(())
    }
}
