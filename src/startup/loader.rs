//! The server's [`Loader`]: turns a model spec into a model installed on the engine
//! thread of its device (one thread per device, spawned on first use), sizes each LLM's
//! KV cache from its share of `--kv-cache-memory`, and unloads models by slot.
//!
//! Invariants: every model of one device runs on that device's one engine thread; a
//! spec reaching `load` has a local source (start-up resolves downloads first; models
//! found on demand are local files).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

use crate::config::ServeArgs;
use crate::device::{DeviceChoice, DeviceKind};
use crate::engine::handle::DeviceEngine;
use crate::engine::start::{
    EncoderEngineConfig, EncoderParts, EngineConfig, LlmParts, install_encoder, install_llm,
    spawn_engine_thread,
};
use crate::model::ModelInfo;
use crate::model::decoder::Decoder;
use crate::model::encoder::{Encoder, EncoderInfo, LoadedEncoder};
use crate::model::loader::{LoadedModel, load_gguf};
use crate::registry::memory::MemoryUse;
use crate::registry::spec::{ModelSpec, SpecKind};
use crate::registry::{EncoderLimits, EncoderReady, LoadFuture, Loaded, Loader, Ready};

/// How the LLMs split the KV memory.
#[derive(Debug, Clone, Copy)]
pub struct KvSplit {
    /// Bytes for all LLMs' KV caches (`--kv-cache-memory` less the encoders'
    /// activations).
    pub pool: usize,
    /// Sum of the start-up LLMs' shares (1 each unless `kv_share` says otherwise; at
    /// least 1, which is also an on-demand LLM's share).
    pub shares: f64,
}

impl KvSplit {
    /// KV bytes of an LLM with `share`.
    pub fn bytes(&self, share: Option<f64>) -> usize {
        let share = share.unwrap_or(1.0);
        (self.pool as f64 * share / self.shares.max(share)) as usize
    }
}

/// Loads models for `ferrite serve`. Cheap to clone (clones share the engine threads).
#[derive(Clone)]
pub struct ServeLoader(Arc<Inner>);

struct Inner {
    args: ServeArgs,
    device: DeviceChoice,
    split: KvSplit,
    engines: Mutex<Vec<EngineThread>>,
    /// Start-up LLMs planned on a GPU that have not loaded yet.
    pending_gpu: Mutex<Vec<PendingGpuLlm>>,
}

/// A start-up model planned on a GPU, not loaded yet: the LLMs loaded on that GPU before
/// it leave room for its weights and activations and (an LLM's) KV share.
#[derive(Debug, Clone)]
struct PendingGpuLlm {
    name: String,
    ordinal: usize,
    /// Planned weights and activations.
    bytes: u64,
    share: f64,
}

/// A device's engine thread: its name, its handle, and its join handle until shutdown.
type EngineThread = (String, DeviceEngine, Option<std::thread::JoinHandle<()>>);

impl ServeLoader {
    /// A loader for `args` on `device`, splitting KV memory as `split`.
    pub fn new(args: ServeArgs, device: DeviceChoice, split: KvSplit) -> Self {
        Self(Arc::new(Inner {
            args,
            device,
            split,
            engines: Mutex::new(Vec::new()),
            pending_gpu: Mutex::new(Vec::new()),
        }))
    }

    /// The engine threads started so far.
    pub fn engines(&self) -> Vec<DeviceEngine> {
        self.0.engines()
    }

    /// Asks every engine thread to stop and hands back their join handles.
    pub fn shutdown(&self) -> Vec<std::thread::JoinHandle<()>> {
        self.0.shutdown()
    }

    /// Notes the start-up models whose device is a GPU (with their planned use), so that
    /// each LLM loaded there first leaves room for the others (`kv_share_of`): the other
    /// LLMs' weights, activations and KV shares, the encoders' weights and activations.
    pub fn plan_gpu<'a>(&self, llms: impl IntoIterator<Item = (&'a str, ModelSpec, MemoryUse)>) {
        self.0.plan_gpu(llms)
    }
}

