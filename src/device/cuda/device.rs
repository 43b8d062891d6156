//! [`CudaDevice`]: one GPU, one context, one stream; the kernels compiled for it and
//! loaded at open. Device memory comes from `cuMemAlloc` and is freed when the last
//! [`DevBuf`](crate::device::kernels::DevBuf) holding it drops. All work goes on the one
//! stream in launch order; copies back to the host wait for it.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaStream, result, sys};
use cudarc::nvrtc::Ptx;

use super::nvrtc;
use super::probe::{GpuInfo, probe};
use crate::device::kernels::sources::MODULES;
use crate::device::kernels::{Device, DeviceError, KernelArg, LaunchDims};

/// A GPU with the kernels loaded.
pub struct CudaDevice {
    info: GpuInfo,
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    functions: HashMap<&'static str, CudaFunction>,
}

/// An allocation; freed on drop.
struct Allocation {
    ptr: sys::CUdeviceptr,
    ctx: Arc<CudaContext>,
}

impl Drop for Allocation {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            // SAFETY: `ptr` came from cuMemAlloc in this context and is freed once.
            if let Err(e) = unsafe { result::free_sync(self.ptr) } {
                tracing::warn!("cuMemFree failed: {e}");
            }
        }
    }
}

fn mem_err(what: &str, e: impl std::fmt::Display) -> DeviceError {
    DeviceError::Memory(format!("{what}: {e}"))
}

impl CudaDevice {
    /// Opens GPU `ordinal`, compiles (or reads from the cache) every kernel module for
    /// its architecture and loads them.
    pub fn open(ordinal: usize) -> Result<Self, String> {
        let info = probe(ordinal)?;
        let ctx = CudaContext::new(ordinal).map_err(|e| format!("cuda:{ordinal}: {e}"))?;
        // We hand raw pointers to our kernels and order everything on one stream, so
        // cudarc's per-buffer event tracking has nothing to do.
        // SAFETY: no cudarc-managed buffer is shared between streams.
        unsafe { ctx.disable_event_tracking() };
        let stream = ctx.default_stream();
        let arch = nvrtc::arch_of(info.compute_capability);
        let mut functions = HashMap::new();
        for module in MODULES {
            let ptx = nvrtc::compile(module, &arch)?;
            let loaded = ctx
                .load_module(Ptx::from_src(ptx))
                .map_err(|e| format!("loading kernels/{}.cu for {arch}: {e}", module.name))?;
            for &name in module.kernels {
                let f = loaded
                    .load_function(name)
                    .map_err(|e| format!("kernel {name} in kernels/{}.cu: {e}", module.name))?;
                functions.insert(name, f);
            }
        }
        tracing::info!(gpu = %info.name, %arch, kernels = functions.len(), "CUDA kernels loaded");
        Ok(Self {
            info,
            ctx,
            stream,
            functions,
        })
    }

    /// Memory traffic (bytes read plus bytes written, per second) of `reps`
    /// device-to-device copies of `bytes` bytes: the roofline benchmarks divide by.
    pub fn copy_bandwidth(&self, bytes: usize, reps: usize) -> Result<f64, DeviceError> {
        let (src, _a) = self.alloc_bytes(bytes)?;
        let (dst, _b) = self.alloc_bytes(bytes)?;
        let copy = || {
            // SAFETY: both allocations hold `bytes` bytes and stay alive (`_a`, `_b`).
            unsafe { result::memcpy_dtod_async(dst, src, bytes, self.stream.cu_stream()) }
                .map_err(|e| mem_err("device-to-device copy", e))
        };
        copy()?;
        self.synchronize()?;
        let t = std::time::Instant::now();
        for _ in 0..reps {
            copy()?;
        }
        self.synchronize()?;
        Ok((2 * bytes * reps) as f64 / t.elapsed().as_secs_f64())
    }

    /// `(free, total)` device memory in bytes.
    pub fn memory(&self) -> Result<(usize, usize), DeviceError> {
        self.ctx
            .mem_get_info()
            .map_err(|e| mem_err("cuMemGetInfo", e))
    }
}

impl Device for CudaDevice {
    fn name(&self) -> String {
        format!("cuda:{} ({})", self.info.ordinal, self.info.name)
    }

    fn alloc_bytes(&self, bytes: usize) -> Result<(u64, Box<dyn Any + Send + Sync>), DeviceError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| mem_err("binding the context", e))?;
        // SAFETY: the context is current; the new allocation is zeroed before use.
        let ptr = unsafe { result::malloc_sync(bytes) }
            .map_err(|e| mem_err(&format!("cuMemAlloc of {bytes} bytes"), e))?;
        let alloc = Allocation {
            ptr,
            ctx: self.ctx.clone(),
        };
        // SAFETY: `ptr` holds `bytes` bytes.
        unsafe { result::memset_d8_sync(ptr, 0, bytes) }.map_err(|e| mem_err("cuMemset", e))?;
        Ok((ptr, Box::new(alloc)))
    }

    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), DeviceError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| mem_err("binding the context", e))?;
        // SAFETY: the caller guarantees the range; the stream is synchronised before
        // returning, so `src` may be freed afterwards.
        unsafe { result::memcpy_htod_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| mem_err("copy to device", e))?;
        self.stream
            .synchronize()
            .map_err(|e| mem_err("copy to device", e))
    }

    unsafe fn copy_from_device(&self, src: u64, dst: &mut [u8]) -> Result<(), DeviceError> {
        self.ctx
            .bind_to_thread()
            .map_err(|e| mem_err("binding the context", e))?;
        // SAFETY: the caller guarantees the range; we wait for the copy to land.
        unsafe { result::memcpy_dtoh_async(dst, src, self.stream.cu_stream()) }
            .map_err(|e| mem_err("copy from device", e))?;
        self.stream
            .synchronize()
            .map_err(|e| mem_err("copy from device", e))
    }

    unsafe fn launch(
        &self,
        kernel: &str,
        dims: LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), DeviceError> {
        let err = |detail: String| DeviceError::Launch {
            kernel: kernel.into(),
            detail,
        };
        let f = self
            .functions
            .get(kernel)
            .ok_or_else(|| err("no such kernel loaded".into()))?;
        self.ctx.bind_to_thread().map_err(|e| err(e.to_string()))?;
        let mut params: Vec<*mut std::ffi::c_void> =
            args.iter().map(KernelArg::as_void_ptr).collect();
        let [gx, gy, gz] = dims.grid;
        let [bx, by, bz] = dims.block;
        // SAFETY: the caller guarantees the arguments match the kernel; `params` points
        // into `args`, which outlives the call (the driver copies the values at launch).
        unsafe {
            result::launch_kernel(
                f.cu_function(),
                (gx, gy, gz),
                (bx, by, bz),
                0,
                self.stream.cu_stream(),
                &mut params,
            )
        }
        .map_err(|e| err(e.to_string()))
    }

    fn synchronize(&self) -> Result<(), DeviceError> {
        self.stream
            .synchronize()
            .map_err(|e| mem_err("synchronize", e))
    }
}
