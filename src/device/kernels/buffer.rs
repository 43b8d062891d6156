//! Device memory and launches, the interface every kernel wrapper is written against.
//!
//! Invariants: a [`DevBuf<T>`] owns `len` elements of `T` at `ptr` on its device until it
//! is dropped (its `owner` keeps the allocation alive); a [`DevIndex`] also knows the
//! smallest and largest value it was uploaded with, so wrappers can bound-check device
//! indices without reading them back.

use std::any::Any;
use std::ffi::c_void;
use std::marker::PhantomData;

/// What a device operation can fail with. Shape errors come from the wrappers' checks
/// (nothing was launched); the others from the device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// A wrapper refused its arguments: `{op}: {detail}` (expected vs got).
    #[error("{op}: {detail}")]
    Shape {
        /// The operation.
        op: &'static str,
        /// What did not fit.
        detail: String,
    },
    /// Allocation or copy failed.
    #[error("device memory: {0}")]
    Memory(String),
    /// The launch failed.
    #[error("launch of {kernel}: {detail}")]
    Launch {
        /// The kernel.
        kernel: String,
        /// Why.
        detail: String,
    },
}

/// Plain-old-data element types a device buffer may hold (sealed: every bit pattern is
/// a valid value and the type has no padding).
pub trait Elem: Copy + Default + Send + Sync + 'static + sealed::Sealed {}
impl Elem for f32 {}
impl Elem for u16 {}
impl Elem for i32 {}
impl Elem for u8 {}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u16 {}
    impl Sealed for i32 {}
    impl Sealed for u8 {}
}

fn as_bytes<T: Elem>(v: &[T]) -> &[u8] {
    // SAFETY: Elem types are plain old data without padding.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Elem>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above, and every byte pattern is a valid `T`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

/// A typed allocation on a device, freed when dropped.
pub struct DevBuf<T> {
    ptr: u64,
    len: usize,
    _owner: Box<dyn Any + Send + Sync>,
    _t: PhantomData<T>,
}

impl<T: Elem> DevBuf<T> {
    /// Device address of the first element.
    pub fn ptr(&self) -> u64 {
        self.ptr
    }

    /// Elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Device address of element `i` (`i <= len`).
    pub fn ptr_at(&self, i: usize) -> u64 {
        assert!(i <= self.len, "offset {i} past a buffer of {}", self.len);
        self.ptr + (i * std::mem::size_of::<T>()) as u64
    }
}

impl<T> std::fmt::Debug for DevBuf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DevBuf({:#x}, {} x {})",
            self.ptr,
            self.len,
            std::any::type_name::<T>()
        )
    }
}

/// Signed indices on the device (positions, slots, token ids, block ids) with the range
/// they were uploaded with.
#[derive(Debug)]
pub struct DevIndex {
    buf: DevBuf<i32>,
    /// Indices in use (the buffer may hold more, from an earlier larger upload).
    len: usize,
    min: i32,
    max: i32,
}

impl DevIndex {
    /// The indices.
    pub fn buf(&self) -> &DevBuf<i32> {
        &self.buf
    }

    /// How many.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Smallest value (0 when empty).
    pub fn min(&self) -> i32 {
        self.min
    }

    /// Largest value (-1 when empty).
    pub fn max(&self) -> i32 {
        self.max
    }
}

/// Grid and block shape of a launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LaunchDims {
    /// Blocks in x, y, z.
    pub grid: [u32; 3],
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
}

impl LaunchDims {
    /// `blocks` x 1 x 1 blocks of `threads` threads.
    pub fn linear(blocks: u32, threads: u32) -> Self {
        Self {
            grid: [blocks, 1, 1],
            block: [threads, 1, 1],
        }
    }

    /// Enough blocks of `threads` to cover `items` threads.
    pub fn cover(items: usize, threads: u32) -> Self {
        Self::linear(items.div_ceil(threads as usize).max(1) as u32, threads)
    }
}

/// One kernel argument, by value, as the kernel's parameter list declares it.
#[derive(Debug, Clone, Copy)]
pub enum KernelArg {
    /// A device pointer.
    Ptr(u64),
    /// `int`.
    I32(i32),
    /// `float`.
    F32(f32),
}

impl KernelArg {
    /// Address of the value, as a launch's argument array takes it.
    pub fn as_void_ptr(&self) -> *mut c_void {
        match self {
            KernelArg::Ptr(v) => v as *const u64 as *mut c_void,
            KernelArg::I32(v) => v as *const i32 as *mut c_void,
            KernelArg::F32(v) => v as *const f32 as *mut c_void,
        }
    }
}

/// A compute device that runs the kernels of `kernels/*.cu`.
pub trait Device: Send + Sync {
    /// Name for logs (`cuda:0 (NVIDIA H100 …)`, `emulator`).
    fn name(&self) -> String;

    /// A zeroed allocation of `bytes` bytes (aligned to at least 16), as its address and
    /// the value that keeps it alive.
    fn alloc_bytes(&self, bytes: usize) -> Result<(u64, Box<dyn Any + Send + Sync>), DeviceError>;

    /// Copies `src` to device address `dst`.
    ///
    /// # Safety
    /// `dst .. dst + src.len()` must lie inside one live allocation of this device.
    unsafe fn copy_to_device(&self, dst: u64, src: &[u8]) -> Result<(), DeviceError>;

    /// Copies device memory at `src` into `dst`, after all launched work is done.
    ///
    /// # Safety
    /// `src .. src + dst.len()` must lie inside one live allocation of this device.
    unsafe fn copy_from_device(&self, src: u64, dst: &mut [u8]) -> Result<(), DeviceError>;

