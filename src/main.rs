//! The `ferrite` binary: parses the command line and runs `serve`, `fetch-model`,
//! `compile-kernels`, `selftest` or `bench`.
//!
//! `serve` binds its port first (so `/health` answers 503 while the model loads), then
//! loads the model, starts the engine thread and marks the server ready.
//!
//! Shutdown (SIGTERM or ctrl-c; see `ferrite::shutdown`): `/health` turns 503 and new
//! requests get a 503 at once; in-flight requests run for up to `--shutdown-grace-secs`,
//! then are aborted with a final error; the listener closes when none is left, the
//! engine is stopped and the process exits 0.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use ferrite::api::connections::LimitedListener;
use ferrite::api::guard::Guard;
use ferrite::api::serve::{self, ServeOptions};
use ferrite::api::{ApiLimits, AppState, WebSettings};
use ferrite::config::{BenchArgs, Cli, CliCommand, SelftestArgs, ServeArgs};
use ferrite::device::DeviceKind;
use ferrite::model::source::{DefaultEncoder, DefaultModel};
use ferrite::shutdown::{self, Shutdown};
use ferrite::startup;
use tracing_subscriber::EnvFilter;

/// Builds the CPU kernels' rayon pool with threads named `ferrite-cpu-N` (as `top`,
/// `perf` and panic messages show them) rather than after whichever thread first
/// touched the lazily built pool (a tokio worker's name). The thread count stays
/// rayon's: `RAYON_NUM_THREADS`, else one per logical CPU.
fn name_cpu_threads() {
    if let Err(e) = rayon::ThreadPoolBuilder::new()
        .thread_name(|i| format!("ferrite-cpu-{i}"))
        .build_global()
    {
        tracing::debug!("rayon's pool was already built: {e}");
    }
}

fn main() -> Result<()> {
    ferrite::malloc_tuning::keep_buffers_in_heap();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("FERRITE_LOG").unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed by whoever started us) must not
        // panic: tracing-subscriber would report it with `eprintln!`, which panics, and a
        // panic in the signal task would leave the server unable to shut down.
        .log_internal_errors(false)
        .init();
    name_cpu_threads();
    let cli = Cli::parse();
    match cli.command {
        CliCommand::FetchModel(args) => {
            let path = if args.encoder {
                DefaultEncoder::ensure(&args.models_dir)?
            } else {
                DefaultModel::ensure(&args.models_dir)?
            };
            println!("{}", path.display());
            Ok(())
        }
        CliCommand::CompileKernels(args) => compile_kernels(&args.archs),
        CliCommand::Selftest(args) => selftest(args),
        CliCommand::Bench(args) => bench(args),
        CliCommand::Serve(args) => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            let result = rt.block_on(serve(args));
            // A model load still running on the blocking pool must not hold up the exit.
            rt.shutdown_timeout(Duration::from_secs(1));
            result
        }
    }
}

/// Starts the NVML monitor when an LLM runs on a GPU (`None` otherwise, or when NVML
/// is absent); dropping it stops its thread. Its pauses apply to that GPU's engine
/// thread, every LLM on it.
#[cfg(feature = "cuda")]
fn gpu_monitor(
    registry: &ferrite::registry::Registry,
) -> Option<ferrite::device::gpu_monitor::GpuMonitor> {
    use ferrite::device::gpu_monitor::{DEFAULT_INTERVAL, pause_engine, spawn_gpu_monitor};
    use ferrite::registry::Loaded;
    let ready = registry.loaded().into_iter().find_map(|(_, l)| match l {
        Loaded::Llm(r) if r.model.info.device.starts_with("cuda:") => Some(r),
        _ => None,
    })?;
    let index = ready
        .model
        .info
        .device
        .strip_prefix("cuda:")?
        .parse()
        .ok()?;
    spawn_gpu_monitor(index, DEFAULT_INTERVAL, pause_engine(ready.engine.clone()))
}