impl Inner {
    /// Where a spec runs: its own `device`, or the server's.
    /// [`ServeLoader::plan_gpu`].
    fn plan_gpu<'a>(&self, llms: impl IntoIterator<Item = (&'a str, ModelSpec, MemoryUse)>) {
        let mut pending = Vec::new();
        for (name, spec, planned) in llms {
            if let Ok(DeviceChoice {
                kind: DeviceKind::Cuda(ordinal),
                ..
            }) = self.device_of(&spec)
            {
                pending.push(PendingGpuLlm {
                    name: name.to_string(),
                    ordinal,
                    bytes: planned.weights + planned.activations,
                    share: match spec.kind {
                        SpecKind::Llm => spec.kv_share.unwrap_or(1.0),
                        SpecKind::Encoder => 0.0,
                    },
                });
            }
        }
        if let Ok(mut p) = self.pending_gpu.lock() {
            *p = pending;
        }
    }

    /// `(bytes, shares)` the LLM `name`, loading on `kind`, must leave for the start-up
    /// LLMs still to load on the same GPU (and takes `name` off that list). An LLM
    /// loaded on demand leaves room as if the start-up LLMs' other shares were to come.
    fn pending_on(&self, name: &str, kind: DeviceKind, share: f64) -> (u64, f64) {
        let DeviceKind::Cuda(ordinal) = kind else {
            return (0, 0.0);
        };
        let Ok(mut pending) = self.pending_gpu.lock() else {
            return (0, 0.0);
        };
        let Some(i) = pending.iter().position(|p| p.name == name) else {
            return (0, (self.split.shares - share).max(0.0));
        };
        pending.remove(i);
        pending
            .iter()
            .filter(|p| p.ordinal == ordinal)
            .fold((0, 0.0), |(b, s), p| (b + p.bytes, s + p.share))
    }

    fn device_of(&self, spec: &ModelSpec) -> Result<DeviceChoice> {
        match &spec.device {
            Some(d) => DeviceKind::resolve(d),
            None => Ok(self.device.clone()),
        }
    }

    /// The engine thread of `kind`, spawned on first use.
    fn engine_for(&self, kind: DeviceKind) -> Result<DeviceEngine> {
        let name = kind.name();
        let mut engines = self
            .engines
            .lock()
            .map_err(|_| anyhow::anyhow!("engine list poisoned"))?;
        if let Some((_, e, _)) = engines.iter().find(|(n, _, _)| *n == name) {
            return Ok(e.clone());
        }
        let (engine, thread) = spawn_engine_thread(self.args.encoder.encoder_share)?;
        tracing::info!(device = %name, "engine thread started");
        engines.push((name, engine.clone(), Some(thread)));
        Ok(engine)
    }

    /// The engine threads started so far.
    pub fn engines(&self) -> Vec<DeviceEngine> {
        self.engines
            .lock()
            .map(|e| e.iter().map(|(_, d, _)| d.clone()).collect())
            .unwrap_or_default()
    }

    /// Asks every engine thread to stop and hands back their join handles.
    pub fn shutdown(&self) -> Vec<std::thread::JoinHandle<()>> {
        let Ok(mut engines) = self.engines.lock() else {
            return Vec::new();
        };
        engines
            .iter_mut()
            .filter_map(|(_, e, t)| {
                e.shutdown();
                t.take()
            })
            .collect()
    }

    fn engine_config(&self) -> EngineConfig {
        let a = &self.args;
        EngineConfig {
            kv_cache_bytes: a.kv_cache_memory,
            block_size: a.block_size as usize,
            max_batched_tokens: a.max_batched_tokens as usize,
            max_num_seqs: a.max_num_seqs as usize,
            max_waiting: a.max_waiting,
            max_model_len: a.max_model_len,
            prefix_caching: a.prefix_caching,
            max_step_ms: a.max_step_ms,
            speculative_tokens: a.speculative_tokens as usize,
        }
    }

    async fn load_llm(&self, name: String, spec: ModelSpec) -> Result<Loaded> {
        let path = local_source(&spec)?;
        let choice = self.device_of(&spec)?;
        let kv = self.split.bytes(spec.kv_share);
        let share = spec.kv_share.unwrap_or(1.0);
        let (pending_bytes, pending_shares) = self.pending_on(&name, choice.kind, share);
        let gpu = GpuSizing {
            utilization: self.args.gpu_memory_utilization,
            max_rows: self.args.max_batched_tokens as usize,
            max_logit_rows: self.args.max_num_seqs as usize,
            share,
            pending_bytes,
            pending_shares,
        };
        tracing::info!(model = %name, path = %path.display(), device = %choice.kind.name(), "loading model");
        let t0 = std::time::Instant::now();
        let (mut model, kind) = load_with_fallback(&path, &choice, gpu).await?;
        tracing::info!(model = %name, secs = t0.elapsed().as_secs_f64(), device = %kind.name(), "model loaded");
        if let Some(file) = &self.args.chat_template {
            model.template = crate::model::loader::chat_template_file(&model.tokenizer, file)?;
            tracing::info!(path = %file.display(), "chat template from --chat-template");
        }
        let info = ModelInfo {
            id: name,
            context_length: model.llama.config().context_length,
            device: kind.name(),
            created: super::now_secs(),
        };
        let engine = self.engine_for(kind)?;
        let served = install_llm(&engine, LlmParts { model, info }, kv, &self.engine_config())?;
        Ok(Loaded::Llm(Arc::new(Ready {
            model: served.served,
            engine: served.handle,
        })))
    }

    async fn load_encoder(&self, name: String, spec: ModelSpec) -> Result<Loaded> {
        let dir = local_source(&spec)?;
        let choice = self.device_of(&spec)?;
        // Off the list of models still to come on its GPU (it holds its memory now).
        self.pending_on(&name, choice.kind, 0.0);
        tracing::info!(model = %name, path = %dir.display(), device = %choice.kind.name(), "loading encoder");
        let t0 = std::time::Instant::now();
        let precision = self.args.encoder.encoder_precision;
        let tokens = self.args.encoder.encoder_batch_tokens as usize;
        let (model, kind) = load_encoder_with_fallback(&dir, &choice, precision, tokens).await?;
        let cfg = model.encoder.config();
        tracing::info!(
            model = %name,
            secs = t0.elapsed().as_secs_f64(),
            task = ?cfg.task,
            max_len = cfg.max_len,
            %precision,
            device = %kind.name(),
            linear = model.encoder.describe(),
            "encoder loaded"
        );
        let info = EncoderInfo {
            id: name,
            task: cfg.task,
            labels: cfg.labels.clone(),
            dims: cfg.hidden,
            max_len: cfg.max_len,
            vocab: cfg.vocab,
            created: super::now_secs(),
        };
        let e = &self.args.encoder;
        let parts = EncoderParts {
            model,
            info,
            config: EncoderEngineConfig {
                batch_tokens: e.encoder_batch_tokens as usize,
                max_waiting: e.max_encoder_waiting,
                share: e.encoder_share,
            },
        };
        let engine = self.engine_for(kind)?;
        let served = install_encoder(&engine, parts)?;
        Ok(Loaded::Encoder(Arc::new(EncoderReady {
            encoder: served.served,
            engine: served.handle,
            limits: EncoderLimits {
                max_rerank_documents: e.max_rerank_documents as usize,
                max_embedding_inputs: e.max_embedding_inputs as usize,
            },
        })))
    }
}

