//! Compiling the kernel modules with NVRTC for one GPU architecture, with a disk cache:
//! the PTX of a module is stored under a name made of the SHA-256 of its full source,
//! the architecture, the options and the NVRTC version, so a changed kernel, GPU or
//! compiler never reuses a stale result. The cache directory is `$FERRITE_KERNEL_CACHE`,
//! else `$XDG_CACHE_HOME/ferrite/kernels`, else `~/.cache/ferrite/kernels`; a cache that
//! cannot be read or written only costs a recompile.

use std::path::PathBuf;

use cudarc::nvrtc::{CompileOptions, compile_ptx_with_opts, sys};
use sha2::{Digest, Sha256};

use crate::device::kernels::sources::KernelModule;

/// Options every module is compiled with (besides the architecture).
const OPTIONS: &[&str] = &["--std=c++17", "--fmad=true"];

/// NVRTC's version, or why NVRTC cannot be used.
pub fn version() -> Result<(i32, i32), String> {
    // SAFETY: only tries to load the library.
    if !unsafe { sys::is_culib_present() } {
        return Err("NVRTC (libnvrtc.so) could not be loaded".into());
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded; the pointers are valid for the call.
    let rc = unsafe { sys::nvrtcVersion(&mut major, &mut minor) };
    if rc != sys::nvrtcResult::NVRTC_SUCCESS {
        return Err(format!("nvrtcVersion failed: {rc:?}"));
    }
    Ok((major, minor))
}

/// `sm_XY` for compute capability (X, Y).
pub fn arch_of(compute_capability: (i32, i32)) -> String {
    format!("sm_{}{}", compute_capability.0, compute_capability.1)
}

/// Where compiled kernels are cached, if anywhere.
pub fn cache_dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("FERRITE_KERNEL_CACHE") {
        return Some(PathBuf::from(d));
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("ferrite").join("kernels"))
}

/// The PTX of `module` for `arch` (`sm_90`, …): from the cache, or compiled (and cached).
pub fn compile(module: &KernelModule, arch: &str) -> Result<String, String> {
    let nvrtc = version()?;
    let source = module.full_source();
    let mut h = Sha256::new();
    h.update(source.as_bytes());
    h.update(format!("{arch} {OPTIONS:?} nvrtc {}.{}", nvrtc.0, nvrtc.1).as_bytes());
    let tag: String = h
        .finalize()
        .iter()
        .take(12)
        .map(|b| format!("{b:02x}"))
        .collect();
    let cached = cache_dir().map(|d| d.join(format!("{}-{arch}-{tag}.ptx", module.name)));
    if let Some(ptx) = cached
        .as_ref()
        .and_then(|p| std::fs::read_to_string(p).ok())
    {
        return Ok(ptx);
    }
    let mut options: Vec<String> = OPTIONS.iter().map(|s| s.to_string()).collect();
    options.push(format!("--gpu-architecture={arch}"));
    let opts = CompileOptions {
        options,
        name: Some(format!("{}.cu", module.name)),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(&source, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, .. } => format!(
            "kernels/{}.cu does not compile for {arch}:\n{}",
            module.name,
            log.to_string_lossy()
        ),
        other => format!("kernels/{}.cu: NVRTC failed: {other}", module.name),
    })?;
    let text = ptx.to_src();
    if let Some(p) = cached {
        let tmp = p.with_extension(format!("tmp{}", std::process::id()));
        let stored = p.parent().map(std::fs::create_dir_all).transpose().is_ok()
            && std::fs::write(&tmp, &text).is_ok()
            && std::fs::rename(&tmp, &p).is_ok();
        if !stored {
            tracing::debug!(path = %p.display(), "could not cache compiled kernels");
        }
    }
    Ok(text)
}
