//! The decoder the engine steps, on the CPU or on a device, and [`Runner`]: a decoder
//! together with the KV cache it reads and writes. The engine sees one `forward` per
//! step whichever the device; block tables and slot mapping mean the same on both.

use anyhow::Result;

use super::device_decoder::{DeviceDecoder, DeviceKvCache};
use super::paged_attention::PagedKvCache;
use super::spec::ModelSpec;
use super::transformer::{BatchInput, CpuModel};

/// A loaded decoder.
pub enum Decoder {
    /// Weights in host memory, our CPU kernels.
    Cpu(Box<CpuModel>),
    /// Weights on a device, our device kernels.
    Device {
        /// The model.
        model: Box<DeviceDecoder>,
        /// Bytes of device memory the KV cache may take (sized at load from free
        /// device memory; see `device::memory_budget`).
        kv_budget: usize,
    },
}

impl Decoder {
    /// The model's description.
    pub fn config(&self) -> &ModelSpec {
        match self {
            Decoder::Cpu(m) => m.config(),
            Decoder::Device { model, .. } => model.config(),
        }
    }
}

/// A decoder with its KV cache.
pub enum Runner {
    /// On the CPU.
    Cpu {
        /// The model.
        model: Box<CpuModel>,
        /// Its cache.
        cache: PagedKvCache,
    },
    /// On a device.
    Device {
        /// The model.
        model: Box<DeviceDecoder>,
        /// Its cache, in device memory.
        cache: DeviceKvCache,
    },
}

impl Runner {
    /// Allocates `num_blocks` KV blocks of `block_size` tokens for `decoder`.
    pub fn new(decoder: Decoder, num_blocks: usize, block_size: usize) -> Result<Self> {
        Ok(match decoder {
            Decoder::Cpu(model) => {
                let c = model.config();
                let cache =
                    PagedKvCache::new(c.n_layer, num_blocks, block_size, c.n_kv_head, c.head_dim);
                Runner::Cpu { model, cache }
            }
            Decoder::Device { model, .. } => {
                let cache = DeviceKvCache::new(
                    model.device().as_ref(),
                    model.config(),
                    num_blocks,
                    block_size,
                )?;
                Runner::Device { model, cache }
            }
        })
    }

    /// One step: writes the batch's K/V and returns the logits of `input.logits_rows`.
    pub fn forward(&mut self, input: &BatchInput) -> Result<Vec<Vec<f32>>> {
        match self {
            Runner::Cpu { model, cache } => model.forward(input, cache),
            Runner::Device { model, cache } => model.forward(input, cache),
        }
    }

    /// [`Self::forward`] for a step whose every sampling row is plain greedy (argmax, no
    /// penalties, no logprobs): a device picks the tokens itself and sends back one id a
    /// row instead of a row of logits. The CPU returns logits as usual.
    pub fn forward_greedy(&mut self, input: &BatchInput) -> Result<StepOutput> {
        match self {
            Runner::Cpu { model, cache } => model.forward(input, cache).map(StepOutput::Logits),
            Runner::Device { model, cache } => {
                model.forward_argmax(input, cache).map(StepOutput::Tokens)
            }
        }
    }
}

/// What a step hands back for its sampling rows.
#[derive(Debug)]
pub enum StepOutput {
    /// One row of logits each.
    Logits(Vec<Vec<f32>>),
    /// The argmax token of each row (chosen on the device).
    Tokens(Vec<u32>),
}
