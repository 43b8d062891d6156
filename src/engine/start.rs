//! Starting an engine: splitting the memory budget between encoder activations and
//! the KV cache, sizing the cache, capping the sequence length to what both the model
//! and the cache can hold, and spawning the engine thread.

use std::sync::Arc;
use std::sync::mpsc;

use anyhow::{Result, bail};

use super::encode::EncoderWorker;
use super::engine_loop::Engine;
use super::handle::{DeviceEngine, EngineHandle, EngineStats, Installed, ThreadHealth};
use super::kv_manager::KvCacheManager;
use super::scheduler::{Scheduler, SchedulerConfig};
use super::speculate::SpecConfig;
use super::worker::EngineThread;
use crate::model::decoder::{Decoder, Runner};
use crate::model::encoder::{EncoderInfo, LoadedEncoder, ServedEncoder};
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
    /// Reuse the KV blocks of prompt prefixes computed before.
    pub prefix_caching: bool,
    /// Target step time (ms) while decodes run: longer prefill chunks are cut (see
    /// `scheduler`); 0 turns it off.
    pub max_step_ms: f64,
    /// Most prompt-lookup draft tokens per sequence and step (see `speculate`); 0 is
    /// off.
    pub speculative_tokens: usize,
}

/// Encoder scheduling limits.
#[derive(Debug, Clone)]
pub struct EncoderEngineConfig {
    /// Most tokens in one encoder batch.
    pub batch_tokens: usize,
    /// Part of the device the encoder gets while LLM sequences run, in `(0, 1)`.
    pub share: f64,
    /// Most encoder inputs queued at once (more is a 429).
    pub max_waiting: usize,
}

/// An LLM to serve: the loaded GGUF and its identity.
pub struct LlmParts {
    /// Loaded weights (on the CPU or a device), tokenizer and template.
    pub model: LoadedModel<Decoder>,
    /// Identity shown to clients.
    pub info: ModelInfo,
}

/// An encoder to serve.
pub struct EncoderParts {
    /// Loaded weights and tokenizer.
    pub model: LoadedEncoder,
    /// Identity shown to clients.
    pub info: EncoderInfo,
    /// Its scheduling limits.
    pub config: EncoderEngineConfig,
}

/// How the memory budget was split.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryPlan {
    /// The whole budget (`--kv-cache-memory`).
    pub budget_bytes: usize,
    /// Reserved for the activations of one encoder batch.
    pub encoder_activation_bytes: usize,
    /// Bytes of KV blocks actually allocated.
    pub kv_cache_bytes: usize,
}