    /// Launches `kernel` (asynchronously on a GPU).
    ///
    /// # Safety
    /// `args` must match the kernel's parameter list in number and types, and every
    /// pointer must cover what the kernel reads and writes for these dims: the wrappers
    /// in `ops` establish this.
    unsafe fn launch(
        &self,
        kernel: &str,
        dims: LaunchDims,
        args: &[KernelArg],
    ) -> Result<(), DeviceError>;

    /// Waits until all launched work is done.
    fn synchronize(&self) -> Result<(), DeviceError>;
}

/// Typed allocation and copies on any [`Device`].
pub trait DeviceExt {
    /// `len` zeroed elements.
    fn alloc<T: Elem>(&self, len: usize) -> Result<DevBuf<T>, DeviceError>;
    /// A buffer holding `data`.
    fn upload<T: Elem>(&self, data: &[T]) -> Result<DevBuf<T>, DeviceError>;
    /// Overwrites the start of `buf` with `data`.
    fn write<T: Elem>(&self, buf: &mut DevBuf<T>, data: &[T]) -> Result<(), DeviceError>;
    /// The whole of `buf`.
    fn download<T: Elem>(&self, buf: &DevBuf<T>) -> Result<Vec<T>, DeviceError>;
    /// The first `out.len()` elements of `buf` into `out`.
    fn download_into<T: Elem>(&self, buf: &DevBuf<T>, out: &mut [T]) -> Result<(), DeviceError>;
    /// Indices with their range.
    fn upload_index(&self, data: &[i32]) -> Result<DevIndex, DeviceError>;
    /// [`Self::upload_index`] into `slot`, reusing its buffer when it is large enough
    /// (no allocation per step); returns the indices.
    fn refill_index<'a>(
        &self,
        slot: &'a mut Option<DevIndex>,
        data: &[i32],
    ) -> Result<&'a DevIndex, DeviceError>;
    /// `slot`'s buffer, replaced by one of `len.next_power_of_two()` elements when it
    /// holds fewer than `len` (work buffers kept from step to step).
    fn grown<'a, T: Elem>(
        &self,
        slot: &'a mut Option<DevBuf<T>>,
        len: usize,
    ) -> Result<&'a mut DevBuf<T>, DeviceError>;
}

/// `data` written into `buf` (which holds at least `data.len()` elements), with its range.
fn index_in<D: Device + ?Sized>(
    dev: &D,
    mut buf: DevBuf<i32>,
    data: &[i32],
) -> Result<DevIndex, DeviceError> {
    dev.write(&mut buf, data)?;
    Ok(DevIndex {
        buf,
        len: data.len(),
        min: data.iter().copied().min().unwrap_or(0),
        max: data.iter().copied().max().unwrap_or(-1),
    })
}

impl<D: Device + ?Sized> DeviceExt for D {
    fn alloc<T: Elem>(&self, len: usize) -> Result<DevBuf<T>, DeviceError> {
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(|| DeviceError::Memory(format!("{len} elements overflow")))?;
        let (ptr, owner) = self.alloc_bytes(bytes.max(1))?;
        Ok(DevBuf {
            ptr,
            len,
            _owner: owner,
            _t: PhantomData,
        })
    }

    fn upload<T: Elem>(&self, data: &[T]) -> Result<DevBuf<T>, DeviceError> {
        let mut buf = self.alloc::<T>(data.len())?;
        self.write(&mut buf, data)?;
        Ok(buf)
    }

    fn write<T: Elem>(&self, buf: &mut DevBuf<T>, data: &[T]) -> Result<(), DeviceError> {
        if data.len() > buf.len {
            return Err(DeviceError::Memory(format!(
                "writing {} elements into a buffer of {}",
                data.len(),
                buf.len
            )));
        }
        // SAFETY: the range lies inside `buf`'s allocation (checked above).
        unsafe { self.copy_to_device(buf.ptr, as_bytes(data)) }
    }

    fn download<T: Elem>(&self, buf: &DevBuf<T>) -> Result<Vec<T>, DeviceError> {
        let mut out = vec![T::default(); buf.len];
        // SAFETY: exactly `buf`'s allocation.
        unsafe { self.copy_from_device(buf.ptr, as_bytes_mut(&mut out))? };
        Ok(out)
    }

    fn download_into<T: Elem>(&self, buf: &DevBuf<T>, out: &mut [T]) -> Result<(), DeviceError> {
        if out.len() > buf.len {
            return Err(DeviceError::Memory(format!(
                "reading {} elements from a buffer of {}",
                out.len(),
                buf.len
            )));
        }
        // SAFETY: the range lies inside `buf`'s allocation (checked above).
        unsafe { self.copy_from_device(buf.ptr, as_bytes_mut(out)) }
    }

    fn upload_index(&self, data: &[i32]) -> Result<DevIndex, DeviceError> {
        index_in(self, self.alloc(data.len())?, data)
    }

    fn refill_index<'a>(
        &self,
        slot: &'a mut Option<DevIndex>,
        data: &[i32],
    ) -> Result<&'a DevIndex, DeviceError> {
        let buf = match slot.take() {
            Some(idx) if idx.buf.len() >= data.len() => idx.buf,
            _ => self.alloc(data.len().next_power_of_two())?,
        };
        Ok(slot.insert(index_in(self, buf, data)?))
    }

    fn grown<'a, T: Elem>(
        &self,
        slot: &'a mut Option<DevBuf<T>>,
        len: usize,
    ) -> Result<&'a mut DevBuf<T>, DeviceError> {
        if slot.as_ref().is_none_or(|b| b.len < len) {
            return Ok(slot.insert(self.alloc(len.next_power_of_two())?));
        }
        Ok(slot
            .as_mut()
            .expect("holds at least len elements (checked above)"))
    }
}
