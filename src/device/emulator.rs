//! The kernel emulator as a [`Device`]: builds `kernels/*.cu` with the host C++ compiler
//! and `kernels/emu/cuda_emu.hpp` (both embedded in the binary) into a shared library,
//! loads it, and runs launches through its `ferrite_emu_launch`. Device memory is host
//! memory; launches run to completion before they return.
//!
//! It is what the tests check the kernels on without a GPU, and `ferrite selftest
//! --device emulator` runs the very checks a GPU gets on it. Needs a C++20 compiler
//! (`$CXX`, else `g++`) at run time.
//!
//! Invariants: the library is built once per content (the SHA-256 of the header and every
//! translation unit names its folder), written under a temporary name and renamed, so
//! concurrent builders never load a half-written file; a failed build is an error value,
//! never a panic.

use std::any::Any;
use std::ffi::{CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use sha2::{Digest, Sha256};

use super::kernels::sources::MODULES;
use super::kernels::{Device, DeviceError, KernelArg, LaunchDims};

/// The emulation header, included before every translation unit.
const HEADER: &str = include_str!("../../kernels/emu/cuda_emu.hpp");
/// The library's entry point.
const ENTRY: &str = include_str!("../../kernels/emu/entry.cpp");

type LaunchFn =
    unsafe extern "C" fn(*const c_char, *const u32, *const u32, *mut *mut c_void) -> i32;

/// The emulated device.
pub struct EmuDevice {
    _lib: libloading::Library,
    launch: LaunchFn,
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
    units.push(("entry.cpp".into(), ENTRY.to_string()));
    units
}

/// Where the library is built by default: `$FERRITE_EMU_CACHE`, else
/// `$XDG_CACHE_HOME/ferrite/emu-kernels`, else `~/.cache/ferrite/emu-kernels`, else the
/// temporary directory.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("FERRITE_EMU_CACHE") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .map(|b| b.join("ferrite").join("emu-kernels"))
        .unwrap_or_else(|| std::env::temp_dir().join("ferrite-emu-kernels"))
}

fn io(what: &str, path: &Path, e: std::io::Error) -> String {
    format!("{what} {}: {e}", path.display())
}

/// Builds the library under `cache` (unless a build of the same sources is there) and
/// returns its path.
pub fn build(cache: &Path) -> Result<PathBuf, String> {
    let units = units();
    let mut h = Sha256::new();
    h.update(HEADER.as_bytes());
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
    let dir = cache.join(&tag);
    let lib = dir.join("libferrite_emu.so");
    if lib.exists() {
        return Ok(lib);
    }
    std::fs::create_dir_all(&dir).map_err(|e| io("creating", &dir, e))?;
    let header = dir.join("cuda_emu.hpp");
    std::fs::write(&header, HEADER).map_err(|e| io("writing", &header, e))?;
    let mut files = Vec::new();
    for (name, src) in &units {
        let p = dir.join(name);
        std::fs::write(&p, src).map_err(|e| io("writing", &p, e))?;
        files.push(p);
    }
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "g++".into());
    let tmp = dir.join(format!("libferrite_emu.so.{}", std::process::id()));
    let out = Command::new(&cxx)
        .args(["-std=c++20", "-O2", "-fPIC", "-shared", "-pthread"])
        .args(["-Wall", "-Werror", "-Wno-unused-parameter"])
        .args(["-Wno-unused-function", "-include"])
        .arg(&header)
        .args(&files)
        .arg("-o")
        .arg(&tmp)
        .output()
        .map_err(|e| format!("running {cxx} (the kernel emulator needs a C++20 compiler): {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cxx} failed on the kernels:\n{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    std::fs::rename(&tmp, &lib).map_err(|e| io("renaming into", &lib, e))?;
    Ok(lib)
}

impl EmuDevice {
    /// Builds (or reuses) the library under `cache` and loads it.
    pub fn open_in(cache: &Path) -> Result<Self, String> {
        Self::load(&build(cache)?)
    }

    /// The process-wide emulator, built under [`default_cache_dir`] on first use.
    pub fn shared() -> Result<Arc<EmuDevice>, String> {
        Self::shared_in(&default_cache_dir())
    }

    /// The process-wide emulator; the first call builds it under `cache` (later calls
    /// return the same device whatever they pass).
    pub fn shared_in(cache: &Path) -> Result<Arc<EmuDevice>, String> {
        static DEV: OnceLock<Result<Arc<EmuDevice>, String>> = OnceLock::new();
        DEV.get_or_init(|| Self::open_in(cache).map(Arc::new))
            .clone()
    }

    fn load(path: &Path) -> Result<Self, String> {
        // SAFETY: our own library; its only export is the launch entry point, and
        // loading it runs no initialiser besides the kernel registrations.
        let lib = unsafe { libloading::Library::new(path) }
            .map_err(|e| format!("loading the emulator {}: {e}", path.display()))?;
        // SAFETY: the signature of `ferrite_emu_launch` in kernels/emu/entry.cpp.
        let launch = unsafe { lib.get::<LaunchFn>(b"ferrite_emu_launch\0") }
            .map(|f| *f)
            .map_err(|e| format!("the emulator has no ferrite_emu_launch: {e}"))?;
        Ok(Self { _lib: lib, launch })
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
        let name = CString::new(kernel).map_err(|_| DeviceError::Launch {
            kernel: kernel.into(),
            detail: "kernel name holds a NUL byte".into(),
        })?;
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
