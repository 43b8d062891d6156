//! Typed lookups into GGUF metadata with clear errors.

use std::collections::HashMap;

use anyhow::{Context, Result};
use candle_core::quantized::gguf_file;

/// Metadata lookups with clear errors.
pub(crate) struct Meta<'a>(pub &'a HashMap<String, gguf_file::Value>);

impl Meta<'_> {
    pub(crate) fn get(&self, key: &str) -> Result<&gguf_file::Value> {
        self.0
            .get(key)
            .with_context(|| format!("GGUF metadata is missing `{key}`"))
    }
    pub(crate) fn u32_opt(&self, key: &str) -> Option<u32> {
        self.0.get(key).and_then(|v| v.to_u32().ok())
    }
    pub(crate) fn bool_opt(&self, key: &str) -> Option<bool> {
        self.0.get(key).and_then(|v| v.to_bool().ok())
    }
    pub(crate) fn str_opt(&self, key: &str) -> Option<&str> {
        self.0
            .get(key)
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }
    pub(crate) fn strings(&self, key: &str) -> Result<Vec<String>> {
        self.get(key)?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_string()?.clone()))
            .collect()
    }
    pub(crate) fn i32s(&self, key: &str) -> Result<Vec<i32>> {
        self.get(key)?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_i32()?))
            .collect()
    }
    pub(crate) fn f32s(&self, key: &str) -> Result<Vec<f32>> {
        self.get(key)?
            .to_vec()?
            .iter()
            .map(|v| Ok(v.to_f32()?))
            .collect()
    }
}
