//! ferrite: an LLM serving engine. One process serves a quantized llama-family model
//! and an encoder (embeddings, rerank) over an OpenAI-compatible HTTP API, batching
//! every concurrent request onto the models through a scheduler and a paged KV cache.
//! `selftest` and `bench` prove a device: every kernel against the CPU reference, and
//! the speed of a 7B-shaped model on it.

pub mod api;
pub mod bench;
pub mod config;
pub mod device;
pub mod engine;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod scratch;
pub mod selftest;
pub mod shutdown;
pub mod startup;
pub mod structured;