/// The local path a spec's source names (downloads were resolved before).
fn local_source(spec: &ModelSpec) -> Result<PathBuf> {
    match spec.source.as_deref() {
        Some(s) if !s.starts_with("hf:") => Ok(PathBuf::from(s)),
        other => bail!("internal: the source {other:?} was not resolved to a local path"),
    }
}

impl Loader for ServeLoader {
    fn estimate(&self, spec: &ModelSpec) -> Result<MemoryUse> {
        let this = &self.0;
        let path = local_source(spec)?;
        match spec.kind {
            SpecKind::Llm => super::estimate::llm(
                &path,
                this.args.max_batched_tokens as usize,
                this.args.max_num_seqs as usize,
                this.split.bytes(spec.kv_share),
            ),
            SpecKind::Encoder => {
                super::estimate::encoder(&path, this.args.encoder.encoder_batch_tokens as usize)
            }
        }
    }

    fn load(&self, name: String, spec: ModelSpec) -> LoadFuture<Result<Loaded>> {
        let this = self.0.clone();
        Box::pin(async move {
            match spec.kind {
                SpecKind::Llm => this.load_llm(name, spec).await,
                SpecKind::Encoder => this.load_encoder(name, spec).await,
            }
        })
    }

    fn unload(&self, model: Loaded) -> LoadFuture<()> {
        let handle = model.handle().clone();
        drop(model);
        Box::pin(async move { handle.device().unload(handle.slot()).await })
    }
}

