//! Safe wrappers of every kernel: each checks dtypes (by the buffers' types), shapes,
//! sizes and index ranges on the host, says what it expected and what it got when they
//! do not fit, and only then launches. Shapes follow the CPU path's (`model::ops`,
//! `model::paged_attention`, `device::cpu`), which is the reference the kernel tests
//! compare against.

mod attention;
mod elementwise;
mod encoder;
mod quant;
mod rows;

pub use attention::{
    AttnBatch, DevKvLayer, KvColumns, SPLIT_CHUNK, kv_write, paged_attention, paged_attention_split,
};
pub use elementwise::{add_bias, rms_norm_heads, scale_values, softcap_values};
pub use encoder::{
    DevEmbeddings, DevLayerNorm, DevLinear, DevSeqs, Epilogue, GEMM_TILE, MAX_HEAD_DIM, RowPool,
    embed_layer_norm, encoder_attention, gemm_f16w, layer_norm_residual, pool_rows, to_f16_bits,
};
pub use quant::{MATVEC_MAX_ROWS, QWeight, dequant_rows, qmatmul, qmatmul_into};
pub use rows::{
    DevRope, HeadColumns, argmax_rows, gather_rows, gelu_gate_up, rms_norm_residual, rotary,
    silu_gate_up,
};

use super::buffer::{DevBuf, DeviceError, KernelArg};

pub(crate) type Result<T> = std::result::Result<T, DeviceError>;

pub(crate) fn check(ok: bool, op: &'static str, detail: impl FnOnce() -> String) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(DeviceError::Shape {
            op,
            detail: detail(),
        })
    }
}

pub(crate) fn int(v: usize, op: &'static str, what: &str) -> Result<KernelArg> {
    i32::try_from(v)
        .map(KernelArg::I32)
        .map_err(|_| DeviceError::Shape {
            op,
            detail: format!("{what} = {v} does not fit a 32-bit int"),
        })
}

pub(crate) fn ptr<T: super::Elem>(b: &DevBuf<T>) -> KernelArg {
    KernelArg::Ptr(b.ptr())
}
