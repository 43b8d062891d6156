//! The engine: one OS thread that owns the scheduler, the KV cache, the LLM and the
//! encoder, fed by a command channel and answering each sequence on its own event
//! channel and each encoder job on its own reply channel.

pub mod block_pool;
pub mod encode;
pub mod engine_loop;
pub mod handle;
pub mod kv_manager;
pub mod sampler;
pub mod scheduler;
pub mod sequence;
pub mod start;
pub mod step_cost;
pub mod text_stream;
pub mod types;
pub mod worker;
