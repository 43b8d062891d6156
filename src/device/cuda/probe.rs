//! Is there a GPU we can use? Checks, in order, that the CUDA driver library loads,
//! that it initialises, and that the asked-for device exists, and says which step failed.

use cudarc::driver::{result, sys};

/// What the probe found.
#[derive(Debug, Clone)]
pub struct GpuInfo {
    /// Device index.
    pub ordinal: usize,
    /// Marketing name.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Device memory in bytes.
    pub total_memory: usize,
}

/// Finds device `ordinal`, or says why there is none to use.
pub fn probe(ordinal: usize) -> Result<GpuInfo, String> {
    // SAFETY: only tries to load the library; no CUDA call is made if it is absent.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so could not be loaded)".into());
    }
    result::init().map_err(|e| format!("the CUDA driver did not initialise: {e}"))?;
    let count =
        result::device::get_count().map_err(|e| format!("could not count CUDA devices: {e}"))?;
    if count <= 0 {
        return Err("the CUDA driver sees no device".into());
    }
    if ordinal >= count as usize {
        return Err(format!(
            "cuda:{ordinal} asked for, but only {count} device(s) exist"
        ));
    }
    let dev = result::device::get(ordinal as i32).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
    let attr = |a| {
        // SAFETY: `dev` is a valid device handle from the driver.
        unsafe { result::device::get_attribute(dev, a) }
            .map_err(|e| format!("cuda:{ordinal}: reading attributes: {e}"))
    };
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let name = result::device::get_name(dev).unwrap_or_else(|_| "unknown GPU".into());
    // SAFETY: as above.
    let total_memory = unsafe { result::device::total_mem(dev) }
        .map_err(|e| format!("cuda:{ordinal}: reading memory size: {e}"))?;
    Ok(GpuInfo {
        ordinal,
        name,
        compute_capability: (major, minor),
        total_memory,
    })
}

/// The CUDA driver's version (major, minor), e.g. (13, 0); call after [`probe`] found a
/// device (the driver library is loaded and initialised then).
pub fn driver_version() -> Result<(i32, i32), String> {
    // SAFETY: only tries to load the library.
    if !unsafe { sys::is_culib_present() } {
        return Err("no CUDA driver (libcuda.so could not be loaded)".into());
    }
    let mut v = 0;
    // SAFETY: the library is loaded; the pointer is valid for the call.
    unsafe { sys::cuDriverGetVersion(&mut v) }
        .result()
        .map_err(|e| format!("cuDriverGetVersion: {e}"))?;
    Ok((v / 1000, (v % 1000) / 10))
}