/// Loads the encoder at `dir` on the chosen device: on a GPU, with its weights and the
/// work buffers of a `tokens`-token batch on it; falls back to the CPU (the reason
/// logged) when the GPU cannot have it and the operator did not insist on the GPU.
async fn load_encoder_with_fallback(
    dir: &Path,
    choice: &DeviceChoice,
    precision: crate::model::encoder::precision::EncoderPrecision,
    tokens: usize,
) -> Result<(LoadedEncoder, DeviceKind)> {
    let on_cpu = |dir: PathBuf| {
        tokio::task::spawn_blocking(move || Encoder::load_precision(&dir, precision))
    };
    let DeviceKind::Cuda(n) = choice.kind else {
        return Ok((on_cpu(dir.to_path_buf()).await??, DeviceKind::Cpu));
    };
    let gpu_dir = dir.to_path_buf();
    match tokio::task::spawn_blocking(move || load_encoder_on_gpu(n, &gpu_dir, tokens)).await? {
        Ok(m) => Ok((m, choice.kind)),
        Err(e) if !choice.explicit => {
            tracing::warn!("the encoder cannot run on cuda:{n} ({e:#}); using the CPU");
            Ok((on_cpu(dir.to_path_buf()).await??, DeviceKind::Cpu))
        }
        Err(e) => Err(e).with_context(|| format!("loading {} on cuda:{n}", dir.display())),
    }
}

/// Opens GPU `n`, checks that the encoder's f16 weights and a `tokens`-token batch's
/// work buffers fit its free memory (refusing with the numbers), and loads it there.
#[cfg(feature = "cuda")]
fn load_encoder_on_gpu(n: usize, dir: &Path, tokens: usize) -> Result<LoadedEncoder> {
    use crate::device::cuda::CudaDevice;
    use crate::device::kernels::Device;
    use crate::model::encoder::config::EncoderConfig;
    use crate::model::encoder::device::{activation_bytes, weight_bytes};

    let cfg = EncoderConfig::from_dir(dir)?;
    let tokens = tokens.max(cfg.max_len);
    let cuda = Arc::new(CudaDevice::open(n).map_err(anyhow::Error::msg)?);
    let (free, total) = cuda.memory()?;
    let (weights, acts) = (weight_bytes(&cfg), activation_bytes(&cfg, tokens));
    // Work buffers grow to powers of two: count them at twice their size.
    let need = weights + 2 * acts;
    if need > free {
        bail!(
            "the encoder needs {} MiB on {} ({} MiB of f16 weights, {} MiB of work buffers              for {tokens}-token batches, doubled for rounding), {} of {} MiB are free",
            need >> 20,
            cuda.name(),
            weights >> 20,
            acts >> 20,
            free >> 20,
            total >> 20
        );
    }
    let dev: Arc<dyn Device> = cuda.clone();
    let loaded = Encoder::load_on_device(dir, None, dev)?;
    if let Some(d) = loaded.encoder.on_device() {
        d.reserve(tokens)?;
        tracing::info!(
            gpu = %cuda.name(),
            weights_mib = d.weight_bytes() >> 20,
            work_mib = acts >> 20,
            free_mib_before = free >> 20,
            "encoder on the GPU"
        );
    }
    Ok(loaded)
}

#[cfg(not(feature = "cuda"))]
fn load_encoder_on_gpu(n: usize, _dir: &Path, _tokens: usize) -> Result<LoadedEncoder> {
    bail!("cuda:{n}: this binary was built without the CUDA backend")
}

