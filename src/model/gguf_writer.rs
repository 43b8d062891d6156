//! A GGUF v3 writer that streams tensor data to disk, and synthetic llama models.
//!
//! [`write_gguf`] writes a header (metadata, tensor infos), then each tensor's data at a
//! 32-byte aligned offset. Tensor data is either given as raw block bytes or generated on
//! the fly ([`TensorData::Random`]), one chunk at a time, so a 4 GB file never sits in
//! memory. The file is written under a `.partial` name and renamed when complete.
//!
//! [`SyntheticModel`] builds a complete llama-architecture file (metadata, a GPT-2 style
//! byte-level tokenizer, a ChatML template and random weights) with real model shapes:
//! enough to load, tokenize and run a forward pass, and to size memory and time kernels
//! on 7B shapes without real weights.
//!
//! Submodules: `random` (valid random blocks per type), `synthetic` (the llama model),
//! `tests` (everything read back through candle's GGUF reader).

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use candle_core::quantized::GgmlDType;

mod random;
mod synthetic;

pub use random::signed_units;
use random::{SplitMix64, block_header, fill_random};
pub use synthetic::{ArchFeatures, SyntheticModel, gpt2_byte_chars};

/// Alignment of the tensor data section and of every tensor in it.
pub const ALIGNMENT: u64 = 32;

/// A metadata value (the GGUF types this project writes).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// GGUF `UINT32`.
    U32(u32),
    /// GGUF `INT32`.
    I32(i32),
    /// GGUF `FLOAT32`.
    F32(f32),
    /// GGUF `BOOL`.
    Bool(bool),
    /// GGUF `STRING` (UTF-8).
    Str(String),
    /// GGUF `ARRAY` of `STRING`.
    StrArray(Vec<String>),
    /// GGUF `ARRAY` of `INT32`.
    I32Array(Vec<i32>),
    /// GGUF `ARRAY` of `FLOAT32`.
    F32Array(Vec<f32>),
}

/// One tensor to write.
#[derive(Debug, Clone)]
pub struct TensorSpec {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// Shape in candle order, outermost first: `(n_out, n_in)` for a weight matrix.
    /// GGUF stores the dimensions reversed; the writer does that.
    pub shape: Vec<usize>,
    /// Storage type.
    pub dtype: GgmlDType,
    /// The data.
    pub data: TensorData,
}

/// Where a tensor's bytes come from.
#[derive(Debug, Clone)]
pub enum TensorData {
    /// Raw GGML block bytes (e.g. `QTensor::data()`), exactly the tensor's size.
    Bytes(Vec<u8>),
    /// Valid random blocks generated while writing: random quant bits, block scales
    /// chosen so every dequantized value `w` is finite with `|w| <= scale` (and the
    /// largest close to `scale`). Deterministic for a given seed. Supported for F32,
    /// F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2K, Q3K, Q4K, Q5K and Q6K;
    /// `0 < scale <= 1000`.
    Random {
        /// Seed of the generator.
        seed: u64,
        /// Bound on the magnitude of the values.
        scale: f32,
    },
}

/// GGML's on-disk type id.
fn ggml_type_id(dtype: GgmlDType) -> u32 {
    use GgmlDType::*;
    match dtype {
        F32 => 0,
        F16 => 1,
        Q4_0 => 2,
        Q4_1 => 3,
        Q5_0 => 6,
        Q5_1 => 7,
        Q8_0 => 8,
        Q8_1 => 9,
        Q2K => 10,
        Q3K => 11,
        Q4K => 12,
        Q5K => 13,
        Q6K => 14,
        Q8K => 15,
        BF16 => 30,
    }
}