/// `ferrite compile-kernels`: every kernel module through NVRTC for each architecture.
#[cfg(feature = "cuda")]
fn compile_kernels(archs: &[String]) -> Result<()> {
    use ferrite::device::cuda::nvrtc;
    use ferrite::device::kernels::sources::MODULES;
    let (major, minor) = nvrtc::version().map_err(anyhow::Error::msg)?;
    println!("NVRTC {major}.{minor}");
    let mut failed = 0;
    for arch in archs {
        for m in MODULES {
            match nvrtc::compile(m, arch) {
                Ok(ptx) => println!("{arch} {:<12} ok ({} bytes of PTX)", m.name, ptx.len()),
                Err(e) => {
                    failed += 1;
                    println!("{arch} {:<12} FAILED\n{e}", m.name);
                }
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} kernel module(s) failed to compile");
    Ok(())
}

#[cfg(not(feature = "cuda"))]
fn compile_kernels(_archs: &[String]) -> Result<()> {
    anyhow::bail!("this binary was built without the CUDA backend (build with --features cuda)")
}

/// `ferrite selftest`: exit 0 when every check passed, 1 when one failed, 2 when the
/// checks could not run (the reason printed on one line, no backtrace).
fn selftest(args: SelftestArgs) -> ! {
    let opts = ferrite::selftest::SelftestOptions {
        device: args.device,
        json: args.json,
        seed: args.seed,
        filter: args.filter,
    };
    match ferrite::selftest::run(&opts) {
        Ok(r) if r.failed == 0 => std::process::exit(0),
        Ok(r) => {
            eprintln!(
                "ferrite selftest: {} of {} checks FAILED",
                r.failed,
                r.checks.len()
            );
            std::process::exit(1)
        }
        Err(e) => {
            eprintln!("ferrite selftest: {e:#}");
            std::process::exit(2)
        }
    }
}

/// `ferrite bench`: exit 0 with a report (skipped phases listed in it), 2 when it could
/// not run (the reason on one line).
fn bench(args: BenchArgs) -> ! {
    let opts = ferrite::bench::BenchOptions {
        device: args.device,
        json: args.json,
        quick: args.quick,
        model_out: args.model_out,
        budget: Duration::from_secs(args.budget_secs),
    };
    match ferrite::bench::run(&opts) {
        Ok(_) => std::process::exit(0),
        Err(e) => {
            eprintln!("ferrite bench: {e:#}");
            std::process::exit(2)
        }
    }
}

/// How long connections may linger after the abort phase before we exit regardless
/// (a client that stopped reading its stream, say).
const LINGER_AFTER_ABORT: Duration = Duration::from_secs(3);

async fn serve(args: ServeArgs) -> Result<()> {
    let device = DeviceKind::resolve(&args.device)?;
    tracing::info!(device = %device.kind.name(), reason = %device.reason, "device selected");
    let startup = startup::prepare(&args)?;
    let listener = tokio::net::TcpListener::bind((args.host.as_str(), args.port))
        .await
        .with_context(|| format!("binding {}:{}", args.host, args.port))?;
    let addr: SocketAddr = listener.local_addr()?;
    let shutdown = Shutdown::new();
    let grace = Duration::from_secs(args.production.shutdown_grace_secs);
    tokio::spawn(shutdown::on_signals(shutdown.clone(), grace));
    let state = AppState {
        registry: startup.registry.clone(),
        device: device.kind.name(),
        metrics: ferrite::metrics::install(),
        limits: ApiLimits {
            max_body_bytes: args.max_body,
            max_n: args.max_n,
            max_tokens_cap: args.max_tokens_cap,
            sse_keep_alive: Duration::from_secs(args.sse_keep_alive_secs),
        },
        web: WebSettings::from_args(&args.web).map_err(anyhow::Error::msg)?,
    };
    let guard = Guard::from_args(&args.production, shutdown.clone());
    let in_flight = guard.in_flight.clone();
    let app = ferrite::api::router_with(state, guard);
    let listener = LimitedListener::new(listener, args.production.max_connections as usize);
    let opts = ServeOptions {
        header_read_timeout: Duration::from_secs(args.production.header_read_timeout),
    };
    tracing::info!("ferrite listening on http://{addr}");
    let drain = shutdown.clone();
    let server = tokio::spawn(async move {
        let stop = async move {
            // Keep accepting while draining (so probes see the 503) until the requests
            // admitted before have ended or been aborted.
            drain.draining().await;
            in_flight.idle().await;
            tracing::info!("no request left in flight: closing the listener");
        };
        serve::serve(listener, app, opts, stop).await;
        Ok::<(), std::io::Error>(())
    });
    let registry = startup.registry.clone();
    let loader = tokio::select! {
        loader = startup.load(&args, &device) => loader?,
        _ = shutdown.draining() => {
            tracing::info!("shutdown requested while loading");
            return finish(server, &shutdown).await;
        }
    };
    if args.fault_injection {
        tokio::spawn(panic_on_sigusr2(loader.clone()));
    }
    // On a GPU, NVML metrics and the memory gate, once the engine holds its memory.
    #[cfg(feature = "cuda")]
    let monitor = gpu_monitor(&registry);
    #[cfg(not(feature = "cuda"))]
    drop(registry);
    let served = finish(server, &shutdown).await;
    #[cfg(feature = "cuda")]
    drop(monitor);
    let threads = loader.shutdown();
    let joined = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::task::spawn_blocking(move || threads.into_iter().for_each(|t| drop(t.join()))),
    )
    .await;
    if joined.is_err() {
        tracing::warn!("engine thread still busy 5 s after shutdown; exiting anyway");
    }
    tracing::info!("shut down");
    served
}

/// Fault injection (`--fault-injection`, tests only): each SIGUSR2 makes every engine
/// thread panic.
async fn panic_on_sigusr2(loader: ferrite::startup::loader::ServeLoader) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        return;
    };
    tracing::warn!("fault injection on: SIGUSR2 makes the engine thread panic");
    while usr2.recv().await.is_some() {
        for e in loader.engines() {
            e.inject_panic();
        }
    }
}

/// Waits for the HTTP server to stop after draining began: in-flight requests run until
/// they end or the grace period aborts them; connections still open
/// `LINGER_AFTER_ABORT` after the abort are abandoned.
async fn finish(
    server: tokio::task::JoinHandle<std::io::Result<()>>,
    shutdown: &Shutdown,
) -> Result<()> {
    let linger = async {
        shutdown.aborted().await;
        tokio::time::sleep(LINGER_AFTER_ABORT).await;
    };
    tokio::select! {
        served = server => served.context("server task")?.context("serving HTTP")?,
        _ = linger => tracing::warn!("connections still open after the abort; exiting anyway"),
    }
    Ok(())
}
