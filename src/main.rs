//! The `ferrite` binary: parses the command line and runs `serve` or `fetch-model`.
//!
//! `serve` binds its port first (so `/health` answers 503 while the model loads), then
//! loads the model, starts the engine thread and marks the server ready.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use ferrite::api::{ApiLimits, AppState, Ready};
use ferrite::config::{Cli, CliCommand, ServeArgs};
use ferrite::device::DeviceKind;
use ferrite::engine::start::{EngineConfig, start};
use ferrite::model::ModelInfo;
use ferrite::model::loader::load_gguf;
use ferrite::model::source::{DefaultModel, resolve};
use tracing_subscriber::EnvFilter;

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRITE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        CliCommand::FetchModel(args) => {
            let path = DefaultModel::ensure(&args.models_dir)?;
            println!("{}", path.display());
            Ok(())
        }
        CliCommand::Serve(args) => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(serve(args)),
    }
}

async fn serve(args: ServeArgs) -> Result<()> {
    let device = DeviceKind::resolve(&args.device)?;
    tracing::info!(device = device.name(), "device selected");
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    let ready = Arc::new(OnceLock::new());
    let state = AppState {
        ready: ready.clone(),
        loading_model: args
            .model
            .clone()
            .unwrap_or_else(|| DefaultModel::FILE.to_string()),
        device: device.name().to_string(),
        metrics: ferrite::metrics::install(),
        limits: ApiLimits {
            max_body_bytes: args.max_body,
            max_n: args.max_n,
            max_tokens_cap: args.max_tokens_cap,
            sse_keep_alive: Duration::from_secs(args.sse_keep_alive_secs),
        },
    };
    let app = ferrite::api::router(state);
    tracing::info!("ferrite listening on http://{addr}");
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await
    });
    let engine = load_and_start(&args, device).await?;
    let handle = engine.handle.clone();
    let _ = ready.set(Ready {
        model: engine.served.clone(),
        engine: engine.handle.clone(),
    });
    tracing::info!(model = %engine.served.info.id, "ready");
    server.await.context("server task")??;
    handle.shutdown();
    Ok(())
}

async fn load_and_start(
    args: &ServeArgs,
    device: DeviceKind,
) -> Result<ferrite::engine::start::StartedEngine> {
    let path = resolve(
        args.model.as_deref(),
        &args.models_dir,
        Duration::from_secs(args.hf_timeout_secs),
    )
    .await?;
    tracing::info!(path = %path.display(), "loading model");
    let t0 = std::time::Instant::now();
    let load_path = path.clone();
    let loaded = tokio::task::spawn_blocking(move || load_gguf(&load_path)).await??;
    tracing::info!(secs = t0.elapsed().as_secs_f64(), "model loaded");
    let id = args.served_model_name.clone().unwrap_or_else(|| {
        path.file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "model".into())
    });
    let info = ModelInfo {
        id,
        context_length: loaded.llama.config().context_length,
        device: device.name().to_string(),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let cfg = EngineConfig {
        kv_cache_bytes: args.kv_cache_memory,
        block_size: args.block_size as usize,
        max_batched_tokens: args.max_batched_tokens as usize,
        max_num_seqs: args.max_num_seqs as usize,
        max_waiting: args.max_waiting,
        max_model_len: args.max_model_len,
    };
    start(loaded, info, &cfg)
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down");
}
