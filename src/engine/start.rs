//! Starting an engine: sizing the KV cache from the memory budget, capping the
//! sequence length to what both the model and the cache can hold, and spawning the
//! engine thread.

use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Result, bail};

use super::engine_loop::Engine;
use super::handle::{EngineHandle, EngineStats};
use super::kv_manager::KvCacheManager;
use super::scheduler::{Scheduler, SchedulerConfig};
use crate::model::loader::LoadedModel;
use crate::model::paged_attention::PagedKvCache;
use crate::model::{ModelInfo, ServedModel};

/// Engine sizing and limits.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Bytes of memory for the KV cache (the number of blocks is derived from it).
    pub kv_cache_bytes: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Most tokens computed in one step.
    pub max_batched_tokens: usize,
    /// Most sequences running at once.
    pub max_num_seqs: usize,
    /// Most sequences waiting for their first step.
    pub max_waiting: usize,
    /// Operator cap on prompt + generated tokens.
    pub max_model_len: Option<usize>,
}

/// A started engine.
pub struct StartedEngine {
    /// Handle for submitting work.
    pub handle: EngineHandle,
    /// The text side of the model, for the HTTP layer.
    pub served: Arc<ServedModel>,
    /// The engine thread.
    pub thread: std::thread::JoinHandle<()>,
}

/// Blocks that fit in `bytes` for this model's KV shape.
pub fn blocks_for_budget(
    bytes: usize,
    block_size: usize,
    n_layer: usize,
    n_kv_head: usize,
    head_dim: usize,
) -> usize {
    bytes / (PagedKvCache::bytes_per_token(n_layer, n_kv_head, head_dim) * block_size)
}

/// Sizes the cache, builds the scheduler and spawns the engine thread.
pub fn start(model: LoadedModel, info: ModelInfo, cfg: &EngineConfig) -> Result<StartedEngine> {
    let mc = model.llama.config().clone();
    let num_blocks = blocks_for_budget(
        cfg.kv_cache_bytes,
        cfg.block_size,
        mc.n_layer,
        mc.n_kv_head,
        mc.head_dim,
    );
    if num_blocks == 0 {
        bail!(
            "--kv-cache-memory of {} bytes holds no block of {} tokens ({} bytes per token)",
            cfg.kv_cache_bytes,
            cfg.block_size,
            PagedKvCache::bytes_per_token(mc.n_layer, mc.n_kv_head, mc.head_dim)
        );
    }
    let kv = KvCacheManager::new(num_blocks, cfg.block_size);
    let scheduler = Scheduler::new(
        SchedulerConfig {
            max_batched_tokens: cfg.max_batched_tokens,
            max_num_seqs: cfg.max_num_seqs,
        },
        kv,
    );
    let max_seq_len = [
        Some(mc.context_length),
        cfg.max_model_len,
        Some(scheduler.max_tokens_per_seq()),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(mc.context_length);
    tracing::info!(
        num_blocks,
        block_size = cfg.block_size,
        max_seq_len,
        cache_mib = cfg.kv_cache_bytes >> 20,
        "KV cache sized"
    );
    let cache = PagedKvCache::new(
        mc.n_layer,
        num_blocks,
        cfg.block_size,
        mc.n_kv_head,
        mc.head_dim,
    );
    let tokenizer = Arc::new(model.tokenizer);
    let stats = Arc::new(EngineStats::default());
    let (tx, rx) = mpsc::channel();
    let engine = Engine::new(
        model.llama,
        cache,
        scheduler,
        tokenizer.clone(),
        stats.clone(),
        max_seq_len,
    );
    let thread = std::thread::Builder::new()
        .name("ferrite-engine".into())
        .spawn(move || engine.run(rx))?;
    let served = Arc::new(ServedModel {
        info: ModelInfo {
            context_length: max_seq_len,
            ..info
        },
        tokenizer,
        template: model.template,
    });
    Ok(StartedEngine {
        handle: EngineHandle::new(tx, stats, cfg.max_waiting),
        served,
        thread,
    })
}
