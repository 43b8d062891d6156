//! Tensors as they lie in a memory-mapped GGUF file ([`RawTensor`]): located and
//! bounds-checked from the header, borrowed without a copy, so a backend can repack
//! them straight into its own layout; and, once read, dropped from the process's
//! resident set ([`RawTensor::release`]) so loading never holds the file and the
//! repacked weights in memory at once.

use anyhow::{Context, Result, ensure};
use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, ggml_file};

use super::TensorSource;

/// One tensor's bytes in the file, as stored.
pub struct RawTensor<'a> {
    /// Its GGUF name.
    pub name: String,
    /// Its encoding.
    pub dtype: GgmlDType,
    /// Its shape, outermost first (`[n, k]` for a matrix of `n` rows of `k` values).
    pub dims: Vec<usize>,
    /// Its blocks: exactly `elements / block_size * type_size` bytes.
    pub data: &'a [u8],
    /// Whether `data` is a read-only file mapping whose pages may be dropped.
    mapped: bool,
}

impl RawTensor<'_> {
    /// `(n, k)` of a matrix; an error naming the tensor otherwise.
    pub fn dims2(&self) -> Result<(usize, usize)> {
        match self.dims[..] {
            [n, k] => Ok((n, k)),
            _ => anyhow::bail!("{} is not a matrix (shape {:?})", self.name, self.dims),
        }
    }

    /// A copy as a candle tensor (for backends that take one).
    pub fn to_qtensor(&self) -> Result<QTensor> {
        ggml_file::qtensor_from_ggml(self.dtype, self.data, self.dims.clone(), &Device::Cpu)
            .with_context(|| format!("loading {}", self.name))
    }

    /// Drops the file pages wholly inside this tensor from the process's resident set
    /// (`madvise(MADV_DONTNEED)`): they stay in the page cache, and reading them again
    /// maps them again with the same contents. Does nothing unless the bytes are a
    /// file mapping.
    pub fn release(&self) {
        if !self.mapped || self.data.is_empty() {
            return;
        }
        // SAFETY: sysconf has no preconditions.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(0);
        if page == 0 {
            return;
        }
        let start = self.data.as_ptr() as usize;
        let first = start.next_multiple_of(page);
        let end = (start + self.data.len()) / page * page;
        if end > first {
            // SAFETY: `first..end` lies inside `data`, which (`mapped`) is part of a
            // read-only shared file mapping that outlives this call. DONTNEED on such a
            // mapping only unmaps the pages from this process: a later read faults them
            // back in from the page cache with the file's same bytes, so what any
            // reference to `data` observes does not change.
            unsafe {
                libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
            }
        }
    }
}

impl<'a> TensorSource<'a> {
    /// Tensor `name` as it lies in the file, checked to fit inside it.
    pub fn raw(&self, name: &str) -> Result<RawTensor<'a>> {
        let info = self
            .content
            .tensor_infos
            .get(name)
            .with_context(|| format!("the file has no tensor {name}"))?;
        let elems = info.shape.elem_count();
        let block = info.ggml_dtype.block_size();
        ensure!(
            elems.is_multiple_of(block),
            "{name}: {elems} values are not whole blocks of {block} ({:?})",
            info.ggml_dtype
        );
        let bytes = elems / block * info.ggml_dtype.type_size();
        let start = self
            .content
            .tensor_data_offset
            .checked_add(info.offset)
            .and_then(|s| usize::try_from(s).ok());
        let data = start
            .and_then(|s| self.data.get(s..s.checked_add(bytes)?))
            .with_context(|| {
                format!(
                    "{name} needs {bytes} bytes at offset {} of a {}-byte file",
                    self.content.tensor_data_offset.saturating_add(info.offset),
                    self.data.len()
                )
            })?;
        Ok(RawTensor {
            name: name.to_string(),
            dtype: info.ggml_dtype,
            dims: info.shape.dims().to_vec(),
            data,
            mapped: self.mapped,
        })
    }
}