/// A started engine with at most one LLM and one encoder (the single-model shape
/// tests and tools use; `ferrite serve` installs its models one by one through
/// [`install_llm`] / [`install_encoder`]).
pub struct StartedEngine {
    /// Handle of the LLM (or of the encoder when no LLM is served).
    pub handle: EngineHandle,
    /// Handle of the encoder (None: LLM only).
    pub encoder_handle: Option<EngineHandle>,
    /// The text side of the LLM, for the HTTP layer (None: encoder only).
    pub served: Option<Arc<ServedModel>>,
    /// The text side of the encoder (None: LLM only).
    pub encoder: Option<Arc<ServedEncoder>>,
    /// How memory was split.
    pub memory: MemoryPlan,
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

/// Starts an engine serving only an LLM.
pub fn start(model: LoadedModel, info: ModelInfo, cfg: &EngineConfig) -> Result<StartedEngine> {
    let model = model.into();
    start_engine(Some(LlmParts { model, info }), None, cfg)
}

/// Spawns an engine thread with no model yet; models are installed through the
/// returned [`DeviceEngine`]. `encoder_share` is the encoders' part of the device while
/// LLM sequences run.
pub fn spawn_engine_thread(
    encoder_share: f64,
) -> Result<(DeviceEngine, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel();
    let health = Arc::new(ThreadHealth::default());
    let engine = EngineThread::new(health.clone(), encoder_share);
    let thread = std::thread::Builder::new()
        .name("ferrite-engine".into())
        .spawn(move || engine.run(rx))?;
    Ok((DeviceEngine::new(tx, health), thread))
}

/// An LLM installed on an engine thread.
pub struct LlmServing {
    /// Its handle.
    pub handle: EngineHandle,
    /// Its text side.
    pub served: Arc<ServedModel>,
    /// Bytes of KV blocks allocated for it.
    pub kv_bytes: usize,
}

/// Sizes the LLM's KV cache from `kv_budget` bytes, builds its scheduler and installs
/// it on `device`.
pub fn install_llm(
    device: &DeviceEngine,
    parts: LlmParts,
    kv_budget: usize,
    cfg: &EngineConfig,
) -> Result<LlmServing> {
    let stats = Arc::new(EngineStats::default());
    let name = parts.info.id.clone();
    let (engine, served, kv_bytes) = build_llm(parts, kv_budget, cfg, stats.clone())?;
    let slot = device.reserve_slot();
    device
        .install(slot, Installed::Llm(Box::new(engine)))
        .map_err(anyhow::Error::from)?;
    Ok(LlmServing {
        handle: device.handle(slot, &name, stats, cfg.max_waiting, 0),
        served,
        kv_bytes,
    })
}

/// An encoder installed on an engine thread.
pub struct EncoderServing {
    /// Its handle.
    pub handle: EngineHandle,
    /// Its text side.
    pub served: Arc<ServedEncoder>,
}

/// Installs an encoder on `device`.
pub fn install_encoder(device: &DeviceEngine, parts: EncoderParts) -> Result<EncoderServing> {
    let stats = Arc::new(EngineStats::default());
    let name = parts.info.id.clone();
    let worker = EncoderWorker::new(
        parts.model.encoder,
        parts.config.batch_tokens,
        stats.clone(),
        &name,
    );
    let served = Arc::new(ServedEncoder {
        info: parts.info,
        tokenizer: parts.model.tokenizer,
    });
    let slot = device.reserve_slot();
    device
        .install(slot, Installed::Encoder(Box::new(worker)))
        .map_err(anyhow::Error::from)?;
    Ok(EncoderServing {
        handle: device.handle(slot, &name, stats, 0, parts.config.max_waiting),
        served,
    })
}

/// Activation bytes an encoder reserves for its largest batch.
pub fn encoder_activation_bytes(parts: &EncoderParts) -> usize {
    parts
        .model
        .encoder
        .config()
        .activation_bytes(parts.config.batch_tokens.max(parts.info.max_len))
}

/// Splits the budget, sizes the cache, builds the scheduler and spawns the engine
/// thread for an LLM, an encoder, or both.
pub fn start_engine(
    llm: Option<LlmParts>,
    encoder: Option<EncoderParts>,
    cfg: &EngineConfig,
) -> Result<StartedEngine> {
    if llm.is_none() && encoder.is_none() {
        bail!("nothing to serve: neither an LLM nor an encoder was given");
    }
    let encoder_activation_bytes = encoder.as_ref().map_or(0, encoder_activation_bytes);
    let Some(llm_budget) = cfg.kv_cache_bytes.checked_sub(encoder_activation_bytes) else {
        bail!(
            "--kv-cache-memory of {} bytes does not cover the encoder's activations ({} bytes for batches of {} tokens)",
            cfg.kv_cache_bytes,
            encoder_activation_bytes,
            encoder.as_ref().map_or(0, |e| e.config.batch_tokens)
        );
    };
    let encoder_share = encoder.as_ref().map_or(0.3, |e| e.config.share);
    let (device, thread) = spawn_engine_thread(encoder_share)?;
    let llm = llm
        .map(|parts| install_llm(&device, parts, llm_budget, cfg))
        .transpose()?;
    let enc = encoder
        .map(|parts| install_encoder(&device, parts))
        .transpose()?;
    let memory = MemoryPlan {
        budget_bytes: cfg.kv_cache_bytes,
        encoder_activation_bytes,
        kv_cache_bytes: llm.as_ref().map_or(0, |l| l.kv_bytes),
    };
    tracing::info!(?memory, "memory budget split");
    let encoder_handle = enc.as_ref().map(|e| e.handle.clone());
    let Some(handle) = llm
        .as_ref()
        .map(|l| l.handle.clone())
        .or_else(|| encoder_handle.clone())
    else {
        bail!("nothing to serve: neither an LLM nor an encoder was given");
    };
    Ok(StartedEngine {
        handle,
        encoder_handle,
        served: llm.map(|l| l.served),
        encoder: enc.map(|e| e.served),
        memory,
        thread,
    })
}

/// The LLM side: cache sized from `budget` (host memory; a device decoder brings its own
/// budget of device memory), scheduler, engine state.
fn build_llm(
    parts: LlmParts,
    budget: usize,
    cfg: &EngineConfig,
    stats: Arc<EngineStats>,
) -> Result<(Engine, Arc<ServedModel>, usize)> {
    let LlmParts { model, info } = parts;
    let mc = model.llama.config().clone();
    let budget = match &model.llama {
        Decoder::Cpu(_) => budget,
        Decoder::Device { kv_budget, .. } => *kv_budget,
    };
    let num_blocks = blocks_for_budget(
        budget,
        cfg.block_size,
        mc.n_layer,
        mc.n_kv_head,
        mc.head_dim,
    );
    let block_bytes =
        PagedKvCache::bytes_per_token(mc.n_layer, mc.n_kv_head, mc.head_dim) * cfg.block_size;
    if num_blocks == 0 {
        bail!(
            "{budget} bytes left for the KV cache hold no block of {} tokens ({block_bytes} bytes)",
            cfg.block_size,
        );
    }
    let kv = KvCacheManager::new(num_blocks, cfg.block_size);
    let mut scheduler = Scheduler::new(
        SchedulerConfig {
            max_batched_tokens: cfg.max_batched_tokens,
            max_num_seqs: cfg.max_num_seqs,
            prefix_caching: cfg.prefix_caching,
        },
        kv,
    );
    scheduler.set_max_step_ms(cfg.max_step_ms);
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
        "KV cache sized"
    );
    let runner = Runner::new(model.llama, num_blocks, cfg.block_size)?;
    let tokenizer = Arc::new(model.tokenizer);
    let mut engine = Engine::new(
        runner,
        scheduler,
        tokenizer.clone(),
        stats,
        max_seq_len,
        &info.id,
    );
    engine.set_speculation(SpecConfig::new(cfg.speculative_tokens));
    let info = ModelInfo {
        context_length: max_seq_len,
        ..info
    };
    let served = Arc::new(ServedModel::new(info, tokenizer, model.template));
    Ok((engine, served, num_blocks * block_bytes))
}