/// What sizes the KV cache on a GPU.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "cuda"), allow(dead_code))]
struct GpuSizing {
    /// `--gpu-memory-utilization`.
    utilization: f64,
    /// Most tokens in one step (the scratch buffers are sized for them).
    max_rows: usize,
    /// Most logit rows in one step.
    max_logit_rows: usize,
    /// This LLM's KV share.
    share: f64,
    /// Planned weights and activations of the start-up LLMs still to load on the GPU.
    pending_bytes: u64,
    /// Their KV shares.
    pending_shares: f64,
}

/// Loads `path` on the chosen device, falling back to the CPU (with the reason logged)
/// when the GPU path cannot serve it and the operator did not insist on the GPU.
async fn load_with_fallback(
    path: &Path,
    choice: &DeviceChoice,
    gpu: GpuSizing,
) -> Result<(LoadedModel<Decoder>, DeviceKind)> {
    let kind = choice.kind;
    let load_path = path.to_path_buf();
    match tokio::task::spawn_blocking(move || load_on(kind, &load_path, gpu)).await? {
        Ok(m) => Ok((m, kind)),
        Err(e) if kind != DeviceKind::Cpu && !choice.explicit => {
            tracing::warn!("the GPU path cannot serve this model ({e:#}); using the CPU");
            let load_path = path.to_path_buf();
            let m = tokio::task::spawn_blocking(move || load_gguf(&load_path)).await??;
            Ok((m.into(), DeviceKind::Cpu))
        }
        Err(e) => Err(e).with_context(|| format!("loading {}", path.display())),
    }
}

/// Loads the model for `kind`.
fn load_on(kind: DeviceKind, path: &Path, gpu: GpuSizing) -> Result<LoadedModel<Decoder>> {
    match kind {
        DeviceKind::Cpu => Ok(load_gguf(path)?.into()),
        DeviceKind::Cuda(n) => load_on_gpu(n, path, gpu),
    }
}

/// Opens GPU `n` (compiling the kernels), puts the weights and the scratch of the
/// largest step on it, then sizes the KV cache: this LLM's share of the memory left,
/// less what the start-up LLMs still to load on the GPU need (`kv_share_of`).
#[cfg(feature = "cuda")]
fn load_on_gpu(n: usize, path: &Path, gpu: GpuSizing) -> Result<LoadedModel<Decoder>> {
    use crate::device::cuda::CudaDevice;
    use crate::device::kernels::Device;
    use crate::device::memory_budget::{kv_cache_budget, kv_share_of};
    use crate::model::device_decoder::DeviceDecoder;
    use crate::model::loader::load_gguf_with;

    let cuda = Arc::new(CudaDevice::open(n).map_err(anyhow::Error::msg)?);
    let dev: Arc<dyn Device> = cuda.clone();
    let mut loaded = load_gguf_with(path, |src| DeviceDecoder::load(dev, src))?;
    loaded.llama.reserve(gpu.max_rows)?;
    let (free, total) = cuda.memory()?;
    let vocab = loaded.llama.config().vocab_size;
    // Per step beyond the scratch: the logits and the wanted rows' hidden states.
    let step_extra = gpu.max_logit_rows * (vocab + loaded.llama.config().n_embd) * 4;
    let kv_budget = kv_cache_budget(
        total as u64,
        free as u64,
        gpu.utilization,
        0,
        step_extra as u64,
    )
    .map_err(anyhow::Error::msg)?;
    let kv_budget = kv_share_of(kv_budget, gpu.pending_bytes, gpu.share, gpu.pending_shares)
        .map_err(anyhow::Error::msg)?;
    tracing::info!(
        gpu = %cuda.name(),
        free_mib = free >> 20,
        total_mib = total >> 20,
        left_for_models_to_come_mib = gpu.pending_bytes >> 20,
        kv_budget_mib = kv_budget >> 20,
        "GPU memory after weights and scratch"
    );
    Ok(loaded.map(|model| Decoder::Device {
        model: Box::new(model),
        kv_budget: kv_budget as usize,
    }))
}

#[cfg(not(feature = "cuda"))]
fn load_on_gpu(n: usize, _path: &Path, _gpu: GpuSizing) -> Result<LoadedModel<Decoder>> {
    bail!("cuda:{n}: this binary was built without the CUDA backend")
}
