//! Typed lookups of `{arch}.*` GGUF keys with errors that name the key.

use std::collections::HashMap;

use anyhow::{Result, bail};
use candle_core::quantized::gguf_file::Value;

/// The metadata of one file, read under its architecture's prefix.
pub(super) struct Keys<'a> {
    meta: &'a HashMap<String, Value>,
    arch: &'a str,
}

impl<'a> Keys<'a> {
    pub(super) fn new(meta: &'a HashMap<String, Value>, arch: &'a str) -> Self {
        Self { meta, arch }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.meta.get(&format!("{}.{key}", self.arch))
    }

    /// An unsigned integer key (any integer type), `None` when absent.
    pub(super) fn usize_opt(&self, key: &str) -> Result<Option<usize>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let n = match v {
            Value::U8(x) => *x as u64,
            Value::U16(x) => *x as u64,
            Value::U32(x) => *x as u64,
            Value::U64(x) => *x,
            Value::I8(x) if *x >= 0 => *x as u64,
            Value::I16(x) if *x >= 0 => *x as u64,
            Value::I32(x) if *x >= 0 => *x as u64,
            Value::I64(x) if *x >= 0 => *x as u64,
            Value::Array(_) => bail!(
                "`{}.{key}` is an array (per-layer values are not supported)",
                self.arch
            ),
            other => bail!("`{}.{key}` is not a count: {other:?}", self.arch),
        };
        Ok(Some(n as usize))
    }

    /// A required unsigned integer key.
    pub(super) fn usize(&self, key: &str) -> Result<usize> {
        match self.usize_opt(key)? {
            Some(n) => Ok(n),
            None => bail!("GGUF metadata is missing `{}.{key}`", self.arch),
        }
    }

    /// An unsigned integer key with a default.
    pub(super) fn usize_or(&self, key: &str, default: usize) -> Result<usize> {
        Ok(self.usize_opt(key)?.unwrap_or(default))
    }

    /// A float key (f32, f64 or an integer), `None` when absent or of another type.
    pub(super) fn f32_opt(&self, key: &str) -> Option<f32> {
        match self.get(key)? {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            v => v.to_u32().ok().map(|x| x as f32),
        }
    }

    /// A string key.
    pub(super) fn str_opt(&self, key: &str) -> Option<&'a str> {
        self.get(key)?.to_string().ok().map(String::as_str)
    }

    /// An array of booleans (a per-layer pattern), `None` when absent or not one.
    pub(super) fn bools_opt(&self, key: &str) -> Option<Vec<bool>> {
        match self.get(key)? {
            Value::Array(v) => v.iter().map(|b| b.to_bool().ok()).collect(),
            _ => None,
        }
    }
}
