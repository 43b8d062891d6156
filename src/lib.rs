//! ferrite: an LLM serving engine. One process serves a quantized llama-family model
//! and an encoder (embeddings, rerank) over an OpenAI-compatible HTTP API, batching
//! every concurrent request onto the models through a scheduler and a paged KV cache.

pub mod api;
pub mod config;
pub mod device;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod shutdown;
pub mod startup;
pub mod structured;
