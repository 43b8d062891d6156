//! The engine: one OS thread per device that owns every model on it (each LLM with
//! its scheduler and KV cache, each encoder with its queue), fed by one command
//! channel and answering each sequence on its own event channel and each encoder job
//! on its own reply channel.

pub mod block_pool;
pub mod encode;
pub mod engine_loop;
pub mod error;
pub mod handle;
pub mod kv_manager;
pub mod permit;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod speculate;
pub mod start;
pub mod step_cost;
pub mod text_stream;
pub mod types;
pub mod worker;