impl TensorSpec {
    /// Bytes of data, after checking the tensor is non-empty and its rows (the last,
    /// innermost dimension) are whole blocks of its type, as GGML requires; the element
    /// count is then a multiple of the block size too.
    pub fn byte_len(&self) -> Result<usize> {
        let elems: usize = self.shape.iter().product();
        let row = self.shape.last().copied().unwrap_or(0);
        let block = self.dtype.block_size();
        ensure!(
            elems > 0 && row > 0 && row.is_multiple_of(block),
            "tensor `{}`: shape {:?} has rows of {row}, not a multiple of the {:?} block size {block}",
            self.name,
            self.shape,
            self.dtype
        );
        Ok(elems / block * self.dtype.type_size())
    }

    fn validate(&self) -> Result<usize> {
        let len = self.byte_len()?;
        match &self.data {
            TensorData::Bytes(b) => ensure!(
                b.len() == len,
                "tensor `{}`: expected {len} bytes of {:?} data for shape {:?}, got {}",
                self.name,
                self.dtype,
                self.shape,
                b.len()
            ),
            TensorData::Random { scale, .. } => {
                ensure!(
                    *scale > 0.0 && *scale <= 1000.0,
                    "tensor `{}`: random scale {scale} outside (0, 1000]",
                    self.name
                );
                ensure!(
                    block_header(self.dtype, 1.0).is_some(),
                    "tensor `{}`: random data is not supported for {:?}",
                    self.name,
                    self.dtype
                );
            }
        }
        Ok(len)
    }
}

/// A writer that knows how many bytes went through it.
struct Counting<W: Write> {
    inner: W,
    pos: u64,
}

impl<W: Write> Counting<W> {
    fn put(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write_all(bytes)?;
        self.pos += bytes.len() as u64;
        Ok(())
    }
    fn put_u32(&mut self, v: u32) -> Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn put_u64(&mut self, v: u64) -> Result<()> {
        self.put(&v.to_le_bytes())
    }
    fn put_str(&mut self, s: &str) -> Result<()> {
        self.put_u64(s.len() as u64)?;
        self.put(s.as_bytes())
    }
    fn pad_to(&mut self, pos: u64) -> Result<()> {
        ensure!(pos >= self.pos, "internal: padding backwards");
        let zeros = [0u8; ALIGNMENT as usize];
        while self.pos < pos {
            let n = (pos - self.pos).min(ALIGNMENT) as usize;
            self.put(&zeros[..n])?;
        }
        Ok(())
    }
}

fn align(x: u64) -> u64 {
    x.div_ceil(ALIGNMENT) * ALIGNMENT
}

const T_U32: u32 = 4;
const T_I32: u32 = 5;
const T_F32: u32 = 6;
const T_BOOL: u32 = 7;
const T_STR: u32 = 8;
const T_ARRAY: u32 = 9;

impl MetaValue {
    fn type_id(&self) -> u32 {
        match self {
            Self::U32(_) => T_U32,
            Self::I32(_) => T_I32,
            Self::F32(_) => T_F32,
            Self::Bool(_) => T_BOOL,
            Self::Str(_) => T_STR,
            Self::StrArray(_) | Self::I32Array(_) | Self::F32Array(_) => T_ARRAY,
        }
    }

    fn write<W: Write>(&self, w: &mut Counting<W>) -> Result<()> {
        w.put_u32(self.type_id())?;
        let header = |w: &mut Counting<W>, elem: u32, len: usize| -> Result<()> {
            w.put_u32(elem)?;
            w.put_u64(len as u64)
        };
        match self {
            Self::U32(v) => w.put_u32(*v),
            Self::I32(v) => w.put(&v.to_le_bytes()),
            Self::F32(v) => w.put(&v.to_le_bytes()),
            Self::Bool(v) => w.put(&[u8::from(*v)]),
            Self::Str(s) => w.put_str(s),
            Self::StrArray(a) => {
                header(w, T_STR, a.len())?;
                a.iter().try_for_each(|s| w.put_str(s))
            }
            Self::I32Array(a) => {
                header(w, T_I32, a.len())?;
                a.iter().try_for_each(|v| w.put(&v.to_le_bytes()))
            }
            Self::F32Array(a) => {
                header(w, T_F32, a.len())?;
                a.iter().try_for_each(|v| w.put(&v.to_le_bytes()))
            }
        }
    }
}

/// Writes a GGUF v3 file at `path`: `metadata` (plus `general.alignment = 32`, unless
/// given with that value), then `tensors` in order, each at a 32-byte aligned offset.
///
/// Errors on duplicate metadata keys or tensor names, a `general.alignment` other than
/// `U32(32)`, element counts that are not a multiple of the dtype's block size, `Bytes`
/// of the wrong length, and `Random` data for a type it cannot generate.
pub fn write_gguf(
    path: &Path,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
) -> Result<()> {
    let mut keys = HashSet::new();
    for (k, v) in metadata {
        ensure!(keys.insert(k.as_str()), "duplicate metadata key `{k}`");
        if k == "general.alignment" {
            ensure!(
                *v == MetaValue::U32(ALIGNMENT as u32),
                "general.alignment must be U32({ALIGNMENT})"
            );
        }
    }
    let mut names = HashSet::new();
    let mut offsets = Vec::with_capacity(tensors.len());
    let mut next = 0u64;
    for t in tensors {
        ensure!(
            names.insert(t.name.as_str()),
            "duplicate tensor name `{}`",
            t.name
        );
        let len = t.validate()? as u64;
        offsets.push(next);
        next = align(next + len);
    }
    let tmp = partial_path(path);
    let written = write_file(
        &tmp,
        metadata,
        tensors,
        &offsets,
        !keys.contains("general.alignment"),
    );
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}

fn write_file(
    path: &Path,
    metadata: &[(String, MetaValue)],
    tensors: &[TensorSpec],
    offsets: &[u64],
    own_alignment: bool,
) -> Result<()> {
    let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
    let mut w = Counting {
        inner: BufWriter::with_capacity(8 << 20, file),
        pos: 0,
    };
    w.put(b"GGUF")?;
    w.put_u32(3)?;
    w.put_u64(tensors.len() as u64)?;
    w.put_u64(metadata.len() as u64 + u64::from(own_alignment))?;
    if own_alignment {
        w.put_str("general.alignment")?;
        MetaValue::U32(ALIGNMENT as u32).write(&mut w)?;
    }
    for (k, v) in metadata {
        w.put_str(k)?;
        v.write(&mut w)?;
    }
    for (t, &off) in tensors.iter().zip(offsets) {
        w.put_str(&t.name)?;
        w.put_u32(t.shape.len() as u32)?;
        t.shape
            .iter()
            .rev()
            .try_for_each(|&d| w.put_u64(d as u64))?;
        w.put_u32(ggml_type_id(t.dtype))?;
        w.put_u64(off)?;
    }
    let data_start = align(w.pos);
    for (t, &off) in tensors.iter().zip(offsets) {
        w.pad_to(data_start + off)?;
        write_data(&mut w, t).with_context(|| format!("writing tensor `{}`", t.name))?;
    }
    w.inner.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

fn write_data<W: Write>(w: &mut Counting<W>, t: &TensorSpec) -> Result<()> {
    let (seed, scale) = match &t.data {
        TensorData::Bytes(b) => return w.put(b),
        TensorData::Random { seed, scale } => (*seed, *scale),
    };
    let type_size = t.dtype.type_size();
    let total_blocks = t.byte_len()? / type_size;
    let chunk_blocks = ((1 << 20) / type_size).max(1);
    let mut buf = vec![0u8; chunk_blocks * type_size];
    let mut rng = SplitMix64(seed);
    let mut done = 0;
    while done < total_blocks {
        let n = chunk_blocks.min(total_blocks - done);
        let chunk = &mut buf[..n * type_size];
        fill_random(t.dtype, &mut rng, scale, chunk);
        w.put(chunk)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
